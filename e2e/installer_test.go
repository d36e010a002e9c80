package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nsegress/nsegress/agent/cniconf"
	"github.com/nsegress/nsegress/agent/install"
	"github.com/nsegress/nsegress/e2e/images"
	"github.com/nsegress/nsegress/e2e/lab"
	"github.com/nsegress/nsegress/e2e/privtest"
)

// labInstall is install/ with the lab's differences patched in.
const labInstall = "testdata/lab-install"

// agentLabel selects the agents' pods (the controller's run in the same
// namespace).
const agentLabel = "app.kubernetes.io/name=nsegress-agent"

// loadAgentImage builds the agent and the plugin as static binaries, packs
// them into the agent image and imports it into every node.
func loadAgentImage(t testing.TB, c Cluster) {
	t.Helper()
	ctx := context.Background()
	tb, err := images.AgentImage(ctx, filepath.Join(lab.CacheDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.LoadImage(ctx, tb); err != nil {
		t.Fatal(err)
	}
}

const nodeConflist = lab.CNIConfDir + "/10-lab.conflist"

// conflists reads every node's primary conflist.
func conflists(t *testing.T, c Cluster) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, n := range c.Nodes() {
		b, err := c.ReadNodeFile(n.Name, nodeConflist)
		if err != nil {
			t.Fatal(err)
		}
		out[n.Name] = b
	}
	return out
}

// installNsegress applies the lab install and waits for an agent Ready on
// every node and nsegress chained in every conflist.
func installNsegress(t testing.TB, c Cluster) {
	t.Helper()
	ctx := context.Background()
	if out, err := kubectl(ctx, c, "", "apply", "-k", labInstall); err != nil {
		t.Fatalf("kubectl apply -k: %v\n%s", err, out)
	}
	if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "rollout", "status", "daemonset/nsegress-agent", "--timeout=120s"); err != nil {
		logs := agentLogs(c, 20)
		t.Fatalf("agents not ready: %v\n%s\nagent logs:\n%s", err, out, logs)
	}
	if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "rollout", "status", "deployment/nsegress-controller", "--timeout=120s"); err != nil {
		t.Fatalf("the controller is not ready: %v\n%s\nlogs:\n%s", err, out, agentLogs(c, 20))
	}
	for _, n := range c.Nodes() {
		privtest.Eventually(t, 5*time.Second, "nsegress chained on "+n.Name, func() (bool, error) {
			b, err := c.ReadNodeFile(n.Name, nodeConflist)
			return err == nil && cniconf.Chained(b), err
		})
	}
}

// agentLogs returns the last lines of every agent's and controller's log
// (all for tail < 0).
func agentLogs(c Cluster, tail int) string {
	logs, err := kubectl(context.Background(), c, "", "-n", "nsegress-system", "logs",
		"-l", "app.kubernetes.io/part-of=nsegress", "--prefix", fmt.Sprintf("--tail=%d", tail), "--max-log-requests=20")
	if err != nil {
		return err.Error()
	}
	return logs
}

// uninstallNsegress deletes the install and waits until every agent is
// gone.
func uninstallNsegress(t testing.TB, c Cluster) {
	t.Helper()
	ctx := context.Background()
	// What the agents said while they were told to stop: whether they
	// saw the uninstall, and what it did. Their pods, and with them their
	// logs, are gone once this returns.
	follow, cancel := context.WithCancel(ctx)
	logs := &privtest.SyncBuffer{}
	cmd := command(follow, c.Kubectl(), "logs", "-f", "-n", "nsegress-system", "-l", "app.kubernetes.io/name=nsegress-agent",
		"--prefix", "--tail=5", "--max-log-requests=20", "--ignore-errors")
	cmd.Env, cmd.Stdout, cmd.Stderr = c.Env(), logs, logs
	if err := cmd.Start(); err == nil {
		t.Cleanup(func() {
			cancel()
			_ = cmd.Wait() // killed by the cancel: its exit status says nothing
			if t.Failed() {
				t.Logf("agent logs during uninstall:\n%s", logs.String())
			}
		})
	} else {
		cancel()
		t.Logf("follow the agents' logs: %v", err)
	}
	if out, err := kubectl(ctx, c, "", "delete", "-k", labInstall, "--wait=true", "--timeout=120s"); err != nil {
		t.Fatalf("kubectl delete -k: %v\n%s", err, out)
	}
	cs := clientset(t, c)
	privtest.Eventually(t, 90*time.Second, "agent pods gone", func() (bool, error) {
		pods, err := cs.CoreV1().Pods("nsegress-system").List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, err
	})
}

