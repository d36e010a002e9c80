package datapath

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nsegress/nsegress/nft"
)

var (
	otherGatewayIP = netip.MustParseAddr("198.51.100.22")
	egressIP2      = netip.MustParseAddr("198.51.100.102")
)

// newNodeNS is a namespace with an uplink eth0 (one end of a veth whose
// other end, peer0, stays in the namespace) holding workerIP/24.
func newNodeNS(t *testing.T) *testNS {
	t.Helper()
	n := newTestNS(t, "node")
	n.run(t, "ip", "link", "add", "eth0", "mtu", "1500", "type", "veth", "peer", "name", "peer0")
	n.run(t, "ip", "addr", "add", workerIP.String()+"/24", "dev", "eth0")
	n.run(t, "ip", "link", "set", "eth0", "up")
	n.run(t, "ip", "link", "set", "peer0", "up")
	return n
}

// vxlanInfo is what `ip -d link` says about a VXLAN device.
type vxlanInfo struct {
	Index   int    `json:"ifindex"`
	MTU     int    `json:"mtu"`
	Address string `json:"address"`
	Flags   []string
	Info    struct {
		Kind string `json:"info_kind"`
		Data struct {
			ID       int    `json:"id"`
			Local    string `json:"local"`
			Link     string `json:"link"`
			Port     int    `json:"port"`
			Learning bool   `json:"learning"`
		} `json:"info_data"`
	} `json:"linkinfo"`
}

func (n *testNS) vxlan(t *testing.T, name string) vxlanInfo {
	t.Helper()
	var out []vxlanInfo
	raw := n.run(t, "ip", "-j", "-d", "link", "show", "dev", name)
	if err := json.Unmarshal([]byte(raw), &out); err != nil || len(out) != 1 {
		t.Fatalf("%s: %s: %v\n%s", n.name, name, err, raw)
	}
	return out[0]
}

// fdb lists a device's forwarding entries as "mac dst state".
func (n *testNS) fdb(t *testing.T, dev string) []string {
	t.Helper()
	var out []struct {
		MAC   string `json:"mac"`
		Dst   string `json:"dst"`
		State string `json:"state"`
	}
	raw := n.run(t, "bridge", "-j", "fdb", "show", "dev", dev)
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("%s: fdb of %s: %v\n%s", n.name, dev, err, raw)
	}
	var s []string
	for _, e := range out {
		s = append(s, strings.TrimSpace(e.MAC+" "+e.Dst+" "+e.State))
	}
	return s
}

// neighbours lists a device's IPv4 neighbour entries as "ip mac STATE".
func (n *testNS) neighbours(t *testing.T, dev string) []string {
	t.Helper()
	var out []struct {
		Dst    string   `json:"dst"`
		LLAddr string   `json:"lladdr"`
		State  []string `json:"state"`
	}
	raw := n.run(t, "ip", "-j", "-4", "neigh", "show", "dev", dev)
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("%s: neighbours of %s: %v\n%s", n.name, dev, err, raw)
	}
	var s []string
	for _, e := range out {
		s = append(s, strings.TrimSpace(e.Dst+" "+e.LLAddr+" "+strings.Join(e.State, ",")))
	}
	return s
}

// wantRule is the rule `ip rule` prints for tunnel id.
func wantRule(id uint16) string {
	return fmt.Sprintf("%d:\tfrom all fwmark %#x/%#x lookup %d", DefaultRulePriority, nft.DefaultMarkBits.Mark(id), nft.DefaultMarkBits.Mask(), DefaultTableBase+int(id))
}

// tunnelTo is policy id's tunnel on the worker towards gw.
func tunnelTo(id uint16, gw netip.Addr) Tunnel {
	return Tunnel{ID: id, Mode: nft.ModeTunnel, Gateway: gw, Destinations: []netip.Prefix{backendNs}}
}

