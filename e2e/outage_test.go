package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsegress/nsegress/e2e/privtest"
)

// outageFor is how long TestAnAPIServerOutageChangesNothing keeps the API
// server down: ten minutes, or NSEGRESS_OUTAGE (a Go duration) for a
// quicker run while working on it.
func outageFor(t *testing.T) time.Duration {
	t.Helper()
	s := os.Getenv("NSEGRESS_OUTAGE")
	if s == "" {
		return 10 * time.Minute
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("NSEGRESS_OUTAGE=%q: want a positive Go duration like 90s", s)
	}
	return d
}

// datapathOf is what a node's kernel holds for nsegress and its pods, as
// text that changes only when something is reprogrammed: nsegress's nft
// table without counters, the IPv4 policy rules, every IPv4 route of every
// table (floating IPs included, as local routes), the addresses, and the
// VXLAN devices.
func datapathOf(ctx context.Context, t *testing.T, c Cluster, node string) string {
	t.Helper()
	var b strings.Builder
	for _, argv := range [][]string{
		{"nft", "-s", "list", "table", "ip", "nsegress"},
		{"ip", "-4", "rule", "show"},
		{"ip", "-4", "route", "show", "table", "all"},
		{"ip", "-4", "-o", "addr", "show"},
		{"ip", "-o", "-d", "link", "show", "type", "vxlan"},
	} {
		out, err := c.NodeExec(ctx, node, argv...)
		if err != nil {
			t.Fatalf("%s: %v", node, err)
		}
		fmt.Fprintf(&b, "# %s\n%s\n", strings.Join(argv, " "), out)
	}
	return b.String()
}

// datapaths is datapathOf for every node.
func datapaths(ctx context.Context, t *testing.T, c Cluster) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range c.Nodes() {
		out[n.Name] = datapathOf(ctx, t, c, n.Name)
	}
	return out
}

// sameDatapaths fails t with the differing lines of each node whose
// datapath differs from before.
func sameDatapaths(t *testing.T, when string, before, now map[string]string) {
	t.Helper()
	for node, was := range before {
		if now[node] == was {
			continue
		}
		wasLines, nowLines := strings.Split(was, "\n"), strings.Split(now[node], "\n")
		var diff []string
		for _, l := range wasLines {
			if !slices.Contains(nowLines, l) {
				diff = append(diff, "- "+l)
			}
		}
		for _, l := range nowLines {
			if !slices.Contains(wasLines, l) {
				diff = append(diff, "+ "+l)
			}
		}
		t.Errorf("%s, %s's datapath changed:\n%s", when, node, strings.Join(diff, "\n"))
	}
}

// TestAnAPIServerOutageChangesNothing takes the API server down for ten
// minutes while a selected pod holds one connection to its backend and
// opens a new one every second (both run in the pod's network namespace
// from its node: kubectl exec would need the API server). The agents,
// the controller, the kubelets and the rest of the control plane see the
// outage as in a real cluster. No node's nft table, rules, routes,
// addresses or tunnels change, during the outage or after the API server
// is back; the held connection keeps flowing and every new connection
// succeeds, with the egress IP only; and a pod started after the outage
// is steered.
func TestAnAPIServerOutageChangesNothing(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	client, gateway := selectedClient(t, c, "outage")
	node := client.Spec.NodeName
	podIP := netip.MustParseAddr(client.Status.PodIP)
	url := c.Backends()[0].URL()
	outage := outageFor(t)
	t.Logf("client %s on %s, gateway %s, outage %s", client.Status.PodIP, node, gateway, outage)

	// Settled: a floating IP that moved moments ago still has rules of
	// its handover (ha.DrainFor, 2 s).
	var before map[string]string
	privtest.Eventually(t, 60*time.Second, "the nodes' datapaths settled", func() (bool, error) {
		first := datapaths(ctx, t, c)
		time.Sleep(3 * time.Second)
		before = datapaths(ctx, t, c)
		return maps.Equal(first, before), nil
	})
	dropsBefore := nodeDrops(t, c)
	// The streams start before the outage and end about half a minute
	// after the API server is back (it serves again a few seconds after
	// its start).
	const lead, tail = 5 * time.Second, 30 * time.Second
	length := (lead + outage + tail).String()
	var wg sync.WaitGroup
	var held, fresh string
	var heldErr, freshErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		held, heldErr = c.PodExec(ctx, node, podIP, "labbox", "stream",
			"-interval", "100ms", "-duration", length, "-timeout", "1s", url)
	}()
	go func() {
		defer wg.Done()
		fresh, freshErr = c.PodExec(ctx, node, podIP, "labbox", "stream", "-fresh",
			"-interval", "1s", "-duration", length, "-timeout", "1s", url)
	}()
	time.Sleep(lead)
	if err := c.SetAPIServer(ctx, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.SetAPIServer(context.Background(), true); err != nil {
			t.Errorf("bring the API server back: %v", err)
		}
	})
	down := time.Now()
	time.Sleep(outage / 2)
	sameDatapaths(t, "halfway through the outage", before, datapaths(ctx, t, c))
	time.Sleep(outage - time.Since(down))
	sameDatapaths(t, "at the end of the outage", before, datapaths(ctx, t, c))
	if err := c.SetAPIServer(ctx, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("the API server serves again %s after the outage ended", (time.Since(down) - outage).Round(time.Millisecond))
	wg.Wait()
	if heldErr != nil || freshErr != nil {
		t.Fatalf("streams: %v; %v", heldErr, freshErr)
	}
	sameDatapaths(t, "after the API server came back", before, datapaths(ctx, t, c))

	h, f := parseSummary(t, held), parseSummary(t, fresh)
	t.Logf("held connection: %s", strings.TrimSpace(held))
	t.Logf("new connections: %s", strings.TrimSpace(fresh))
	if h.conns != 1 || h.failed != 0 || h.gapMS >= 1000 {
		t.Errorf("the held connection saw %d connections, %d failed requests, a longest gap of %d ms; want 1, 0 and under a second",
			h.conns, h.failed, h.gapMS)
	}
	if f.failed != 0 || f.requests < int(outage/time.Second) {
		t.Errorf("new connections: %d of %d failed; want none of at least %d", f.failed, f.requests, int(outage/time.Second))
	}
	if d := nodeDrops(t, c) - dropsBefore; d != 0 {
		t.Errorf("the firewall dropped %d packets from node addresses: egress left without its egress IP", d)
	}

	// The cluster goes on: a pod started now is steered.
	workers, _ := nodesByRole(c)
	late := runPods(t, clientset(t, c), echoPod("outage", "late", workers[0].Name))[0]
	reachAs(t, c, late, "198.51.100.101")
}
