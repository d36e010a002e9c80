package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of EgressNATPolicy status.
const (
	// ConditionReady is True when the policy has an egress IP, a gateway node
	// that is Up holds it, and the nodes can steer the policy's traffic
	// there. While it is False, failMode decides what happens to the traffic.
	ConditionReady = "Ready"
)

// Reasons of the Ready condition. They are CamelCase, as metav1.Condition
// requires, and stable: scripts and alerts may match on them.
const (
	// ReasonEgressReady: Ready is True.
	ReasonEgressReady = "EgressReady"

	// ReasonGatewayGroupNotFound: gatewayRef names no NetworkGatewayGroup.
	ReasonGatewayGroupNotFound = "GatewayGroupNotFound"

	// ReasonEgressIPNotInGroup: spec.egressIP is not one of the group's
	// floatingIPs.
	ReasonEgressIPNotInGroup = "EgressIPNotInGroup"

	// ReasonEgressIPInUse: spec.egressIP is already another policy's egress
	// IP. Sharing one would let one policy's traffic pass the firewall as
	// the other's (docs/design.md §5, no borrowing).
	ReasonEgressIPInUse = "EgressIPInUse"

	// ReasonNoFreeFloatingIP: spec.egressIP is absent and every floating IP
	// of the group is taken by another policy.
	ReasonNoFreeFloatingIP = "NoFreeFloatingIP"

	// ReasonNoGatewayNodeUp: no node of the group is Up to hold the egress
	// IP.
	ReasonNoGatewayNodeUp = "NoGatewayNodeUp"

	// ReasonNoFreeTunnelID: every tunnel ID (1..MaxTunnelID) is taken by
	// an older policy, so nodes cannot steer this one's traffic.
	ReasonNoFreeTunnelID = "NoFreeTunnelID"

	// ReasonInvalidSelector: a source's namespaceSelector or podSelector
	// is not a valid label selector; the policy selects no pod until it is
	// fixed.
	ReasonInvalidSelector = "InvalidSelector"

	// ReasonShadowedByOlderPolicy: an older policy also selects pods this
	// policy selects, and governs them, so this policy's destinations
	// leave those pods without its egress IP. The message names the older
	// policy and a pod or namespace where it happens.
	ReasonShadowedByOlderPolicy = "ShadowedByOlderPolicy"

	// ReasonFloatingIPConflict: the egress IP is a node's own address or a
	// floating IP of two groups; no node holds it.
	ReasonFloatingIPConflict = "FloatingIPConflict"

	// ReasonDestinationCoversCluster: a destination contains the pod range
	// of a node or a Service range of the cluster; the message names the
	// destination and the range.
	ReasonDestinationCoversCluster = "DestinationCoversCluster"
)

// Rejected tells whether the controller refused the policy as a whole:
// a destination covers the cluster's own pod or Service range, so that
// steering it would send the selected pods' traffic to the cluster itself
// through a gateway. A rejected policy selects nothing; the nodes leave it
// out until the controller accepts it again.
func (p *EgressNATPolicy) Rejected() bool {
	c := meta.FindStatusCondition(p.Status.Conditions, ConditionReady)
	return c != nil && c.Status == metav1.ConditionFalse && c.Reason == ReasonDestinationCoversCluster
}

// MaxTunnelID is the largest tunnel ID (status.tunnelID, and the CRD's
// Maximum on it): IDs are 12 bits wide, so that the packet mark, the VXLAN
// network identifier and the routing table derived from an ID stay in the
// ranges nsegress owns.
const MaxTunnelID = 4095

// AssignedTunnelID returns the policy's tunnel ID and whether one is
// assigned: 0, or anything outside 1..MaxTunnelID, is none.
func (p *EgressNATPolicy) AssignedTunnelID() (uint16, bool) {
	id := p.Status.TunnelID
	if id < 1 || id > MaxTunnelID {
		return 0, false
	}
	return uint16(id), true
}
