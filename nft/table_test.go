package nft

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// pod is a shorthand for a PodKey.
func pod(ip, hostIf string) PodKey {
	return PodKey{IP: netip.MustParseAddr(ip), HostIf: hostIf}
}

// twoPolicies is a node that tunnels policy 7 to another gateway and is
// the gateway of policy 9.
func twoPolicies() State {
	return State{
		Policies: []Policy{
			{ID: 7, Mode: ModeTunnel, Device: "nsg7", Destinations: []netip.Prefix{
				netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("198.51.100.7/32")}},
			{ID: 9, Mode: ModeLocal, Device: "nsg9", EgressIP: netip.MustParseAddr("192.0.2.9"),
				Destinations: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}},
		},
		Pods:       map[PodKey]uint16{},
		MSS:        1410,
		TunnelPort: 4789,
		Uplink:     "eth0",
		TunnelPeers: []TunnelPeer{{Addr: netip.MustParseAddr("10.0.0.1"), Sources: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}},
			{Addr: netip.MustParseAddr("10.0.0.2")}},
		ReturnRanges: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.3.0/24")},
		DevicePrefix: "nsg",
	}
}

// mustApply applies s or fails t.
func mustApply(t testing.TB, tbl *Table, s State) {
	t.Helper()
	if err := tbl.Apply(s); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// mustPods returns the pods map or fails t.
func mustPods(t testing.TB, tbl *Table) map[PodKey]uint16 {
	t.Helper()
	got, err := tbl.Pods()
	if err != nil {
		t.Fatalf("Pods: %v", err)
	}
	return got
}

// wantPods fails t unless the pods map is want.
func wantPods(t testing.TB, tbl *Table, want map[PodKey]uint16) {
	t.Helper()
	if got := mustPods(t, tbl); !maps.Equal(got, want) {
		t.Fatalf("pods map = %v, want %v", got, want)
	}
}

func TestGoldenTwoPoliciesThenPods(t *testing.T) {
	tbl, ns := newTestTable(t)
	s := twoPolicies()
	mustApply(t, tbl, s)
	checkGolden(t, "apply_two_policies", listTable(t, ns))

	for k, id := range map[PodKey]uint16{
		pod("198.18.1.5", "veth1a2b"):        7,
		pod("198.18.1.6", "veth3c4d"):        7,
		pod("198.18.2.8", "cali0123456789a"): 9,
	} {
		if err := tbl.AddPod(k, id); err != nil {
			t.Fatal(err)
		}
	}
	checkGolden(t, "add_pods", listTable(t, ns))

	if err := tbl.DelPod(pod("198.18.1.6", "veth3c4d")); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "del_pod", listTable(t, ns))
}

func TestGoldenPolicyRemoved(t *testing.T) {
	tbl, ns := newTestTable(t)
	s := twoPolicies()
	s.Pods = map[PodKey]uint16{pod("198.18.1.5", "veth1a2b"): 7, pod("198.18.2.8", "veth9"): 9}
	mustApply(t, tbl, s)

	s.Policies = s.Policies[1:]
	delete(s.Pods, pod("198.18.1.5", "veth1a2b"))
	mustApply(t, tbl, s)
	checkGolden(t, "policy_removed", listTable(t, ns))
}