// TestInstallerChainsAndUninstallsCleanly installs nsegress the way users
// do, checks every node, then uninstalls and finds every node's conflist
// byte-identical to before; twice, to prove the round trip.
func TestInstallerChainsAndUninstallsCleanly(t *testing.T) {
	c := cluster(t)
	loadAgentImage(t, c)
	cs := clientset(t, c)
	before := conflists(t, c)

	// A node registered with the startup taint keeps pods off until
	// nsegress is chained there.
	tainted := c.Nodes()[len(c.Nodes())-1].Name
	setTaint(t, cs, tainted, startupTaint)
	t.Cleanup(func() {
		// Lifted by the agent when the test passes; by us when it did not.
		if err := install.RemoveTaint(context.Background(), cs, tainted, startupTaint); err != nil {
			t.Log(err)
		}
	})

	for round := 1; round <= 2; round++ {
		start := time.Now()
		installNsegress(t, c)
		if round == 1 {
			privtest.Eventually(t, 30*time.Second, "startup taint lifted from "+tainted, func() (bool, error) {
				n, err := cs.CoreV1().Nodes().Get(context.Background(), tainted, metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				for _, tt := range n.Spec.Taints {
					if tt.Key == startupTaint {
						return false, nil
					}
				}
				return true, nil
			})
		}
		t.Logf("round %d: installed in %s", round, time.Since(start).Round(time.Millisecond))
		for _, n := range c.Nodes() {
			if b, err := c.ReadNodeFile(n.Name, lab.CNIBinDir+"/nsegress"); err != nil || len(b) == 0 {
				t.Errorf("round %d: no plugin binary on %s: %v", round, n.Name, err)
			}
			p, err := labNode(c, n.Name).HostPath("/var/lib/nsegress/kubeconfig")
			if err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(p); err != nil {
				t.Errorf("round %d: plugin kubeconfig on %s: %v", round, n.Name, err)
			} else if fi.Mode().Perm() != 0o600 {
				t.Errorf("round %d: plugin kubeconfig on %s has mode %v, want 0600", round, n.Name, fi.Mode())
			}
		}
		if round == 1 {
			// New pods still start and get their addresses through the
			// chain.
			ns := "installer-pods"
			testNamespace(t, cs, ns, nil)
			var pods []*corev1.Pod
			for _, n := range c.Nodes() {
				pods = append(pods, echoPod(ns, "p-"+n.Name, n.Name))
			}
			runPods(t, cs, pods...)
		}
		start = time.Now()
		uninstallNsegress(t, c)
		t.Logf("round %d: uninstalled in %s", round, time.Since(start).Round(time.Millisecond))
		after := conflists(t, c)
		for node, b := range before {
			if !bytes.Equal(after[node], b) {
				t.Errorf("round %d: %s's conflist after uninstall differs from before install:\nbefore:\n%s\nafter:\n%s", round, node, b, after[node])
			}
			if _, err := c.ReadNodeFile(node, lab.CNIBinDir+"/nsegress"); !os.IsNotExist(err) {
				t.Errorf("round %d: plugin binary left on %s (err=%v)", round, node, err)
			}
			if _, err := c.ReadNodeFile(node, "/var/lib/nsegress/kubeconfig"); !os.IsNotExist(err) {
				t.Errorf("round %d: plugin kubeconfig left on %s (err=%v)", round, node, err)
			}
			if _, err := c.ReadNodeFile(node, "/var/lib/nsegress/ha.key"); !os.IsNotExist(err) {
				t.Errorf("round %d: the HA key left on %s (err=%v)", round, node, err)
			}
		}
	}
}

// startupTaint is the taint key e2e/testdata/lab-install configures.
const startupTaint = "nsegress.io/agent-not-ready"

func setTaint(t *testing.T, cs kubernetes.Interface, node, key string) {
	t.Helper()
	ctx := context.Background()
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: key, Effect: corev1.TaintEffectNoSchedule})
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestAKilledAgentLeavesAValidConflist kills the agent (fault injection)
// between writing the new conflist to a temporary file and renaming it:
// the runtime's conflist stays valid, pods still start, and the next
// agent chains nsegress and removes the temporary file.
func TestAKilledAgentLeavesAValidConflist(t *testing.T) {
	c := cluster(t)
	loadAgentImage(t, c)
	cs := clientset(t, c)
	ctx := context.Background()
	node := c.Nodes()[0]
	path := mustHostPath(t, labNode(c, node.Name), nodeConflist)
	installNsegress(t, c)
	t.Cleanup(func() { uninstallNsegress(t, c) })
	if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "set", "env", "daemonset/nsegress-agent", "NSEGRESS_FAULT=kill-before-rename"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "rollout", "status", "daemonset/nsegress-agent", "--timeout=120s"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	unchained := labPrimary(t, c, node.Name)
	if err := os.WriteFile(path, unchained, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	var temp string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", agentLogs(c, 20))
		}
	})
	privtest.Eventually(t, 20*time.Second, "the agent to die before its rename", func() (bool, error) {
		entries, err := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".10-lab.conflist") {
				temp = e.Name()
				return true, nil
			}
		}
		return false, err
	})
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := libcni.ConfListFromBytes(b); err != nil || !bytes.Equal(b, unchained) {
		t.Fatalf("after the kill the conflist is not the primary's valid file (err=%v):\n%s", err, b)
	}
	ns := "killed-agent"
	testNamespace(t, cs, ns, nil)
	runPods(t, cs, echoPod(ns, "after-kill", node.Name))

	if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "set", "env", "daemonset/nsegress-agent", "NSEGRESS_FAULT-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// Every agent, not only this node's, must be rid of the fault before
	// the cleanup's uninstall.
	if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "rollout", "status", "daemonset/nsegress-agent", "--timeout=180s"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	privtest.Eventually(t, 120*time.Second, "nsegress chained again on "+node.Name, func() (bool, error) {
		b, err := os.ReadFile(path)
		return err == nil && cniconf.Chained(b), err
	})
	privtest.Eventually(t, 10*time.Second, "temporary file "+temp+" removed", func() (bool, error) {
		_, err := os.Stat(filepath.Join(dir, temp))
		return os.IsNotExist(err), err
	})
}

