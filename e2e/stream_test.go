package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// onpremGroup is the group onprem with the lab's three floating IPs on
// the gateway nodes.
const onpremGroup = `apiVersion: nsegress.io/v1alpha1
kind: NetworkGatewayGroup
metadata: {name: onprem, namespace: nsegress-system}
spec:
  floatingIPs: [198.51.100.101, 198.51.100.102, 198.51.100.103]
  nodeSelector: {matchLabels: {nsegress.io/gateway: "true"}}
`

// onePolicy is onpremGroup and a policy named ns selecting the namespace
// labelled team=ns, to the on-prem segment, pinned to the first floating
// IP (which backend 1 admits).
func onePolicy(ns string) string {
	return onpremGroup + fmt.Sprintf(`---
apiVersion: nsegress.io/v1alpha1
kind: EgressNATPolicy
metadata: {name: %[1]s}
spec:
  sources: [{namespaceSelector: {matchLabels: {team: %[1]s}}}]
  action: SNAT
  destinations: [{cidr: 203.0.113.0/24}]
  gatewayRef: {name: onprem, namespace: nsegress-system}
  egressIP: 198.51.100.101
`, ns)
}

// streamAcross has pod stream requests to url over one TCP connection
// (labbox stream) for d, runs event two seconds in, and fails t unless
// the connection survived, no request failed and no answer was a second
// late: a long-lived flow across the event, judged by what it saw.
func streamAcross(t *testing.T, c Cluster, pod *corev1.Pod, url string, d time.Duration, event func()) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	var summary string
	var streamErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		summary, streamErr = execIn(ctx, c, pod.Namespace, pod.Name, "/labbox", "stream",
			"-interval", "100ms", "-duration", d.String(), "-timeout", "1s", url)
	}()
	time.Sleep(2 * time.Second)
	event()
	wg.Wait()
	if streamErr != nil {
		t.Fatalf("stream: %v", streamErr)
	}
	t.Logf("stream from %s/%s: %s", pod.Namespace, pod.Name, strings.TrimSpace(summary))
	var requests, failed, conns, gapMS int
	if _, err := fmt.Sscanf(strings.TrimSpace(summary), "requests %d failed %d connections %d longest-gap-ms %d",
		&requests, &failed, &conns, &gapMS); err != nil {
		t.Fatalf("parse %q: %v", summary, err)
	}
	if conns != 1 || failed != 0 || gapMS >= 1000 || requests < 10 {
		t.Errorf("the pod's connection saw %d requests, %d failed, %d connections, a longest gap of %d ms; want one connection, none failed, no gap of a second",
			requests, failed, conns, gapMS)
	}
}

// selectedClient installs nsegress and onePolicy(ns), and starts a pod of
// namespace ns on the first worker. It returns the pod, which reaches
// backend 1 as 198.51.100.101 (checked), and the policy's gateway node.
// Everything goes at the end of t.
func selectedClient(t testing.TB, c Cluster, ns string) (*corev1.Pod, string) {
	t.Helper()
	ctx := context.Background()
	cs := clientset(t, c)
	loadAgentImage(t, c)
	installNsegress(t, c)
	t.Cleanup(func() {
		deleteAll(t, cs, []string{ns})
		_, _ = kubectl(context.Background(), c, onePolicy(ns), "delete", "-f", "-", "--ignore-not-found")
		uninstallNsegress(t, c)
	})
	testNamespace(t, cs, ns, map[string]string{"team": ns})
	if out, err := kubectl(ctx, c, onePolicy(ns), "apply", "-f", "-"); err != nil {
		t.Fatalf("apply the policy: %v\n%s", err, out)
	}
	waitPoliciesReady(t, c, ns)
	workers, _ := nodesByRole(c)
	client := runPods(t, cs, echoPod(ns, "client", workers[0].Name))[0]
	gateway, err := kubectl(ctx, c, "", "get", "egressnatpolicy", ns, "-o", "jsonpath={.status.gatewayNode}")
	if err != nil {
		t.Fatal(err)
	}
	backend := c.Backends()[0]
	if out, err := execIn(ctx, c, client.Namespace, client.Name, "/labbox", "get", "-timeout", "3s", backend.URL()); err != nil || strings.TrimSpace(out) != "198.51.100.101" {
		t.Fatalf("before: the pod reached backend 1 as %q, %v; want 198.51.100.101", out, err)
	}
	return client, strings.TrimSpace(gateway)
}
