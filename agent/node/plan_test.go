package node

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nsegress/nsegress/agent/datapath"
	"github.com/nsegress/nsegress/agent/ha"
	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/nft"
	"github.com/nsegress/nsegress/nodestate"
)

// thisNode is the node the plan is made for.
const thisNode = "worker-1"

// testFacts are the facts of thisNode with nothing recorded or held.
func testFacts() facts {
	return facts{nodeName: thisNode, port: datapath.DefaultPort, uplink: "eth0", uplinkMTU: 1500,
		now: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)}
}

// mustPlan plans v with f and fails the test on an error.
func mustPlan(t *testing.T, v view, f facts) desired {
	t.Helper()
	d, err := plan(v, f)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return d
}

// k8sNode is a Node with the given addresses, alternating type and
// address: k8sNode("n", corev1.NodeInternalIP, "10.0.0.1").
func k8sNode(name string, typeAddr ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for i := 0; i+1 < len(typeAddr); i += 2 {
		n.Status.Addresses = append(n.Status.Addresses,
			corev1.NodeAddress{Type: corev1.NodeAddressType(typeAddr[i]), Address: typeAddr[i+1]})
	}
	return n
}

// testNodes is a three-node cluster, listed out of address order, plus a
// node with no usable IPv4 InternalIP (it must not become a tunnel peer).
func testNodes() map[string]*corev1.Node {
	return map[string]*corev1.Node{
		thisNode:   k8sNode(thisNode, string(corev1.NodeInternalIP), "10.0.0.11"),
		"gw-1":     k8sNode("gw-1", string(corev1.NodeExternalIP), "192.0.2.1", string(corev1.NodeInternalIP), "10.0.0.21"),
		"gw-2":     k8sNode("gw-2", string(corev1.NodeInternalIP), "10.0.0.3"),
		"v6-only":  k8sNode("v6-only", string(corev1.NodeInternalIP), "fd00::5"),
		"external": k8sNode("external", string(corev1.NodeExternalIP), "192.0.2.9"),
	}
}

// policyOpt changes a test policy.
type policyOpt func(*v1alpha1.EgressNATPolicy)

// policy is an EgressNATPolicy named name selecting the namespaces
// labelled team=<name>, with the given tunnel ID and no gateway yet.
func policy(name string, tunnelID int32, opts ...policyOpt) v1alpha1.EgressNATPolicy {
	p := v1alpha1.EgressNATPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name),
			CreationTimestamp: metav1.NewTime(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))},
		Spec: v1alpha1.EgressNATPolicySpec{
			Sources:      []v1alpha1.EgressSource{{NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": name}}}},
			Action:       v1alpha1.ActionSNAT,
			Destinations: []v1alpha1.EgressDestination{{CIDR: "203.0.113.0/24"}},
			GatewayRef:   v1alpha1.GatewayRef{Name: "onprem", Namespace: "nsegress-system"},
		},
		Status: v1alpha1.EgressNATPolicyStatus{TunnelID: tunnelID},
	}
	for _, o := range opts {
		o(&p)
	}
	return p
}

func gateway(node, egressIP string) policyOpt {
	return func(p *v1alpha1.EgressNATPolicy) { p.Status.GatewayNode, p.Status.EgressIP = node, egressIP }
}

func failOpen(p *v1alpha1.EgressNATPolicy) { p.Spec.FailMode = v1alpha1.FailModeOpen }

func withDestinations(cidrs ...string) policyOpt {
	return func(p *v1alpha1.EgressNATPolicy) {
		p.Spec.Destinations = nil
		for _, c := range cidrs {
			p.Spec.Destinations = append(p.Spec.Destinations, v1alpha1.EgressDestination{CIDR: c})
		}
	}
}

func createdAt(ts time.Time) policyOpt {
	return func(p *v1alpha1.EgressNATPolicy) { p.CreationTimestamp = metav1.NewTime(ts) }
}

