// Command demo runs the seed scenario on the embedded lab: it brings the
// cluster up, installs nsegress with kubectl apply -k (the lab's overlay of
// install/), applies the seed's gateway group and three policies, starts
// one pod in each of the namespaces purple, darkblue and lightblue, asks
// every backend from every pod who is calling, prints the matrix of what
// each backend saw, and removes the lab again.
//
// The expected matrix: only the diagonal connects, and each backend sees
// its namespace's egress IP; every other cell is blocked by the firewall.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nsegress/nsegress/e2e/images"
	"github.com/nsegress/nsegress/e2e/lab"
)

func main() {
	keep := flag.Bool("keep", false, "keep the lab running until Ctrl-C, for kubectl")
	flag.Parse()
	if err := run(*keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// namespaces are the seed's three teams, each placed on its own node.
var namespaces = []string{"purple", "darkblue", "lightblue"}

func run(keep bool) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The lab promises to leave the machine as it found it; the demo is
	// what a new user runs first, so it checks, and fails if a folder of
	// the machine appeared while it ran.
	machine := lab.SnapshotMachine()
	defer func() {
		if leaked := machine.Appeared(); len(leaked) > 0 {
			err = errors.Join(err, fmt.Errorf("the lab left these on the machine, which did not exist before the demo: %s",
				strings.Join(leaked, ", ")))
		}
	}()
	cfg := lab.DefaultConfig()
	cfg.Primary = os.Getenv("NSEGRESS_LAB_PRIMARY") // "flannel": every node on flannel's VXLAN overlay
	cfg.Logf = func(f string, a ...any) { fmt.Printf(f+"\n", a...) }
	if err := lab.Prepare(ctx, &cfg); err != nil {
		return err
	}
	l, err := lab.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close the lab: %w", cerr))
			return
		}
		fmt.Println("lab removed")
	}()

	cs := l.Client()
	nodes := l.Nodes()
	fmt.Println("\nNODES")
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIP\tPOD CIDR\tROLE\tSTATUS")
	for _, n := range nodes {
		node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		role := "worker"
		if n.Gateway {
			role = "gateway"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name, n.IP, n.PodCIDR, role, readiness(node))
	}
	tw.Flush()

	fmt.Println("\nINSTALLING nsegress: kubectl apply -k " + labInstall)
	tb, err := images.AgentImage(ctx, filepath.Join(lab.CacheDir(), "images"))
	if err != nil {
		return err
	}
	if err := l.LoadImage(ctx, tb); err != nil {
		return err
	}
	k := func(args ...string) (string, error) { return kubectl(ctx, l, cfg.Bins.Kubectl, args...) }
	if out, err := k("apply", "-k", labInstall); err != nil {
		return fmt.Errorf("kubectl apply -k %s: %w\n%s", labInstall, err, out)
	}
	if out, err := k("-n", "nsegress-system", "rollout", "status", "daemonset/nsegress-agent", "--timeout=120s"); err != nil {
		return fmt.Errorf("nsegress agents not ready: %w\n%s", err, out)
	}
	if out, err := k("-n", "nsegress-system", "rollout", "status", "deployment/nsegress-controller", "--timeout=120s"); err != nil {
		return fmt.Errorf("the nsegress controller is not ready: %w\n%s", err, out)
	}

	// One pod per namespace: on two workers and on a gateway node.
	placement := []string{nodes[0].Name, nodes[1%cfg.Workers].Name, nodes[cfg.Workers].Name}
	for _, ns := range namespaces {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": ns}}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if out, err := k("apply", "-f", seedManifests); err != nil {
		return fmt.Errorf("kubectl apply -f %s: %w\n%s", seedManifests, err, out)
	}
	if out, err := k("wait", "--for=condition=Ready", "egressnatpolicy", "--all", "--timeout=60s"); err != nil {
		return fmt.Errorf("policies not Ready: %w\n%s", err, out)
	}
	fmt.Println("\nPOLICIES (kubectl get egressnatpolicies)")
	out, _ := k("get", "egressnatpolicies", "-o", "wide")
	fmt.Print(out)
	fmt.Println("\nGATEWAY GROUP onprem: which node holds which floating IP")
	out, _ = k("-n", "nsegress-system", "get", "networkgatewaygroup", "onprem", "-o", "jsonpath={.status.nodes}{\"\\n\"}{.status.floatingIPs}{\"\\n\"}")
	fmt.Print(out)
	for i, ns := range namespaces {
		if err := waitFor(ctx, func() bool {
			_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
			return err == nil
		}); err != nil {
			return fmt.Errorf("default ServiceAccount in %s: %w", ns, err)
		}
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, clientPod(ns, placement[i]), metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	fmt.Println("\nPODS")
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tNODE\tIP\tPHASE")
	for _, ns := range namespaces {
		var pod *corev1.Pod
		if err := waitFor(ctx, func() bool {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, "client", metav1.GetOptions{})
			pod = p
			return err == nil && p.Status.Phase == corev1.PodRunning
		}); err != nil {
			return fmt.Errorf("pod %s/client not Running: %w", ns, err)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ns, pod.Name, pod.Spec.NodeName, pod.Status.PodIP, pod.Status.Phase)
	}
	tw.Flush()

	fmt.Println("\nWHAT EACH BACKEND SAW (source IP of the request, or why there was none)")
	header := "NAMESPACE"
	for _, b := range l.Backends() {
		header += fmt.Sprintf("\t%s %s (allows %s)", b.Name, b.IP, b.AllowedFrom)
	}
	fmt.Fprintln(tw, header)
	for _, ns := range namespaces {
		row := ns
		for _, b := range l.Backends() {
			row += "\t" + ask(ctx, l, cfg.Bins.Kubectl, ns, b)
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
	drops, err := l.FirewallDrops(ctx)
	if err != nil {
		return err
	}
	fmt.Println("\nFIREWALL DROPS PER SOURCE")
	for src, n := range drops {
		fmt.Printf("  %s: %d packets\n", src, n)
	}
	if keep {
		// With the cache in the lab's folder too: kubectl's default,
		// ~/.kube/cache, would outlive the lab.
		fmt.Printf("\nThe lab is up: KUBECONFIG=%s KUBECACHEDIR=%s %s get pods -A\nPress Ctrl-C to remove it.\n",
			l.Kubeconfig(), l.KubectlCacheDir(), cfg.Bins.Kubectl)
		select {}
	}
	return nil
}

// ask runs the HTTP client in the namespace's pod against the backend.
func ask(ctx context.Context, l *lab.Lab, kubectl, ns string, b lab.Backend) string {
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", l.Kubeconfig(), "exec", "-n", ns, "client", "--",
		"/labbox", "get", "-timeout", "2s", b.URL())
	cmd.Env = l.ToolEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "Timeout") || strings.Contains(string(out), "timeout") {
			return "blocked (timeout)"
		}
		return "error: " + strings.TrimSpace(string(out))
	}
	return strings.TrimSpace(string(out))
}

// labInstall is install/ with the lab's differences patched in, and
// seedManifests the seed's group and policies; both relative to the
// repository root, where make demo runs.
const (
	labInstall    = "e2e/testdata/lab-install"
	seedManifests = "e2e/testdata/seed.yaml"
)

// kubectl runs kubectl against the lab.
func kubectl(ctx context.Context, l *lab.Lab, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", l.Kubeconfig()}, args...)...)
	cmd.Env = l.ToolEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func clientPod(ns, node string) *corev1.Pod {
	grace := int64(1)
	return &corev1.Pod{
		// The seed's purple policy selects only pods labelled for on-prem
		// egress; the other two select their whole namespace.
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client", Labels: map[string]string{"egress": "onprem"}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "client", Image: lab.LabboxImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/labbox", "sleep"},
			}},
		},
	}
}

func readiness(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return "Ready"
		}
	}
	return "NotReady"
}

func waitFor(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}
