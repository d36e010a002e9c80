package controller

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

const (
	ip1 = "198.51.100.11"
	ip2 = "198.51.100.12"
	ip3 = "198.51.100.13"
	ip4 = "198.51.100.14"
)

const (
	up   = v1alpha1.GatewayNodeUp
	down = v1alpha1.GatewayNodeDown
)

func TestAssignPlacesFloatingIPs(t *testing.T) {
	tests := []struct {
		name  string
		group v1alpha1.NetworkGatewayGroup
		nodes []corev1.Node
		want  v1alpha1.NetworkGatewayGroupStatus
	}{
		{
			name:  "three IPs on two nodes are placed two and one, ties broken by node name",
			group: group([]string{ip1, ip2, ip3}, nil),
			nodes: []corev1.Node{readyNode("gw-2", nil), readyNode("gw-1", nil)},
			want: v1alpha1.NetworkGatewayGroupStatus{
				Nodes:       map[string]v1alpha1.GatewayNodeState{"gw-1": up, "gw-2": up},
				FloatingIPs: map[string]string{ip1: "gw-1", ip2: "gw-2", ip3: "gw-1"},
			},
		},
		{
			name:  "a holder that is still Up keeps its IP even where balance would move it",
			group: group([]string{ip1, ip2}, map[string]string{ip1: "gw-2"}),
			nodes: []corev1.Node{readyNode("gw-1", nil), readyNode("gw-2", nil)},
			want: v1alpha1.NetworkGatewayGroupStatus{
				Nodes:       map[string]v1alpha1.GatewayNodeState{"gw-1": up, "gw-2": up},
				FloatingIPs: map[string]string{ip1: "gw-2", ip2: "gw-1"},
			},
		},
		{
			name:  "a failover moves only the down node's IPs, to the least loaded nodes",
			group: group([]string{ip1, ip2, ip3, ip4}, map[string]string{ip1: "gw-1", ip2: "gw-1", ip3: "gw-2", ip4: "gw-3"}),
			nodes: []corev1.Node{nodeWith("gw-1", nil, corev1.ConditionFalse), readyNode("gw-2", nil), readyNode("gw-3", nil)},
			want: v1alpha1.NetworkGatewayGroupStatus{
				Nodes:       map[string]v1alpha1.GatewayNodeState{"gw-1": down, "gw-2": up, "gw-3": up},
				FloatingIPs: map[string]string{ip1: "gw-2", ip2: "gw-3", ip3: "gw-2", ip4: "gw-3"},
			},
		},
		{
			name:  "a cordoned holder is Down and loses its IPs",
			group: group([]string{ip1, ip2}, map[string]string{ip1: "gw-1", ip2: "gw-2"}),
			nodes: []corev1.Node{cordoned(readyNode("gw-1", nil)), readyNode("gw-2", nil)},
			want: v1alpha1.NetworkGatewayGroupStatus{
				Nodes:       map[string]v1alpha1.GatewayNodeState{"gw-1": down, "gw-2": up},
				FloatingIPs: map[string]string{ip1: "gw-2", ip2: "gw-2"},
			},
		},
		{
			name:  "a holder that is gone from the cluster loses its IPs",
			group: group([]string{ip1}, map[string]string{ip1: "gw-old"}),
			nodes: []corev1.Node{readyNode("gw-1", nil)},
			want: v1alpha1.NetworkGatewayGroupStatus{
				Nodes:       map[string]v1alpha1.GatewayNodeState{"gw-1": up},
				FloatingIPs: map[string]string{ip1: "gw-1"},
			},
		},
		{
			name:  "an IP removed from the spec leaves the status",
			group: group([]string{ip2}, map[string]string{ip1: "gw-1", ip2: "gw-1"}),
			nodes: []corev1.Node{readyNode("gw-1", nil)},
			want: v1alpha1.NetworkGatewayGroupStatus{
				Nodes:       map[string]v1alpha1.GatewayNodeState{"gw-1": up},
				FloatingIPs: map[string]string{ip2: "gw-1"},
			},
		},
		{
			name:  "with no Up node every IP is absent and every node is listed Down",
			group: group([]string{ip1, ip2}, map[string]string{ip1: "gw-1"}),
			nodes: []corev1.Node{
				nodeWith("gw-1", nil, corev1.ConditionFalse),
				nodeWith("gw-2", nil, corev1.ConditionUnknown),
				nodeWith("gw-3", nil, ""), // no Ready condition yet
				deleting(readyNode("gw-4", nil)),
				cordoned(readyNode("gw-5", nil)),
			},
			want: v1alpha1.NetworkGatewayGroupStatus{
				Nodes: map[string]v1alpha1.GatewayNodeState{"gw-1": down, "gw-2": down, "gw-3": down, "gw-4": down, "gw-5": down},
			},
		},
		{
			name:  "a nil nodeSelector makes every node a candidate",
			group: group([]string{ip1, ip2}, nil),
			nodes: []corev1.Node{readyNode("worker-1", map[string]string{"role": "worker"}), readyNode("cp", nil)},
			want: v1alpha1.NetworkGatewayGroupStatus{
				Nodes:       map[string]v1alpha1.GatewayNodeState{"worker-1": up, "cp": up},
				FloatingIPs: map[string]string{ip1: "cp", ip2: "worker-1"},
			},
		},
		{
			name:  "an empty nodeSelector also makes every node a candidate",
			group: withSelector(group([]string{ip1}, nil), &metav1.LabelSelector{}),
			nodes: []corev1.Node{readyNode("worker-1", nil)},
			want: v1alpha1.NetworkGatewayGroupStatus{
				Nodes:       map[string]v1alpha1.GatewayNodeState{"worker-1": up},
				FloatingIPs: map[string]string{ip1: "worker-1"},
			},
		},
		{
			name:  "a nodeSelector leaves other nodes out of the group, also as holders",
			group: withSelector(group([]string{ip1}, map[string]string{ip1: "worker-1"}), gwSelector),
			nodes: []corev1.Node{readyNode("worker-1", nil), readyNode("gw-1", gwLabels), nodeWith("gw-2", gwLabels, corev1.ConditionFalse)},
			want: v1alpha1.NetworkGatewayGroupStatus{
				Nodes:       map[string]v1alpha1.GatewayNodeState{"gw-1": up, "gw-2": down},
				FloatingIPs: map[string]string{ip1: "gw-1"},
			},
		},
		{
			name: "an invalid nodeSelector selects no node",
			group: withSelector(group([]string{ip1}, nil), &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "nsegress.io/gateway", Operator: "Near"},
			}}),
			nodes: []corev1.Node{readyNode("gw-1", gwLabels)},
			want:  v1alpha1.NetworkGatewayGroupStatus{},
		},
		{
			name:  "with no node at all no IP is held",
			group: group([]string{ip1}, map[string]string{ip1: "gw-1"}),
			want:  v1alpha1.NetworkGatewayGroupStatus{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Assign(Input{Groups: []v1alpha1.NetworkGatewayGroup{tt.group}, Nodes: tt.nodes}, t0)
			// The view of the first release; assignments (standbys,
			// epochs, reasons) are checked in failover_test.go.
			got := out.Groups[onprem]
			got.Assignments = nil
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("group status (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAssignKeepsGroupsApart(t *testing.T) {
	a := withSelector(group([]string{ip1}, nil), gwSelector)
	b := group([]string{ip2}, nil)
	b.Name = "cloud"
	b.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"zone": "b"}}
	out := Assign(Input{
		Groups: []v1alpha1.NetworkGatewayGroup{a, b},
		Nodes:  []corev1.Node{readyNode("gw-1", gwLabels), readyNode("gw-b", map[string]string{"zone": "b"})},
	}, t0)
	if got := out.Groups[onprem].FloatingIPs[ip1]; got != "gw-1" {
		t.Errorf("onprem's %s is on %q, want gw-1", ip1, got)
	}
	cloud := out.Groups[types.NamespacedName{Namespace: ns, Name: "cloud"}]
	if got := cloud.FloatingIPs[ip2]; got != "gw-b" {
		t.Errorf("cloud's %s is on %q, want gw-b", ip2, got)
	}
	if _, ok := cloud.Nodes["gw-1"]; ok {
		t.Errorf("cloud lists gw-1, which its nodeSelector does not match: %v", cloud.Nodes)
	}
}