func selectingTeam(team string) policyOpt {
	return func(p *v1alpha1.EgressNATPolicy) {
		p.Spec.Sources = []v1alpha1.EgressSource{{NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": team}}}}
	}
}

func withPodSelector(kv ...string) policyOpt {
	return func(p *v1alpha1.EgressNATPolicy) {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		for i := range p.Spec.Sources {
			p.Spec.Sources[i].PodSelector = &metav1.LabelSelector{MatchLabels: m}
		}
	}
}

var (
	dst203   = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	nodeIP   = netip.MustParseAddr("10.0.0.11")
	allPeers = []nft.TunnelPeer{{Addr: netip.MustParseAddr("10.0.0.3")}, {Addr: netip.MustParseAddr("10.0.0.11")},
		{Addr: netip.MustParseAddr("10.0.0.21")}}
)

func TestPlanDecidesEachPolicysModeFromItsStatus(t *testing.T) {
	tests := []struct {
		name       string
		policy     v1alpha1.EgressNATPolicy
		wantTunnel datapath.Tunnel
		wantPolicy nft.Policy
	}{
		{
			name:       "a policy whose gateway is this node is SNATed here to its egress IP",
			policy:     policy("purple", 7, gateway(thisNode, "198.51.100.101")),
			wantTunnel: datapath.Tunnel{ID: 7, Mode: nft.ModeLocal, Destinations: dst203, EgressIP: netip.MustParseAddr("198.51.100.101")},
			wantPolicy: nft.Policy{ID: 7, Mode: nft.ModeLocal, Destinations: dst203, Device: "nsg7",
				EgressIP: netip.MustParseAddr("198.51.100.101")},
		},
		{
			name:   "a policy whose gateway is another node is tunnelled to that node's InternalIP",
			policy: policy("purple", 7, gateway("gw-1", "198.51.100.101")),
			wantTunnel: datapath.Tunnel{ID: 7, Mode: nft.ModeTunnel, Gateway: netip.MustParseAddr("10.0.0.21"),
				Destinations: dst203},
			wantPolicy: nft.Policy{ID: 7, Mode: nft.ModeTunnel, Destinations: dst203, Device: "nsg7"},
		},
		{
			name:       "a policy with no gateway node drops by default (failMode Closed)",
			policy:     policy("purple", 7),
			wantTunnel: datapath.Tunnel{ID: 7, Mode: nft.ModeDrop, Destinations: dst203},
			wantPolicy: nft.Policy{ID: 7, Mode: nft.ModeDrop, Destinations: dst203, Device: "nsg7"},
		},
		{
			name:       "a policy with no gateway node and failMode Open lets traffic out the normal way",
			policy:     policy("purple", 7, failOpen),
			wantTunnel: datapath.Tunnel{ID: 7, Mode: nft.ModePass, Destinations: dst203},
			wantPolicy: nft.Policy{ID: 7, Mode: nft.ModePass, Destinations: dst203, Device: "nsg7"},
		},
		{
			name:       "a gateway node without an egress IP in the status is no gateway",
			policy:     policy("purple", 7, gateway("gw-1", "")),
			wantTunnel: datapath.Tunnel{ID: 7, Mode: nft.ModeDrop, Destinations: dst203},
			wantPolicy: nft.Policy{ID: 7, Mode: nft.ModeDrop, Destinations: dst203, Device: "nsg7"},
		},
		{
			name:       "this node named as gateway with an unparsable egress IP falls back to the fail mode",
			policy:     policy("purple", 7, gateway(thisNode, "not-an-ip"), failOpen),
			wantTunnel: datapath.Tunnel{ID: 7, Mode: nft.ModePass, Destinations: dst203},
			wantPolicy: nft.Policy{ID: 7, Mode: nft.ModePass, Destinations: dst203, Device: "nsg7"},
		},
		{
			name:       "a gateway node the API does not know falls back to the fail mode",
			policy:     policy("purple", 7, gateway("gone", "198.51.100.101")),
			wantTunnel: datapath.Tunnel{ID: 7, Mode: nft.ModeDrop, Destinations: dst203},
			wantPolicy: nft.Policy{ID: 7, Mode: nft.ModeDrop, Destinations: dst203, Device: "nsg7"},
		},
		{
			name:       "a gateway node with only an IPv6 InternalIP falls back to the fail mode",
			policy:     policy("purple", 7, gateway("v6-only", "198.51.100.101"), failOpen),
			wantTunnel: datapath.Tunnel{ID: 7, Mode: nft.ModePass, Destinations: dst203},
			wantPolicy: nft.Policy{ID: 7, Mode: nft.ModePass, Destinations: dst203, Device: "nsg7"},
		},
		{
			name: "destinations are masked to their prefix and IPv6 or unparsable ones are left out",
			policy: policy("purple", 9, gateway("gw-2", "198.51.100.102"),
				withDestinations("203.0.113.77/24", "2001:db8::/32", "bogus", "198.51.100.7/32")),
			wantTunnel: datapath.Tunnel{ID: 9, Mode: nft.ModeTunnel, Gateway: netip.MustParseAddr("10.0.0.3"),
				Destinations: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("198.51.100.7/32")}},
			wantPolicy: nft.Policy{ID: 9, Mode: nft.ModeTunnel, Device: "nsg9",
				Destinations: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("198.51.100.7/32")}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := view{policies: []v1alpha1.EgressNATPolicy{tc.policy}, nodes: testNodes()}
			d := mustPlan(t, v, testFacts())
			plan, state := d.links, d.nft
			tc.wantTunnel.Generation = datapath.TunnelGeneration(string(tc.policy.UID))
			if diff := cmp.Diff([]datapath.Tunnel{tc.wantTunnel}, plan.Tunnels, cmpAddrs); diff != "" {
				t.Errorf("plan.Tunnels (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]nft.Policy{tc.wantPolicy}, state.Policies, cmpAddrs); diff != "" {
				t.Errorf("state.Policies (-want +got):\n%s", diff)
			}
			if err := state.Validate(); err != nil {
				t.Errorf("the planned nft state does not validate: %v", err)
			}
		})
	}
}

// cmpAddrs compares netip values by what they print: cmp cannot look
// into their unexported fields.
var cmpAddrs = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func TestPlanDescribesTheNodeItRunsOn(t *testing.T) {
	f := testFacts()
	f.uplink, f.uplinkMTU = "ens3", 9000
	d := mustPlan(t, view{nodes: testNodes()}, f)
	plan, state := d.links, d.nft
	if plan.Uplink != "ens3" || plan.NodeIP != nodeIP || plan.Port != datapath.DefaultPort {
		t.Errorf("plan = uplink %q, node IP %s, port %d; want ens3, %s, %d",
			plan.Uplink, plan.NodeIP, plan.Port, nodeIP, datapath.DefaultPort)
	}
	// 9000 - 50 bytes of VXLAN - 40 bytes of IPv4 and TCP headers.
	if state.MSS != 8910 {
		t.Errorf("MSS = %d on a 9000-byte uplink, want 8910", state.MSS)
	}
	if state.TunnelPort != datapath.DefaultPort || state.DevicePrefix != datapath.DevicePrefix {
		t.Errorf("state port %d prefix %q, want %d %q", state.TunnelPort, state.DevicePrefix, datapath.DefaultPort, datapath.DevicePrefix)
	}
	if len(plan.Tunnels) != 0 || len(state.Policies) != 0 {
		t.Errorf("no policies, yet plan has %d tunnels and state %d policies", len(plan.Tunnels), len(state.Policies))
	}
}

func TestPlanListsEveryNodesInternalIPAsTunnelPeerSorted(t *testing.T) {
	// Map iteration order differs from run to run: plan a few times.
	for range 20 {
		state := mustPlan(t, view{nodes: testNodes()}, testFacts()).nft
		if !reflect.DeepEqual(state.TunnelPeers, allPeers) {
			t.Fatalf("TunnelPeers = %v, want %v (IPv4 InternalIPs only, sorted)", state.TunnelPeers, allPeers)
		}
	}
}

func TestPlanTiesEachTunnelPeerToItsPodRanges(t *testing.T) {
	nodes := testNodes()
	nodes["gw-1"].Spec.PodCIDRs = []string{"198.18.1.0/24", "fd00:1::/64"}
	nodes[thisNode].Spec.PodCIDRs = []string{"198.18.2.7/24"}
	want := []nft.TunnelPeer{
		{Addr: netip.MustParseAddr("10.0.0.3")}, // no range published: any inner source
		{Addr: netip.MustParseAddr("10.0.0.11"), Sources: []netip.Prefix{netip.MustParsePrefix("198.18.2.0/24")}},
		{Addr: netip.MustParseAddr("10.0.0.21"), Sources: []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24")}},
	}
	got := mustPlan(t, view{nodes: nodes}, testFacts()).nft.TunnelPeers
	if !reflect.DeepEqual(got, want) {
		t.Errorf("TunnelPeers = %v, want %v (IPv4 ranges, masked)", got, want)
	}
	f := testFacts()
	f.ignorePodRanges = true
	if got := mustPlan(t, view{nodes: nodes}, f).nft.TunnelPeers; !reflect.DeepEqual(got, allPeers) {
		t.Errorf("with ignorePodRanges, TunnelPeers = %v, want %v (no ranges)", got, allPeers)
	}
}

func TestPlanSkipsPoliciesWithoutAUsableTunnelID(t *testing.T) {
	v := view{nodes: testNodes(), policies: []v1alpha1.EgressNATPolicy{
		policy("unassigned", 0, gateway("gw-1", "198.51.100.101")),
		policy("negative", -3, gateway("gw-1", "198.51.100.101")),
		policy("too-big", v1alpha1.MaxTunnelID+1, gateway("gw-1", "198.51.100.101")),
		policy("largest", v1alpha1.MaxTunnelID, gateway("gw-1", "198.51.100.101")),
		policy("smallest", 1),
	}}
	d := mustPlan(t, v, testFacts())
	plan, state := d.links, d.nft
	var ids []uint16
	for _, tn := range plan.Tunnels {
		ids = append(ids, tn.ID)
	}
	if !slices.Equal(ids, []uint16{v1alpha1.MaxTunnelID, 1}) {
		t.Errorf("tunnel IDs = %v, want [%d 1]: IDs outside 1..%[2]d are skipped", ids, v1alpha1.MaxTunnelID)
	}
	if len(state.Policies) != len(plan.Tunnels) {
		t.Errorf("%d nft policies for %d tunnels", len(state.Policies), len(plan.Tunnels))
	}
	if err := state.Validate(); err != nil {
		t.Errorf("planned state does not validate: %v", err)
	}
}

func TestPlanHoldsTheFloatingIPsTheGroupGivesThisNodeAndReleasesTheRest(t *testing.T) {
	groups := []v1alpha1.NetworkGatewayGroup{
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "nsegress-system", Name: "onprem"},
			Spec:       v1alpha1.NetworkGatewayGroupSpec{FloatingIPs: []string{"198.51.100.101", "198.51.100.102", "198.51.100.103", "garbage"}},
			Status: v1alpha1.NetworkGatewayGroupStatus{FloatingIPs: map[string]string{
				"198.51.100.101": thisNode,
				"198.51.100.102": "gw-1",
				"garbage":        thisNode,
			}},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "nsegress-system", Name: "dmz"},
			Spec:       v1alpha1.NetworkGatewayGroupSpec{FloatingIPs: []string{"192.0.2.50"}},
			Status:     v1alpha1.NetworkGatewayGroupStatus{FloatingIPs: map[string]string{"192.0.2.50": thisNode}},
		},
	}
	plan := mustPlan(t, view{nodes: testNodes(), groups: groups}, testFacts()).links
	wantHeld := []netip.Addr{netip.MustParseAddr("198.51.100.101"), netip.MustParseAddr("192.0.2.50")}
	wantReleased := []netip.Addr{netip.MustParseAddr("198.51.100.102"), netip.MustParseAddr("198.51.100.103")}
	if !slices.Equal(plan.FloatingIPs, wantHeld) {
		t.Errorf("FloatingIPs = %v, want %v", plan.FloatingIPs, wantHeld)
	}
	if !slices.Equal(plan.ReleasedIPs, wantReleased) {
		t.Errorf("ReleasedIPs = %v, want %v (held elsewhere or by nobody)", plan.ReleasedIPs, wantReleased)
	}

	// The same groups seen from gw-1: it holds .102 and releases the rest.
	f := testFacts()
	f.nodeName = "gw-1"
	plan = mustPlan(t, view{nodes: testNodes(), groups: groups}, f).links
	if want := []netip.Addr{netip.MustParseAddr("198.51.100.102")}; !slices.Equal(plan.FloatingIPs, want) {
		t.Errorf("gw-1 FloatingIPs = %v, want %v", plan.FloatingIPs, want)
	}
	for _, ip := range plan.ReleasedIPs {
		if ip == netip.MustParseAddr("198.51.100.102") {
			t.Errorf("gw-1 both holds and releases %s", ip)
		}
	}
}

