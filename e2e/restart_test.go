package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nsegress/nsegress/e2e/privtest"
)

// restartPolicy is the group and the one policy of
// TestAgentRestartsAreInvisibleToTraffic: namespace rst reaches the
// on-prem segment as .101, which backend 1 admits.
const restartPolicy = `
apiVersion: nsegress.io/v1alpha1
kind: NetworkGatewayGroup
metadata: {name: onprem, namespace: nsegress-system}
spec:
  floatingIPs: [198.51.100.101, 198.51.100.102, 198.51.100.103]
  nodeSelector: {matchLabels: {nsegress.io/gateway: "true"}}
---
apiVersion: nsegress.io/v1alpha1
kind: EgressNATPolicy
metadata: {name: rst}
spec:
  sources: [{namespaceSelector: {matchLabels: {team: rst}}}]
  action: SNAT
  destinations: [{cidr: 203.0.113.0/24}]
  gatewayRef: {name: onprem, namespace: nsegress-system}
  egressIP: 198.51.100.101
`

// TestAgentRestartsAreInvisibleToTraffic: a selected pod streams requests
// to its backend over one TCP connection while the agents restart the
// ways they do in a cluster: the agent of the pod's node and of its
// gateway force-deleted, their ServiceAccount recreated (every running
// agent's token is then rejected, which must not read as an uninstall)
// before the agents roll, and a rolling update of the DaemonSet. The
// connection survives each, no request goes unanswered for a second, and
// the pod keeps its element.
func TestAgentRestartsAreInvisibleToTraffic(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	cs := clientset(t, c)
	loadAgentImage(t, c)
	installNsegress(t, c)
	t.Cleanup(func() {
		deleteAll(t, cs, []string{"rst"})
		_, _ = kubectl(context.Background(), c, restartPolicy, "delete", "-f", "-", "--ignore-not-found")
		uninstallNsegress(t, c)
	})
	testNamespace(t, cs, "rst", map[string]string{"team": "rst"})
	if out, err := kubectl(ctx, c, restartPolicy, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply the policy: %v\n%s", err, out)
	}
	waitPoliciesReady(t, c, "rst")
	workers, _ := nodesByRole(c)
	client := runPods(t, cs, echoPod("rst", "client", workers[0].Name))[0]
	gateway, err := kubectl(ctx, c, "", "get", "egressnatpolicy", "rst", "-o", "jsonpath={.status.gatewayNode}")
	if err != nil {
		t.Fatal(err)
	}
	backend := c.Backends()[0]

	agentOn := func(t *testing.T, node string) string {
		t.Helper()
		pods, err := cs.CoreV1().Pods("nsegress-system").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
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
			agent := agentOn(t, workers[0].Name)
			if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "delete", "pod", agent, "--force", "--grace-period=0"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			privtest.Eventually(t, 120*time.Second, "a new agent on "+workers[0].Name, func() (bool, error) {
				pods, err := cs.CoreV1().Pods("nsegress-system").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + workers[0].Name})
				return err == nil && len(pods.Items) == 1 && pods.Items[0].Name != agent, nil
			})
			rolledOut(t)
		}},
		{"the agent of the gateway is force-deleted", 25 * time.Second, func(t *testing.T) {
			agent := agentOn(t, strings.TrimSpace(gateway))
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
		{"the DaemonSet rolls out a new revision", 60 * time.Second, func(t *testing.T) {
			if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "rollout", "restart", "daemonset/nsegress-agent"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			rolledOut(t)
		}},
	} {
		t.Run(ev.name, func(t *testing.T) {
			var wg sync.WaitGroup
			var summary string
			var streamErr error
			wg.Add(1)
			go func() {
				defer wg.Done()
				summary, streamErr = execIn(ctx, c, client.Namespace, client.Name, "/labbox", "stream",
					"-interval", "100ms", "-duration", ev.duration.String(), "-timeout", "1s", backend.URL())
			}()
			time.Sleep(2 * time.Second)
			start := time.Now()
			ev.do(t)
			t.Logf("%s: done in %s", ev.name, time.Since(start).Round(time.Millisecond))
			wg.Wait()
			if streamErr != nil {
				t.Fatalf("stream: %v", streamErr)
			}
			t.Logf("stream from the selected pod: %s", strings.TrimSpace(summary))
			var requests, failed, conns, gapMS int
			if _, err := parseStreamSummary(summary, &requests, &failed, &conns, &gapMS); err != nil {
				t.Fatalf("parse %q: %v", summary, err)
			}
			if conns != 1 || failed != 0 || gapMS >= 1000 {
				t.Errorf("the selected pod's connection saw %d requests, %d failed, %d connections, a longest gap of %d ms; want one connection, none failed, no gap of a second",
					requests, failed, conns, gapMS)
			}
			elems, err := podElements(ctx, c, workers[0].Name)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(elems, " "), `"`+client.Status.PodIP+`"`) {
				t.Errorf("after the restart, %s's pods map lacks the pod %s: %v", workers[0].Name, client.Status.PodIP, elems)
			}
		})
	}
}
