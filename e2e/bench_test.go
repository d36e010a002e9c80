package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nsegress/nsegress/agent/datapath"
	agentnode "github.com/nsegress/nsegress/agent/node"
	"github.com/nsegress/nsegress/e2e/cnitier"
	"github.com/nsegress/nsegress/e2e/lab"
	"github.com/nsegress/nsegress/e2e/privtest"
	"github.com/nsegress/nsegress/nft"
)

// The benchmarks of issue 4 (make bench; BENCHMARKS.md holds the
// figures). Each measures nsegress against a baseline in the same run and
// reports the ratio. They are benchmarks, not tests: nothing here fails on
// a slow machine.

// stats are the median and 99th percentile of a series.
func stats(d []time.Duration) (median, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2], s[min(len(s)-1, len(s)*99/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func applyManifest(b testing.TB, c Cluster, manifest string) {
	b.Helper()
	if out, err := kubectl(context.Background(), c, manifest, "apply", "-f", "-"); err != nil {
		b.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	b.Cleanup(func() { _, _ = kubectl(context.Background(), c, manifest, "delete", "-f", "-", "--ignore-not-found") })
}

// syntheticPods are n pod elements of policy id, as if n pods ran on the
// node.
func syntheticPods(n int, id uint16) map[nft.PodKey]uint16 {
	out := make(map[nft.PodKey]uint16, n)
	for i := 0; i < n; i++ {
		ip := netip.AddrFrom4([4]byte{10, 66, byte(i >> 8), byte(i)})
		out[nft.PodKey{IP: ip, HostIf: fmt.Sprintf("bench%d", i)}] = id
	}
	return out
}

// chainLoopback returns conflist with the loopback plugin chained after
// the primary: a Go plugin that passes prevResult through and does almost
// nothing, so that what any chained plugin costs to start (exec, runtime
// start, libcni's marshalling) can be told from what nsegress itself
// costs.
func chainLoopback(b testing.TB, conflist []byte) []byte {
	b.Helper()
	var doc map[string]any
	if err := json.Unmarshal(conflist, &doc); err != nil {
		b.Fatal(err)
	}
	doc["plugins"] = append(doc["plugins"].([]any), map[string]any{"type": "loopback"})
	out, err := json.Marshal(doc)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkCNIChain is the libcni tier: ADD and DEL of the node's chain
// ptp + host-local + nsegress against ptp + host-local alone (and with a
// no-op chained plugin, to separate the cost of starting any plugin), for
// a pod a policy selects, with 10 and with 2,000 pods already programmed
// on the node. One iteration measures every chain at both scales; run
// with -benchtime=100x.
func BenchmarkCNIChain(b *testing.B) {
	c := cluster(b)
	l := c.(labCluster).lab
	node := l.Nodes()[0]
	ctx := context.Background()
	installPlugin(b, node)
	cs := clientset(b, c)
	const ns = "bench-cni"
	testNamespace(b, cs, ns, map[string]string{"team": ns})
	// No agent in this tier: the CRDs and the install namespace only.
	for _, args := range [][]string{{"-f", "../install/namespace.yaml"}, {"-k", "../install/crds"}} {
		if out, err := kubectl(ctx, c, "", append([]string{"apply"}, args...)...); err != nil {
			b.Fatalf("kubectl apply %s: %v\n%s", args, err, out)
		}
	}
	if out, err := kubectl(ctx, c, "", "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"); err != nil {
		b.Fatalf("CRDs not established: %v\n%s", err, out)
	}
	applyManifest(b, c, onePolicy(ns))
	// The tunnel ID the elected agent would give the policy: no agent
	// runs in this tier.
	if out, err := kubectl(ctx, c, "", "patch", "egressnatpolicy", ns, "--subresource=status", "--type=merge",
		"-p", `{"status":{"tunnelID":1}}`); err != nil {
		b.Fatalf("set the tunnel ID: %v\n%s", err, out)
	}

	fd, err := os.Open(node.NetNSPath())
	if err != nil {
		b.Fatal(err)
	}
	defer fd.Close()
	table, err := nft.Open(nft.WithNetNS(int(fd.Fd())))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = table.Delete(); table.Close() })
	state := nft.State{
		Policies: []nft.Policy{{ID: 1, Destinations: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
			Mode: nft.ModeTunnel, Device: datapath.DeviceName(1)}},
		MSS: datapath.MSS(datapath.DeviceMTU(1500)), TunnelPort: datapath.DefaultPort, Uplink: "eth0",
		TunnelPeers: []nft.TunnelPeer{{Addr: node.IP}}, DevicePrefix: datapath.DevicePrefix,
	}

	// The node's agent answers the plugin's lookups from its informers,
	// as in a cluster where nsegress is installed; only its socket runs
	// here, so that the 2,000 synthetic pods stay in the table.
	agentCtx, stopAgent := context.WithCancel(ctx)
	b.Cleanup(stopAgent)
	role := agentnode.New(agentnode.Config{Client: l.Client(), Dynamic: dynamicClient(b, c), NodeName: node.Name,
		StateDir: mustHostPath(b, node, "/var/lib/nsegress-cni-tier")})
	if err := role.Start(agentCtx); err != nil {
		b.Fatal(err)
	}
	go func() { _ = role.Serve(agentCtx) }()

	primary, err := os.ReadFile(mustHostPath(b, node, lab.CNIConfDir+"/10-lab.conflist"))
	if err != nil {
		b.Fatal(err)
	}
	chains := []struct {
		name string
		list []byte
	}{{"primary", nil}, {"noop", chainLoopback(b, primary)}, {"nsegress", chainNsegress(b, l, primary)}}
	type run struct {
		h   *cnitier.Harness
		pod *cnitier.Pod
	}
	runs := map[string]run{}
	for _, ch := range chains {
		h, err := cnitier.New(l, node, ch.list)
		if err != nil {
			b.Fatal(err)
		}
		pod, err := h.NewPod(ctx, ns, "bench-"+ch.name, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = h.Remove(context.Background(), pod) })
		runs[ch.name] = run{h, pod}
	}

	series := map[string][]time.Duration{}
	scales := []int{10, 2000}
	for b.Loop() {
		for _, n := range scales {
			state.Pods = syntheticPods(n, 1)
			if err := table.Apply(state); err != nil {
				b.Fatal(err)
			}
			for _, ch := range chains {
				r := runs[ch.name]
				t0 := time.Now()
				if _, err := r.h.Add(ctx, r.pod); err != nil {
					b.Fatalf("%s ADD: %v", ch.name, err)
				}
				t1 := time.Now()
				if err := r.h.Del(ctx, r.pod); err != nil {
					b.Fatalf("%s DEL: %v", ch.name, err)
				}
				t2 := time.Now()
				series[fmt.Sprintf("%s/add@%d", ch.name, n)] = append(series[fmt.Sprintf("%s/add@%d", ch.name, n)], t1.Sub(t0))
				series[fmt.Sprintf("%s/add+del@%d", ch.name, n)] = append(series[fmt.Sprintf("%s/add+del@%d", ch.name, n)], t2.Sub(t0))
			}
		}
	}

	var table2 strings.Builder
	fmt.Fprintf(&table2, "\n| chain | pods on node | ADD median | ADD p99 | ADD+DEL median | ADD+DEL p99 |\n|---|---|---|---|---|---|\n")
	for _, n := range scales {
		for _, ch := range chains {
			am, ap := stats(series[fmt.Sprintf("%s/add@%d", ch.name, n)])
			m, p := stats(series[fmt.Sprintf("%s/add+del@%d", ch.name, n)])
			b.ReportMetric(ms(am), fmt.Sprintf("ms-add-median-%s@%d", ch.name, n))
			b.ReportMetric(ms(m), fmt.Sprintf("ms-add+del-median-%s@%d", ch.name, n))
			b.ReportMetric(ms(p), fmt.Sprintf("ms-add+del-p99-%s@%d", ch.name, n))
			fmt.Fprintf(&table2, "| %s | %d | %.1f ms | %.1f ms | %.1f ms | %.1f ms |\n", ch.name, n, ms(am), ms(ap), ms(m), ms(p))
		}
		pa, _ := stats(series[fmt.Sprintf("primary/add@%d", n)])
		na, _ := stats(series[fmt.Sprintf("nsegress/add@%d", n)])
		oa, _ := stats(series[fmt.Sprintf("noop/add@%d", n)])
		b.ReportMetric(ms(na-pa), fmt.Sprintf("ms-added-to-median-add@%d", n))
		b.ReportMetric(ms(na-oa), fmt.Sprintf("ms-added-over-a-noop-plugin@%d", n))
		b.ReportMetric(float64(na)/float64(pa), fmt.Sprintf("ratio-add-nsegress/primary@%d", n))
	}
	m10, _ := stats(series["nsegress/add+del@10"])
	m2000, _ := stats(series["nsegress/add+del@2000"])
	b.ReportMetric(float64(m2000)/float64(m10), "ratio-median-2000/10")
	b.Logf("samples per cell: %d%s", len(series["primary/add@10"]), table2.String())
}

// BenchmarkPodStartup is pod create -> Running through the kubelet, with
// and without nsegress: first without it, then with nsegress installed
// and a policy selecting the pods' namespace. One iteration is the whole
// experiment; run with -benchtime=1x.
func BenchmarkPodStartup(b *testing.B) {
	c := cluster(b)
	cs := clientset(b, c)
	node := c.Nodes()[0].Name
	const rounds = 15
	measure := func(ns string) []time.Duration {
		var out []time.Duration
		for i := 0; i < rounds; i++ {
			out = append(out, startPod(b, cs, ns, fmt.Sprintf("start-%d", i), node))
		}
		return out
	}
	var without, with []time.Duration
	for b.Loop() {
		testNamespace(b, cs, "bench-start-plain", map[string]string{"team": "bench-start-plain"})
		without = measure("bench-start-plain")
		loadAgentImage(b, c)
		installNsegress(b, c)
		const ns = "bench-start"
		testNamespace(b, cs, ns, map[string]string{"team": ns})
		applyManifest(b, c, onePolicy(ns))
		waitPoliciesReady(b, c, ns)
		with = measure(ns)
		uninstallNsegress(b, c)
	}
	wm, wp := stats(without)
	nm, np := stats(with)
	b.ReportMetric(ms(wm), "ms-running-median-without")
	b.ReportMetric(ms(nm), "ms-running-median-with")
	b.ReportMetric(float64(nm)/float64(wm), "ratio-running-with/without")
	b.Logf("\n| | pods | create -> Running median | p99 |\n|---|---|---|---|\n| without nsegress | %d | %.0f ms | %.0f ms |\n| with nsegress, pod in a policy | %d | %.0f ms | %.0f ms |\n",
		len(without), ms(wm), ms(wp), len(with), ms(nm), ms(np))
}

// startPod creates a pod, waits until it runs, deletes it, and returns
// the time from create to Running as the client observed it.
func startPod(b testing.TB, cs kubernetes.Interface, ns, name, node string) time.Duration {
	ctx := context.Background()
	pod := echoPod(ns, name, node)
	pod.Spec.Containers[0].Command = []string{"/labbox", "sleep"}
	start := time.Now()
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	var took time.Duration
	privtest.Eventually(b, 90*time.Second, "pod "+ns+"/"+name+" Running", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			took = time.Since(start)
			return true, nil
		}
		return false, err
	})
	zero := int64(0)
	_ = cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	privtest.Eventually(b, 60*time.Second, "pod "+name+" gone", func() (bool, error) {
		_, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err != nil, nil
	})
	return took
}