func TestPodPolicy(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	older := policy("older", 3, selectingTeam("purple"), createdAt(t0))
	newer := policy("newer", 4, selectingTeam("purple"), createdAt(t0.Add(time.Hour)))
	podsOnly := policy("web-only", 5, selectingTeam("green"), withPodSelector("app", "web"))
	noID := policy("no-id", 0, selectingTeam("orange"))
	v := view{
		// Newest first, as an informer may list them: podPolicy must
		// not depend on the order of the view.
		policies: []v1alpha1.EgressNATPolicy{newer, podsOnly, older, noID},
		nss: map[string]map[string]string{
			"purple-ns": {"team": "purple"},
			"green-ns":  {"team": "green"},
			"orange-ns": {"team": "orange"},
			"plain-ns":  {},
		},
		pods: map[string]map[string]string{
			"purple-ns/a":   {"app": "db"},
			"green-ns/web":  {"app": "web"},
			"green-ns/db":   {"app": "db"},
			"green-ns/bare": nil,
			"orange-ns/a":   {},
			"plain-ns/a":    {"app": "web"},
		},
	}
	tests := []struct {
		name      string
		ns, pod   string
		wantID    uint16
		wantKnown bool
	}{
		{"a pod whose labels are unknown is not decided", "purple-ns", "unseen", 0, false},
		{"a pod whose namespace is unknown is not decided", "unseen-ns", "a", 0, false},
		{"of two policies selecting a pod the older one wins", "purple-ns", "a", 3, true},
		{"a pod selector picks the pod it matches", "green-ns", "web", 5, true},
		{"a pod selector leaves the pod it does not match alone", "green-ns", "db", 0, true},
		{"a pod without labels is decided as not matching a pod selector", "green-ns", "bare", 0, true},
		{"a pod of a namespace no policy selects gets no policy", "plain-ns", "a", 0, true},
		{"a selecting policy without a tunnel ID gives no policy yet", "orange-ns", "a", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := nodestate.PodRecord{Namespace: tc.ns, Name: tc.pod, IP: netip.MustParseAddr("198.18.1.5"), HostIf: "veth1"}
			id, ok := podPolicy(v, rec)
			if id != tc.wantID || ok != tc.wantKnown {
				t.Errorf("podPolicy(%s/%s) = %d, %v; want %d, %v", tc.ns, tc.pod, id, ok, tc.wantID, tc.wantKnown)
			}
		})
	}
}

