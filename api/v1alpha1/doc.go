// Package v1alpha1 holds the nsegress.io/v1alpha1 API: EgressNATPolicy, which
// says whose traffic to which destinations leaves with which egress IP, and
// NetworkGatewayGroup, which holds the floating egress IPs and the gateway
// nodes that carry them (docs/design.md §3).
//
// Field names follow the Anthos/GDC manifests of the seed write-up, so that a
// seed manifest with its apiVersion changed applies as is. The CRDs in
// install/crds are generated from the markers in this package by
// tools/generate.sh; never edit them by hand.
//
// +kubebuilder:object:generate=true
// +groupName=nsegress.io
package v1alpha1
