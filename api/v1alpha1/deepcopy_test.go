package v1alpha1

import (
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// fullPolicy returns a policy with every field, pointer, slice and map set,
// so that a deep copy that shares memory anywhere shows up.
func fullPolicy() *EgressNATPolicy {
	return &EgressNATPolicy{
		TypeMeta:   typeMeta("EgressNATPolicy"),
		ObjectMeta: metav1.ObjectMeta{Name: "purple", Labels: map[string]string{"a": "b"}},
		Spec: EgressNATPolicySpec{
			Sources: []EgressSource{{
				NamespaceSelector: metav1.LabelSelector{
					MatchLabels: map[string]string{"team": "purple"},
					MatchExpressions: []metav1.LabelSelectorRequirement{
						{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "api"}},
					},
				},
				PodSelector: selector("role", "frontend"),
			}},
			Action:       ActionSNAT,
			Destinations: []EgressDestination{{CIDR: "203.0.113.0/28"}},
			GatewayRef:   GatewayRef{Name: "onprem", Namespace: "nsegress-system"},
			EgressIP:     "198.51.100.101",
			FailMode:     FailModeOpen,
		},
		Status: EgressNATPolicyStatus{
			EgressIP:    "198.51.100.101",
			GatewayNode: "gw-1",
			Conditions: []metav1.Condition{{
				Type:               ConditionReady,
				Status:             metav1.ConditionTrue,
				Reason:             ReasonEgressReady,
				Message:            "gw-1 holds 198.51.100.101",
				LastTransitionTime: metav1.NewTime(time.Unix(1700000000, 0)),
			}},
		},
	}
}

// fullGroup is fullPolicy's counterpart for NetworkGatewayGroup.
func fullGroup() *NetworkGatewayGroup {
	return &NetworkGatewayGroup{
		TypeMeta:   typeMeta("NetworkGatewayGroup"),
		ObjectMeta: metav1.ObjectMeta{Name: "onprem", Namespace: "nsegress-system"},
		Spec: NetworkGatewayGroupSpec{
			FloatingIPs:  []string{"198.51.100.101", "198.51.100.102"},
			NodeSelector: selector("nsegress.io/gateway", "true"),
		},
		Status: NetworkGatewayGroupStatus{
			Nodes:       map[string]GatewayNodeState{"gw-1": GatewayNodeUp, "gw-2": GatewayNodeDown},
			FloatingIPs: map[string]string{"198.51.100.101": "gw-1"},
			Assignments: map[string]FloatingIPAssignment{"198.51.100.101": {
				Active: "gw-1", Standby: "gw-2", Epoch: 3, Reason: MovePeerDead,
				LastMove: &metav1.Time{Time: time.Unix(1700000000, 0)},
			}},
		},
	}
}

// scribble changes every reference-typed field of a copy; the original must
// not see any of it.
func scribble(obj runtime.Object) {
	switch o := obj.(type) {
	case *EgressNATPolicy:
		o.Labels["a"] = "changed"
		o.Spec.Sources[0].NamespaceSelector.MatchLabels["team"] = "changed"
		o.Spec.Sources[0].NamespaceSelector.MatchExpressions[0].Values[0] = "changed"
		o.Spec.Sources[0].PodSelector.MatchLabels["role"] = "changed"
		o.Spec.Destinations[0].CIDR = "changed"
		o.Status.Conditions[0].Reason = "Changed"
	case *EgressNATPolicyList:
		scribble(&o.Items[0])
	case *NetworkGatewayGroup:
		o.Spec.FloatingIPs[0] = "changed"
		o.Spec.NodeSelector.MatchLabels["nsegress.io/gateway"] = "changed"
		o.Status.Nodes["gw-1"] = GatewayNodeDown
		o.Status.FloatingIPs["198.51.100.101"] = "changed"
		o.Status.Assignments["198.51.100.101"].LastMove.Time = time.Unix(0, 0)
		o.Status.Assignments["198.51.100.102"] = FloatingIPAssignment{Active: "changed"}
	case *NetworkGatewayGroupList:
		scribble(&o.Items[0])
	}
}

func TestDeepCopiesAreEqualAndShareNothing(t *testing.T) {
	tests := []struct {
		name string
		obj  func() runtime.Object
	}{
		{name: "a policy with every field set", obj: func() runtime.Object { return fullPolicy() }},
		{name: "a group with every field set", obj: func() runtime.Object { return fullGroup() }},
		{name: "a policy list", obj: func() runtime.Object {
			return &EgressNATPolicyList{TypeMeta: typeMeta("EgressNATPolicyList"), Items: []EgressNATPolicy{*fullPolicy()}}
		}},
		{name: "a group list", obj: func() runtime.Object {
			return &NetworkGatewayGroupList{TypeMeta: typeMeta("NetworkGatewayGroupList"), Items: []NetworkGatewayGroup{*fullGroup()}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := tt.obj()
			cp := orig.DeepCopyObject()
			if !reflect.DeepEqual(orig, cp) {
				t.Fatalf("DeepCopyObject differs:\n got %+v\nwant %+v", cp, orig)
			}
			scribble(cp)
			if reflect.DeepEqual(orig, cp) {
				t.Fatal("scribble left the copy unchanged, so the test proves nothing")
			}
			if !reflect.DeepEqual(orig, tt.obj()) {
				t.Errorf("changing the copy changed the original: %+v", orig)
			}
		})
	}
}

func TestDeepCopyOfNilIsNil(t *testing.T) {
	var p *EgressNATPolicy
	var g *NetworkGatewayGroup
	if p.DeepCopy() != nil || g.DeepCopy() != nil {
		t.Error("DeepCopy of a nil pointer is not nil")
	}
}