func TestPodPolicyBreaksAgeTiesByName(t *testing.T) {
	ts := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	v := view{
		policies: []v1alpha1.EgressNATPolicy{
			policy("zeta", 2, selectingTeam("purple"), createdAt(ts)),
			policy("alpha", 1, selectingTeam("purple"), createdAt(ts)),
		},
		nss:  map[string]map[string]string{"ns": {"team": "purple"}},
		pods: map[string]map[string]string{"ns/p": {}},
	}
	id, ok := podPolicy(v, nodestate.PodRecord{Namespace: "ns", Name: "p"})
	if id != 1 || !ok {
		t.Errorf("podPolicy = %d, %v; want 1 (policy alpha), true", id, ok)
	}
}

func TestModeReturnsTheGatewaysUnderlayAddressOnlyForTunnels(t *testing.T) {
	v := view{nodes: testNodes()}
	for _, tc := range []struct {
		policy v1alpha1.EgressNATPolicy
		mode   nft.Mode
		gw     netip.Addr
	}{
		{policy("p", 1, gateway("gw-2", "198.51.100.101")), nft.ModeTunnel, netip.MustParseAddr("10.0.0.3")},
		{policy("p", 1, gateway(thisNode, "198.51.100.101")), nft.ModeLocal, netip.Addr{}},
		{policy("p", 1), nft.ModeDrop, netip.Addr{}},
		{policy("p", 1, failOpen), nft.ModePass, netip.Addr{}},
	} {
		mode, gw := mode(v, &tc.policy, thisNode, nil)
		if mode != tc.mode || gw != tc.gw {
			t.Errorf("mode(gateway %q) = %s, %v; want %s, %v", tc.policy.Status.GatewayNode, mode, gw, tc.mode, tc.gw)
		}
	}
}

