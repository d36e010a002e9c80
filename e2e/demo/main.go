// Command demo runs the seed scenario on the embedded lab: it brings the
// cluster up, starts one pod in each of the namespaces purple, darkblue
// and lightblue, asks every backend from every pod who is calling, prints
// the matrix of what each backend saw, and removes the lab again.
//
// Until nsegress's datapath lands, every cell shows the firewall's verdict
// on the node's own address: blocked.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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

func run(keep bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := lab.DefaultConfig()
	cfg.Logf = func(f string, a ...any) { fmt.Printf(f+"\n", a...) }
	if err := lab.Prepare(ctx, &cfg); err != nil {
		return err
	}
	l, err := lab.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if err := l.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: close the lab:", err)
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

	// One pod per namespace: on two workers and on a gateway node.
	placement := []string{nodes[0].Name, nodes[1%cfg.Workers].Name, nodes[cfg.Workers].Name}
	for i, ns := range namespaces {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
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
		fmt.Printf("\nThe lab is up: KUBECONFIG=%s %s get pods -A\nPress Ctrl-C to remove it.\n", l.Kubeconfig(), cfg.Bins.Kubectl)
		select {}
	}
	return nil
}

// ask runs the HTTP client in the namespace's pod against the backend.
func ask(ctx context.Context, l *lab.Lab, kubectl, ns string, b lab.Backend) string {
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", l.Kubeconfig(), "exec", "-n", ns, "client", "--",
		"/labbox", "get", "-timeout", "2s", b.URL())
	cmd.Env = []string{"HOME=" + l.Dir() + "/home", "PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "Timeout") || strings.Contains(string(out), "timeout") {
			return "blocked (timeout)"
		}
		return "error: " + strings.TrimSpace(string(out))
	}
	return strings.TrimSpace(string(out))
}

func clientPod(ns, node string) *corev1.Pod {
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client"},
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
