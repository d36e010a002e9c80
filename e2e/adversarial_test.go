package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nsegress/nsegress/agent/datapath"
	"github.com/nsegress/nsegress/e2e/lab"
)

// nothingArrivedWait is how long a test waits before it concludes that
// nothing arrived: a packet that got through reaches a backend of the lab
// in milliseconds.
const nothingArrivedWait = 1500 * time.Millisecond

// advPolicy is what an attacker needs to know of a seed policy to forge
// its tunnel traffic, and what the test needs to judge the result.
type advPolicy struct {
	name     string
	vni      uint32
	egressIP netip.Addr
	gateway  string      // the node holding the egress IP
	backend  lab.Backend // the one backend the firewall lets the egress IP reach
	client   advPod      // a pod the policy selects, in front of backend
}

// advPod is a running pod of the adversarial suite.
type advPod struct {
	ns, name string
	ip       netip.Addr
}

// adversaryEnv is the seed's policies installed in the lab, with one
// selected client per policy and the attackers' pods.
type adversaryEnv struct {
	c        Cluster
	policies []advPolicy
	gateways []NodeInfo
	// run makes every test run's markers unique, so that counts of an
	// earlier run on the same backends never mix in.
	run string
}

// newAdversaryEnv installs nsegress and the seed's group and policies,
// and starts one selected client per policy plus the pods extra lists.
// Namespaces are the seed's teams prefixed with "adv-", so that they never
// collide with the seed test's while those are being deleted.
func newAdversaryEnv(t *testing.T, extra ...*corev1.Pod) (*adversaryEnv, map[string]advPod) {
	t.Helper()
	c := cluster(t)
	ctx := context.Background()
	cs := clientset(t, c)
	loadAgentImage(t, c)
	installNsegress(t, c)
	namespaces := []string{"adv-plain"}
	for _, team := range seedTeams {
		namespaces = append(namespaces, "adv-"+team)
	}
	t.Cleanup(func() {
		// Pods go while the agents still run, so that their DEL finds
		// the plugin; then the policies; then nsegress.
		deleteAll(t, cs, namespaces)
		_, _ = kubectl(context.Background(), c, "", "delete", "-f", seedManifests, "--ignore-not-found")
		uninstallNsegress(t, c)
	})
	for _, ns := range namespaces {
		testNamespace(t, cs, ns, map[string]string{"team": strings.TrimPrefix(ns, "adv-")})
	}
	if out, err := kubectl(ctx, c, "", "apply", "-f", seedManifests); err != nil {
		t.Fatalf("apply the seed's policies: %v\n%s", err, out)
	}
	waitPoliciesReady(t, c, seedTeams...)

	workers, gateways := nodesByRole(c)
	if len(workers) < 2 || len(gateways) < 2 {
		t.Fatalf("the adversarial tests need 2 workers and 2 gateways, the lab has %d and %d", len(workers), len(gateways))
	}
	var pods []*corev1.Pod
	for i, team := range seedTeams {
		p := echoPod("adv-"+team, "client", workers[i%len(workers)].Name)
		p.Labels["egress"] = "onprem" // purple selects only these
		pods = append(pods, p)
	}
	pods = append(pods, extra...)
	running := runPods(t, cs, pods...)
	byName := map[string]advPod{}
	for _, p := range running {
		byName[p.Namespace+"/"+p.Name] = advPod{ns: p.Namespace, name: p.Name, ip: netip.MustParseAddr(p.Status.PodIP)}
	}

	env := &adversaryEnv{c: c, gateways: gateways, run: strconv.FormatInt(time.Now().UnixNano()%1e9, 36)}
	backends := c.Backends()
	for i, team := range seedTeams {
		out, err := kubectl(ctx, c, "", "get", "egressnatpolicy", team, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var pol struct {
			Metadata struct {
				UID string `json:"uid"`
			} `json:"metadata"`
			Status struct {
				EgressIP    string `json:"egressIP"`
				GatewayNode string `json:"gatewayNode"`
				TunnelID    int32  `json:"tunnelID"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &pol); err != nil {
			t.Fatalf("parse policy %s: %v", team, err)
		}
		if pol.Status.TunnelID == 0 || pol.Status.GatewayNode == "" {
			t.Fatalf("policy %s is Ready without a tunnel ID or gateway node: %+v", team, pol.Status)
		}
		// The VNI every node's device of the policy carries
		// (docs/design.md §2): an attacker can compute it as well.
		tun := datapath.Tunnel{ID: uint16(pol.Status.TunnelID), Generation: datapath.TunnelGeneration(pol.Metadata.UID)}
		env.policies = append(env.policies, advPolicy{
			name:     team,
			vni:      tun.VNI(),
			egressIP: netip.MustParseAddr(pol.Status.EgressIP),
			gateway:  pol.Status.GatewayNode,
			backend:  backends[i],
			client:   byName["adv-"+team+"/client"],
		})
	}
	return env, byName
}

// hostNetworkPod is a pod in the node's network namespace that runs as
// uid, doing nothing until the test execs into it.
func hostNetworkPod(ns, name, node string, uid int64) *corev1.Pod {
	p := echoPod(ns, name, node)
	p.Spec.HostNetwork = true
	p.Spec.Containers[0].Command = []string{"/labbox", "sleep"}
	p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid}
	return p
}

// marker names what one attacker sent, unique to this run.
func (e *adversaryEnv) marker(parts ...string) string {
	return strings.Join(append([]string{"adv", e.run}, parts...), "-")
}

// counted asks each policy's backend, through the policy's own selected
// client (the only path the firewall opens to it), how many packets it
// received with a marker starting with prefix.
func (e *adversaryEnv) counted(t *testing.T, prefix string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, p := range e.policies {
		s, err := execIn(context.Background(), e.c, p.client.ns, p.client.name, "/labbox", "get", "-timeout", "3s",
			p.backend.URL()+"markers?prefix="+prefix)
		if err != nil {
			t.Fatalf("ask %s for its marker count: %v", p.backend.Name, err)
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("%s answered %q to a marker count", p.backend.Name, s)
		}
		out[p.backend.Name] = n
	}
	return out
}

// watched are the sources whose firewall drops tell that forged traffic
// was decapsulated: the egress IPs (SNATed) and the selected pods'
// addresses (forwarded with the forged inner source).
func (e *adversaryEnv) watched() []netip.Addr {
	var out []netip.Addr
	for _, p := range e.policies {
		out = append(out, p.egressIP, p.client.ip)
	}
	return out
}

// expectNothingSeen checks, after the wait for stragglers, that no
// backend counted a packet with prefix and that the firewall dropped
// nothing more from the watched sources than before.
func (e *adversaryEnv) expectNothingSeen(t *testing.T, prefix string, before map[netip.Addr]uint64) {
	t.Helper()
	for _, s := range e.seen(t, prefix, before) {
		t.Error(s)
	}
}

// seen waits for stragglers and then says what the backends counted of
// prefix, and what the firewall dropped from the watched sources since
// before.
func (e *adversaryEnv) seen(t *testing.T, prefix string, before map[netip.Addr]uint64) []string {
	t.Helper()
	time.Sleep(nothingArrivedWait)
	var out []string
	for b, n := range e.counted(t, prefix) {
		if n != 0 {
			out = append(out, fmt.Sprintf("%s received %d packets marked %s*: they left with an egress IP", b, n, prefix))
		}
	}
	after, err := e.c.FirewallDrops(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range e.watched() {
		if after[a] != before[a] {
			out = append(out, fmt.Sprintf("the firewall dropped %d packets from %s: traffic that must not exist reached it", after[a]-before[a], a))
		}
	}
	return out
}

// execer runs labbox somewhere: in a pod, or on a lab host.
type execer struct {
	name string
	run  func(ctx context.Context, argv ...string) (string, error)
}

// inPod runs labbox in a pod.
func (e *adversaryEnv) inPod(p advPod) execer {
	return execer{name: p.ns + "/" + p.name, run: func(ctx context.Context, argv ...string) (string, error) {
		return execIn(ctx, e.c, p.ns, p.name, append([]string{"/labbox"}, argv...)...)
	}}
}

// onHost runs labbox on a lab host outside the cluster.
func (e *adversaryEnv) onHost(host string) execer {
	return execer{name: host, run: func(ctx context.Context, argv ...string) (string, error) {
		return e.c.HostExec(ctx, host, append([]string{"labbox"}, argv...)...)
	}}
}

// forgeAll makes from send, to every gateway, forged tunnel traffic for
// every policy: the policy's VNI, the inner source one of its selected
// pods, to the one backend its egress IP may reach, inner UDP and TCP. It
// returns labbox forge's reports, one per gateway and policy.
func (e *adversaryEnv) forgeAll(t *testing.T, from execer, prefix string) []string {
	t.Helper()
	var mu sync.Mutex
	var reports []string
	var wg sync.WaitGroup
	for _, gw := range e.gateways {
		for _, p := range e.policies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := from.run(context.Background(), "forge",
					"-gateway", gw.IP.String(), "-vni", strconv.FormatUint(uint64(p.vni), 10), "-proto", "udp,tcp",
					"-inner-src", p.client.ip.String(), "-dst", netip.AddrPortFrom(p.backend.IP, uint16(p.backend.Port)).String(),
					"-marker", prefix+"-"+gw.Name+"-"+p.name, "-count", "5")
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("forge from %s to %s for %s: %v", from.name, gw.Name, p.name, err)
					return
				}
				reports = append(reports, fmt.Sprintf("to %s for %s (VNI %d): %s", gw.Name, p.name, p.vni, strings.ReplaceAll(out, "\n", "; ")))
			}()
		}
	}
	wg.Wait()
	return reports
}

// TestNothingShortOfRootOnANodeSendsWithAnEgressIP sends VXLAN datagrams
// that carry frames for the policies' tunnel devices to both gateways,
// from everything short of root on a node (README, Security: forged
// tunnel traffic), and judges by what the backends and the firewall saw.
// Then a process that is not root on a gateway tries the egress IP itself.
// A root process on a node, which nsegress trusts, forges the same way
// first: that its packets arrive proves the forgeries are well-made, the
// VNIs right and the backends' counters working, so that "nothing
// arrived" afterwards means something.
func TestNothingShortOfRootOnANodeSendsWithAnEgressIP(t *testing.T) {
	workers, gateways := nodesByRole(cluster(t))
	if len(workers) < 2 || len(gateways) < 2 {
		t.Fatalf("the adversarial tests need 2 workers and 2 gateways, the lab has %d and %d", len(workers), len(gateways))
	}
	extra := []*corev1.Pod{
		echoPod("adv-plain", "unselected", workers[0].Name),
		echoPod("adv-plain", "unselected-2", workers[1].Name),
		hostNetworkPod("adv-plain", "root-on-worker", workers[1].Name, 0),
		hostNetworkPod("adv-plain", "nobody-on-worker", workers[1].Name, 65534),
		echoPod("adv-plain", "unselected-on-gw", gateways[0].Name),
	}
	for _, g := range gateways {
		extra = append(extra, hostNetworkPod("adv-plain", "nobody-on-"+g.Name, g.Name, 65534))
	}
	env, pods := newAdversaryEnv(t, extra...)
	ctx := context.Background()

	t.Run("a selected pod's marker reaches its backend through the egress path", func(t *testing.T) {
		// The control of the counters: the same TCP port, firewall rule
		// and SNAT that a forged SYN would need.
		for _, p := range env.policies {
			m := env.marker("control", p.name)
			if out, err := execIn(ctx, env.c, p.client.ns, p.client.name, "/labbox", "send-marker",
				"-dst", netip.AddrPortFrom(p.backend.IP, uint16(p.backend.Port)).String(), "-marker", m); err != nil {
				t.Errorf("%s: send-marker: %v %s", p.name, err, out)
			}
			if n := env.counted(t, m)[p.backend.Name]; n < 1 {
				t.Errorf("%s counted %d packets of %s's marker, want at least 1", p.backend.Name, n, p.name)
			}
		}
	})

	t.Run("a pod forging a selected pod's address on their node (ptp and bridge) gets nothing through", func(t *testing.T) {
		cs := clientset(t, env.c)
		before, err := env.c.FirewallDrops(ctx)
		if err != nil {
			t.Fatal(err)
		}
		prefix := env.marker("spoof")
		for _, p := range env.policies {
			client, err := cs.CoreV1().Pods(p.client.ns).Get(ctx, p.client.name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// A pod no policy selects, on the same node as the
			// policy's client: on a ptp node its packets arrive on its
			// own veth, on a bridge node on the bridge they share.
			forger := pods["adv-plain/unselected"]
			if client.Spec.NodeName == workers[1].Name {
				forger = pods["adv-plain/unselected-2"]
			}
			for _, proto := range []string{"tcp", "udp"} {
				if out, err := execIn(ctx, env.c, forger.ns, forger.name, "/labbox", "send-marker", "-spoof", "-proto", proto,
					"-src", p.client.ip.String(), "-dst", netip.AddrPortFrom(p.backend.IP, uint16(p.backend.Port)).String(),
					"-marker", prefix+"-"+p.name+"-"+proto); err != nil {
					t.Errorf("%s forging %s's address: %v %s", forger.name, p.client.name, err, out)
				}
			}
		}
		time.Sleep(nothingArrivedWait)
		env.expectNothingSeen(t, prefix, before)
	})

	// Root on workers[1] forges for every policy with the address of a
	// pod of its own node as inner source: the trust boundary. Then with
	// the address of a pod of another node, which the gateways' source
	// check (the sending node's pod range) must drop.
	root := pods["adv-plain/root-on-worker"]
	rootForge := func(t *testing.T, p advPolicy, innerSrc netip.Addr, m string) {
		t.Helper()
		var gw NodeInfo
		for _, g := range env.gateways {
			if g.Name == p.gateway {
				gw = g
			}
		}
		out, err := execIn(ctx, env.c, root.ns, root.name, "/labbox", "forge", "-gateway", gw.IP.String(),
			"-vni", strconv.FormatUint(uint64(p.vni), 10), "-proto", "tcp", "-inner-src", innerSrc.String(),
			"-dst", netip.AddrPortFrom(p.backend.IP, uint16(p.backend.Port)).String(), "-marker", m, "-count", "3")
		if err != nil {
			t.Fatalf("forge as root: %v", err)
		}
		t.Logf("root on %s -> %s for %s from %s: %s", workers[1].Name, gw.Name, p.name, innerSrc, out)
	}
	t.Run("root on a node can forge tunnel traffic from its own pods' range, the trust boundary the README draws", func(t *testing.T) {
		own := pods["adv-plain/unselected-2"].ip // a pod of workers[1]
		for _, p := range env.policies {
			m := env.marker("root", p.name)
			rootForge(t, p, own, m)
			eventuallyCounted(t, env, p, m)
		}
	})
	t.Run("root on a node cannot tunnel another node's pod's address", func(t *testing.T) {
		before, err := env.c.FirewallDrops(ctx)
		if err != nil {
			t.Fatal(err)
		}
		other := pods["adv-plain/unselected"] // a pod of workers[0]
		prefix := env.marker("root-other")
		for _, p := range env.policies {
			rootForge(t, p, other.ip, prefix+"-"+p.name)
		}
		env.expectNothingSeen(t, prefix, before)
	})

	senders := []struct {
		name string
		from execer
	}{
		{"a pod no policy selects", env.inPod(pods["adv-plain/unselected"])},
		{"a pod of another policy (darkblue) forging every policy's VNI", env.inPod(pods["adv-darkblue/client"])},
		{"a pod on a gateway node", env.inPod(pods["adv-plain/unselected-on-gw"])},
		{"a hostNetwork process that is not root, on a worker", env.inPod(pods["adv-plain/nobody-on-worker"])},
		{"a host outside the cluster, on the node network", env.onHost("firewall")},
	}
	for i, s := range senders {
		t.Run(s.name+" gets nothing through either gateway", func(t *testing.T) {
			before, err := env.c.FirewallDrops(ctx)
			if err != nil {
				t.Fatal(err)
			}
			prefix := env.marker("forged", strconv.Itoa(i))
			for _, r := range env.forgeAll(t, s.from, prefix) {
				t.Logf("%s: %s", s.from.name, r)
				// The output chain drops a non-root socket's datagrams
				// to the tunnel port, which the sender sees as refused.
				if strings.HasSuffix(s.from.name, "nobody-on-worker") && strings.Count(r, "sent 0,") != 2 {
					t.Errorf("the kernel let a non-root process send to the tunnel port: %s", r)
				}
			}
			env.expectNothingSeen(t, prefix, before)
		})
	}

	t.Run("an on-prem client inside a policy's destinations that connects in to a selected pod gets answers from the pod's address", func(t *testing.T) {
		before, err := env.c.FirewallDrops(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range env.policies {
			url := "http://" + netip.AddrPortFrom(p.client.ip, lab.PodEchoPort).String() + "/"
			out, err := env.c.HostExec(ctx, p.backend.Name, "labbox", "get", "-timeout", "5s", url)
			if err != nil {
				t.Errorf("%s connecting in to %s's pod %s: %v (its replies were steered)", p.backend.Name, p.name, p.client.ip, err)
				continue
			}
			if got := strings.TrimSpace(out); got != p.backend.IP.String() {
				t.Errorf("%s's pod answered %q, want the caller %s", p.name, got, p.backend.IP)
			}
		}
		env.expectNothingSeen(t, env.marker("inbound"), before)
	})

	// A process that is not root on a gateway binds the purple policy's
	// egress IP and sends the marker to backend 1, the one the firewall
	// lets that IP reach, over TCP and UDP.
	purple := env.policies[0]
	sendFromEgressIP := func(t *testing.T, g NodeInfo, prefix string) []error {
		from := pods["adv-plain/nobody-on-"+g.Name]
		var errs []error
		for _, proto := range []string{"tcp", "udp"} {
			out, err := execIn(ctx, env.c, from.ns, from.name, "/labbox", "send-marker", "-proto", proto, "-timeout", "2s",
				"-src", purple.egressIP.String(), "-dst", netip.AddrPortFrom(purple.backend.IP, uint16(purple.backend.Port)).String(),
				"-marker", prefix+"-"+proto)
			t.Logf("uid 65534 on %s (holds %s: %v), %s: %v %s", g.Name, purple.egressIP, g.Name == purple.gateway, proto, err, out)
			errs = append(errs, err)
		}
		return errs
	}
	gatewayNamed := func(t *testing.T, holder bool) NodeInfo {
		for _, g := range gateways {
			if (g.Name == purple.gateway) == holder {
				return g
			}
		}
		t.Fatalf("no gateway with holder=%v for %s", holder, purple.egressIP)
		return NodeInfo{}
	}

	t.Run("a process that is not root on the other gateway cannot even bind the egress IP", func(t *testing.T) {
		before, err := env.c.FirewallDrops(ctx)
		if err != nil {
			t.Fatal(err)
		}
		prefix := env.marker("floating-other")
		for _, err := range sendFromEgressIP(t, gatewayNamed(t, false), prefix) {
			if err == nil || !strings.Contains(err.Error(), "cannot assign requested address") {
				t.Errorf("binding the egress IP on the gateway that does not hold it: %v, want EADDRNOTAVAIL", err)
			}
		}
		env.expectNothingSeen(t, prefix, before)
	})

	t.Run("a process that is not root on the gateway holding the egress IP sends nothing from it", func(t *testing.T) {
		before, err := env.c.FirewallDrops(ctx)
		if err != nil {
			t.Fatal(err)
		}
		prefix := env.marker("floating-holder")
		sendFromEgressIP(t, gatewayNamed(t, true), prefix)
		seen := env.seen(t, prefix, before)
		for _, s := range seen {
			t.Error(s)
		}
	})

}

// eventuallyCounted waits until p's backend counted marker m.
func eventuallyCounted(t *testing.T, env *adversaryEnv, p advPolicy, m string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := env.counted(t, m)[p.backend.Name]
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s counted none of root's forged packets for %s: the forgery or the counter is broken", p.backend.Name, p.name)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}
