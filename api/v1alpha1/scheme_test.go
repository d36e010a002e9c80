package v1alpha1

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestTheSchemeKnowsEveryKindUnderNsegressIO(t *testing.T) {
	scheme := newTestScheme(t)
	tests := []struct {
		name string
		obj  runtime.Object
		kind string
	}{
		{name: "a policy is an EgressNATPolicy", obj: &EgressNATPolicy{}, kind: "EgressNATPolicy"},
		{name: "a policy list is an EgressNATPolicyList", obj: &EgressNATPolicyList{}, kind: "EgressNATPolicyList"},
		{name: "a group is a NetworkGatewayGroup", obj: &NetworkGatewayGroup{}, kind: "NetworkGatewayGroup"},
		{name: "a group list is a NetworkGatewayGroupList", obj: &NetworkGatewayGroupList{}, kind: "NetworkGatewayGroupList"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := schema.GroupVersionKind{Group: "nsegress.io", Version: "v1alpha1", Kind: tt.kind}
			gvks, _, err := scheme.ObjectKinds(tt.obj)
			if err != nil {
				t.Fatalf("ObjectKinds: %v", err)
			}
			if len(gvks) != 1 || gvks[0] != want {
				t.Errorf("ObjectKinds = %v, want [%v]", gvks, want)
			}
			if !scheme.Recognizes(want) {
				t.Errorf("scheme does not recognize %v", want)
			}
		})
	}
}

func TestTheSchemeCarriesTheOptionsThatListAndWatchNeed(t *testing.T) {
	scheme := newTestScheme(t)
	for _, kind := range []string{"ListOptions", "GetOptions", "DeleteOptions", "WatchEvent"} {
		if !scheme.Recognizes(SchemeGroupVersion.WithKind(kind)) {
			t.Errorf("scheme does not recognize %s in %s", kind, SchemeGroupVersion)
		}
	}
}

func TestGroupQualifiedNamesUseTheAPIGroup(t *testing.T) {
	if got, want := Kind("EgressNATPolicy").String(), "EgressNATPolicy.nsegress.io"; got != want {
		t.Errorf("Kind = %q, want %q", got, want)
	}
	if got, want := Resource("networkgatewaygroups").String(), "networkgatewaygroups.nsegress.io"; got != want {
		t.Errorf("Resource = %q, want %q", got, want)
	}
}
