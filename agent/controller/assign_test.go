package controller

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// decided is the part of a policy's status a test checks.
type decided struct {
	IP, Node string
	Tunnel   int32
	Reason   string
}

func decisions(out Output) map[string]decided {
	got := map[string]decided{}
	for name, st := range out.Policies {
		d := decided{IP: st.EgressIP, Node: st.GatewayNode, Tunnel: st.TunnelID}
		if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); c != nil {
			d.Reason = c.Reason
		}
		got[name] = d
	}
	return got
}

// The usual cluster: group onprem with three IPs, settled on two Up nodes.
var (
	usualGroups = []v1alpha1.NetworkGatewayGroup{group([]string{ip1, ip2, ip3}, map[string]string{ip1: "gw-1", ip2: "gw-2", ip3: "gw-1"})}
	usualNodes  = []corev1.Node{readyNode("gw-1", nil), readyNode("gw-2", nil)}
)

const (
	ready    = v1alpha1.ReasonEgressReady
	notFound = v1alpha1.ReasonGatewayGroupNotFound
	notIn    = v1alpha1.ReasonEgressIPNotInGroup
	inUse    = v1alpha1.ReasonEgressIPInUse
	noFree   = v1alpha1.ReasonNoFreeFloatingIP
	noNode   = v1alpha1.ReasonNoGatewayNodeUp
)

