package controller

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// Input is everything the controller decides from: the cluster's policies,
// gateway groups and nodes, with their current status. Assign reads it and
// never changes it.
type Input struct {
	Policies []v1alpha1.EgressNATPolicy
	Groups   []v1alpha1.NetworkGatewayGroup
	// Nodes are the cluster's nodes; the annotation
	// v1alpha1.ClaimsAnnotation of each carries the floating IPs its agent
	// took over on its own, which Assign adopts (see place).
	Nodes []corev1.Node
	// Namespaces maps every namespace to its labels, and Pods are the
	// cluster's pods: with them Assign finds policies shadowed by older
	// ones. Nil means not known (nothing is reported shadowed).
	Namespaces map[string]map[string]string
	Pods       []Pod
	// TunnelIDHighWater is the highest tunnel ID handed out before, by
	// any controller (persisted; see highWaterStore): new IDs count up
	// from above it, so that the ID of a deleted policy is not handed out
	// again while nodes may still steer with it.
	TunnelIDHighWater int32
	// ServiceRanges are the cluster's Service ranges; with the nodes' pod
	// ranges they are what no policy's destinations may cover.
	ServiceRanges []ClusterRange
	// RecentTunnelIDs are the IDs this controller handed out by policy
	// UID: a policy whose status does not show its ID yet (the cache lags
	// the write) keeps it instead of getting a new one.
	RecentTunnelIDs map[types.UID]int32
}

// Output is the status every policy and group should have. It holds an
// entry for every policy and group of the Input, whether or not it changed.
type Output struct {
	// Policies is keyed by policy name (policies are cluster-scoped).
	Policies map[string]v1alpha1.EgressNATPolicyStatus
	// Groups is keyed by the group's namespace and name.
	Groups map[types.NamespacedName]v1alpha1.NetworkGatewayGroupStatus
	// TunnelIDHighWater is the highest tunnel ID handed out so far, to be
	// persisted before any status names a new ID.
	TunnelIDHighWater int32
}

// Assign decides, from the current state alone, which node holds each
// floating IP of each group, and each policy's egress IP, gateway node,
// tunnel ID and Ready condition. It does no I/O and is deterministic: the
// same Input gives the same Output whatever the order of its slices, so
// that two controllers in a row (a leader change) agree, and running it on
// its own Output changes nothing but what time alone changes.
//
// Current assignments are kept whenever they are still valid (a floating
// IP stays on an Up node unless a standby's claim moved it, a policy keeps
// its egress IP and tunnel ID), so that traffic does not move and firewall
// rules written for an egress IP stay right. Where two policies want the
// same thing, the older one (by creation time, then name) wins. now stamps
// conditions whose status changes and the lastMove of floating IPs that
// move.
func Assign(in Input, now metav1.Time) Output {
	out := Output{
		Policies: make(map[string]v1alpha1.EgressNATPolicyStatus, len(in.Policies)),
		Groups:   make(map[types.NamespacedName]v1alpha1.NetworkGatewayGroupStatus, len(in.Groups)),
	}

	groups := make(map[types.NamespacedName]*placement, len(in.Groups))
	conflicts := floatingConflicts(in.Groups, in.Nodes)
	taken := claimsOf(in.Nodes)
	for i := range in.Groups {
		g := &in.Groups[i]
		key := types.NamespacedName{Namespace: g.Namespace, Name: g.Name}
		p := place(g, in.Nodes, conflicts, taken, now)
		groups[key] = p
		out.Groups[key] = p.status
	}

	policies := byAge(in.Policies)
	ids, highWater := assignTunnelIDs(policies, in.TunnelIDHighWater, in.RecentTunnelIDs)
	out.TunnelIDHighWater = highWater
	claims := newIPClaims(policies)
	shadows := shadowed(policies, in.Namespaces, in.Pods)
	ranges := clusterRanges(in.Nodes, in.ServiceRanges)
	for _, p := range policies {
		var shadow *shadowing
		if s, ok := shadows[p.Name]; ok {
			shadow = &s
		}
		out.Policies[p.Name] = policyStatus(p, groups, claims, ids[p.Name], shadow, ranges, now)
	}
	return out
}

// byAge returns pointers to the policies, oldest first (v1alpha1.Older):
// the order in which they claim egress IPs and tunnel IDs.
func byAge(policies []v1alpha1.EgressNATPolicy) []*v1alpha1.EgressNATPolicy {
	sorted := make([]*v1alpha1.EgressNATPolicy, len(policies))
	for i := range policies {
		sorted[i] = &policies[i]
	}
	sort.SliceStable(sorted, func(i, j int) bool { return v1alpha1.Older(sorted[i], sorted[j]) })
	return sorted
}
