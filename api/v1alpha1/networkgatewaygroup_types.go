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
}

// GatewayNodeState is whether a gateway node can hold floating IPs.
// +kubebuilder:validation:Enum=Up;Down
type GatewayNodeState string

const (
	// GatewayNodeUp means the node's agent is healthy and the node may hold
	// floating IPs.
	GatewayNodeUp GatewayNodeState = "Up"

	// GatewayNodeDown means the node may not hold floating IPs; the ones it
	// held move to an Up node.
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