func TestAssignPolicies(t *testing.T) {
	tests := []struct {
		name     string
		groups   []v1alpha1.NetworkGatewayGroup // nil: usualGroups
		nodes    []corev1.Node                  // nil: usualNodes
		policies []v1alpha1.EgressNATPolicy
		want     map[string]decided
	}{
		{
			name:     "a pinned egress IP of the group is Ready on the node holding it",
			policies: []v1alpha1.EgressNATPolicy{policy("purple", 0, pin(ip2))},
			want:     map[string]decided{"purple": {ip2, "gw-2", 1, ready}},
		},
		{
			name:     "a pinned egress IP outside the group is refused",
			policies: []v1alpha1.EgressNATPolicy{policy("purple", 0, pin("198.51.100.99"), has(ip1))},
			want:     map[string]decided{"purple": {"", "", 1, notIn}},
		},
		{
			name: "two pins of one IP: the older policy wins, whatever the names",
			policies: []v1alpha1.EgressNATPolicy{
				policy("a-newer", 5, pin(ip1), has(ip1)),
				policy("z-older", 1, pin(ip1)),
			},
			want: map[string]decided{
				"z-older": {ip1, "gw-1", 1, ready},
				"a-newer": {"", "", 2, inUse},
			},
		},
		{
			name: "two pins of one IP created at the same time: the first name wins",
			policies: []v1alpha1.EgressNATPolicy{
				policy("blue", 0, pin(ip1)),
				policy("amber", 0, pin(ip1)),
			},
			want: map[string]decided{
				"amber": {ip1, "gw-1", 1, ready},
				"blue":  {"", "", 2, inUse},
			},
		},
		{
			name:     "an unpinned policy gets the first free IP in spec order",
			policies: []v1alpha1.EgressNATPolicy{policy("purple", 0)},
			want:     map[string]decided{"purple": {ip1, "gw-1", 1, ready}},
		},
		{
			name: "an unpinned policy keeps the IP it has",
			policies: []v1alpha1.EgressNATPolicy{
				policy("purple", 0, has(ip3)),
				policy("green", 1),
			},
			want: map[string]decided{
				"purple": {ip3, "gw-1", 1, ready},
				"green":  {ip1, "gw-1", 2, ready},
			},
		},
		{
			name: "an unpinned policy loses its IP to an older policy pinning it",
			policies: []v1alpha1.EgressNATPolicy{
				policy("older", 0, pin(ip1)),
				policy("newer", 1, has(ip1)),
			},
			want: map[string]decided{
				"older": {ip1, "gw-1", 1, ready},
				"newer": {ip2, "gw-2", 2, ready},
			},
		},
		{
			name: "an older policy in need of an IP leaves alone the IPs newer ones pin or hold",
			policies: []v1alpha1.EgressNATPolicy{
				policy("oldest", 0),
				policy("pinner", 1, pin(ip1)),
				policy("holder", 2, has(ip2)),
			},
			want: map[string]decided{
				"oldest": {ip3, "gw-1", 1, ready},
				"pinner": {ip1, "gw-1", 2, ready},
				"holder": {ip2, "gw-2", 3, ready},
			},
		},
		{
			name: "an IP held from another group is not kept",
			groups: append(append([]v1alpha1.NetworkGatewayGroup(nil), usualGroups...), func() v1alpha1.NetworkGatewayGroup {
				g := group([]string{ip4}, map[string]string{ip4: "gw-2"})
				g.Name = "cloud"
				return g
			}()),
			policies: []v1alpha1.EgressNATPolicy{policy("moved", 0, refTo("cloud"), has(ip1))},
			want:     map[string]decided{"moved": {ip4, "gw-2", 1, ready}},
		},
		{
			name:   "when every IP is taken the newest policy gets none",
			groups: []v1alpha1.NetworkGatewayGroup{group([]string{ip1}, map[string]string{ip1: "gw-1"})},
			policies: []v1alpha1.EgressNATPolicy{
				policy("first", 0),
				policy("second", 1),
			},
			want: map[string]decided{
				"first":  {ip1, "gw-1", 1, ready},
				"second": {"", "", 2, noFree},
			},
		},
		{
			name:     "a gatewayRef naming no group is refused, with a tunnel ID all the same",
			policies: []v1alpha1.EgressNATPolicy{policy("lost", 0, refTo("nowhere"), has(ip1), tunnel(7))},
			want:     map[string]decided{"lost": {"", "", 7, notFound}},
		},
		{
			name:     "with no Up node the policy keeps its egress IP but has no gateway",
			nodes:    []corev1.Node{nodeWith("gw-1", nil, corev1.ConditionFalse)},
			policies: []v1alpha1.EgressNATPolicy{policy("purple", 0, pin(ip2)), policy("green", 1, has(ip3))},
			want: map[string]decided{
				"purple": {ip2, "", 1, noNode},
				"green":  {ip3, "", 2, noNode},
			},
		},
		{
			name:     "with no node at all the policy gets an egress IP and waits for a gateway",
			nodes:    []corev1.Node{},
			policies: []v1alpha1.EgressNATPolicy{policy("purple", 0)},
			want:     map[string]decided{"purple": {ip1, "", 1, noNode}},
		},
		{
			name:     "the gateway follows its floating IP after a failover",
			nodes:    []corev1.Node{deleting(readyNode("gw-1", nil)), readyNode("gw-2", nil)},
			policies: []v1alpha1.EgressNATPolicy{policy("purple", 0, has(ip1))},
			want:     map[string]decided{"purple": {ip1, "gw-2", 1, ready}},
		},
		{
			name: "a policy keeps its tunnel ID",
			policies: []v1alpha1.EgressNATPolicy{
				policy("purple", 0, tunnel(42)),
				policy("green", 1, tunnel(7)),
			},
			want: map[string]decided{
				"purple": {ip1, "gw-1", 42, ready},
				"green":  {ip2, "gw-2", 7, ready},
			},
		},
		{
			name: "a duplicate tunnel ID stays with the older policy; the newer gets the next one up",
			policies: []v1alpha1.EgressNATPolicy{
				policy("newer", 9, tunnel(1)),
				policy("older", 0, tunnel(1)),
				policy("other", 5, tunnel(2)),
			},
			want: map[string]decided{
				"older": {ip1, "gw-1", 1, ready},
				"other": {ip2, "gw-2", 2, ready},
				"newer": {ip3, "gw-1", 3, ready},
			},
		},
		{
			name: "new tunnel IDs count up from the highest in use: a deleted policy's gap is not reused at once",
			policies: []v1alpha1.EgressNATPolicy{
				policy("a", 0, tunnel(1)),
				policy("b", 1, tunnel(3)),
				policy("c", 2),
			},
			want: map[string]decided{
				"a": {ip1, "gw-1", 1, ready},
				"b": {ip2, "gw-2", 3, ready},
				"c": {ip3, "gw-1", 4, ready},
			},
		},
		{
			name: "at the top of the range new tunnel IDs wrap to the smallest free",
			policies: []v1alpha1.EgressNATPolicy{
				policy("a", 0, tunnel(2)),
				policy("b", 1, tunnel(4095)),
				policy("c", 2),
			},
			want: map[string]decided{
				"a": {ip1, "gw-1", 2, ready},
				"b": {ip2, "gw-2", 4095, ready},
				"c": {ip3, "gw-1", 1, ready},
			},
		},
		{
			name: "an older policy without a tunnel ID does not take a newer one's",
			policies: []v1alpha1.EgressNATPolicy{
				policy("older", 0),
				policy("newer", 1, tunnel(1)),
			},
			want: map[string]decided{
				"older": {ip1, "gw-1", 2, ready},
				"newer": {ip2, "gw-2", 1, ready},
			},
		},
		{
			name:     "a tunnel ID out of range is replaced",
			policies: []v1alpha1.EgressNATPolicy{policy("a", 0, tunnel(4096)), policy("b", 1, tunnel(-3))},
			want: map[string]decided{
				"a": {ip1, "gw-1", 1, ready},
				"b": {ip2, "gw-2", 2, ready},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{Groups: tt.groups, Nodes: tt.nodes, Policies: tt.policies}
			if in.Groups == nil {
				in.Groups = usualGroups
			}
			if in.Nodes == nil {
				in.Nodes = usualNodes
			}
			out := Assign(in, t0)
			if diff := cmp.Diff(tt.want, decisions(out)); diff != "" {
				t.Errorf("policies (-want +got):\n%s", diff)
			}
			for name, st := range out.Policies {
				c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady)
				wantStatus := metav1.ConditionFalse
				if c.Reason == ready {
					wantStatus = metav1.ConditionTrue
				}
				if c.Status != wantStatus {
					t.Errorf("%s: Ready=%s with reason %s", name, c.Status, c.Reason)
				}
			}
		})
	}
}

