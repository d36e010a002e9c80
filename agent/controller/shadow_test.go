package controller

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sfake "k8s.io/client-go/kubernetes/fake"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

func selects(team string) policyOpt {
	return func(p *v1alpha1.EgressNATPolicy) {
		p.Spec.Sources = []v1alpha1.EgressSource{{NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": team}}}}
	}
}

func onlyPods(k, v string) policyOpt {
	return func(p *v1alpha1.EgressNATPolicy) {
		for i := range p.Spec.Sources {
			p.Spec.Sources[i].PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
		}
	}
}

// TestAShadowedPolicyIsNotReady: when an older policy governs pods a
// newer one selects, the newer one's traffic to its own destinations
// leaves those pods with a node IP, so it must not say Ready; its
// condition names the older policy and where.
func TestAShadowedPolicyIsNotReady(t *testing.T) {
	namespaces := map[string]map[string]string{"ns-a": {"team": "purple"}, "ns-b": {"team": "green"}}
	tests := []struct {
		name      string
		policies  []v1alpha1.EgressNATPolicy
		pods      []Pod
		shadowed  map[string]string // policy -> text its message must hold
		readyOnes []string
	}{
		{
			name:      "two policies selecting the same namespace: the newer is shadowed, even with no pod yet",
			policies:  []v1alpha1.EgressNATPolicy{policy("old", 0, pin(ip1), selects("purple")), policy("new", 1, pin(ip2), selects("purple"))},
			shadowed:  map[string]string{"new": "EgressNATPolicy old governs pods this policy selects (namespace ns-a)"},
			readyOnes: []string{"old"},
		},
		{
			name: "an older policy for some pods shadows a newer one for the namespace where such a pod runs",
			policies: []v1alpha1.EgressNATPolicy{policy("web", 0, pin(ip1), selects("purple"), onlyPods("app", "web")),
				policy("all", 1, pin(ip2), selects("purple"))},
			pods:      []Pod{{Namespace: "ns-a", Name: "w1", Labels: map[string]string{"app": "web"}}},
			shadowed:  map[string]string{"all": "(pod ns-a/w1)"},
			readyOnes: []string{"web"},
		},
		{
			name: "no pod selected twice: both Ready",
			policies: []v1alpha1.EgressNATPolicy{policy("web", 0, pin(ip1), selects("purple"), onlyPods("app", "web")),
				policy("all", 1, pin(ip2), selects("purple"))},
			pods:      []Pod{{Namespace: "ns-a", Name: "d1", Labels: map[string]string{"app": "db"}}},
			readyOnes: []string{"web", "all"},
		},
		{
			name:      "policies of different namespaces do not shadow each other",
			policies:  []v1alpha1.EgressNATPolicy{policy("purple", 0, pin(ip1), selects("purple")), policy("green", 1, pin(ip2), selects("green"))},
			pods:      []Pod{{Namespace: "ns-a", Name: "p"}, {Namespace: "ns-b", Name: "g"}},
			readyOnes: []string{"purple", "green"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Assign(Input{Groups: usualGroups, Nodes: usualNodes, Policies: tt.policies, Namespaces: namespaces, Pods: tt.pods}, t0)
			for name, want := range tt.shadowed {
				c := meta.FindStatusCondition(out.Policies[name].Conditions, v1alpha1.ConditionReady)
				if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonShadowedByOlderPolicy || !strings.Contains(c.Message, want) {
					t.Errorf("%s: Ready = %+v; want False, %s, mentioning %q", name, c, v1alpha1.ReasonShadowedByOlderPolicy, want)
				}
			}
			for _, name := range tt.readyOnes {
				if got := decisions(out)[name].Reason; got != ready {
					t.Errorf("%s: reason %s, want %s", name, got, ready)
				}
			}
		})
	}
}

// TestAPolicyWithAnInvalidSelectorShadowsNothing: it selects no pod, so it
// governs none.
func TestAPolicyWithAnInvalidSelectorShadowsNothing(t *testing.T) {
	broken := policy("broken", 0, pin(ip1), selects("purple"))
	broken.Spec.Sources[0].NamespaceSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Resembles"}}
	out := Assign(Input{Groups: usualGroups, Nodes: usualNodes,
		Policies:   []v1alpha1.EgressNATPolicy{broken, policy("fine", 1, pin(ip2), selects("purple"))},
		Namespaces: map[string]map[string]string{"ns-a": {"team": "purple"}}}, t0)
	if got := decisions(out)["fine"].Reason; got != ready {
		t.Errorf("the valid policy: %s, want %s", got, ready)
	}
}

// TestADestinationCoveringTheClusterIsReported: a destination that
// contains a node's pod range or a Service range would steer the selected
// pods' traffic to the cluster itself through a gateway; the policy says
// which destination and which range.
func TestADestinationCoveringTheClusterIsReported(t *testing.T) {
	gw1, gw2 := readyNode("gw-1", nil), readyNode("gw-2", nil)
	gw1.Spec.PodCIDRs = []string{"198.18.1.0/24"}
	services := []ClusterRange{{What: "the Service range kubernetes", Prefix: netip.MustParsePrefix("198.19.0.0/20")}}
	dest := func(cidr string) policyOpt {
		return func(p *v1alpha1.EgressNATPolicy) {
			p.Spec.Destinations = []v1alpha1.EgressDestination{{CIDR: "203.0.113.0/28"}, {CIDR: cidr}}
		}
	}
	out := Assign(Input{Groups: usualGroups, Nodes: []corev1.Node{gw1, gw2}, ServiceRanges: services, Policies: []v1alpha1.EgressNATPolicy{
		policy("pods", 0, pin(ip1), dest("198.18.0.0/16")),
		policy("services", 1, pin(ip2), dest("198.19.0.0/16")),
		policy("beside", 2, pin(ip3), dest("198.18.2.0/24")),
	}}, t0)
	for name, want := range map[string]string{
		"pods":     "spec.destinations[1].cidr 198.18.0.0/16 covers the pod range of node gw-1 (198.18.1.0/24)",
		"services": "spec.destinations[1].cidr 198.19.0.0/16 covers the Service range kubernetes",
	} {
		c := meta.FindStatusCondition(out.Policies[name].Conditions, v1alpha1.ConditionReady)
		if c == nil || c.Reason != v1alpha1.ReasonDestinationCoversCluster || !strings.Contains(c.Message, want) {
			t.Errorf("%s: Ready = %+v, want %s mentioning %q", name, c, v1alpha1.ReasonDestinationCoversCluster, want)
		}
	}
	if got := decisions(out)["beside"].Reason; got != ready {
		t.Errorf("a destination beside the ranges: %s, want Ready", got)
	}
}

// TestServiceRangesAreReadFromTheAPI: the ServiceCIDR objects give the
// Service ranges.
func TestServiceRangesAreReadFromTheAPI(t *testing.T) {
	client := k8sfake.NewClientset(&networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"},
		Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"198.19.0.0/20", "fd00::/108"}}})
	got, err := serviceRanges(context.Background(), client)
	if err != nil || len(got) != 1 || got[0].Prefix != netip.MustParsePrefix("198.19.0.0/20") {
		t.Errorf("serviceRanges = %v, %v; want the IPv4 range of ServiceCIDR kubernetes", got, err)
	}
}
