package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nsegress/nsegress/e2e/lab"
	"github.com/nsegress/nsegress/e2e/privtest"
)

func command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, bin, args...)
}

// clientset is an admin client for c.
func clientset(t testing.TB, c Cluster) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// testNamespace creates a namespace that is deleted when the test ends.
func testNamespace(t testing.TB, cs kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	// The controller manager creates the default ServiceAccount; pods are
	// refused until it exists.
	privtest.Eventually(t, 30*time.Second, "default ServiceAccount in "+name, func() (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	})
}

// echoPod is a pod running the labbox echo server on port 8080, placed on
// node through the scheduler.
func echoPod(ns, name, node string) *corev1.Pod {
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "echo"}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name:            "echo",
				Image:           lab.LabboxImage,
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"/labbox", "echo", "-listen", ":" + strconv.Itoa(lab.PodEchoPort)},
			}},
		},
	}
}

// runPods creates pods and waits until all are Running.
func runPods(t testing.TB, cs kubernetes.Interface, pods ...*corev1.Pod) []*corev1.Pod {
	t.Helper()
	ctx := context.Background()
	for _, p := range pods {
		if _, err := cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
		}
	}
	out := make([]*corev1.Pod, len(pods))
	for i, p := range pods {
		privtest.Eventually(t, 60*time.Second, "pod "+p.Namespace+"/"+p.Name+" Running", func() (bool, error) {
			got, err := cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil || got.Status.Phase != corev1.PodRunning || got.Status.PodIP == "" {
				return false, err
			}
			out[i] = got
			return true, nil
		})
	}
	return out
}

func TestLabNodesAreReadyAndLabelled(t *testing.T) {
	c := cluster(t)
	cs := clientset(t, c)
	nodes, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != len(c.Nodes()) {
		t.Fatalf("API server lists %d nodes, the lab made %d", len(nodes.Items), len(c.Nodes()))
	}
	for _, n := range nodes.Items {
		ready := false
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			t.Errorf("node %s is not Ready", n.Name)
		}
		if got := n.Status.NodeInfo.KubeletVersion; got != lab.KubernetesVersion {
			t.Errorf("node %s runs kubelet %q, want %s", n.Name, got, lab.KubernetesVersion)
		}
		wantGateway := strings.HasPrefix(n.Name, "gw-")
		if got := n.Labels[lab.GatewayLabel] == "true"; got != wantGateway {
			t.Errorf("node %s: gateway label = %v, want %v", n.Name, got, wantGateway)
		}
		if ip := nodeInternalIP(n); ip != nodeIP(c, n.Name).String() {
			t.Errorf("node %s reports InternalIP %q, want %s", n.Name, ip, nodeIP(c, n.Name))
		}
	}
}

// TestLabPrimariesRouteAsTheirKind: each node reaches another node's pod
// range the way its primary does (flannel through its overlay device
// flannel.1, ptp and bridge over the underlay), and publishes its range
// in spec.podCIDRs, so that the suites run against what they claim to.
func TestLabPrimariesRouteAsTheirKind(t *testing.T) {
	c := cluster(t)
	cs := clientset(t, c)
	nodes := c.Nodes()
	for i, n := range nodes {
		node, err := cs.CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := node.Spec.PodCIDRs; len(got) != 1 || got[0] != n.PodCIDR.String() {
			t.Errorf("node %s publishes pod ranges %v, want [%s]", n.Name, got, n.PodCIDR)
		}
		other := nodes[(i+1)%len(nodes)]
		out, err := c.NodeExec(context.Background(), n.Name, "ip", "-4", "route", "get", other.PodCIDR.Addr().Next().Next().String())
		if err != nil {
			t.Fatal(err)
		}
		want := "dev eth0"
		if n.Primary == lab.PrimaryFlannel && other.Primary == lab.PrimaryFlannel {
			want = "dev flannel.1"
		}
		if !strings.Contains(out, want) {
			t.Errorf("%s (%s) routes %s's pods %q, want %q", n.Name, n.Primary, other.Name, strings.TrimSpace(out), want)
		}
	}
}

func nodeInternalIP(n corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// TestLabSelfTest checks the lab without nsegress: pods on every node,
// pod-to-pod traffic across nodes, kubectl exec and logs, and a firewall
// that blocks every node from the backends.
func TestLabSelfTest(t *testing.T) {
	c := cluster(t)
	cs := clientset(t, c)
	ctx := context.Background()
	testNamespace(t, cs, "lab-selftest", nil)
	var want []*corev1.Pod
	for _, n := range c.Nodes() {
		want = append(want, echoPod("lab-selftest", "echo-"+n.Name, n.Name))
	}
	pods := runPods(t, cs, want...)

	t.Run("a pod runs on every node with an address from that node's range", func(t *testing.T) {
		for i, n := range c.Nodes() {
			p := pods[i]
			if p.Spec.NodeName != n.Name {
				t.Errorf("pod %s landed on %s, want %s", p.Name, p.Spec.NodeName, n.Name)
			}
			ip, err := netip.ParseAddr(p.Status.PodIP)
			if err != nil || !n.PodCIDR.Contains(ip) {
				t.Errorf("pod %s has IP %q, want one in %s", p.Name, p.Status.PodIP, n.PodCIDR)
			}
		}
	})

	t.Run("pods reach pods on other nodes", func(t *testing.T) {
		for i, from := range pods {
			to := pods[(i+1)%len(pods)]
			out, err := kubectl(ctx, c, "", "exec", "-n", from.Namespace, from.Name, "--",
				"/labbox", "get", "-timeout", "5s", fmt.Sprintf("http://%s:8080/", to.Status.PodIP))
			if err != nil {
				t.Errorf("%s -> %s: %v", from.Spec.NodeName, to.Spec.NodeName, err)
				continue
			}
			// ptp masquerades traffic that leaves the node's pod range, so
			// the echo server sees the sending node's address.
			seen := strings.TrimSpace(out)
			if seen != nodeIP(c, from.Spec.NodeName).String() && seen != from.Status.PodIP {
				t.Errorf("%s -> %s: echo saw source %q, want %s or %s", from.Spec.NodeName, to.Spec.NodeName,
					seen, nodeIP(c, from.Spec.NodeName), from.Status.PodIP)
			}
		}
	})

	t.Run("kubectl logs shows the echo server's requests", func(t *testing.T) {
		// Every pod served one request in the test above.
		for _, p := range pods {
			out, err := kubectl(ctx, c, "", "logs", "-n", p.Namespace, p.Name)
			if err != nil {
				t.Errorf("logs of %s: %v", p.Name, err)
				continue
			}
			if !strings.Contains(out, "GET ") || !strings.Contains(out, " from ") {
				t.Errorf("logs of %s show no request:\n%s", p.Name, out)
			}
		}
	})

	t.Run("backends are unreachable from pods and the firewall counts each node's drops", func(t *testing.T) {
		before, err := c.FirewallDrops(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, len(pods)*len(c.Backends()))
		for i, p := range pods {
			for j, b := range c.Backends() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out, err := kubectl(ctx, c, "", "exec", "-n", p.Namespace, p.Name, "--",
						"/labbox", "get", "-timeout", "2s", b.URL())
					if err == nil {
						errs[i*len(c.Backends())+j] = fmt.Errorf("%s reached %s: %q", p.Spec.NodeName, b.Name, out)
					}
				}()
			}
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		after, err := c.FirewallDrops(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range c.Nodes() {
			ip := n.IP
			if after[ip] <= before[ip] {
				t.Errorf("firewall drops from %s (%s): %d before, %d after; want more", n.Name, ip, before[ip], after[ip])
			}
		}
	})
}