func TestAssignMessagesNameWhatToFix(t *testing.T) {
	tests := []struct {
		name   string
		nodes  []corev1.Node
		policy v1alpha1.EgressNATPolicy
		want   []string
	}{
		{
			name:   "Ready",
			policy: policy("p", 0, pin(ip2)),
			want:   []string{"egress IP 198.51.100.12 held by gw-2"},
		},
		{
			name:   "group not found",
			policy: policy("p", 0, refTo("nowhere")),
			want:   []string{"NetworkGatewayGroup nsegress-system/nowhere", "does not exist", "failMode Closed"},
		},
		{
			name:   "IP not in group",
			policy: policy("p", 0, pin("198.51.100.99"), failOpen()),
			want:   []string{"198.51.100.99", "nsegress-system/onprem", ip1 + ", " + ip2 + ", " + ip3, "node's IP (failMode Open)"},
		},
		{
			name:   "no Up node",
			nodes:  []corev1.Node{nodeWith("gw-1", nil, corev1.ConditionFalse)},
			policy: policy("p", 0, pin(ip1)),
			want:   []string{"egress IP " + ip1, "all 1 nodes of NetworkGatewayGroup nsegress-system/onprem are Down", "dropped"},
		},
		{
			name:   "no node matches the selector",
			nodes:  []corev1.Node{},
			policy: policy("p", 0),
			want:   []string{"no node matches the nodeSelector of NetworkGatewayGroup nsegress-system/onprem"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := tt.nodes
			if nodes == nil {
				nodes = usualNodes
			}
			out := Assign(Input{Groups: usualGroups, Nodes: nodes, Policies: []v1alpha1.EgressNATPolicy{tt.policy}}, t0)
			msg := meta.FindStatusCondition(out.Policies["p"].Conditions, v1alpha1.ConditionReady).Message
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
		})
	}

	// Duplicate pins name the policy that has the IP.
	out := Assign(Input{Groups: usualGroups, Nodes: usualNodes, Policies: []v1alpha1.EgressNATPolicy{
		policy("first", 0, pin(ip1)), policy("second", 1, pin(ip1)),
	}}, t0)
	msg := meta.FindStatusCondition(out.Policies["second"].Conditions, v1alpha1.ConditionReady).Message
	for _, w := range []string{ip1, "EgressNATPolicy first", "nsegress-system/onprem"} {
		if !strings.Contains(msg, w) {
			t.Errorf("message %q does not contain %q", msg, w)
		}
	}
}