// TestAFloatingIPNoNodeMayHoldIsPlacedNowhere: an IP that is a node's own
// address, or a floating IP of two groups, gets no holder, and a policy
// using it says why instead of Ready; the group's other IPs are placed.
func TestAFloatingIPNoNodeMayHoldIsPlacedNowhere(t *testing.T) {
	gw1 := readyNode("gw-1", nil)
	gw1.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip3}}
	nodes := []corev1.Node{gw1, readyNode("gw-2", nil)}
	onprem := group([]string{ip1, ip2, ip3}, nil)
	other := group([]string{ip2}, nil)
	other.Name = "dmz"
	out := Assign(Input{Groups: []v1alpha1.NetworkGatewayGroup{onprem, other}, Nodes: nodes, Policies: []v1alpha1.EgressNATPolicy{
		policy("node-ip", 0, pin(ip3)), policy("shared", 1, pin(ip2)), policy("fine", 2, pin(ip1)), policy("free", 3),
	}}, t0)
	placed := out.Groups[types.NamespacedName{Namespace: ns, Name: "onprem"}].FloatingIPs
	if placed[ip3] != "" || placed[ip2] != "" || placed[ip1] == "" {
		t.Errorf("onprem's placement %v: want only %s placed", placed, ip1)
	}
	for name, want := range map[string]string{"node-ip": "is the address of node gw-1", "shared": "more than one NetworkGatewayGroup (nsegress-system/dmz, nsegress-system/onprem)"} {
		c := meta.FindStatusCondition(out.Policies[name].Conditions, v1alpha1.ConditionReady)
		if c == nil || c.Reason != v1alpha1.ReasonFloatingIPConflict || !strings.Contains(c.Message, want) {
			t.Errorf("%s: Ready = %+v, want %s mentioning %q", name, c, v1alpha1.ReasonFloatingIPConflict, want)
		}
	}
	if got := decisions(out)["fine"].Reason; got != ready {
		t.Errorf("fine: %s, want Ready", got)
	}
	// A policy without a pin is not given a conflicting IP.
	if got := out.Policies["free"].EgressIP; got == ip2 || got == ip3 {
		t.Errorf("free got the conflicting IP %s", got)
	}
}
