package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nsegress/nsegress/e2e/lab"
	"github.com/nsegress/nsegress/e2e/privtest"
)

// seedManifests are the seed scenario's group and policies.
const seedManifests = "testdata/seed.yaml"

// seedTeams are the seed's namespaces, in backend order: team i reaches
// backend i only, as floating IP i.
var seedTeams = []string{"purple", "darkblue", "lightblue"}

// seedPod is one client pod of the scenario.
type seedPod struct {
	ns, name, node string
	labels         map[string]string
}

// execIn runs a command in a pod with kubectl exec.
func execIn(ctx context.Context, c Cluster, ns, pod string, argv ...string) (string, error) {
	args := append([]string{"exec", "-n", ns, pod, "--"}, argv...)
	out, err := kubectl(ctx, c, "", args...)
	return strings.TrimSpace(out), err
}

// waitPoliciesReady waits until every named policy reports Ready=True.
func waitPoliciesReady(t testing.TB, c Cluster, names ...string) {
	t.Helper()
	for _, n := range names {
		privtest.Eventually(t, 60*time.Second, "policy "+n+" Ready", func() (bool, error) {
			out, err := kubectl(context.Background(), c, "", "get", "egressnatpolicy", n,
				"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			return err == nil && strings.TrimSpace(out) == "True", err
		})
	}
}

// nodesByRole splits the cluster's nodes into workers and gateways.
func nodesByRole(c Cluster) (workers, gateways []NodeInfo) {
	for _, n := range c.Nodes() {
		if n.Gateway {
			gateways = append(gateways, n)
		} else {
			workers = append(workers, n)
		}
	}
	return workers, gateways
}

// podElements lists the elements of a node's nsegress pods map.
func podElements(ctx context.Context, c Cluster, node string) ([]string, error) {
	out, err := c.NodeExec(ctx, node, "nft", "-j", "list", "map", "ip", "nsegress", "pods")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", node, err)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("%s: parse nft output: %w", node, err)
	}
	var elems []string
	for _, o := range doc.Nftables {
		m, ok := o["map"]
		if !ok {
			continue
		}
		var mm struct {
			Elem []json.RawMessage `json:"elem"`
		}
		if err := json.Unmarshal(m, &mm); err != nil {
			return nil, err
		}
		for _, e := range mm.Elem {
			elems = append(elems, string(e))
		}
	}
	return elems, nil
}