// labPrimary is the node's conflist without nsegress, as the lab wrote it.
func labPrimary(t *testing.T, c Cluster, node string) []byte {
	t.Helper()
	for _, n := range c.Nodes() {
		if n.Name == node {
			return []byte(lab.PrimaryConflist(n.Primary, n.PodCIDR))
		}
	}
	t.Fatalf("no node %s", node)
	return nil
}

// TestInstallerSurvivesAPrimaryThatRewritesItsConflist: the primary
// rewrites its conflist 50 times in a row (as Calico and kindnet do at
// start-up); each time nsegress is back within a second, while pods keep
// being created on that node without a failure.
func TestInstallerSurvivesAPrimaryThatRewritesItsConflist(t *testing.T) {
	c := cluster(t)
	loadAgentImage(t, c)
	cs := clientset(t, c)
	ctx := context.Background()
	node := c.Nodes()[0]
	primary, err := c.ReadNodeFile(node.Name, nodeConflist)
	if err != nil {
		t.Fatal(err)
	}
	if cniconf.Chained(primary) {
		t.Fatal("nsegress is chained before the test installed it")
	}
	installNsegress(t, c)
	t.Cleanup(func() { uninstallNsegress(t, c) })
	ns := "rewrites"
	testNamespace(t, cs, ns, nil)

	// Pods are created on the node all through the rewrites.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var created []*corev1.Pod
	stopOnce := sync.OnceFunc(func() { close(stop); wg.Wait() })
	// Also when the test fails half-way: the goroutine must not outlive it.
	t.Cleanup(stopOnce)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			p := echoPod(ns, fmt.Sprintf("r-%d", i), node.Name)
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Errorf("create pod %d: %v", i, err)
				return
			}
			created = append(created, p)
		}
	}()

	path := mustHostPath(t, labNode(c, node.Name), nodeConflist)
	// Read once the test failed, not at every check of a condition.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", agentLogs(c, 30))
		}
	})
	for i := 0; i < 50; i++ {
		// The primary writes its own file again, without our entry.
		if err := os.WriteFile(path, primary, 0o644); err != nil {
			t.Fatal(err)
		}
		privtest.Eventually(t, time.Second, fmt.Sprintf("nsegress back in the conflist after rewrite %d", i), func() (bool, error) {
			b, err := os.ReadFile(path)
			if err != nil {
				return false, err
			}
			if !cniconf.Chained(b) {
				return false, fmt.Errorf("not chained:\n%s", b)
			}
			return true, nil
		})
		// A primary restarting in a loop, not a tight spin.
		time.Sleep(150 * time.Millisecond)
	}
	stopOnce()
	// How long the agents took, for a reader of a slow run.
	for _, line := range strings.Split(agentLogs(c, -1), "\n") {
		if strings.Contains(line, "reconcile") {
			t.Log(line)
		}
	}
	if len(created) < 5 {
		t.Fatalf("only %d pods were created during the rewrites", len(created))
	}
	for _, p := range created {
		privtest.Eventually(t, 60*time.Second, "pod "+p.Name+" Running", func() (bool, error) {
			got, err := cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
			return err == nil && got.Status.Phase == corev1.PodRunning && got.Status.PodIP != "", err
		})
	}
}

// labNode is the lab's node of that name; these tests need the lab's
// folders.
func labNode(c Cluster, name string) *lab.Node {
	for _, n := range c.(labCluster).lab.Nodes() {
		if n.Name == name {
			return n
		}
	}
	panic("no lab node " + name)
}
