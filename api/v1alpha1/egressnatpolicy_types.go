package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EgressNATPolicy sends the traffic of the pods it selects, towards the
// destinations it lists, out through a gateway node of a NetworkGatewayGroup,
// SNATed to one of that group's floating IPs. It is cluster-scoped because its
// sources select namespaces.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=enp,categories=nsegress
// +kubebuilder:printcolumn:name="Egress IP",type=string,JSONPath=`.status.egressIP`
// +kubebuilder:printcolumn:name="Gateway Node",type=string,JSONPath=`.status.gatewayNode`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Gateway",type=string,priority=1,JSONPath=`.spec.gatewayRef.name`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type EgressNATPolicy struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is what the user asks for.
	// +required
	Spec EgressNATPolicySpec `json:"spec"`

	// Status is what the elected agent decided and the nodes did.
	// +optional
	Status EgressNATPolicyStatus `json:"status,omitempty"`
}

// EgressNATPolicySpec selects source pods and destinations and names the
// gateway group whose floating IP their traffic leaves with.
type EgressNATPolicySpec struct {
	// Sources selects the pods whose traffic the policy applies to. A pod is
	// selected when it matches any entry (OR); within an entry the selectors
	// must all match (AND).
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	Sources []EgressSource `json:"sources"`

	// Action is what happens to selected traffic. SNAT is the only action.
	// +required
	Action EgressAction `json:"action"`

	// Destinations lists the IPv4 networks the policy applies to. Traffic of
	// selected pods to other addresses leaves the normal way.
	// +required
	// +listType=map
	// +listMapKey=cidr
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	Destinations []EgressDestination `json:"destinations"`

	// GatewayRef names the NetworkGatewayGroup whose gateway nodes carry and
	// SNAT the traffic.
	// +required
	GatewayRef GatewayRef `json:"gatewayRef"`

	// EgressIP pins the policy to one of the group's floatingIPs, so that a
	// firewall rule can be written before the policy exists. When absent the
	// controller assigns a floating IP that no other policy uses.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",message="must be an IPv4 address such as 198.51.100.11"
	// +kubebuilder:validation:XValidation:rule="!isIP(self) || ip(self).isGlobalUnicast()",message="must be a unicast address a node can hold (not 0.0.0.0, loopback, link-local, multicast or broadcast)"
	EgressIP string `json:"egressIP,omitempty"`

	// FailMode says what happens to selected traffic while no gateway can
	// carry it: Closed (the default) drops it, Open lets it leave the normal
	// way with the node's IP.
	// +optional
	// +kubebuilder:default=Closed
	FailMode FailMode `json:"failMode,omitempty"`
}

// EgressSource selects pods by the labels of their namespace and, optionally,
// their own labels; both must match.
type EgressSource struct {
	// NamespaceSelector selects namespaces by label; {} selects all
	// namespaces. It is required because the policy is cluster-scoped: a
	// source without it would be ambiguous about which namespaces it means.
	// +required
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`

	// PodSelector narrows the selection to pods with these labels in the
	// selected namespaces. Absent or {} selects all their pods.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// EgressAction is what a policy does with the traffic it selects.
// +kubebuilder:validation:Enum=SNAT
type EgressAction string

const (
	// ActionSNAT forwards selected traffic to the gateway node, which
	// rewrites its source to the policy's egress IP.
	ActionSNAT EgressAction = "SNAT"
)

// EgressDestination is one destination network of a policy.
type EgressDestination struct {
	// CIDR is an IPv4 network in canonical form, e.g. 203.0.113.0/28. Host
	// bits must be zero so that what the user wrote is exactly what is
	// matched; IPv6 is refused because egress IPs are IPv4.
	// +required
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="must be a CIDR such as 203.0.113.0/28"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).ip().family() == 4",message="must be an IPv4 CIDR: egress IPs are IPv4"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self) == cidr(self).masked()",message="must have no bits set after the prefix length, e.g. 10.0.0.0/24 rather than 10.0.0.5/24"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).prefixLength() > 0",message="must not be the whole address space (0.0.0.0/0): it holds the cluster's own pods, Services and API server; name the networks behind the firewall"
	CIDR string `json:"cidr"`
}

// GatewayRef names a NetworkGatewayGroup. The namespace is always given
// because the policy itself has none.
type GatewayRef struct {
	// Name is the NetworkGatewayGroup's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Namespace is the NetworkGatewayGroup's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace"`
}

// FailMode says what happens to a policy's traffic while no gateway node can
// carry it.
// +kubebuilder:validation:Enum=Closed;Open
type FailMode string

const (
	// FailModeClosed drops the traffic, so it never leaves with a node IP.
	// It is the default.
	FailModeClosed FailMode = "Closed"

	// FailModeOpen lets the traffic leave the normal way, with the node's
	// IP, for destinations where reachability matters more than the source.
	FailModeOpen FailMode = "Open"
)

// EgressNATPolicyStatus is what the elected agent decided for a policy.
type EgressNATPolicyStatus struct {
	// EgressIP is the floating IP the policy's traffic leaves with: spec
	// egressIP when set, else the one the controller assigned.
	// +optional
	EgressIP string `json:"egressIP,omitempty"`

	// GatewayNode is the node that currently holds EgressIP and does the
	// SNAT.
	// +optional
	GatewayNode string `json:"gatewayNode,omitempty"`

	// TunnelID is the policy's number on every node, unique in the
	// cluster and kept for the policy's lifetime: its VXLAN network
	// identifier, its packet mark and its routing table are derived from
	// it. The elected agent assigns it; 0 means not assigned yet.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4095
	TunnelID int32 `json:"tunnelID,omitempty"`

	// Conditions hold at least Ready, with a reason and a message a user
	// can act on; see the Condition* and Reason* constants.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchMergeKey=type
	// +patchStrategy=merge
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`
}

// EgressNATPolicyList is a list of EgressNATPolicy.
//
// +kubebuilder:object:root=true
type EgressNATPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`

	// Items are the policies.
	Items []EgressNATPolicy `json:"items"`
}
