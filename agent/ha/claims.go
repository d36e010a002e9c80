package ha

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// ClaimWriter records a node's takeovers in its Node's claims annotation,
// where the elected controller adopts them into the group's status. The
// takeover itself never waits for it: the API server may be what failed.
type ClaimWriter struct {
	Client kubernetes.Interface
	Node   string
	Logf   func(format string, args ...any)
	latest chan map[netip.Addr]int64
}

// NewClaimWriter prepares a writer; Run writes.
func NewClaimWriter(client kubernetes.Interface, node string, logf func(string, ...any)) *ClaimWriter {
	return &ClaimWriter{Client: client, Node: node, Logf: logf, latest: make(chan map[netip.Addr]int64, 1)}
}

// Set replaces the claims to write; only the latest counts.
func (w *ClaimWriter) Set(own map[netip.Addr]int64) {
	for {
		select {
		case w.latest <- own:
			return
		default:
			select {
			case <-w.latest: // drop the older value
			default:
			}
		}
	}
}

// Run writes the latest claims, retrying with backoff, until ctx ends.
// Claims the API has caught up with are no longer in the runtime's set;
// writing the smaller set keeps the annotation short. An empty set is
// written too, so that nothing stale stays.
func (w *ClaimWriter) Run(ctx context.Context) error {
	for {
		var own map[netip.Addr]int64
		select {
		case <-ctx.Done():
			return nil
		case own = <-w.latest:
		}
		wait := 100 * time.Millisecond
		for {
			err := w.write(ctx, own)
			if err == nil {
				break
			}
			w.Logf("ha: record the claims on node %s (retrying in %s): %v", w.Node, wait, err)
			select {
			case <-ctx.Done():
				return nil
			case newer := <-w.latest:
				own = newer
			case <-time.After(wait):
			}
			wait = min(2*wait, 10*time.Second)
		}
	}
}

func (w *ClaimWriter) write(ctx context.Context, own map[netip.Addr]int64) error {
	claims := map[string]v1alpha1.Claim{}
	for ip, e := range own {
		claims[ip.String()] = v1alpha1.Claim{Epoch: e, Reason: v1alpha1.MovePeerDead}
	}
	var value any // null removes the annotation
	if s := v1alpha1.FormatClaims(claims); s != "" {
		value = s
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{v1alpha1.ClaimsAnnotation: value}}})
	if err != nil {
		return fmt.Errorf("claims patch: %w", err)
	}
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = w.Client.CoreV1().Nodes().Patch(c, w.Node, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// Clear removes the node's claims annotation: nsegress is being
// uninstalled.
func (w *ClaimWriter) Clear(ctx context.Context) error { return w.write(ctx, nil) }
