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

// stalePolicies are the group and the old policy of
// TestANodeStillSteeringWithADeletedPolicysIDBorrowsNothing: the old
// policy reaches the whole on-prem segment as .101, the IP the firewall
// lets reach backend 1 only.
const stalePolicies = onpremGroup + `---
apiVersion: nsegress.io/v1alpha1
kind: EgressNATPolicy
metadata: {name: stale-old}
spec:
  sources: [{namespaceSelector: {matchLabels: {team: stale-old}}}]
  action: SNAT
  destinations: [{cidr: 203.0.113.0/24}]
  gatewayRef: {name: onprem, namespace: nsegress-system}
  egressIP: 198.51.100.101
`

// staleNewPolicy is created once the old one is deleted: another
// namespace, another egress IP (.103, which reaches backend 3), held by
// the same gateway as .101.
const staleNewPolicy = `
apiVersion: nsegress.io/v1alpha1
kind: EgressNATPolicy
metadata: {name: stale-new}
spec:
  sources: [{namespaceSelector: {matchLabels: {team: stale-new}}}]
  action: SNAT
  destinations: [{cidr: 203.0.113.0/24}]
  gatewayRef: {name: onprem, namespace: nsegress-system}
  egressIP: 198.51.100.103
`

// TestANodeStillSteeringWithADeletedPolicysIDBorrowsNothing: a worker
// whose agent is stopped keeps steering its pods with the tunnel ID of a
// policy that is then deleted; a policy created at once for another
// namespace must not give those pods its egress IP. Handing the new policy
// the deleted one's ID would do exactly that: the worker's packets would
// come out of the gateway's device of that ID and be SNATed to the new
// egress IP, which the firewall lets reach backend 3.
func TestANodeStillSteeringWithADeletedPolicysIDBorrowsNothing(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	cs := clientset(t, c)
	loadAgentImage(t, c)
	installNsegress(t, c)
	workers, _ := nodesByRole(c)
	stale, other := workers[0].Name, workers[1].Name
	namespaces := []string{"stale-old", "stale-new"}
	t.Cleanup(func() {
		// The stopped agent comes back first, so that DEL finds it.
		_, _ = kubectl(context.Background(), c, "", "-n", "nsegress-system", "patch", "daemonset/nsegress-agent",
			"--type=json", "-p", `[{"op":"remove","path":"/spec/template/spec/affinity"}]`)
		_, _ = kubectl(context.Background(), c, "", "-n", "nsegress-system", "rollout", "status", "daemonset/nsegress-agent", "--timeout=120s")
		deleteAll(t, cs, namespaces)
		_, _ = kubectl(context.Background(), c, "", "delete", "egressnatpolicy", "stale-old", "stale-new", "--ignore-not-found")
		_, _ = kubectl(context.Background(), c, "", "-n", "nsegress-system", "delete", "networkgatewaygroup", "onprem", "--ignore-not-found")
		uninstallNsegress(t, c)
	})
	for _, ns := range namespaces {
		testNamespace(t, cs, ns, map[string]string{"team": ns})
	}
	if out, err := kubectl(ctx, c, stalePolicies, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply the old policy: %v\n%s", err, out)
	}
	waitPoliciesReady(t, c, "stale-old")
	oldID := tunnelID(t, c, "stale-old")
	old := runPods(t, cs, echoPod("stale-old", "client", stale))[0]
	backends := c.Backends()
	b1, b3 := backends[0], backends[2]

	step := func(name string, fn func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, fn) {
			t.FailNow()
		}
	}
	step("the old policy's pod reaches backend 1 as .101", func(t *testing.T) {
		out, err := execIn(ctx, c, old.Namespace, old.Name, "/labbox", "get", "-timeout", "3s", b1.URL())
		if err != nil || strings.TrimSpace(out) != "198.51.100.101" {
			t.Fatalf("got %q, %v", out, err)
		}
	})

	step("the agent of "+stale+" stops; its node keeps what it programmed", func(t *testing.T) {
		patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":`+
			`{"nodeSelectorTerms":[{"matchExpressions":[{"key":"kubernetes.io/hostname","operator":"NotIn","values":[%q]}]}]}}}}}}}`, stale)
		if out, err := kubectl(ctx, c, "", "-n", "nsegress-system", "patch", "daemonset/nsegress-agent", "--type=merge", "-p", patch); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		privtest.Eventually(t, 120*time.Second, "no agent on "+stale, func() (bool, error) {
			pods, err := cs.CoreV1().Pods("nsegress-system").List(ctx, metav1.ListOptions{LabelSelector: agentLabel, FieldSelector: "spec.nodeName=" + stale})
			return err == nil && len(pods.Items) == 0, err
		})
		out, err := execIn(ctx, c, old.Namespace, old.Name, "/labbox", "get", "-timeout", "3s", b1.URL())
		if err != nil || strings.TrimSpace(out) != "198.51.100.101" {
			t.Fatalf("with its agent stopped the node no longer steers the pod: %q, %v", out, err)
		}
	})

	step("the old policy is deleted and a new one created for another namespace", func(t *testing.T) {
		if out, err := kubectl(ctx, c, "", "delete", "egressnatpolicy", "stale-old", "--wait=true"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, err := kubectl(ctx, c, staleNewPolicy, "apply", "-f", "-"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		waitPoliciesReady(t, c, "stale-new")
		t.Logf("the deleted policy had tunnel ID %s, the new one has %s", oldID, tunnelID(t, c, "stale-new"))
		fresh := runPods(t, cs, echoPod("stale-new", "client", other))[0]
		out, err := execIn(ctx, c, fresh.Namespace, fresh.Name, "/labbox", "get", "-timeout", "3s", b3.URL())
		if err != nil || strings.TrimSpace(out) != "198.51.100.103" {
			t.Fatalf("the new policy's pod did not reach backend 3 as .103: %q, %v", out, err)
		}
	})

	step("the stale node's pod does not reach backend 3 with the new policy's egress IP", func(t *testing.T) {
		if out, err := execIn(ctx, c, old.Namespace, old.Name, "/labbox", "get", "-timeout", "3s", b3.URL()); err == nil {
			t.Errorf("the old policy's pod reached backend 3, seen as %q: it borrowed the new policy's egress IP", strings.TrimSpace(out))
		}
	})
}

// tunnelID is a policy's status.tunnelID.
func tunnelID(t *testing.T, c Cluster, policy string) string {
	t.Helper()
	out, err := kubectl(context.Background(), c, "", "get", "egressnatpolicy", policy, "-o", "jsonpath={.status.tunnelID}")
	if err != nil {
		t.Fatal(err)
	}
	return out
}
