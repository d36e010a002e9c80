package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/nsegress/nsegress/e2e/privtest"
)

// The gateway failover tests change a gateway's life (freeze it, pull
// its cable), so they run on a cluster of their own (make test's HA
// run); the main run skips them.

// streams is what a selected pod measures across a gateway failure: a
// long-lived connection the client drives (labbox stream, kept alive, a
// request every 100 ms), one the server drives (labbox pull, a line
// pushed every 50 ms), and a new connection every 20 ms (labbox stream
// -fresh).
type streams struct {
	held, fresh streamSummary
	pushed      pullSummary
}

type pullSummary struct {
	lines, want, gapMS int
	err                string
}

type streamSummary struct {
	requests, failed, conns, gapMS int
}

func parseSummary(t *testing.T, s string) streamSummary {
	t.Helper()
	var r streamSummary
	if _, err := fmt.Sscanf(strings.TrimSpace(s), "requests %d failed %d connections %d longest-gap-ms %d",
		&r.requests, &r.failed, &r.conns, &r.gapMS); err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return r
}

// measureAcross runs both streams from pod to url for d and event two
// seconds in.
func measureAcross(t *testing.T, c Cluster, pod *corev1.Pod, url string, d time.Duration, event func()) streams {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	var held, fresh, pushed string
	var heldErr, freshErr, pushedErr error
	wg.Add(3)
	go func() {
		defer wg.Done()
		pushed, pushedErr = execIn(ctx, c, pod.Namespace, pod.Name, "/labbox", "pull",
			"-interval", "50ms", "-duration", d.String(), url)
	}()
	go func() {
		defer wg.Done()
		held, heldErr = execIn(ctx, c, pod.Namespace, pod.Name, "/labbox", "stream",
			"-interval", "100ms", "-duration", d.String(), "-timeout", "10s", url)
	}()
	go func() {
		defer wg.Done()
		fresh, freshErr = execIn(ctx, c, pod.Namespace, pod.Name, "/labbox", "stream", "-fresh",
			"-interval", "20ms", "-duration", d.String(), "-timeout", "300ms", url)
	}()
	time.Sleep(2 * time.Second)
	event()
	wg.Wait()
	if heldErr != nil || freshErr != nil || pushedErr != nil {
		t.Fatalf("streams: %v; %v; %v", heldErr, freshErr, pushedErr)
	}
	s := streams{held: parseSummary(t, held), fresh: parseSummary(t, fresh)}
	if _, err := fmt.Sscanf(strings.TrimSpace(pushed), "lines %d of %d longest-gap-ms %d error %s",
		&s.pushed.lines, &s.pushed.want, &s.pushed.gapMS, &s.pushed.err); err != nil {
		t.Fatalf("parse %q: %v", pushed, err)
	}
	t.Logf("client-driven connection: %s", strings.TrimSpace(held))
	t.Logf("server-driven connection: %s", strings.TrimSpace(pushed))
	t.Logf("new connections:          %s", strings.TrimSpace(fresh))
	return s
}

// holdersOf lists the gateways whose uplink holds ip, read from outside
// the nodes.
func holdersOf(t testing.TB, c Cluster, ip string) []string {
	t.Helper()
	_, gateways := nodesByRole(c)
	var out []string
	for _, g := range gateways {
		addrs, err := c.UplinkAddrs(g.Name)
		if err != nil {
			t.Fatalf("addresses of %s: %v", g.Name, err)
		}
		for _, a := range addrs {
			if a == ip+"/32" {
				out = append(out, g.Name)
			}
		}
	}
	return out
}