func TestHeldFloatingIPsAccumulateForUninstall(t *testing.T) {
	a, b := netip.MustParseAddr("198.51.100.101"), netip.MustParseAddr("198.51.100.102")
	group := func(holder map[string]string) view {
		return view{nodes: testNodes(), groups: []v1alpha1.NetworkGatewayGroup{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "nsegress-system", Name: "onprem"},
			Spec:       v1alpha1.NetworkGatewayGroupSpec{FloatingIPs: []string{a.String(), b.String()}},
			Status:     v1alpha1.NetworkGatewayGroupStatus{FloatingIPs: holder},
		}}}
	}
	// The node holds a, then a and b, then only b: uninstall must still
	// know that a was held once.
	f := testFacts()
	for _, holder := range []map[string]string{
		{a.String(): thisNode},
		{a.String(): thisNode, b.String(): thisNode},
		{b.String(): thisNode, a.String(): "gw-1"},
	} {
		f.held = mustPlan(t, group(holder), f).held
	}
	if want := []netip.Addr{a, b}; !slices.Equal(f.held, want) {
		t.Errorf("held = %v, want %v", f.held, want)
	}
	// The group no longer lists a at all: it is still released.
	v := group(map[string]string{b.String(): thisNode})
	v.groups[0].Spec.FloatingIPs = []string{b.String()}
	if got := mustPlan(t, v, f).links.ReleasedIPs; !slices.Contains(got, a) {
		t.Errorf("released = %v: a floating IP held before that no group lists any more is not released", got)
	}
}

func TestDesiredPodsFollowPoliciesAndForgetPodsWhoseDELWasLost(t *testing.T) {
	now := time.Now()
	v := view{
		nodes:    testNodes(),
		policies: []v1alpha1.EgressNATPolicy{policy("purple", 7, selectingTeam("purple"))},
		nss:      map[string]map[string]string{"purple": {"team": "purple"}, "plain": {}},
		pods:     map[string]map[string]string{"purple/a": {}, "plain/b": {}},
	}
	rec := func(ns, name, ip string, added time.Time) nodestate.PodRecord {
		return nodestate.PodRecord{Namespace: ns, Name: name, IP: netip.MustParseAddr(ip), HostIf: "veth-" + ip, Added: added}
	}
	key := func(ip string) nft.PodKey { return nft.PodKey{IP: netip.MustParseAddr(ip), HostIf: "veth-" + ip} }
	bridged := nodestate.PodRecord{Namespace: "purple", Name: "bridged", IP: netip.MustParseAddr("198.18.1.7"),
		HostIf: "cni0", Port: "veth-br", Added: now.Add(-time.Hour)}
	bridgedGone := nodestate.PodRecord{Namespace: "purple", Name: "bridged-gone", IP: netip.MustParseAddr("198.18.1.8"),
		HostIf: "cni0", Port: "veth-br-gone", Added: now.Add(-time.Hour)}
	recs := []nodestate.PodRecord{
		rec("purple", "a", "198.18.1.2", now),                       // selected
		rec("plain", "b", "198.18.1.3", now),                        // not selected
		rec("purple", "new", "198.18.1.4", now.Add(-time.Second)),   // informer has not seen it yet
		rec("purple", "gone", "198.18.1.5", now.Add(-time.Hour)),    // DEL never came: its veth is gone
		rec("purple", "moved", "198.18.1.6", now.Add(-time.Minute)), // labels unknown, element of a removed policy
		rec("purple", "unseen", "198.18.1.9", now.Add(-time.Hour)),  // an hour unseen (a broken watch), veth still there
		bridged,     // on a bridge, unseen, its port still there
		bridgedGone, // on a bridge, its port gone (the bridge stays)
	}
	bkey := func(r nodestate.PodRecord) nft.PodKey { return nft.PodKey{IP: r.IP, HostIf: r.HostIf} }
	current := map[nft.PodKey]uint16{key("198.18.1.4"): 7, key("198.18.1.5"): 7, key("198.18.1.6"): 9, key("198.18.1.9"): 7,
		bkey(bridged): 7, bkey(bridgedGone): 7}
	ifaces := map[string]bool{"eth0": true, "cni0": true, "veth-198.18.1.4": true, "veth-198.18.1.6": true,
		"veth-198.18.1.9": true, "veth-br": true}
	got := desiredPods(v, recs, current, []nft.Policy{{ID: 7}}, ifaces)
	want := map[nft.PodKey]uint16{key("198.18.1.2"): 7, key("198.18.1.4"): 7, key("198.18.1.9"): 7, bkey(bridged): 7}
	if !maps.Equal(got, want) {
		t.Errorf("desired pods = %v, want %v", got, want)
	}
}