func TestAssignReadyCondition(t *testing.T) {
	t1 := metav1.NewTime(t0.Add(time.Hour))
	readyAtT0 := metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, ObservedGeneration: 1,
		LastTransitionTime: t0, Reason: ready, Message: "egress IP " + ip1 + " held by gw-1",
	}
	other := metav1.Condition{Type: "Programmed", Status: metav1.ConditionTrue, LastTransitionTime: t0, Reason: "Done", Message: "x"}

	tests := []struct {
		name    string
		nodes   []corev1.Node
		policy  v1alpha1.EgressNATPolicy
		wantLTT metav1.Time
		wantMsg string
	}{
		{
			name:    "an unchanged Ready keeps its transition time",
			policy:  policy("p", 0, has(ip1), tunnel(1), withCondition(readyAtT0)),
			wantLTT: t0,
			wantMsg: readyAtT0.Message,
		},
		{
			name:    "a new gateway with Ready still True keeps the transition time and updates the message",
			nodes:   []corev1.Node{nodeWith("gw-1", nil, corev1.ConditionFalse), readyNode("gw-2", nil)},
			policy:  policy("p", 0, has(ip1), tunnel(1), withCondition(readyAtT0)),
			wantLTT: t0,
			wantMsg: "egress IP " + ip1 + " held by gw-2",
		},
		{
			name:    "Ready turning False takes the new time",
			nodes:   []corev1.Node{},
			policy:  policy("p", 0, has(ip1), tunnel(1), withCondition(readyAtT0)),
			wantLTT: t1,
		},
		{
			name:    "a first condition takes the new time",
			policy:  policy("p", 0),
			wantLTT: t1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := tt.nodes
			if nodes == nil {
				nodes = usualNodes
			}
			out := Assign(Input{Groups: usualGroups, Nodes: nodes, Policies: []v1alpha1.EgressNATPolicy{tt.policy}}, t1)
			c := meta.FindStatusCondition(out.Policies["p"].Conditions, v1alpha1.ConditionReady)
			if !c.LastTransitionTime.Equal(&tt.wantLTT) {
				t.Errorf("lastTransitionTime = %v, want %v", c.LastTransitionTime, tt.wantLTT)
			}
			if tt.wantMsg != "" && c.Message != tt.wantMsg {
				t.Errorf("message = %q, want %q", c.Message, tt.wantMsg)
			}
		})
	}

	t.Run("observedGeneration is the policy's generation", func(t *testing.T) {
		out := Assign(Input{Groups: usualGroups, Nodes: usualNodes, Policies: []v1alpha1.EgressNATPolicy{
			policy("p", 0, gen(4), withCondition(readyAtT0)),
		}}, t1)
		if c := meta.FindStatusCondition(out.Policies["p"].Conditions, v1alpha1.ConditionReady); c.ObservedGeneration != 4 {
			t.Errorf("observedGeneration = %d, want 4", c.ObservedGeneration)
		}
	})
	t.Run("other conditions are kept as they are", func(t *testing.T) {
		p := policy("p", 0, withCondition(other))
		out := Assign(Input{Groups: usualGroups, Nodes: usualNodes, Policies: []v1alpha1.EgressNATPolicy{p}}, t1)
		got := meta.FindStatusCondition(out.Policies["p"].Conditions, "Programmed")
		if diff := cmp.Diff(&other, got); diff != "" {
			t.Errorf("Programmed (-want +got):\n%s", diff)
		}
		if len(p.Status.Conditions) != 1 {
			t.Errorf("Assign changed its input: %v", p.Status.Conditions)
		}
	})
}