func nodePlan(tunnels ...Tunnel) Plan {
	return Plan{Uplink: "eth0", NodeIP: workerIP, Port: DefaultPort, Tunnels: tunnels}
}

func checkSlice(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

func TestApplyBuildsATunnelAndFollowsThePlanAsItChanges(t *testing.T) {
	requireNetNS(t)
	n := newNodeNS(t)
	var firstIndex int

	step(t, "a tunnel policy gets its device, neighbour, FDB entry, rule and route", func(t *testing.T) {
		applyPlan(t, n, nodePlan(tunnelTo(1, gatewayIP)))
		vx := n.vxlan(t, "nsg1")
		firstIndex = vx.Index
		d := vx.Info.Data
		if vx.Info.Kind != "vxlan" || d.ID != 1 || d.Port != DefaultPort || d.Local != workerIP.String() || d.Link != "eth0" || d.Learning {
			t.Errorf("nsg1 is %+v, want vxlan VNI 1, port %d, local %s, dev eth0, nolearning", vx.Info, DefaultPort, workerIP)
		}
		if vx.MTU != 1450 || vx.Address != "02:6e:c6:33:64:0b" || !slices.Contains(vx.Flags, "UP") {
			t.Errorf("nsg1 has MTU %d, address %s, flags %v; want 1450, 02:6e:c6:33:64:0b (from %s), UP", vx.MTU, vx.Address, vx.Flags, workerIP)
		}
		checkSlice(t, "nsg1 neighbours", n.neighbours(t, "nsg1"), []string{"198.19.255.254 02:6e:c6:33:64:15 PERMANENT"})
		checkSlice(t, "nsg1 FDB", n.fdb(t, "nsg1"), []string{"02:6e:c6:33:64:15 198.51.100.21 permanent"})
		checkSlice(t, "rules", n.nsegressRules(t), []string{wantRule(1)})
		checkSlice(t, "table 20001", n.tableRoutesCLI(t, 20001), []string{"default via 198.19.255.254 dev nsg1 onlink"})
		if got := n.readSysctl(t, "net.ipv4.conf.nsg1.src_valid_mark"); got != "1" {
			t.Errorf("nsg1 src_valid_mark = %s, want 1", got)
		}
	})

	step(t, "applying the same plan again leaves one of everything", func(t *testing.T) {
		applyPlan(t, n, nodePlan(tunnelTo(1, gatewayIP)))
		if idx := n.vxlan(t, "nsg1").Index; idx != firstIndex {
			t.Errorf("nsg1 was recreated (ifindex %d -> %d)", firstIndex, idx)
		}
		checkSlice(t, "nsg1 FDB", n.fdb(t, "nsg1"), []string{"02:6e:c6:33:64:15 198.51.100.21 permanent"})
		checkSlice(t, "rules", n.nsegressRules(t), []string{wantRule(1)})
		checkSlice(t, "table 20001", n.tableRoutesCLI(t, 20001), []string{"default via 198.19.255.254 dev nsg1 onlink"})
	})

	step(t, "moving the policy's gateway replaces the neighbour and the FDB entry", func(t *testing.T) {
		applyPlan(t, n, nodePlan(tunnelTo(1, otherGatewayIP)))
		if idx := n.vxlan(t, "nsg1").Index; idx != firstIndex {
			t.Errorf("nsg1 was recreated (ifindex %d -> %d); moving the gateway needs no new device", firstIndex, idx)
		}
		checkSlice(t, "nsg1 neighbours", n.neighbours(t, "nsg1"), []string{"198.19.255.254 02:6e:c6:33:64:16 PERMANENT"})
		checkSlice(t, "nsg1 FDB", n.fdb(t, "nsg1"), []string{"02:6e:c6:33:64:16 198.51.100.22 permanent"})
	})

	local := Tunnel{ID: 2, Mode: nft.ModeLocal, EgressIP: egressIP, Destinations: []netip.Prefix{backendNs, netip.MustParsePrefix("192.0.2.0/25")}}
	step(t, "a second, local policy gets throw routes for its destinations", func(t *testing.T) {
		applyPlan(t, n, nodePlan(tunnelTo(1, otherGatewayIP), local))
		checkSlice(t, "rules", n.nsegressRules(t), []string{wantRule(1), wantRule(2)})
		checkSlice(t, "table 20002", n.tableRoutesCLI(t, 20002), []string{
			"default via 198.19.255.254 dev nsg2 onlink",
			"throw 192.0.2.0/25",
			"throw 203.0.113.0/24",
		})
		checkSlice(t, "nsg2 FDB", n.fdb(t, "nsg2"), nil)
	})

	step(t, "removing a tunnel from the plan removes its link, rule and routes only", func(t *testing.T) {
		applyPlan(t, n, nodePlan(local))
		if slices.Contains(n.links(t), "nsg1") {
			t.Errorf("nsg1 remains")
		}
		checkSlice(t, "rules", n.nsegressRules(t), []string{wantRule(2)})
		checkSlice(t, "table 20001", n.tableRoutesCLI(t, 20001), nil)
		checkSlice(t, "table 20002", n.tableRoutesCLI(t, 20002), []string{
			"default via 198.19.255.254 dev nsg2 onlink",
			"throw 192.0.2.0/25",
			"throw 203.0.113.0/24",
		})
	})

	step(t, "changing a local policy's destinations replaces its throw routes", func(t *testing.T) {
		local.Destinations = []netip.Prefix{netip.MustParsePrefix("192.0.2.128/25")}
		applyPlan(t, n, nodePlan(local))
		checkSlice(t, "table 20002", n.tableRoutesCLI(t, 20002), []string{
			"default via 198.19.255.254 dev nsg2 onlink",
			"throw 192.0.2.128/25",
		})
	})

	step(t, "a policy that falls back to drop keeps its device but loses its rule", func(t *testing.T) {
		applyPlan(t, n, nodePlan(Tunnel{ID: 2, Mode: nft.ModeDrop}))
		checkSlice(t, "rules", n.nsegressRules(t), nil)
		if !slices.Contains(n.links(t), "nsg2") {
			t.Errorf("nsg2 was removed; the policy still exists")
		}
	})

	step(t, "an empty plan leaves nothing of nsegress", func(t *testing.T) {
		applyPlan(t, n, nodePlan())
		n.expectClean(t)
		if got := n.addrs(t, "eth0"); !slices.Equal(got, []netip.Addr{workerIP}) {
			t.Errorf("eth0 holds %v, want only %s", got, workerIP)
		}
	})
}

func TestApplyRecreatesADeviceThatIsNotThePlans(t *testing.T) {
	requireNetNS(t)
	n := newNodeNS(t)
	// A leftover with the right name and the wrong VNI, port and
	// learning, e.g. from an older version.
	n.run(t, "ip", "link", "add", "nsg3", "type", "vxlan", "id", "99", "dstport", "4789", "dev", "eth0", "local", workerIP.String())
	applyPlan(t, n, nodePlan(tunnelTo(3, gatewayIP)))
	d := n.vxlan(t, "nsg3").Info.Data
	if d.ID != 3 || d.Port != DefaultPort || d.Learning {
		t.Errorf("nsg3 is VNI %d port %d learning %v, want VNI 3 port %d nolearning", d.ID, d.Port, d.Learning, DefaultPort)
	}
	checkSlice(t, "nsg3 FDB", n.fdb(t, "nsg3"), []string{"02:6e:c6:33:64:15 198.51.100.21 permanent"})
}

func TestApplyRemovesStaleRulesAndRoutesOfUnknownPolicies(t *testing.T) {
	requireNetNS(t)
	n := newNodeNS(t)
	// What a crash could leave: a rule and a route of policy 9 without
	// its device, and a foreign rule and table nsegress does not own.
	n.run(t, "ip", "rule", "add", "priority", "1900", "fwmark", "0x90000/0xfff0000", "lookup", "20009")
	n.run(t, "ip", "route", "add", "blackhole", "10.9.0.0/16", "table", "20009")
	n.run(t, "ip", "rule", "add", "priority", "1900", "fwmark", "0x1", "lookup", "100")
	n.run(t, "ip", "route", "add", "blackhole", "10.100.0.0/16", "table", "100")
	n.run(t, "ip", "route", "add", "blackhole", "10.20.0.0/16", "table", "20000")
	applyPlan(t, n, nodePlan(tunnelTo(1, gatewayIP)))
	checkSlice(t, "rules", n.nsegressRules(t), []string{
		fmt.Sprintf("%d:\tfrom all fwmark 0x1 lookup 100", DefaultRulePriority),
		wantRule(1),
	})
	checkSlice(t, "table 20009", n.tableRoutesCLI(t, 20009), nil)
	checkSlice(t, "table 100 (not ours)", n.tableRoutesCLI(t, 100), []string{"blackhole 10.100.0.0/16"})
	checkSlice(t, "table 20000 (not ours)", n.tableRoutesCLI(t, 20000), []string{"blackhole 10.20.0.0/16"})
}

func TestApplyReplacesAWrongRuleToAPolicysTable(t *testing.T) {
	requireNetNS(t)
	n := newNodeNS(t)
	// Rules to policy 1's table with the whole mark and with the mark of
	// another policy: syncRule adds the right rule, then removes these.
	n.run(t, "ip", "rule", "add", "priority", "1900", "fwmark", "0x10000", "lookup", "20001")
	n.run(t, "ip", "rule", "add", "priority", "1900", "fwmark", "0x20000/0xfff0000", "lookup", "20001")
	applyPlan(t, n, nodePlan(tunnelTo(1, gatewayIP)))
	checkSlice(t, "rules", n.nsegressRules(t), []string{wantRule(1)})
	applyPlan(t, n, nodePlan(Tunnel{ID: 1, Mode: nft.ModePass}))
	checkSlice(t, "rules of a pass policy", n.nsegressRules(t), nil)
}

func TestApplyHoldsAndReleasesFloatingIPs(t *testing.T) {
	requireNetNS(t)
	n := newNodeNS(t)
	plan := nodePlan()
	plan.FloatingIPs = []netip.Addr{egressIP}
	if added := applyPlan(t, n, plan); !slices.Equal(added, []netip.Addr{egressIP}) {
		t.Errorf("first Apply added %v, want [%s]", added, egressIP)
	}
	if added := applyPlan(t, n, plan); len(added) != 0 {
		t.Errorf("second Apply added %v again: it would be announced on every reconcile", added)
	}
	if got, want := n.run(t, "ip", "-4", "-o", "addr", "show", "dev", "eth0"), egressIP.String()+"/32"; !strings.Contains(got, want) {
		t.Errorf("eth0 does not hold %s:\n%s", want, got)
	}

	// Held wins over released; a released address that is absent is no
	// error.
	plan.ReleasedIPs = []netip.Addr{egressIP, egressIP2}
	applyPlan(t, n, plan)
	if got := n.addrs(t, "eth0"); !slices.Equal(got, []netip.Addr{workerIP, egressIP}) {
		t.Errorf("eth0 holds %v, want %s and %s", got, workerIP, egressIP)
	}

	plan.FloatingIPs = nil
	applyPlan(t, n, plan)
	if got := n.addrs(t, "eth0"); !slices.Equal(got, []netip.Addr{workerIP}) {
		t.Errorf("eth0 holds %v after the release, want only %s", got, workerIP)
	}
}

func TestRemoveWithoutUplinkReleasesFloatingIPsFromEveryLink(t *testing.T) {
	requireNetNS(t)
	n := newNodeNS(t)
	n.run(t, "ip", "addr", "add", egressIP.String()+"/32", "dev", "eth0")
	n.run(t, "ip", "addr", "add", egressIP2.String()+"/32", "dev", "peer0")
	applyPlan(t, n, nodePlan(tunnelTo(1, gatewayIP), tunnelTo(2, gatewayIP)))
	n.must(t, "Remove", func() error { return Remove(Settings{}, "", []netip.Addr{egressIP, egressIP2}) })
	n.expectClean(t)
	if got := n.addrs(t, "eth0"); !slices.Equal(got, []netip.Addr{workerIP}) {
		t.Errorf("eth0 holds %v, want only %s", got, workerIP)
	}
	if got := n.addrs(t, "peer0"); len(got) != 0 {
		t.Errorf("peer0 holds %v, want nothing", got)
	}
	// Remove is the uninstall: running it twice is no error.
	n.must(t, "second Remove", func() error { return Remove(Settings{}, "", []netip.Addr{egressIP, egressIP2}) })
}

func TestApplyRejectsAMissingUplink(t *testing.T) {
	requireNetNS(t)
	n := newNodeNS(t)
	p := nodePlan(tunnelTo(1, gatewayIP))
	p.Uplink = "nope0"
	err := n.do(func() error { _, err := Apply(p); return err })
	if err == nil || !strings.Contains(err.Error(), "nope0") {
		t.Errorf("Apply with a missing uplink = %v, want an error naming nope0", err)
	}
	n.expectClean(t)
}

// TestReapplyingAnUnchangedPlanDoesNotTouchRoutes guards the reconcile
// loop, which applies the same plan every resync: a route deleted and
// added back leaves a moment in which marked packets find no route in
// the policy's table (the worker's forward chain then drops them; the
// gateway's reverse-path check fails).
func TestReapplyingAnUnchangedPlanDoesNotTouchRoutes(t *testing.T) {
	requireNetNS(t)
	n := newNodeNS(t)
	gw := Tunnel{ID: 2, Mode: nft.ModeLocal, EgressIP: egressIP, Destinations: []netip.Prefix{backendNs}}
	plan := nodePlan(tunnelTo(1, gatewayIP), gw)
	applyPlan(t, n, plan)

	if changes := policyRouteEvents(t, n, func() { applyPlan(t, n, plan) }); len(changes) != 0 {
		t.Fatalf("an unchanged plan rewrote policy routes: %q", changes)
	}
}

// TestChangingDestinationsAddsTheNewThrowRouteBeforeRemovingTheOld
// guards the order of a route change on the gateway: the table gets the
// routes of the new plan before it loses those of the old, so that no
// packet meets a table without the route it needs, and its route into
// the tunnel is never touched. The kernel's route events, read in the
// order it sent them, show the order of the changes.
func TestChangingDestinationsAddsTheNewThrowRouteBeforeRemovingTheOld(t *testing.T) {
	requireNetNS(t)
	n := newNodeNS(t)
	gw := Tunnel{ID: 2, Mode: nft.ModeLocal, EgressIP: egressIP,
		Destinations: []netip.Prefix{backendNs, netip.MustParsePrefix("192.0.2.0/25")}}
	applyPlan(t, n, nodePlan(gw))

	// 192.0.2.0/25 widens to 192.0.2.0/24: removing the old route first
	// would leave a moment in which 192.0.2.0/25 has no throw route.
	gw.Destinations = []netip.Prefix{backendNs, netip.MustParsePrefix("192.0.2.0/24")}
	changes := policyRouteEvents(t, n, func() { applyPlan(t, n, nodePlan(gw)) })
	checkSlice(t, "route events of the change, in order", changes, []string{
		"add table 20002 192.0.2.0/24",
		"del table 20002 192.0.2.0/25",
	})
	checkSlice(t, "table 20002", n.tableRoutesCLI(t, 20002), []string{
		"default via 198.19.255.254 dev nsg2 onlink",
		"throw 192.0.2.0/24",
		"throw 203.0.113.0/24",
	})
}

// policyRouteEvents runs fn and returns the changes of routes in
// nsegress's tables of n that the kernel announced meanwhile, in order,
// as "add|del table N dst".
func policyRouteEvents(t *testing.T, n *testNS, fn func()) []string {
	t.Helper()
	updates := make(chan netlink.RouteUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.RouteSubscribeAt(n.h, updates, done); err != nil {
		t.Fatalf("subscribe to route changes: %v", err)
	}
	fn()
	// A marker route after fn: once its event arrives, every event of fn
	// has arrived before it. It is removed again, so that the next call
	// can add it.
	const marker = "10.255.0.0/16"
	n.run(t, "ip", "route", "add", "blackhole", marker)
	defer n.run(t, "ip", "route", "del", "blackhole", marker)
	var changes []string
	timeout := time.After(5 * time.Second)
	for {
		select {
		case u, ok := <-updates:
			if !ok {
				t.Fatal("the route subscription ended")
			}
			if (Settings{}).withDefaults().ownsTable(u.Table) {
				verb := map[uint16]string{unix.RTM_NEWROUTE: "add", unix.RTM_DELROUTE: "del"}[u.Type]
				changes = append(changes, fmt.Sprintf("%s table %d %s", verb, u.Table, u.Dst))
			}
			if u.Type == unix.RTM_NEWROUTE && u.Dst != nil && u.Dst.String() == marker {
				return changes
			}
		case <-timeout:
			t.Fatal("the marker route's event never arrived")
		}
	}
}

// TestApplyRejectsAnInvalidPlanWithoutTouchingTheNode feeds Apply plans
// that the node role never builds but that the exported API accepts.
// docs/design.md §5: bad input gets a clear error naming the field,
// never a panic and never a half-done node.
func TestApplyRejectsAnInvalidPlanWithoutTouchingTheNode(t *testing.T) {
	requireNetNS(t)
	noNodeIP := nodePlan(tunnelTo(1, gatewayIP))
	noNodeIP.NodeIP = netip.Addr{}
	tests := []struct {
		name string
		plan Plan
	}{
		{"a tunnel without a gateway address", nodePlan(tunnelTo(1, netip.Addr{}))},
		{"a plan without a node address", noNodeIP},
		// Mark(0) is 0: "fwmark 0x0/0xfff0000" would match every
		// unmarked packet of the node and send it into the tunnel.
		{"a tunnel with ID 0", nodePlan(tunnelTo(0, gatewayIP))},
		{"a tunnel with an ID above nft.MaxPolicyID", nodePlan(tunnelTo(nft.MaxPolicyID+1, gatewayIP))},
		// nft would refuse the policy: the node would have its tunnel
		// but not its rules.
		{"a local tunnel without an egress IP", nodePlan(Tunnel{ID: 2, Mode: nft.ModeLocal, Destinations: []netip.Prefix{backendNs}})},
	}
	var problems []string
	for _, tc := range tests {
		n := newNodeNS(t)
		err := n.do(func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panic: %v", r)
				}
			}()
			_, err = Apply(tc.plan)
			return err
		})
		switch {
		case err == nil:
			problems = append(problems, tc.name+": accepted")
		case strings.HasPrefix(err.Error(), "panic: "):
			problems = append(problems, tc.name+": "+err.Error())
		}
		if links := slices.DeleteFunc(n.links(t), func(l string) bool { return !strings.HasPrefix(l, DevicePrefix) }); len(links) != 0 {
			problems = append(problems, fmt.Sprintf("%s: left links %q", tc.name, links))
		}
		if rules := n.nsegressRules(t); len(rules) != 0 {
			problems = append(problems, fmt.Sprintf("%s: left rules %q", tc.name, rules))
		}
	}
	if len(problems) != 0 {
		t.Fatalf("Apply accepted or half-applied invalid plans:\n%s", strings.Join(problems, "\n"))
	}
}