// TestAPolicyRecreatedWithTheSameTunnelIDGetsAnotherVNI: the VNI carries
// the policy's generation, so that a node still steering with a deleted
// policy's tunnel ID cannot reach the SNAT of the policy that has the ID
// now.
func TestAPolicyRecreatedWithTheSameTunnelIDGetsAnotherVNI(t *testing.T) {
	vni := func(p v1alpha1.EgressNATPolicy) uint32 {
		d := mustPlan(t, view{nodes: testNodes(), policies: []v1alpha1.EgressNATPolicy{p}}, testFacts())
		return d.links.Tunnels[0].VNI()
	}
	old := policy("purple", 5, gateway("gw-1", "198.51.100.101"))
	recreated := policy("darkblue", 5, gateway("gw-1", "198.51.100.102"))
	first := vni(old)
	if again := vni(old); again != first {
		t.Fatalf("the VNI of one policy changes between plans: %#x, then %#x", first, again)
	}
	if a, b := vni(old), vni(recreated); a == b || a&0xfff != 5 || b&0xfff != 5 || a>>12 == 0 || b>>12 == 0 {
		t.Errorf("VNIs %#x and %#x: want both with tunnel ID 5 in the low 12 bits and different, non-zero generations above", a, b)
	}
}

// TestANodeAddressListedAsFloatingIPIsNeitherHeldNorReleased: a group
// that lists a node's own address (the controller refuses to place it)
// must not make a gateway announce it, nor any node delete it.
func TestANodeAddressListedAsFloatingIPIsNeitherHeldNorReleased(t *testing.T) {
	own := "10.0.0.11" // thisNode's InternalIP
	v := view{nodes: testNodes(), groups: []v1alpha1.NetworkGatewayGroup{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "nsegress-system", Name: "onprem"},
		Spec:       v1alpha1.NetworkGatewayGroupSpec{FloatingIPs: []string{own, "10.0.0.21"}},
		Status:     v1alpha1.NetworkGatewayGroupStatus{FloatingIPs: map[string]string{own: "gw-1", "10.0.0.21": thisNode}},
	}}}
	f := testFacts()
	f.held = []netip.Addr{netip.MustParseAddr(own)}
	plan := mustPlan(t, v, f).links
	if len(plan.FloatingIPs) != 0 {
		t.Errorf("holds %v: node addresses are nobody's floating IPs", plan.FloatingIPs)
	}
	for _, ip := range plan.ReleasedIPs {
		if ip.String() == own || ip.String() == "10.0.0.21" {
			t.Errorf("releases the node address %s", ip)
		}
	}
}

// TestSteeredPodsOnABridgeAreGuardedOnTheirPorts: the nft state guards
// the address of each steered pod on a bridge at its port, and no other.
func TestSteeredPodsOnABridgeAreGuardedOnTheirPorts(t *testing.T) {
	v := view{nodes: testNodes(), policies: []v1alpha1.EgressNATPolicy{policy("purple", 7, selectingTeam("purple"))},
		nss:  map[string]map[string]string{"purple": {"team": "purple"}, "plain": {}},
		pods: map[string]map[string]string{"purple/a": {}, "plain/b": {}}}
	f := testFacts()
	f.records = []nodestate.PodRecord{
		{Namespace: "purple", Name: "a", IP: netip.MustParseAddr("198.18.1.2"), HostIf: "cni0", Port: "veth-a", Added: f.now},
		{Namespace: "plain", Name: "b", IP: netip.MustParseAddr("198.18.1.3"), HostIf: "cni0", Port: "veth-b", Added: f.now},
	}
	got := mustPlan(t, v, f).nft.Guards
	if want := map[netip.Addr]string{netip.MustParseAddr("198.18.1.2"): "veth-a"}; !maps.Equal(got, want) {
		t.Errorf("guards = %v, want %v", got, want)
	}
}