func TestAssignRunsOutOfTunnelIDs(t *testing.T) {
	var policies []v1alpha1.EgressNATPolicy
	for i := range maxTunnelID {
		policies = append(policies, policy(fmt.Sprintf("p%04d", i), i, tunnel(int32(i+1)), refTo("nowhere")))
	}
	policies = append(policies, policy("last", maxTunnelID+1))
	out := Assign(Input{Groups: usualGroups, Nodes: usualNodes, Policies: policies}, t0)
	st := out.Policies["last"]
	c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady)
	if st.TunnelID != 0 || c.Status != metav1.ConditionFalse || c.Reason != reasonNoFreeTunnelID {
		t.Errorf("last policy: tunnelID %d, Ready=%s %s; want 0, False %s", st.TunnelID, c.Status, c.Reason, reasonNoFreeTunnelID)
	}
}

// TestAssignInvariants checks, on random clusters, what must always hold:
// no two policies share an egress IP or a tunnel ID; every gateway node is
// Up in its group and holds the egress IP; the result does not depend on
// the order of the input; and feeding the result back changes nothing.
func TestAssignInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 300 {
		in := randomInput(rng)
		out := Assign(in, t0)

		ips, ids := map[string]string{}, map[int32]string{}
		for _, p := range in.Policies {
			st := out.Policies[p.Name]
			if st.TunnelID < 1 || st.TunnelID > maxTunnelID {
				t.Fatalf("iter %d: %s has tunnel ID %d", iter, p.Name, st.TunnelID)
			}
			if other, dup := ids[st.TunnelID]; dup {
				t.Fatalf("iter %d: %s and %s share tunnel ID %d", iter, p.Name, other, st.TunnelID)
			}
			ids[st.TunnelID] = p.Name
			if st.EgressIP != "" {
				if other, dup := ips[st.EgressIP]; dup {
					t.Fatalf("iter %d: %s and %s share egress IP %s", iter, p.Name, other, st.EgressIP)
				}
				ips[st.EgressIP] = p.Name
			}
			if st.GatewayNode != "" {
				g := out.Groups[types.NamespacedName{Namespace: p.Spec.GatewayRef.Namespace, Name: p.Spec.GatewayRef.Name}]
				if g.Nodes[st.GatewayNode] != up || g.FloatingIPs[st.EgressIP] != st.GatewayNode {
					t.Fatalf("iter %d: %s's gateway %s is %s and holds %s's IP as %q", iter, p.Name, st.GatewayNode,
						g.Nodes[st.GatewayNode], st.EgressIP, g.FloatingIPs[st.EgressIP])
				}
			}
		}

		shuffled := Input{
			Policies: append([]v1alpha1.EgressNATPolicy(nil), in.Policies...),
			Groups:   append([]v1alpha1.NetworkGatewayGroup(nil), in.Groups...),
			Nodes:    append([]corev1.Node(nil), in.Nodes...),
		}
		rng.Shuffle(len(shuffled.Policies), func(i, j int) {
			shuffled.Policies[i], shuffled.Policies[j] = shuffled.Policies[j], shuffled.Policies[i]
		})
		rng.Shuffle(len(shuffled.Groups), func(i, j int) { shuffled.Groups[i], shuffled.Groups[j] = shuffled.Groups[j], shuffled.Groups[i] })
		rng.Shuffle(len(shuffled.Nodes), func(i, j int) { shuffled.Nodes[i], shuffled.Nodes[j] = shuffled.Nodes[j], shuffled.Nodes[i] })
		if diff := cmp.Diff(out, Assign(shuffled, t0)); diff != "" {
			t.Fatalf("iter %d: the order of the input changed the output (-sorted +shuffled):\n%s", iter, diff)
		}

		again := in
		again.Policies = append([]v1alpha1.EgressNATPolicy(nil), in.Policies...)
		again.Groups = append([]v1alpha1.NetworkGatewayGroup(nil), in.Groups...)
		for i := range again.Policies {
			again.Policies[i].Status = out.Policies[again.Policies[i].Name]
		}
		for i := range again.Groups {
			g := &again.Groups[i]
			g.Status = out.Groups[types.NamespacedName{Namespace: g.Namespace, Name: g.Name}]
		}
		if diff := cmp.Diff(out, Assign(again, metav1.NewTime(t0.Add(time.Hour)))); diff != "" {
			t.Fatalf("iter %d: a second run changed the result (-first +second):\n%s", iter, diff)
		}
	}
}

