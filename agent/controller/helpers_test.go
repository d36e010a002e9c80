package controller

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// Test fixtures. The addresses are from the documentation ranges
// (RFC 5737); ages are minutes after t0.

var t0 = metav1.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const ns = "nsegress-system"

var onprem = types.NamespacedName{Namespace: ns, Name: "onprem"}

func readyNode(name string, lbls map[string]string) corev1.Node {
	return nodeWith(name, lbls, corev1.ConditionTrue)
}

func nodeWith(name string, lbls map[string]string, ready corev1.ConditionStatus) corev1.Node {
	n := corev1.Node{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
	}
	if ready != "" {
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}
	}
	return n
}

func deleting(n corev1.Node) corev1.Node {
	ts := t0
	n.DeletionTimestamp = &ts
	n.Finalizers = []string{"example.com/hold"}
	return n
}

// cordoned is n as kubectl cordon and drain leave it.
func cordoned(n corev1.Node) corev1.Node {
	n.Spec.Unschedulable = true
	return n
}

var gwLabels = map[string]string{"nsegress.io/gateway": "true"}

var gwSelector = &metav1.LabelSelector{MatchLabels: gwLabels}

// group is the group onprem with these floating IPs, every node a
// candidate, and holders as its current status.floatingIPs.
func group(ips []string, holders map[string]string) v1alpha1.NetworkGatewayGroup {
	return v1alpha1.NetworkGatewayGroup{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "NetworkGatewayGroup"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "onprem"},
		Spec:       v1alpha1.NetworkGatewayGroupSpec{FloatingIPs: ips},
		Status:     v1alpha1.NetworkGatewayGroupStatus{FloatingIPs: holders},
	}
}

func withSelector(g v1alpha1.NetworkGatewayGroup, s *metav1.LabelSelector) v1alpha1.NetworkGatewayGroup {
	g.Spec.NodeSelector = s
	return g
}

type policyOpt func(*v1alpha1.EgressNATPolicy)

// policy is a policy created age minutes after t0, using group onprem.
func policy(name string, age int, opts ...policyOpt) v1alpha1.EgressNATPolicy {
	p := v1alpha1.EgressNATPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "EgressNATPolicy"},
		ObjectMeta: metav1.ObjectMeta{
			Name:              name,
			UID:               types.UID("uid-" + name),
			Generation:        1,
			CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Minute)),
		},
		Spec: v1alpha1.EgressNATPolicySpec{
			Sources:      []v1alpha1.EgressSource{{NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": name}}}},
			Action:       v1alpha1.ActionSNAT,
			Destinations: []v1alpha1.EgressDestination{{CIDR: "203.0.113.0/28"}},
			GatewayRef:   v1alpha1.GatewayRef{Namespace: ns, Name: "onprem"},
		},
	}
	for _, o := range opts {
		o(&p)
	}
	return p
}

func pin(ip string) policyOpt   { return func(p *v1alpha1.EgressNATPolicy) { p.Spec.EgressIP = ip } }
func has(ip string) policyOpt   { return func(p *v1alpha1.EgressNATPolicy) { p.Status.EgressIP = ip } }
func tunnel(id int32) policyOpt { return func(p *v1alpha1.EgressNATPolicy) { p.Status.TunnelID = id } }
func gen(g int64) policyOpt     { return func(p *v1alpha1.EgressNATPolicy) { p.Generation = g } }
func failOpen() policyOpt {
	return func(p *v1alpha1.EgressNATPolicy) { p.Spec.FailMode = v1alpha1.FailModeOpen }
}
func refTo(name string) policyOpt {
	return func(p *v1alpha1.EgressNATPolicy) { p.Spec.GatewayRef.Name = name }
}
func withCondition(c metav1.Condition) policyOpt {
	return func(p *v1alpha1.EgressNATPolicy) { p.Status.Conditions = append(p.Status.Conditions, c) }
}
