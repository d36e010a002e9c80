package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/nsegress/nsegress/e2e/lab"
)

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
	client, gateway := selectedClient(t, c, "ovl")
	backend := c.Backends()[0]

	streamAcross(t, c, client, backend.URL(), 15*time.Second, func() {
		for _, node := range []string{client.Spec.NodeName, gateway} {
			start := time.Now()
			if err := c.RecreateOverlay(ctx, node); err != nil {
				t.Fatalf("recreate flannel on %s: %v", node, err)
			}
			t.Logf("flannel on %s stopped, its flannel.1 deleted and recreated in %s", node, time.Since(start).Round(time.Millisecond))
		}
	})
}