// randomInput is a small cluster with random health, labels, pins, held
// IPs and tunnel IDs, drawn so that collisions are frequent.
func randomInput(rng *rand.Rand) Input {
	var in Input
	pool := []string{ip1, ip2, ip3, ip4, "198.51.100.15", "198.51.100.16"}
	for i := range 1 + rng.IntN(5) {
		lbls := map[string]string{}
		if rng.IntN(2) == 0 {
			lbls["nsegress.io/gateway"] = "true"
		}
		st := []corev1.ConditionStatus{corev1.ConditionTrue, corev1.ConditionTrue, corev1.ConditionFalse, ""}[rng.IntN(4)]
		in.Nodes = append(in.Nodes, nodeWith(fmt.Sprintf("n%d", i), lbls, st))
	}
	for i := range 1 + rng.IntN(2) {
		g := group(nil, map[string]string{})
		g.Name = fmt.Sprintf("g%d", i)
		for j, ip := range pool {
			if j%2 == i%2 || rng.IntN(4) == 0 { // groups mostly disjoint
				g.Spec.FloatingIPs = append(g.Spec.FloatingIPs, ip)
				if rng.IntN(2) == 0 {
					g.Status.FloatingIPs[ip] = fmt.Sprintf("n%d", rng.IntN(6))
				}
			}
		}
		if rng.IntN(2) == 0 {
			g.Spec.NodeSelector = gwSelector
		}
		in.Groups = append(in.Groups, g)
	}
	for i := range rng.IntN(7) {
		var opts []policyOpt
		opts = append(opts, refTo(fmt.Sprintf("g%d", rng.IntN(3))))
		if rng.IntN(3) == 0 {
			opts = append(opts, pin(pool[rng.IntN(len(pool))]))
		}
		if rng.IntN(2) == 0 {
			opts = append(opts, has(pool[rng.IntN(len(pool))]))
		}
		if rng.IntN(2) == 0 {
			opts = append(opts, tunnel(int32(rng.IntN(4))))
		}
		in.Policies = append(in.Policies, policy(fmt.Sprintf("p%d", i), rng.IntN(3), opts...))
	}
	return in
}

// TestAssignReportsAnInvalidSelector: a policy whose selector does not
// parse selects no pod, so it must not report Ready; its message names
// the source to fix. The other policies are decided as usual.
func TestAssignReportsAnInvalidSelector(t *testing.T) {
	bad := func(p *v1alpha1.EgressNATPolicy) {
		p.Spec.Sources = append(p.Spec.Sources, v1alpha1.EgressSource{
			NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "x"}},
			PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "app", Operator: "Resembles", Values: []string{"web"}},
			}},
		})
	}
	out := Assign(Input{Groups: usualGroups, Nodes: usualNodes, Policies: []v1alpha1.EgressNATPolicy{
		policy("broken", 0, pin(ip1), bad), policy("fine", 1, pin(ip2)),
	}}, t0)
	c := meta.FindStatusCondition(out.Policies["broken"].Conditions, v1alpha1.ConditionReady)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonInvalidSelector ||
		!strings.Contains(c.Message, "sources[1].podSelector") {
		t.Errorf("Ready of the broken policy = %+v; want False, InvalidSelector, naming sources[1].podSelector", c)
	}
	if got := decisions(out)["fine"]; got.Reason != ready {
		t.Errorf("the other policy: %+v, want Ready", got)
	}
}
