package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nsegress/nsegress/e2e/privtest"
)

// TestAgentRestartsAreInvisibleToTraffic: a selected pod streams requests
// to its backend over one TCP connection while the agents restart the
// ways they do in a cluster: the agent of the pod's node force-deleted,
// then killed twice (SIGKILL, as the OOM killer does; the kubelet
// restarts it with a back-off, a crash loop), the gateway's agent
// force-deleted, their ServiceAccount recreated (every running agent's
// token is then rejected, which must not read as an uninstall) before the
// agents roll, the node's pod records lost (rebuilt from the API), and a
// rolling update of the DaemonSet. The connection survives each, no
// request goes unanswered for a second, and the pod keeps its element.
func TestAgentRestartsAreInvisibleToTraffic(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	cs := clientset(t, c)
	client, gateway := selectedClient(t, c, "rst")
	node := client.Spec.NodeName
	backend := c.Backends()[0]

	agentOn := func(t *testing.T, node string) string {
		t.Helper()
		pods, err := cs.CoreV1().Pods("nsegress-system").List(ctx, metav1.ListOptions{LabelSelector: agentLabel, FieldSelector: "spec.nodeName=" + node})
		if err != nil || len(pods.Items) != 1 {
			t.Fatalf("the agent pod on %s: %d pods, %v", node, len(pods.Items), err)
		}
		return pods.Items[0].Name
	}
	rolledOut := func(t *testing.T) {
		t.Helper()
		if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "rollout", "status", "daemonset/nsegress-agent", "--timeout=180s"); err != nil {
			t.Fatalf("the agents did not come back: %v\n%s", err, out)
		}
	}
	for _, ev := range []struct {
		name     string
		duration time.Duration
		do       func(t *testing.T)
	}{
		{"the agent of the pod's node is force-deleted", 25 * time.Second, func(t *testing.T) {
			agent := agentOn(t, node)
			if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "delete", "pod", agent, "--force", "--grace-period=0"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			privtest.Eventually(t, 120*time.Second, "a new agent on "+node, func() (bool, error) {
				pods, err := cs.CoreV1().Pods("nsegress-system").List(ctx, metav1.ListOptions{LabelSelector: agentLabel, FieldSelector: "spec.nodeName=" + node})
				return err == nil && len(pods.Items) == 1 && pods.Items[0].Name != agent, nil
			})
			rolledOut(t)
		}},
		{"the agent of the pod's node is killed twice, as the OOM killer does, and the kubelet restarts it in a crash loop", 60 * time.Second, func(t *testing.T) {
			agent := agentOn(t, node)
			for i := 1; i <= 2; i++ {
				if n, err := c.KillOnNode(node, "/nsegress-agent", "run"); err != nil || n != 1 {
					t.Fatalf("kill the agent on %s: %d killed, %v; want 1", node, n, err)
				}
				privtest.Eventually(t, 50*time.Second, fmt.Sprintf("the agent on %s restarted %d times and ready", node, i), func() (bool, error) {
					p, err := cs.CoreV1().Pods("nsegress-system").Get(ctx, agent, metav1.GetOptions{})
					if err != nil || len(p.Status.ContainerStatuses) != 1 {
						return false, nil
					}
					st := p.Status.ContainerStatuses[0]
					return int(st.RestartCount) >= i && st.Ready, nil
				})
			}
		}},
		{"the agent of the gateway is force-deleted", 25 * time.Second, func(t *testing.T) {
			agent := agentOn(t, gateway)
			if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "delete", "pod", agent, "--force", "--grace-period=0"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			rolledOut(t)
		}},
		{"the agents' ServiceAccount is recreated, so every running agent's token is rejected, and the agents roll", 60 * time.Second, func(t *testing.T) {
			// A routine that kills credentials (a GitOps tool recreating
			// the ServiceAccount): the stopping agents get 401 for their
			// DaemonSet, which must not read as an uninstall.
			if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "delete", "serviceaccount", "nsegress-agent"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "create", "serviceaccount", "nsegress-agent"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			// The API server caches a token's successful check for 10 s:
			// after that, the running agents' tokens are rejected.
			time.Sleep(12 * time.Second)
			if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "rollout", "restart", "daemonset/nsegress-agent"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			rolledOut(t)
		}},
		{"the pod records of the pod's node are lost (a state disk restored from an old copy)", 15 * time.Second, func(t *testing.T) {
			if out, err := c.NodeExec(ctx, node, "sh", "-c", "rm -f /var/lib/nsegress/pods/*.json"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			// The agent rebuilds the record from the API and the route to
			// the pod, in the reconcile the deletion starts.
			privtest.Eventually(t, 10*time.Second, "the record of "+client.Status.PodIP+" rebuilt", func() (bool, error) {
				out, err := c.NodeExec(ctx, node, "ls", "/var/lib/nsegress/pods")
				return strings.Contains(out, client.Status.PodIP+"_"), err
			})
		}},
		{"the DaemonSet rolls out a new revision", 60 * time.Second, func(t *testing.T) {
			if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "rollout", "restart", "daemonset/nsegress-agent"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			rolledOut(t)
		}},
	} {
		t.Run(ev.name, func(t *testing.T) {
			streamAcross(t, c, client, backend.URL(), ev.duration, func() {
				start := time.Now()
				ev.do(t)
				t.Logf("%s: done in %s", ev.name, time.Since(start).Round(time.Millisecond))
			})
			elems, err := podElements(ctx, c, node)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(elems, " "), `"`+client.Status.PodIP+`"`) {
				t.Errorf("after the restart, %s's pods map lacks the pod %s: %v", node, client.Status.PodIP, elems)
			}
		})
	}
}