// nodeDrops sums the firewall's drops of packets whose source is a node's
// own address: egress that left without its egress IP.
func nodeDrops(t *testing.T, c Cluster) uint64 {
	t.Helper()
	drops, err := c.FirewallDrops(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, node := range c.Nodes() {
		n += drops[node.IP]
	}
	return n
}

// standbyOf waits for the group to name a standby for ip and returns it.
func standbyOf(t *testing.T, c Cluster, ip string) string {
	t.Helper()
	var standby string
	privtest.Eventually(t, 60*time.Second, "a standby for "+ip, func() (bool, error) {
		out, err := kubectl(context.Background(), c, "", "-n", "nsegress-system", "get", "networkgatewaygroup", "onprem",
			"-o", fmt.Sprintf(`jsonpath={.status.assignments.%s.standby}`, strings.ReplaceAll(ip, ".", `\.`)))
		standby = strings.TrimSpace(out)
		return err == nil && standby != "", err
	})
	return standby
}

// judge fails t unless the failure cost no established flow and new
// connections recovered, with the egress IP only.
func judge(t *testing.T, c Cluster, s streams, dropsBefore uint64) {
	t.Helper()
	if s.held.conns != 1 || s.held.failed != 0 {
		t.Errorf("the long-lived connection broke: %d connections, %d failed requests; want 1 and 0", s.held.conns, s.held.failed)
	}
	if s.pushed.lines != s.pushed.want || s.pushed.err != "none" {
		t.Errorf("the server-driven connection broke: %d of %d lines, error %s", s.pushed.lines, s.pushed.want, s.pushed.err)
	}
	// A flow that stalls for many seconds has lost its state somewhere,
	// even if TCP recovers it in the end; a failover costs a few of
	// TCP's retransmission timeouts, well under this bound.
	const stall = 5000
	if s.held.gapMS > stall || s.pushed.gapMS > stall {
		t.Errorf("a long-lived connection stalled: %d ms (client-driven), %d ms (server-driven); want under %d ms", s.held.gapMS, s.pushed.gapMS, stall)
	}
	if s.fresh.requests-s.fresh.failed < 10 {
		t.Errorf("new connections did not recover: %d of %d failed", s.fresh.failed, s.fresh.requests)
	}
	if d := nodeDrops(t, c) - dropsBefore; d != 0 {
		t.Errorf("the firewall dropped %d packets from node addresses: egress left without its egress IP", d)
	}
}

// TestAGatewayThatDiesLosesNoConnection kills the gateway holding a
// policy's egress IP (every process of the node frozen and its cable
// pulled) while a selected pod holds a long-lived connection to its
// backend and opens a new one every 20 ms. The standby takes the IP
// over: the long-lived connection goes on, new connections recover, the
// firewall sees only the egress IP, and when the dead node comes back
// exactly one node holds the IP.
func TestAGatewayThatDiesLosesNoConnection(t *testing.T) {
	c := cluster(t)
	client, gateway := selectedClient(t, c, "fo")
	egress := "198.51.100.101"
	standby := standbyOf(t, c, egress)
	if standby == gateway {
		t.Fatalf("the standby of %s is its holder %s", egress, gateway)
	}
	revive := func() {
		if err := c.FreezeNode(gateway, false); err != nil {
			t.Error(err)
		}
		if err := c.SetUnderlay(gateway, true); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(revive)
	dropsBefore := nodeDrops(t, c)
	var killed time.Time
	s := measureAcross(t, c, client, c.Backends()[0].URL(), 15*time.Second, func() {
		killed = time.Now()
		if err := c.SetUnderlay(gateway, false); err != nil {
			t.Fatal(err)
		}
		if err := c.FreezeNode(gateway, true); err != nil {
			t.Fatal(err)
		}
		privtest.Eventually(t, 5*time.Second, standby+" holds "+egress, func() (bool, error) {
			h := holdersOf(t, c, egress)
			return len(h) == 2 || (len(h) == 1 && h[0] == standby), nil
		})
		t.Logf("%s held %s %s after %s died", standby, egress, time.Since(killed).Round(time.Millisecond), gateway)
	})
	t.Logf("new connections failed for at most %d ms after the kill", s.fresh.gapMS)
	judge(t, c, s, dropsBefore)
	revive()
	privtest.Eventually(t, 30*time.Second, "exactly "+standby+" holds "+egress+" once "+gateway+" is back", func() (bool, error) {
		h := holdersOf(t, c, egress)
		return len(h) == 1 && h[0] == standby, nil
	})
	reachAs(t, c, client, egress)
}

// TestAPartitionedGatewayHealsToOneHolder pulls the cable of the gateway
// holding the egress IP for 20 s, its processes running on, and plugs it
// back: the standby takes over within the stream, the partitioned node
// fences itself, and after the heal exactly one node holds the IP.
func TestAPartitionedGatewayHealsToOneHolder(t *testing.T) {
	c := cluster(t)
	client, gateway := selectedClient(t, c, "pt")
	egress := "198.51.100.101"
	standby := standbyOf(t, c, egress)
	t.Cleanup(func() {
		if err := c.SetUnderlay(gateway, true); err != nil {
			t.Error(err)
		}
	})
	dropsBefore := nodeDrops(t, c)
	s := measureAcross(t, c, client, c.Backends()[0].URL(), 30*time.Second, func() {
		if err := c.SetUnderlay(gateway, false); err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(20 * time.Second)
			if err := c.SetUnderlay(gateway, true); err != nil {
				t.Error(err)
			}
		}()
	})
	judge(t, c, s, dropsBefore)
	for range 20 { // a second of samples: exactly one holder, and it stays so
		if h := holdersOf(t, c, egress); len(h) != 1 {
			t.Fatalf("after the heal %s is held by %v; want exactly one node", egress, h)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h := holdersOf(t, c, egress); h[0] != standby {
		t.Logf("after the heal %s is on %s (the standby was %s)", egress, h[0], standby)
	}
	reachAs(t, c, client, egress)
}

// reachAs fails t unless pod reaches backend 1 as egress.
func reachAs(t *testing.T, c Cluster, pod *corev1.Pod, egress string) {
	t.Helper()
	out, err := execIn(context.Background(), c, pod.Namespace, pod.Name, "/labbox", "get", "-timeout", "3s", c.Backends()[0].URL())
	if err != nil || netip.MustParseAddr(egress).String() != strings.TrimSpace(out) {
		t.Errorf("the pod reached backend 1 as %q, %v; want %s", out, err, egress)
	}
}

// TestDrainingAGatewayMovesItsIPsWithoutLoss cordons the gateway holding
// the egress IP, as kubectl drain does first: the controller moves the IP
// to its standby at the next epoch with reason Drained; established
// connections go on, the firewall sees only the egress IP, and new
// connections keep working, none failing.
func TestDrainingAGatewayMovesItsIPsWithoutLoss(t *testing.T) {
	plannedMove(t, "dr", "Drained", []string{"cordon", "%s"}, undoWith("uncordon", "%s"))
}

// TestRelabellingAGatewayOutOfItsGroupMovesItsIPsWithoutLoss takes the
// gateway label off the node holding the egress IP: the controller moves
// the IP to its standby (reason NotInGroup), as with a cordon.
func TestRelabellingAGatewayOutOfItsGroupMovesItsIPsWithoutLoss(t *testing.T) {
	plannedMove(t, "rl", "NotInGroup", []string{"label", "node", "%s", "nsegress.io/gateway-"},
		undoWith("label", "node", "%s", "nsegress.io/gateway=true", "--overwrite"))
}

// TestDeletingAGatewayNodeMovesItsIPsWithoutLoss deletes the Node of the
// gateway holding the egress IP (its machine and agent still run, as
// after a mistaken kubectl delete node, or before a decommission): the
// controller moves the IP to its standby (reason NodeDeleted), as with a
// cordon. The node then rejoins: its kubelet registers it again.
func TestDeletingAGatewayNodeMovesItsIPsWithoutLoss(t *testing.T) {
	plannedMove(t, "nd", "NodeDeleted", []string{"delete", "node", "%s"}, func(c Cluster, gateway string) error {
		return c.RejoinNode(context.Background(), gateway)
	})
}

// undoWith is a plannedMove undo that runs kubectl args, with %s the
// gateway.
func undoWith(args ...string) func(Cluster, string) error {
	return func(c Cluster, gateway string) error {
		_, err := kubectl(context.Background(), c, "", withGateway(args, gateway)...)
		return err
	}
}

// withGateway is args with every %s replaced by gateway.
func withGateway(args []string, gateway string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if a == "%s" {
			out[i] = gateway
		}
	}
	return out
}

// plannedMove runs kubectl move (with %s the gateway holding the egress
// IP of a selected client in namespace ns) while the client streams, and
// undo when the test ends: the IP must move to its standby alone, for
// reason why, with nothing lost: judge's checks, and not one failed new
// connection.
func plannedMove(t *testing.T, ns, why string, move []string, undo func(c Cluster, gateway string) error) {
	c := cluster(t)
	ctx := context.Background()
	client, gateway := selectedClient(t, c, ns)
	egress := "198.51.100.101"
	standby := standbyOf(t, c, egress)
	on := func(args []string) []string { return withGateway(args, gateway) }
	t.Cleanup(func() {
		if err := undo(c, gateway); err != nil {
			t.Errorf("undo the move: %v", err)
		}
	})
	dropsBefore := nodeDrops(t, c)
	s := measureAcross(t, c, client, c.Backends()[0].URL(), 12*time.Second, func() {
		if out, err := kubectl(ctx, c, "", on(move)...); err != nil {
			t.Fatalf("kubectl %v: %v\n%s", on(move), err, out)
		}
		privtest.Eventually(t, 10*time.Second, standby+" alone holds "+egress, func() (bool, error) {
			h := holdersOf(t, c, egress)
			return len(h) == 1 && h[0] == standby, nil
		})
	})
	judge(t, c, s, dropsBefore)
	if s.fresh.failed != 0 {
		t.Errorf("%d new connections failed during the planned move (longest gap %d ms); want none", s.fresh.failed, s.fresh.gapMS)
	}
	if got := assignment(t, c, egress, "reason")[0]; got != why {
		t.Errorf("the move's reason is %q; want %s", got, why)
	}
}

// assignment is fields of the onprem group's status.assignments entry
// for a floating IP ("" for a field not set).
func assignment(t testing.TB, c Cluster, ip string, fields ...string) []string {
	t.Helper()
	key := strings.ReplaceAll(ip, ".", `\.`)
	var path []string
	for _, f := range fields {
		path = append(path, fmt.Sprintf(`[{.status.assignments.%s.%s}]`, key, f))
	}
	out, err := kubectl(context.Background(), c, "", "-n", "nsegress-system", "get", "networkgatewaygroup", "onprem",
		"-o", "jsonpath="+strings.Join(path, " "))
	if err != nil {
		t.Fatalf("the assignment of %s: %v\n%s", ip, err, out)
	}
	got := make([]string, len(fields))
	for i, f := range strings.Fields(out) {
		if i < len(got) {
			got[i] = strings.Trim(f, "[]")
		}
	}
	return got
}

// TestRollingTheAgentsMovesNoIP rolls the agent DaemonSet while the pod
// streams: an agent that restarts leaves its node's datapath forwarding,
// so no IP moves (same holder, same epoch), and nothing is lost.
func TestRollingTheAgentsMovesNoIP(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	client, gateway := selectedClient(t, c, "ro")
	egress := "198.51.100.101"
	standbyOf(t, c, egress)
	epoch := func() string { return assignment(t, c, egress, "epoch")[0] }
	before := epoch()
	dropsBefore := nodeDrops(t, c)
	s := measureAcross(t, c, client, c.Backends()[0].URL(), 60*time.Second, func() {
		if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "rollout", "restart", "daemonset/nsegress-agent"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "rollout", "status", "daemonset/nsegress-agent", "--timeout=180s"); err != nil {
			t.Fatalf("the agents did not come back: %v\n%s", err, out)
		}
	})
	judge(t, c, s, dropsBefore)
	if s.fresh.failed != 0 {
		t.Errorf("%d new connections failed while the agents rolled; want none", s.fresh.failed)
	}
	if h := holdersOf(t, c, egress); len(h) != 1 || h[0] != gateway {
		t.Errorf("after the roll %s is held by %v; want %s alone, as before", egress, h, gateway)
	}
	if after := epoch(); after != before {
		t.Errorf("the epoch of %s went from %s to %s: the roll moved it", egress, before, after)
	}
}
