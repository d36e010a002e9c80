package controller

import (
	"context"
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// ClusterRange is an address range of the cluster itself, which no policy
// may send through a gateway: its pods' or its Services'.
type ClusterRange struct {
	// What names the range for a user, e.g. "the pod range of node w1".
	What   string
	Prefix netip.Prefix
}

// clusterRanges are the pod ranges the nodes were given (spec.podCIDRs;
// absent where the cluster does not allocate them) and the Service
// ranges.
func clusterRanges(nodes []corev1.Node, services []ClusterRange) []ClusterRange {
	var out []ClusterRange
	for i := range nodes {
		for _, c := range nodes[i].Spec.PodCIDRs {
			if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is4() {
				out = append(out, ClusterRange{What: "the pod range of node " + nodes[i].Name, Prefix: p.Masked()})
			}
		}
	}
	out = append(out, services...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].What < out[j].What })
	return out
}

// coveredRange reports the first destination of p that contains a range
// of the cluster: marking it would send the selected pods' traffic to
// other pods, or to Services, out through a gateway.
func coveredRange(p *v1alpha1.EgressNATPolicy, ranges []ClusterRange) (string, bool) {
	for i, d := range p.Spec.Destinations {
		dst, err := netip.ParsePrefix(d.CIDR)
		if err != nil {
			continue // the API server refuses these
		}
		for _, r := range ranges {
			if dst.Bits() <= r.Prefix.Bits() && dst.Contains(r.Prefix.Addr()) {
				return fmt.Sprintf("spec.destinations[%d].cidr %s covers %s (%s)", i, d.CIDR, r.What, r.Prefix), true
			}
		}
	}
	return "", false
}

// serviceRanges lists the cluster's Service ranges (ServiceCIDR objects).
// A cluster that does not serve the API has none to tell.
func serviceRanges(ctx context.Context, client kubernetes.Interface) ([]ClusterRange, error) {
	list, err := client.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list ServiceCIDRs: %w", err)
	}
	var out []ClusterRange
	for _, s := range list.Items {
		for _, c := range s.Spec.CIDRs {
			if p, err := netip.ParsePrefix(c); err == nil && p.Addr().Is4() {
				out = append(out, ClusterRange{What: "the Service range " + s.Name, Prefix: p.Masked()})
			}
		}
	}
	return out, nil
}
