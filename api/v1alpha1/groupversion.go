package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of every nsegress resource.
const GroupName = "nsegress.io"

// SchemeGroupVersion is the group and version of the types in this package;
// clients and schemes key the kinds on it.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

var (
	// SchemeBuilder collects the functions that add this package's kinds to
	// a scheme. It is apimachinery's builder rather than controller-runtime's
	// because the module does not depend on controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme registers EgressNATPolicy, NetworkGatewayGroup and their
	// lists with a scheme, e.g. a client-go scheme used by the agent.
	AddToScheme = SchemeBuilder.AddToScheme
)

// The resources of this version, as dynamic clients and informers name
// them.
var (
	EgressNATPoliciesResource    = SchemeGroupVersion.WithResource("egressnatpolicies")
	NetworkGatewayGroupsResource = SchemeGroupVersion.WithResource("networkgatewaygroups")
)

// Kind returns the group-qualified kind for an unqualified kind name.
func Kind(kind string) schema.GroupKind {
	return SchemeGroupVersion.WithKind(kind).GroupKind()
}

// Resource returns the group-qualified resource for an unqualified resource
// name, as the API server's errors report it.
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

// addKnownTypes registers the kinds of this version, plus the meta/v1 option
// types (ListOptions, WatchEvent, …) that list and watch calls need.
func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion,
		&EgressNATPolicy{},
		&EgressNATPolicyList{},
		&NetworkGatewayGroup{},
		&NetworkGatewayGroupList{},
	)
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}