// TestPlanReturnsRepliesThroughTheTunnel: a gateway routes the replies of
// tunnelled connections back into the tunnel, towards each other node
// whose pod ranges it knows, and a worker lets its gateway send those
// replies (the policy's destinations) as inner sources.
func TestPlanReturnsRepliesThroughTheTunnel(t *testing.T) {
	nodes := testNodes()
	nodes["gw-1"].Spec.PodCIDRs = []string{"198.18.1.0/24"}
	nodes["gw-2"].Spec.PodCIDRs = []string{"198.18.3.0/24", "fd00:3::/64"}
	nodes[thisNode].Spec.PodCIDRs = []string{"198.18.2.0/24"}
	local := policy("purple", 7, gateway(thisNode, "198.51.100.101"))
	tunnelled := policy("darkblue", 8, gateway("gw-1", "198.51.100.102"), withDestinations("203.0.113.8/29"))

	d := mustPlan(t, view{nodes: nodes, policies: []v1alpha1.EgressNATPolicy{local, tunnelled}}, testFacts())
	wantReturns := []datapath.Return{
		{Node: netip.MustParseAddr("10.0.0.3"), Ranges: []netip.Prefix{netip.MustParsePrefix("198.18.3.0/24")}},
		{Node: netip.MustParseAddr("10.0.0.21"), Ranges: []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24")}},
	}
	for _, tun := range d.links.Tunnels {
		switch tun.Mode {
		case nft.ModeLocal:
			if !reflect.DeepEqual(tun.Returns, wantReturns) {
				t.Errorf("local tunnel %d returns to %v, want %v (other nodes with IPv4 ranges, sorted)", tun.ID, tun.Returns, wantReturns)
			}
		default:
			if tun.Returns != nil {
				t.Errorf("tunnel %d in mode %v returns to %v, want none (only a gateway returns replies)", tun.ID, tun.Mode, tun.Returns)
			}
		}
	}
	if want := []netip.Prefix{netip.MustParsePrefix("198.18.3.0/24"), netip.MustParsePrefix("198.18.1.0/24")}; !reflect.DeepEqual(d.nft.ReturnRanges, want) {
		t.Errorf("ReturnRanges = %v, want %v", d.nft.ReturnRanges, want)
	}
	for _, p := range d.nft.TunnelPeers {
		if p.Addr != netip.MustParseAddr("10.0.0.21") {
			continue
		}
		want := []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24"), netip.MustParsePrefix("203.0.113.8/29")}
		if !reflect.DeepEqual(p.Sources, want) {
			t.Errorf("gw-1 may tunnel %v, want its pods and darkblue's destinations %v", p.Sources, want)
		}
	}

	// gw-2's range is routed over the underlay to gw-2 itself (ptp's
	// routes, host-gw, kube-router): its replies need no return. gw-1's
	// range routed elsewhere (an overlay's next hop) keeps it.
	f := testFacts()
	f.underlayRoutes = map[netip.Prefix]netip.Addr{
		netip.MustParsePrefix("198.18.3.0/24"): netip.MustParseAddr("10.0.0.3"),
		netip.MustParsePrefix("198.18.1.0/24"): netip.MustParseAddr("10.0.0.99"),
	}
	d = mustPlan(t, view{nodes: nodes, policies: []v1alpha1.EgressNATPolicy{local, tunnelled}}, f)
	if want := wantReturns[1:]; !reflect.DeepEqual(d.nft.ReturnRanges, want[0].Ranges) {
		t.Errorf("with gw-2 routed over the underlay, ReturnRanges = %v, want gw-1's %v", d.nft.ReturnRanges, want[0].Ranges)
	}

	f = testFacts()
	f.ignorePodRanges = true
	d = mustPlan(t, view{nodes: nodes, policies: []v1alpha1.EgressNATPolicy{local, tunnelled}}, f)
	if d.nft.ReturnRanges != nil {
		t.Errorf("with ignorePodRanges, ReturnRanges = %v, want none", d.nft.ReturnRanges)
	}
	for _, tun := range d.links.Tunnels {
		if tun.Returns != nil {
			t.Errorf("with ignorePodRanges, tunnel %d returns to %v, want none", tun.ID, tun.Returns)
		}
	}
}

func TestATakeoverTheAPIHasNotCaughtUpWithMovesTunnelsAndTheIP(t *testing.T) {
	egress := netip.MustParseAddr("198.51.100.101")
	groups := []v1alpha1.NetworkGatewayGroup{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "nsegress-system", Name: "onprem"},
		Spec:       v1alpha1.NetworkGatewayGroupSpec{FloatingIPs: []string{egress.String()}},
		Status: v1alpha1.NetworkGatewayGroupStatus{
			FloatingIPs: map[string]string{egress.String(): "gw-1"},
			Assignments: map[string]v1alpha1.FloatingIPAssignment{egress.String(): {Active: "gw-1", Standby: "gw-2", Epoch: 4}},
		},
	}}
	v := view{nodes: testNodes(), groups: groups, policies: []v1alpha1.EgressNATPolicy{policy("p", 1, gateway("gw-1", egress.String()))}}

	// A worker that heard gw-2 take the IP over tunnels there at once.
	f := testFacts()
	f.holders = map[netip.Addr]ha.Holder{egress: {Node: "gw-2", Epoch: 5}}
	d := mustPlan(t, v, f)
	if got := d.links.Tunnels[0]; got.Mode != nft.ModeTunnel || got.Gateway != netip.MustParseAddr("10.0.0.3") {
		t.Errorf("tunnel = %s to %v; want tunnel to gw-2 (10.0.0.3)", got.Mode, got.Gateway)
	}
	// Before it re-points, the standby's replies of inherited flows are
	// allowed too: gw-1 (the API's holder) has gw-2 as standby.
	f.holders = nil
	d = mustPlan(t, v, f)
	for _, p := range d.nft.TunnelPeers {
		if p.Addr == netip.MustParseAddr("10.0.0.3") && len(p.Sources) > 0 && !slices.Contains(p.Sources, dst203[0]) {
			t.Errorf("the standby gw-2 may not send the policy's destinations as replies: %v", p.Sources)
		}
	}

	// gw-2 itself, having taken over, holds the IP and SNATs locally.
	f = testFacts()
	f.nodeName = "gw-2"
	f.holders = map[netip.Addr]ha.Holder{egress: {Node: "gw-2", Epoch: 5}}
	d = mustPlan(t, v, f)
	if !slices.Equal(d.links.FloatingIPs, []netip.Addr{egress}) || d.links.Tunnels[0].Mode != nft.ModeLocal {
		t.Errorf("gw-2 holds %v in mode %s; want %s, local", d.links.FloatingIPs, d.links.Tunnels[0].Mode, egress)
	}
	// gw-1, fenced or overtaken, lets it go.
	f.nodeName = "gw-1"
	d = mustPlan(t, v, f)
	if len(d.links.FloatingIPs) != 0 || !slices.Contains(d.links.ReleasedIPs, egress) {
		t.Errorf("gw-1 holds %v and releases %v; want it to release %s", d.links.FloatingIPs, d.links.ReleasedIPs, egress)
	}
	// Nobody may hold it (fenced everywhere): the policy's failMode.
	f.holders = map[netip.Addr]ha.Holder{egress: {Epoch: 5}}
	f.nodeName = thisNode
	if d = mustPlan(t, v, f); d.links.Tunnels[0].Mode != nft.ModeDrop {
		t.Errorf("with no holder the mode is %s; want drop (failMode Closed)", d.links.Tunnels[0].Mode)
	}
}