// TestSeedScenario is the seed scenario in the lab cluster, driven as a
// user would drive it: nsegress installed with kubectl apply -k, the
// namespaces, group and policies applied, pods scheduled by the kubelets,
// requests made with kubectl exec, and each backend telling which source
// IP it saw.
func TestSeedScenario(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	cs := clientset(t, c)
	loadAgentImage(t, c)
	installNsegress(t, c)
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			uninstallNsegress(t, c)
		}
	})

	for _, team := range append(seedTeams, "plain") {
		testNamespace(t, cs, team, map[string]string{"team": team})
	}
	if out, err := kubectl(ctx, c, "", "apply", "-f", seedManifests); err != nil {
		t.Fatalf("apply the seed's policies: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		_, _ = kubectl(context.Background(), c, "", "delete", "-f", seedManifests, "--ignore-not-found")
	})
	waitPoliciesReady(t, c, seedTeams...)

	workers, gateways := nodesByRole(c)
	if len(workers) < 2 || len(gateways) < 2 {
		t.Fatalf("the seed scenario needs 2 workers and 2 gateways, the lab has %d and %d", len(workers), len(gateways))
	}
	onprem := map[string]string{"egress": "onprem"}
	clients := []seedPod{
		{"purple", "client", workers[0].Name, onprem},
		{"darkblue", "client", workers[1].Name, nil},
		{"lightblue", "client", gateways[0].Name, nil},
	}
	others := []seedPod{
		{"purple", "unselected", workers[1].Name, nil},
		{"plain", "client", workers[0].Name, nil},
	}
	var pods []*corev1.Pod
	for _, p := range append(append([]seedPod{}, clients...), others...) {
		pod := echoPod(p.ns, p.name, p.node)
		for k, v := range p.labels {
			pod.Labels[k] = v
		}
		pods = append(pods, pod)
	}
	running := runPods(t, cs, pods...)
	backends := c.Backends()

	t.Run("only the diagonal connects, each backend seeing its namespace's egress IP", func(t *testing.T) {
		for i, p := range clients {
			for j, b := range backends {
				out, err := execIn(ctx, c, p.ns, p.name, "/labbox", "get", "-timeout", "3s", b.URL())
				if i == j {
					if err != nil || out != lab.FloatingIPs[i].String() {
						t.Errorf("%s (on %s) -> %s: got %q, %v; want the egress IP %s", p.ns, p.node, b.Name, out, err, lab.FloatingIPs[i])
					} else {
						t.Logf("%s (on %s) -> %s: seen as %s", p.ns, p.node, b.Name, out)
					}
				} else if err == nil {
					t.Errorf("%s -> %s connected (seen as %q); only the diagonal may", p.ns, b.Name, out)
				}
			}
		}
		if t.Failed() {
			t.Logf("nsegress's logs:\n%s", agentLogs(c, 40))
		}
	})

	t.Run("pods no policy selects keep the normal path", func(t *testing.T) {
		target := running[0] // purple's client, on another pod
		for _, p := range others {
			if out, err := execIn(ctx, c, p.ns, p.name, "/labbox", "get", "-timeout", "3s",
				fmt.Sprintf("http://%s:8080/", target.Status.PodIP)); err != nil {
				t.Errorf("%s/%s -> pod %s: %v %s", p.ns, p.name, target.Status.PodIP, err, out)
			}
			node := nodeIP(c, p.node)
			before, err := c.FirewallDrops(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range backends {
				if out, err := execIn(ctx, c, p.ns, p.name, "/labbox", "get", "-timeout", "2s", b.URL()); err == nil {
					t.Errorf("%s/%s reached %s (seen as %q): it must stay blocked as before", p.ns, p.name, b.Name, out)
				}
			}
			after, err := c.FirewallDrops(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if after[node] <= before[node] {
				t.Errorf("%s/%s: the firewall dropped nothing from its node's IP %s: it did not take the normal path", p.ns, p.name, node)
			}
		}
	})

	t.Run("10 MiB up and down through the tunnel", func(t *testing.T) {
		const size = 10 << 20
		for _, p := range clients[:2] { // through a tunnel to a gateway
			b := backends[indexOf(seedTeams, p.ns)]
			out, err := execIn(ctx, c, p.ns, p.name, "/labbox", "get", "-timeout", "30s", "-count", fmt.Sprintf("%sbytes/%d", b.URL(), size))
			if err != nil || out != fmt.Sprint(size) {
				t.Errorf("%s: download of 10 MiB from %s: got %q, %v", p.ns, b.Name, out, err)
			}
			out, err = execIn(ctx, c, p.ns, p.name, "/labbox", "get", "-timeout", "30s", "-upload", fmt.Sprint(size), b.URL())
			want := fmt.Sprintf("%s %d", lab.FloatingIPs[indexOf(seedTeams, p.ns)], size)
			if err != nil || out != want {
				t.Errorf("%s: upload of 10 MiB to %s: got %q, %v; want %q", p.ns, b.Name, out, err, want)
			}
		}
	})

	t.Run("through a Service: marked after kube-proxy's DNAT", func(t *testing.T) {
		// A Service without a selector fronting backend 1, as a cluster
		// fronts an on-prem database: the pod addresses the ClusterIP or
		// a node port, and only kube-proxy's DNAT makes the destination
		// one the policy names.
		svc := backendService(t, cs, "purple", "onprem-db", backends[0])
		purple, plain := clients[0], others[1]
		node := nodeIP(c, purple.node)
		urls := []string{
			fmt.Sprintf("http://%s/", svc.Spec.ClusterIP),
			fmt.Sprintf("http://%s:%d/", node, svc.Spec.Ports[0].NodePort),
		}
		for _, url := range urls {
			before, err := c.FirewallDrops(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Every kube-proxy programs the Service within a sync of
			// its creation; until then the address does not answer.
			privtest.Eventually(t, 30*time.Second, "purple/client -> "+url+" as the egress IP", func() (bool, error) {
				out, err := execIn(ctx, c, purple.ns, purple.name, "/labbox", "get", "-timeout", "2s", url)
				if err != nil {
					return false, nil
				}
				if out != lab.FloatingIPs[0].String() {
					return false, fmt.Errorf("backend 1 saw %q, want the egress IP %s", out, lab.FloatingIPs[0])
				}
				return true, nil
			})
			after, err := c.FirewallDrops(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if after[node] != before[node] {
				t.Errorf("%s: the firewall dropped %d packets from the node IP %s: a request left unmarked",
					url, after[node]-before[node], node)
			}
		}

		// The same ClusterIP from a pod no policy selects leaves as its
		// node, and the firewall stops it.
		before, err := c.FirewallDrops(ctx)
		if err != nil {
			t.Fatal(err)
		}
		plainNode := nodeIP(c, plain.node)
		if out, err := execIn(ctx, c, plain.ns, plain.name, "/labbox", "get", "-timeout", "2s", urls[0]); err == nil {
			t.Errorf("%s/%s reached backend 1 through the Service (seen as %q): it must stay blocked", plain.ns, plain.name, out)
		}
		after, err := c.FirewallDrops(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after[plainNode] <= before[plainNode] {
			t.Errorf("%s/%s: the firewall dropped nothing from its node's IP %s: the request did not reach it", plain.ns, plain.name, plainNode)
		}
	})

	t.Run("no leak window: a pod that sends the moment it starts", func(t *testing.T) {
		node := workers[1]
		before, err := c.FirewallDrops(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pod := echoPod("purple", "eager", node.Name)
		pod.Labels["egress"] = "onprem"
		pod.Spec.RestartPolicy = corev1.RestartPolicyNever
		pod.Spec.Containers[0].Command = []string{"/labbox", "get", "-repeat", "20", "-interval", "50ms", "-timeout", "1s", backends[0].URL()}
		if _, err := cs.CoreV1().Pods("purple").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		privtest.Eventually(t, 90*time.Second, "pod purple/eager Succeeded", func() (bool, error) {
			p, err := cs.CoreV1().Pods("purple").Get(ctx, "eager", metav1.GetOptions{})
			return err == nil && p.Status.Phase == corev1.PodSucceeded, err
		})
		logs, err := kubectl(ctx, c, "", "logs", "-n", "purple", "eager")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(logs), "\n")
		if len(lines) == 0 || lines[0] != "ok "+lab.FloatingIPs[0].String() {
			t.Errorf("the pod's first request did not leave as %s:\n%s", lab.FloatingIPs[0], logs)
		}
		for _, l := range lines {
			if strings.HasPrefix(l, "ok ") && l != "ok "+lab.FloatingIPs[0].String() {
				t.Errorf("a request left as %q, not the egress IP", l)
			}
		}
		after, err := c.FirewallDrops(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after[node.IP] != before[node.IP] {
			t.Errorf("the firewall saw %d packets from the node IP %s while the pod started", after[node.IP]-before[node.IP], node.IP)
		}
		_ = cs.CoreV1().Pods("purple").Delete(ctx, "eager", metav1.DeleteOptions{})
	})

	t.Run("editing a policy changes what running pods do, without restarts", func(t *testing.T) {
		reach := func(p seedPod) (string, error) {
			return execIn(ctx, c, p.ns, p.name, "/labbox", "get", "-timeout", "1s", backends[indexOf(seedTeams, p.ns)].URL())
		}
		eventually := func(what string, p seedPod, ok bool) {
			t.Helper()
			privtest.Eventually(t, 20*time.Second, what, func() (bool, error) {
				_, err := reach(p)
				return (err == nil) == ok, err
			})
		}
		darkblue, lightblue := clients[1], clients[2]
		patch := func(policy, p string) {
			t.Helper()
			if out, err := kubectl(ctx, c, "", "patch", "egressnatpolicy", policy, "--type=merge", "-p", p); err != nil {
				t.Fatalf("patch %s: %v\n%s", policy, err, out)
			}
		}
		patch("darkblue", `{"spec":{"destinations":[{"cidr":"192.0.2.0/24"}]}}`)
		eventually("darkblue blocked once its destinations exclude backend 2", darkblue, false)
		patch("darkblue", `{"spec":{"destinations":[{"cidr":"203.0.113.0/24"}]}}`)
		eventually("darkblue through again", darkblue, true)

		patch("lightblue", `{"spec":{"sources":[{"namespaceSelector":{"matchLabels":{"team":"nobody"}}}]}}`)
		eventually("lightblue blocked once the namespaceSelector leaves it out", lightblue, false)
		patch("lightblue", `{"spec":{"sources":[{"namespaceSelector":{"matchLabels":{"team":"lightblue"}}}]}}`)
		eventually("lightblue through again", lightblue, true)
		if out, err := reach(lightblue); err != nil || out != lab.FloatingIPs[2].String() {
			t.Errorf("lightblue after the edits: %q, %v", out, err)
		}
		for i, p := range running[:3] {
			got, err := cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.UID != p.UID || got.Status.ContainerStatuses[0].RestartCount != 0 {
				t.Errorf("pod %s/%s was restarted or replaced (%d)", p.Namespace, p.Name, i)
			}
		}
	})

	t.Run("labelling a running pod moves it into the policy and back", func(t *testing.T) {
		p := others[0] // purple/unselected, left out by purple's podSelector
		reach := func() (string, error) {
			return execIn(ctx, c, p.ns, p.name, "/labbox", "get", "-timeout", "1s", backends[0].URL())
		}
		label := func(v string) {
			t.Helper()
			if out, err := kubectl(ctx, c, "", "label", "pod", "-n", p.ns, p.name, "egress"+v, "--overwrite"); err != nil {
				t.Fatalf("kubectl label: %v\n%s", err, out)
			}
		}
		label("=onprem")
		privtest.Eventually(t, 20*time.Second, "purple/unselected reaching backend 1 once labelled", func() (bool, error) {
			out, err := reach()
			if err != nil {
				return false, err
			}
			if out != lab.FloatingIPs[0].String() {
				return false, fmt.Errorf("left as %q", out)
			}
			return true, nil
		})
		label("-")
		privtest.Eventually(t, 20*time.Second, "purple/unselected blocked again once unlabelled", func() (bool, error) {
			if out, err := reach(); err == nil {
				return false, fmt.Errorf("still reaches backend 1, as %q", out)
			}
			return true, nil
		})
		got, err := cs.CoreV1().Pods(p.ns).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil || got.Status.ContainerStatuses[0].RestartCount != 0 || got.Status.PodIP != running[3].Status.PodIP {
			t.Errorf("purple/unselected was restarted or replaced: %v", err)
		}
	})

	t.Run("deleting every pod leaves no per-pod element", func(t *testing.T) {
		deleteAll(t, cs, append(seedTeams, "plain"))
		for _, n := range c.Nodes() {
			privtest.Eventually(t, 30*time.Second, "no pod element on "+n.Name, func() (bool, error) {
				elems, err := podElements(ctx, c, n.Name)
				if err != nil {
					return false, err
				}
				if len(elems) != 0 {
					return false, fmt.Errorf("pod elements %q", elems)
				}
				return true, nil
			})
		}
	})

	t.Run("uninstall leaves no table, rule, route or link", func(t *testing.T) {
		uninstalled = true
		uninstallNsegress(t, c)
		for _, n := range c.Nodes() {
			if out, err := c.NodeExec(ctx, n.Name, "nft", "list", "tables"); err != nil || strings.Contains(out, "nsegress") {
				t.Errorf("%s: nft tables after uninstall: %q %v", n.Name, out, err)
			}
			checks := map[string][]string{
				"ip rule":   {"ip", "-4", "rule", "show"},
				"routes":    {"ip", "-4", "route", "show", "table", "all"},
				"links":     {"ip", "-o", "link", "show"},
				"addresses": {"ip", "-4", "-o", "addr", "show"},
			}
			for what, argv := range checks {
				out, err := c.NodeExec(ctx, n.Name, argv...)
				if err != nil {
					t.Fatalf("%s: %s: %v", n.Name, what, err)
				}
				for _, bad := range []string{"nsg", "table 200", "lookup 200", "198.51.100.10"} {
					if strings.Contains(out, bad) {
						t.Errorf("%s: %s after uninstall still mention %q:\n%s", n.Name, what, bad, out)
					}
				}
			}
		}
	})
}

// deleteAll deletes every pod of the namespaces and waits until they are
// gone.
func deleteAll(t testing.TB, cs kubernetes.Interface, namespaces []string) {
	t.Helper()
	ctx := context.Background()
	for _, ns := range namespaces {
		if err := cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Fatalf("delete pods of %s: %v", ns, err)
		}
	}
	for _, ns := range namespaces {
		privtest.Eventually(t, 60*time.Second, "pods of "+ns+" gone", func() (bool, error) {
			l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return err == nil && len(l.Items) == 0, err
		})
	}
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