func TestGoldenDropAndPass(t *testing.T) {
	tbl, ns := newTestTable(t)
	s := State{
		Policies: []Policy{
			{ID: 3, Mode: ModeDrop, Destinations: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
			{ID: 4, Mode: ModePass, Device: "nsg4", Destinations: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
		},
		Pods:         map[PodKey]uint16{pod("198.18.1.5", "veth1a2b"): 3, pod("198.18.1.6", "veth3c4d"): 4},
		TunnelPort:   4789,
		Uplink:       "eth0",
		DevicePrefix: "nsg",
	}
	mustApply(t, tbl, s)
	checkGolden(t, "drop_and_pass", listTable(t, ns))
}

func TestApplyTwiceIsNoOp(t *testing.T) {
	tbl, ns := newTestTable(t)
	s := twoPolicies()
	s.Pods = map[PodKey]uint16{pod("198.18.1.5", "veth1a2b"): 7, pod("198.18.2.8", "veth9"): 9}
	mustApply(t, tbl, s)
	before := listTable(t, ns)
	mustApply(t, tbl, s)
	if after := listTable(t, ns); after != before {
		t.Fatalf("second Apply changed the table:\n--- before\n%s\n--- after\n%s", before, after)
	}
	wantPods(t, tbl, s.Pods)
}

// TestApplyUpgradesTheTableOfThePreviousRelease: the previous release
// checked only the outer source of tunnel traffic, against a set "peers"
// that a rule of the input chain looks up. Apply must replace both in one
// go, with no error and no leftover, keeping the pods' elements.
func TestApplyUpgradesTheTableOfThePreviousRelease(t *testing.T) {
	tbl, ns := newTestTable(t)
	s := twoPolicies()
	s.Pods = map[PodKey]uint16{pod("198.18.1.5", "veth1a2b"): 7}
	mustApply(t, tbl, s)
	runIn(t, ns, "nft", "add set ip nsegress peers { type ipv4_addr; elements = { 10.0.0.1, 10.0.0.2 }; }")
	runIn(t, ns, "nft", "flush chain ip nsegress input")
	runIn(t, ns, "nft", "add rule ip nsegress input udp dport 4789 ip saddr != @peers drop")
	mustApply(t, tbl, s)
	got := listTable(t, ns)
	if strings.Contains(got, "peers") {
		t.Errorf("the old set is still there:\n%s", got)
	}
	checkGolden(t, "apply_two_policies_with_pod", got)
	wantPods(t, tbl, s.Pods)
}

func TestApplyRejectsInvalidStateAndChangesNothing(t *testing.T) {
	tbl, ns := newTestTable(t)
	mustApply(t, tbl, twoPolicies())
	before := listTable(t, ns)
	bad := twoPolicies()
	bad.Pods = map[PodKey]uint16{pod("198.18.1.5", "veth1"): 8}
	if err := tbl.Apply(bad); err == nil {
		t.Fatal("Apply of a pod of an unknown policy succeeded")
	}
	if after := listTable(t, ns); after != before {
		t.Fatalf("failed Apply changed the table:\n%s", after)
	}
}

func TestPodIPReuseLateDelKeepsNewPod(t *testing.T) {
	tbl, _ := newTestTable(t)
	mustApply(t, tbl, twoPolicies())
	oldPod, newPod := pod("198.18.1.5", "vethOLD"), pod("198.18.1.5", "vethNEW")
	steps := []struct {
		name string
		do   func() error
	}{
		{"add old pod", func() error { return tbl.AddPod(oldPod, 7) }},
		{"delete old pod", func() error { return tbl.DelPod(oldPod) }},
		{"add new pod with the same IP", func() error { return tbl.AddPod(newPod, 7) }},
		{"late second DEL of old pod", func() error { return tbl.DelPod(oldPod) }},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
	}
	wantPods(t, tbl, map[PodKey]uint16{newPod: 7})
}

func TestAddPod(t *testing.T) {
	tbl, _ := newTestTable(t)
	mustApply(t, tbl, twoPolicies())
	k := pod("198.18.1.5", "veth1a2b")
	tests := []struct {
		name string
		id   uint16
		want map[PodKey]uint16
	}{
		{"adds a new pod", 7, map[PodKey]uint16{k: 7}},
		{"is a no-op with the same policy", 7, map[PodKey]uint16{k: 7}},
		{"replaces a different policy", 9, map[PodKey]uint16{k: 9}},
		{"replaces it back", 7, map[PodKey]uint16{k: 7}},
	}
	for _, tt := range tests {
		if err := tbl.AddPod(k, tt.id); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		wantPods(t, tbl, tt.want)
	}
}

func TestAddPodToUnprogrammedPolicy(t *testing.T) {
	tbl, _ := newTestTable(t)
	k := pod("198.18.1.5", "veth1a2b")
	if err := tbl.AddPod(k, 7); !errors.Is(err, ErrPolicyNotProgrammed) {
		t.Fatalf("AddPod without a table: err = %v, want ErrPolicyNotProgrammed", err)
	}
	mustApply(t, tbl, twoPolicies())
	err := tbl.AddPod(k, 8)
	if !errors.Is(err, ErrPolicyNotProgrammed) {
		t.Fatalf("AddPod to policy 8: err = %v, want ErrPolicyNotProgrammed", err)
	}
	t.Logf("error reads: %v", err)
	wantPods(t, tbl, map[PodKey]uint16{})
}

func TestDelPodIsIdempotent(t *testing.T) {
	tbl, _ := newTestTable(t)
	k := pod("198.18.1.5", "veth1a2b")
	if err := tbl.DelPod(k); err != nil {
		t.Fatalf("DelPod with no table: %v", err)
	}
	mustApply(t, tbl, twoPolicies())
	if err := tbl.AddPod(k, 7); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"first DEL", "second DEL", "DEL of an unknown pod"} {
		target := k
		if name == "DEL of an unknown pod" {
			target = pod("198.18.9.9", "vethX")
		}
		if err := tbl.DelPod(target); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	wantPods(t, tbl, map[PodKey]uint16{})
}

func TestPodsOfAbsentTableIsEmpty(t *testing.T) {
	tbl, _ := newTestTable(t)
	wantPods(t, tbl, map[PodKey]uint16{})
}

func TestDeleteRemovesEverything(t *testing.T) {
	tbl, ns := newTestTable(t)
	s := twoPolicies()
	s.Pods = map[PodKey]uint16{pod("198.18.1.5", "veth1a2b"): 7}
	mustApply(t, tbl, s)
	for i := range 2 {
		if err := tbl.Delete(); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if out := runIn(t, ns, "nft", "list", "ruleset"); out != "" {
		t.Fatalf("ruleset after Delete is not empty:\n%s", out)
	}
}

// TestBridgeGuardsFollowApplyGuardAndUnguard: the bridge table holds a
// guard for each selected pod on a bridge; GuardPort and UnguardPort
// change one; Delete removes the bridge table with the ip table.
func TestBridgeGuardsFollowApplyGuardAndUnguard(t *testing.T) {
	tbl, ns := newTestTable(t)
	s := twoPolicies()
	s.Guards = map[netip.Addr]string{netip.MustParseAddr("198.18.1.5"): "veth1a2b"}
	mustApply(t, tbl, s)
	checkGolden(t, "bridge_guards", sortElements(runIn(t, ns, "nft", "list", "table", "bridge", DefaultTableName)))

	if err := tbl.GuardPort(netip.MustParseAddr("198.18.1.6"), "veth3c4d"); err != nil {
		t.Fatal(err)
	}
	if err := tbl.UnguardPort(netip.MustParseAddr("198.18.1.5"), "veth1a2b"); err != nil {
		t.Fatal(err)
	}
	if err := tbl.UnguardPort(netip.MustParseAddr("198.18.1.5"), "veth1a2b"); err != nil {
		t.Errorf("a second UnguardPort: %v", err)
	}
	out := runIn(t, ns, "nft", "list", "table", "bridge", DefaultTableName)
	if !strings.Contains(out, `198.18.1.6 . "veth3c4d"`) || strings.Contains(out, "198.18.1.5") {
		t.Errorf("after GuardPort .6 and UnguardPort .5 the bridge table is:\n%s", out)
	}
	if err := tbl.Delete(); err != nil {
		t.Fatal(err)
	}
	if out := runIn(t, ns, "nft", "list", "tables"); strings.Contains(out, DefaultTableName) {
		t.Errorf("after Delete: %s", out)
	}
}

// TestGoldenHandover: a gateway that took 192.0.2.9 from 10.0.0.2 moments
// ago passes TCP still addressed to it on to 10.0.0.2, and drops TCP to
// 192.0.2.10, which it let go moments ago.
func TestGoldenHandover(t *testing.T) {
	tbl, ns := newTestTable(t)
	s := twoPolicies()
	s.HeldIPs = []netip.Addr{netip.MustParseAddr("192.0.2.9")}
	s.PassOn = map[netip.Addr]netip.Addr{netip.MustParseAddr("192.0.2.9"): netip.MustParseAddr("10.0.0.2")}
	s.Released = []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	mustApply(t, tbl, s)
	checkGolden(t, "handover", listTable(t, ns))

	for _, bad := range []func(*State){
		func(s *State) { s.HeldIPs = nil }, // passing on an IP not held
		func(s *State) { s.PassOn[netip.MustParseAddr("192.0.2.9")] = netip.MustParseAddr("192.0.2.9") }, // to itself
		func(s *State) { s.Released = append(s.Released, netip.MustParseAddr("192.0.2.9")) },             // held and released
	} {
		b := twoPolicies()
		b.HeldIPs = slices.Clone(s.HeldIPs)
		b.PassOn = maps.Clone(s.PassOn)
		b.Released = slices.Clone(s.Released)
		bad(&b)
		if err := b.Validate(); err == nil {
			t.Errorf("a bad handover state validated: held %v, pass on %v, released %v", b.HeldIPs, b.PassOn, b.Released)
		}
	}
}
