package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsegress/nsegress/e2e/lab"
)

// overlayPolicy is the group and the one policy of
// TestSelectedPodsRideOutTheirOverlayBeingRecreated: namespace ovl
// reaches the on-prem segment as .101, which backend 1 admits.
const overlayPolicy = `
apiVersion: nsegress.io/v1alpha1
kind: NetworkGatewayGroup
metadata: {name: onprem, namespace: nsegress-system}
spec:
  floatingIPs: [198.51.100.101, 198.51.100.102, 198.51.100.103]
  nodeSelector: {matchLabels: {nsegress.io/gateway: "true"}}
---
apiVersion: nsegress.io/v1alpha1
kind: EgressNATPolicy
metadata: {name: ovl}
spec:
  sources: [{namespaceSelector: {matchLabels: {team: ovl}}}]
  action: SNAT
  destinations: [{cidr: 203.0.113.0/24}]
  gatewayRef: {name: onprem, namespace: nsegress-system}
  egressIP: 198.51.100.101
`

// TestSelectedPodsRideOutTheirOverlayBeingRecreated runs on the flannel
// cluster (make test's second run): flannel restarts on the selected
// pod's node and on the gateway, its overlay device flannel.1 going away
// and coming back, while the pod streams requests to its backend over one
// TCP connection. The egress path does not use the overlay (replies
// return through the policy's tunnel), so the connection survives and no
// request goes unanswered for a second.
func TestSelectedPodsRideOutTheirOverlayBeingRecreated(t *testing.T) {
	c := cluster(t)
	for _, n := range c.Nodes() {
		if n.Primary != lab.PrimaryFlannel {
			t.Fatalf("this test needs a cluster whose nodes all run flannel (NSEGRESS_LAB_PRIMARY=flannel, as make test's second run); %s runs %s", n.Name, n.Primary)
		}
	}
	ctx := context.Background()
	cs := clientset(t, c)
	loadAgentImage(t, c)
	installNsegress(t, c)
	t.Cleanup(func() {
		deleteAll(t, cs, []string{"ovl"})
		_, _ = kubectl(context.Background(), c, overlayPolicy, "delete", "-f", "-", "--ignore-not-found")
		uninstallNsegress(t, c)
	})
	testNamespace(t, cs, "ovl", map[string]string{"team": "ovl"})
	if out, err := kubectl(ctx, c, overlayPolicy, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply the policy: %v\n%s", err, out)
	}
	waitPoliciesReady(t, c, "ovl")
	workers, _ := nodesByRole(c)
	client := runPods(t, cs, echoPod("ovl", "client", workers[0].Name))[0]
	gateway, err := kubectl(ctx, c, "", "get", "egressnatpolicy", "ovl", "-o", "jsonpath={.status.gatewayNode}")
	if err != nil {
		t.Fatal(err)
	}
	backend := c.Backends()[0]
	if out, err := execIn(ctx, c, client.Namespace, client.Name, "/labbox", "get", "-timeout", "3s", backend.URL()); err != nil || strings.TrimSpace(out) != "198.51.100.101" {
		t.Fatalf("before: the pod reached backend 1 as %q, %v; want 198.51.100.101", out, err)
	}

	var wg sync.WaitGroup
	var summary string
	var streamErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		summary, streamErr = execIn(ctx, c, client.Namespace, client.Name, "/labbox", "stream",
			"-interval", "100ms", "-duration", "15s", "-timeout", "1s", backend.URL())
	}()
	time.Sleep(2 * time.Second)
	for _, node := range []string{workers[0].Name, strings.TrimSpace(gateway)} {
		start := time.Now()
		if err := c.RecreateOverlay(ctx, node); err != nil {
			t.Fatalf("recreate flannel on %s: %v", node, err)
		}
		t.Logf("flannel on %s stopped, its flannel.1 deleted and recreated in %s", node, time.Since(start).Round(time.Millisecond))
	}
	wg.Wait()
	if streamErr != nil {
		t.Fatalf("stream: %v", streamErr)
	}
	t.Logf("stream from the selected pod: %s", strings.TrimSpace(summary))
	var requests, failed, conns, gapMS int
	if _, err := parseStreamSummary(summary, &requests, &failed, &conns, &gapMS); err != nil {
		t.Fatalf("parse %q: %v", summary, err)
	}
	if conns != 1 || failed != 0 || gapMS >= 1000 || requests < 50 {
		t.Errorf("across flannel's restarts the selected pod's connection saw %d requests, %d failed, %d connections, a longest gap of %d ms; want one connection, none failed, no gap of a second",
			requests, failed, conns, gapMS)
	}
}

// parseStreamSummary parses labbox stream's summary line.
func parseStreamSummary(s string, requests, failed, conns, gapMS *int) (int, error) {
	return fmt.Sscanf(strings.TrimSpace(s), "requests %d failed %d connections %d longest-gap-ms %d", requests, failed, conns, gapMS)
}