// benchResult is labbox bench's output.
type benchResult struct {
	Mbps            float64 `json:"mbps"`
	RTTMedianMicros float64 `json:"rttMedianMicros"`
}

// BenchmarkEgressPath is throughput and round-trip time from a pod to a
// backend through the tunnel and the gateway's SNAT, against a pod on the
// same node reaching the same backend on the node's normal path (the
// firewall gets a hole for the node's IP in this benchmark only). One
// iteration measures both; run with -benchtime=5x.
func BenchmarkEgressPath(b *testing.B) {
	c := cluster(b)
	l := c.(labCluster).lab
	ctx := context.Background()
	cs := clientset(b, c)
	loadAgentImage(b, c)
	installNsegress(b, c)
	b.Cleanup(func() { uninstallNsegress(b, c) })
	const tunnel, direct = "bench-tunnel", "bench-direct"
	testNamespace(b, cs, tunnel, map[string]string{"team": tunnel})
	testNamespace(b, cs, direct, map[string]string{"team": direct})
	applyManifest(b, c, onePolicy(tunnel))
	waitPoliciesReady(b, c, tunnel)
	worker := c.Nodes()[0]
	backend := c.Backends()[0]
	if err := l.FirewallAllow(ctx, worker.IP, backend); err != nil {
		b.Fatal(err)
	}
	var pods []*corev1.Pod
	for _, ns := range []string{tunnel, direct} {
		p := echoPod(ns, "client", worker.Name)
		p.Spec.Containers[0].Command = []string{"/labbox", "sleep"}
		pods = append(pods, p)
	}
	runPods(b, cs, pods...)
	results := map[string][]benchResult{}
	for b.Loop() {
		for _, ns := range []string{tunnel, direct} {
			out, err := execIn(ctx, c, ns, "client", "/labbox", "bench", "-bytes", fmt.Sprint(256<<20), "-requests", "300", backend.URL())
			if err != nil {
				b.Fatalf("%s: %v\n%s", ns, err, out)
			}
			var r benchResult
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				b.Fatalf("%s: %q: %v", ns, out, err)
			}
			results[ns] = append(results[ns], r)
		}
	}
	med := func(rs []benchResult, f func(benchResult) float64) float64 {
		v := make([]float64, 0, len(rs))
		for _, r := range rs {
			v = append(v, f(r))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	mbps := func(r benchResult) float64 { return r.Mbps }
	rtt := func(r benchResult) float64 { return r.RTTMedianMicros }
	tm, dm := med(results[tunnel], mbps), med(results[direct], mbps)
	tr, dr := med(results[tunnel], rtt), med(results[direct], rtt)
	b.ReportMetric(tm, "Mbps-tunnel")
	b.ReportMetric(dm, "Mbps-direct")
	b.ReportMetric(tm/dm, "ratio-throughput-tunnel/direct")
	b.ReportMetric(tr, "us-rtt-tunnel")
	b.ReportMetric(dr, "us-rtt-direct")
	b.ReportMetric(tr/dr, "ratio-rtt-tunnel/direct")
	b.Logf("\n| path | runs | throughput (one TCP stream, median) | HTTP round trip (median) |\n|---|---|---|---|\n| pod -> tunnel -> gateway SNAT -> backend | %d | %.0f Mbit/s | %.0f µs |\n| pod -> node's normal path -> backend | %d | %.0f Mbit/s | %.0f µs |\n",
		len(results[tunnel]), tm, tr, len(results[direct]), dm, dr)
}

// dynamicClient is a dynamic client for the cluster, from its kubeconfig.
func dynamicClient(b testing.TB, c Cluster) dynamic.Interface {
	b.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		b.Fatal(err)
	}
	d, err := dynamic.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func mustHostPath(b testing.TB, n *lab.Node, p string) string {
	b.Helper()
	hp, err := n.HostPath(p)
	if err != nil {
		b.Fatal(err)
	}
	return hp
}