func TestANodeThatLetAnIPGoKeepsForwardingItsPolicyWhileDraining(t *testing.T) {
	egress := netip.MustParseAddr("198.51.100.101")
	groups := []v1alpha1.NetworkGatewayGroup{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "nsegress-system", Name: "onprem"},
		Spec:       v1alpha1.NetworkGatewayGroupSpec{FloatingIPs: []string{egress.String()}},
		Status: v1alpha1.NetworkGatewayGroupStatus{
			FloatingIPs: map[string]string{egress.String(): "gw-2"},
			Assignments: map[string]v1alpha1.FloatingIPAssignment{egress.String(): {Active: "gw-2", Standby: "gw-1", Epoch: 5}},
		},
	}}
	v := view{nodes: testNodes(), groups: groups, policies: []v1alpha1.EgressNATPolicy{policy("p", 1, gateway("gw-2", egress.String()))}}
	f := testFacts()
	f.nodeName = "gw-1"
	f.draining = map[netip.Addr]bool{egress: true}
	d := mustPlan(t, v, f)
	if d.links.Tunnels[0].Mode != nft.ModeLocal || d.links.Tunnels[0].EgressIP != egress {
		t.Errorf("draining gw-1: mode %s, egress %v; want local, SNAT to %s", d.links.Tunnels[0].Mode, d.links.Tunnels[0].EgressIP, egress)
	}
	if slices.Contains(d.links.FloatingIPs, egress) || !slices.Contains(d.links.ReleasedIPs, egress) {
		t.Errorf("draining gw-1 holds %v, releases %v; want %s released (gw-2 answers ARP for it)", d.links.FloatingIPs, d.links.ReleasedIPs, egress)
	}
	if !slices.Equal(d.nft.Released, []netip.Addr{egress}) {
		t.Errorf("draining gw-1 drops stateless TCP to %v; want %s", d.nft.Released, egress)
	}

	// gw-2, which took it from gw-1, passes stateless TCP to it on to gw-1.
	took := testFacts()
	took.nodeName = "gw-2"
	took.passOn = map[netip.Addr]netip.Addr{egress: netip.MustParseAddr("10.0.0.21")}
	if d := mustPlan(t, v, took); !maps.Equal(d.nft.PassOn, took.passOn) {
		t.Errorf("gw-2 passes on %v; want %s to gw-1's 10.0.0.21", d.nft.PassOn, egress)
	}
	f.draining = nil
	if d = mustPlan(t, v, f); d.links.Tunnels[0].Mode != nft.ModeTunnel {
		t.Errorf("after the drain gw-1 is in mode %s; want tunnel to gw-2", d.links.Tunnels[0].Mode)
	}
}
