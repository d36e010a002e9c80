package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NetworkGatewayGroup is a pool of floating egress IPs and the gateway nodes
// that may hold them. The elected agent places each floating IP on a healthy
// gateway node, which announces it and SNATs the traffic of the policies
// using it. It is namespaced, as in the Anthos API it follows, so that the
// install namespace can own its groups.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=ngg,categories=nsegress
// +kubebuilder:printcolumn:name="Floating IPs",type=string,JSONPath=`.spec.floatingIPs`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NetworkGatewayGroup struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is what the user asks for.
	// +required
	Spec NetworkGatewayGroupSpec `json:"spec"`

	// Status is where the elected agent placed the floating IPs.
	// +optional
	Status NetworkGatewayGroupStatus `json:"status,omitempty"`
}

// NetworkGatewayGroupSpec lists the floating IPs and which nodes may carry
// them.
type NetworkGatewayGroupSpec struct {
	// FloatingIPs are the IPv4 egress addresses of the group, each unique.
	// They must be free addresses on the gateway nodes' uplink network:
	// the gateway that holds one answers ARP for it.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=15
	// +kubebuilder:validation:items:XValidation:rule="isIP(self) && ip(self).family() == 4",message="must be an IPv4 address such as 198.51.100.11"
	// +kubebuilder:validation:items:XValidation:rule="!isIP(self) || ip(self).isGlobalUnicast()",message="must be a unicast address a node can hold (not 0.0.0.0, loopback, link-local, multicast or broadcast)"
	FloatingIPs []string `json:"floatingIPs"`

	// NodeSelector selects the nodes that may hold the group's floating IPs,
	// e.g. {matchLabels: {nsegress.io/gateway: "true"}}. When absent every
	// node may, as in the Anthos API, where workers hold the floating IPs.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
}

// NetworkGatewayGroupStatus is where the elected agent placed the group's
// floating IPs and which gateway nodes it found healthy.
type NetworkGatewayGroupStatus struct {
	// Nodes maps each gateway node's name to its state.
	// +optional
	Nodes map[string]GatewayNodeState `json:"nodes,omitempty"`

	// FloatingIPs maps each floating IP to the name of the node holding it.
	// A floating IP that no node holds is absent.
	// +optional
	FloatingIPs map[string]string `json:"floatingIPs,omitempty"`

	// Assignments gives, per placed floating IP, its active node, its
	// standby, the epoch of its last move and when and why it moved.
	// FloatingIPs keeps naming the active node, for clients of the first
	// release. An IP that was placed once and that no node may hold now
	// keeps its entry, with an empty active, so that its epoch never goes
	// backwards; an IP never placed, or no longer in spec.floatingIPs, has
	// none.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Assignments map[string]FloatingIPAssignment `json:"assignments,omitempty"`
}

// FloatingIPAssignment is where one floating IP lives and where it goes
// when that node dies. The standby takes the IP over on its own, with a
// higher epoch, when the active stops answering (docs/design.md §3); the
// controller adopts such a claim and moves the IP itself when the active
// is drained, deleted or leaves the group.
type FloatingIPAssignment struct {
	// Active is the node holding the IP; it equals floatingIPs[ip]. Empty
	// means no node may hold the IP now (none of the group's nodes is Up,
	// or the IP conflicts with a node's address or another group).
	// +required
	Active string `json:"active"`

	// Standby is the node that takes the IP over when Active dies. Empty
	// when the group has no other Up node.
	// +optional
	Standby string `json:"standby,omitempty"`

	// Epoch grows at every move, whether the controller or a standby made
	// it; a node that sees a higher epoch for an IP it holds drops it.
	// 0 means the IP was placed by a release without epochs and has not
	// moved since.
	// +required
	// +kubebuilder:validation:Minimum=0
	Epoch int64 `json:"epoch"`

	// LastMove is when the IP last moved; absent if it has not moved
	// since a release without epochs placed it.
	// +optional
	LastMove *metav1.Time `json:"lastMove,omitempty"`

	// Reason is why the IP last moved.
	// +optional
	Reason MoveReason `json:"reason,omitempty"`
}

// MoveReason is why a floating IP moved. The values are stable: alerts
// and scripts may match on them, and they are the reasons of the Events
// the controller emits on the group for every move.
// +kubebuilder:validation:Enum=Placed;PeerDead;NodeDown;Drained;NodeDeleted;NotInGroup;Conflict;PartitionHealed;Manual
type MoveReason string

const (
	// MovePlaced: the IP was placed on a node for the first time, or again
	// after a time in which no node could hold it.
	MovePlaced MoveReason = "Placed"

	// MovePeerDead: the standby took the IP over on its own because the
	// active stopped answering heartbeats and ARP; the controller adopted
	// its claim.
	MovePeerDead MoveReason = "PeerDead"

	// MoveNodeDown: the active's Node is not Ready.
	MoveNodeDown MoveReason = "NodeDown"

	// MoveDrained: the active's Node is cordoned (spec.unschedulable), as
	// kubectl drain and cordon leave it.
	MoveDrained MoveReason = "Drained"

	// MoveNodeDeleted: the active's Node is being deleted or is gone.
	MoveNodeDeleted MoveReason = "NodeDeleted"

	// MoveNotInGroup: the active's Node no longer matches the group's
	// nodeSelector.
	MoveNotInGroup MoveReason = "NotInGroup"

	// MoveConflict: the IP became a node's own address or a floating IP
	// of another group, so no node may hold it (the policies using it say
	// so in their Ready condition, reason FloatingIPConflict).
	MoveConflict MoveReason = "Conflict"

	// MovePartitionHealed is reserved for a claim a node makes when a
	// network partition heals.
	MovePartitionHealed MoveReason = "PartitionHealed"

	// MoveManual is reserved for a move an operator asks for.
	MoveManual MoveReason = "Manual"
)

// GatewayNodeState is whether a gateway node can hold floating IPs.
// +kubebuilder:validation:Enum=Up;Down
type GatewayNodeState string

const (
	// GatewayNodeUp means the node may hold floating IPs: it matches the
	// group's nodeSelector, is Ready, is not cordoned (spec.unschedulable)
	// and is not being deleted.
	GatewayNodeUp GatewayNodeState = "Up"

	// GatewayNodeDown means the node may not hold floating IPs (not Ready,
	// cordoned or being deleted); the ones it held move to its standby or
	// another Up node.
	GatewayNodeDown GatewayNodeState = "Down"
)

// NetworkGatewayGroupList is a list of NetworkGatewayGroup.
//
// +kubebuilder:object:root=true
type NetworkGatewayGroupList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`

	// Items are the groups.
	Items []NetworkGatewayGroup `json:"items"`
}
