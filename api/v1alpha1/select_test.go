package v1alpha1

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func selecting(name string, age int, team string) EgressNATPolicy {
	return EgressNATPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1700000000+int64(age), 0))},
		Spec: EgressNATPolicySpec{Sources: []EgressSource{
			{NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": team}}},
		}},
	}
}

// TestSelectPolicySkipsAPolicyWithAnInvalidSelectorWhole: an older policy
// with one valid source that selects the pod and one invalid source still
// selects nothing; the next policy governs the pod.
func TestSelectPolicySkipsAPolicyWithAnInvalidSelectorWhole(t *testing.T) {
	broken := selecting("broken", 0, "purple")
	broken.Spec.Sources = append(broken.Spec.Sources, EgressSource{NamespaceSelector: metav1.LabelSelector{
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Resembles"}},
	}})
	if err := broken.SelectorError(); err == nil {
		t.Fatal("SelectorError of an invalid selector is nil")
	}
	fine := selecting("fine", 1, "purple")
	for _, policies := range [][]EgressNATPolicy{{broken, fine}, {fine, broken}} {
		p, err := SelectPolicy(policies, map[string]string{"team": "purple"}, map[string]string{})
		if err != nil || p == nil || p.Name != "fine" {
			t.Errorf("SelectPolicy = %v, %v; want policy fine", p, err)
		}
	}
	if p, err := SelectPolicy([]EgressNATPolicy{broken}, map[string]string{"team": "purple"}, nil); p != nil || err != nil {
		t.Errorf("a policy with an invalid selector alone selects %v, %v; want none", p, err)
	}
}

func TestOlderBreaksTiesByName(t *testing.T) {
	a, b, c := selecting("a", 0, "x"), selecting("b", 0, "x"), selecting("c", -1, "x")
	if !Older(&a, &b) || Older(&b, &a) || !Older(&c, &a) || Older(&a, &a) {
		t.Errorf("Older: a<b %v, b<a %v, c<a %v, a<a %v", Older(&a, &b), Older(&b, &a), Older(&c, &a), Older(&a, &a))
	}
}

func TestAssignedTunnelID(t *testing.T) {
	for _, tc := range []struct {
		id   int32
		want uint16
		ok   bool
	}{{0, 0, false}, {-1, 0, false}, {1, 1, true}, {MaxTunnelID, MaxTunnelID, true}, {MaxTunnelID + 1, 0, false}} {
		p := EgressNATPolicy{Status: EgressNATPolicyStatus{TunnelID: tc.id}}
		if got, ok := p.AssignedTunnelID(); got != tc.want || ok != tc.ok {
			t.Errorf("AssignedTunnelID(%d) = %d, %v; want %d, %v", tc.id, got, ok, tc.want, tc.ok)
		}
	}
}

// TestSelectPolicySkipsARejectedPolicy: an older policy whose destination
// covers the cluster (the controller says so in Ready) selects nothing;
// once the controller accepts it again, it governs its pods.
func TestSelectPolicySkipsARejectedPolicy(t *testing.T) {
	covering := selecting("covering", 0, "purple")
	covering.Status.Conditions = []metav1.Condition{{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonDestinationCoversCluster}}
	fine := selecting("fine", 1, "purple")
	got, err := SelectPolicy([]EgressNATPolicy{covering, fine}, map[string]string{"team": "purple"}, nil)
	if err != nil || got == nil || got.Name != "fine" {
		t.Fatalf("SelectPolicy = %v, %v; want fine (covering is rejected)", got, err)
	}
	for _, reason := range []string{ReasonNoGatewayNodeUp, ReasonShadowedByOlderPolicy} {
		covering.Status.Conditions[0].Reason = reason
		if covering.Rejected() {
			t.Errorf("a policy Ready=False with %s counts as rejected: it must still steer (its fail mode)", reason)
		}
		got, err := SelectPolicy([]EgressNATPolicy{covering, fine}, map[string]string{"team": "purple"}, nil)
		if err != nil || got == nil || got.Name != "covering" {
			t.Errorf("with reason %s: SelectPolicy = %v, %v; want covering", reason, got, err)
		}
	}
}
