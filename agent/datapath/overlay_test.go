package datapath

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nsegress/nsegress/nft"
)

// flannelPort is flannel's VXLAN port; the overlay below copies flannel's
// VXLAN backend: one device per node, a /32 of the node's pod range on
// it, and a route, a permanent neighbour and an FDB entry per other node.
const flannelPort = 8472

// overlayMAC is the MAC of a node's overlay device in the test.
func overlayMAC(node byte) string { return "02:f1:00:00:00:" + strconv.FormatUint(uint64(node), 16) }

// makeOverlay gives the worker and the gateway a flannel-shaped VXLAN
// overlay and routes the worker's pod range on the gateway through it, as
// flannel does, instead of over the underlay.
func makeOverlay(t *testing.T, l *lab) {
	t.Helper()
	for _, n := range []struct {
		ns        *testNS
		self      byte
		addr, vip string
	}{{l.worker, 11, workerIP.String(), "198.18.1.0/32"}, {l.gateway, 21, gatewayIP.String(), "198.18.9.0/32"}} {
		n.ns.run(t, "ip", "link", "add", "flannel.1", "address", overlayMAC(n.self), "type", "vxlan", "id", "1",
			"local", n.addr, "dev", "eth0", "dstport", strconv.Itoa(flannelPort), "nolearning")
		n.ns.run(t, "ip", "addr", "add", n.vip, "dev", "flannel.1")
		n.ns.run(t, "ip", "link", "set", "flannel.1", "up")
	}
	l.gateway.run(t, "ip", "route", "replace", "198.18.1.0/24", "via", "198.18.1.0", "dev", "flannel.1", "onlink")
	l.gateway.run(t, "ip", "neigh", "replace", "198.18.1.0", "lladdr", overlayMAC(11), "dev", "flannel.1", "nud", "permanent")
	l.gateway.run(t, "bridge", "fdb", "append", overlayMAC(11), "dev", "flannel.1", "dst", workerIP.String())
}

// rpFilterDrops is the worker's count of packets its reverse-path filter
// dropped (TcpExt IPReversePathFilter).
func rpFilterDrops(t *testing.T, n *testNS) uint64 {
	t.Helper()
	lines := strings.Split(n.run(t, "cat", "/proc/net/netstat"), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) {
			continue
		}
		for j, name := range names {
			if name == "IPReversePathFilter" {
				v, err := strconv.ParseUint(values[j], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatal("no TcpExt IPReversePathFilter in /proc/net/netstat")
	return 0
}

// TestRepliesReturnThroughTheTunnelOnAnOverlayPrimary: with an overlay
// primary (flannel's VXLAN) the gateway routes the worker's pod range
// through the overlay device, so a reply un-NATed there would reach the
// worker on that device, from a backend the worker routes through its
// uplink, and the worker's strict rp_filter would drop it. The gateway
// returns replies through the policy's tunnel instead, where the worker
// expects them, with no sysctl loosened.
func TestRepliesReturnThroughTheTunnelOnAnOverlayPrimary(t *testing.T) {
	requireNetNS(t)
	l := newLab(t)
	workerRange := netip.MustParsePrefix("198.18.1.0/24")
	underlay := func() map[netip.Prefix]netip.Addr {
		var routes map[netip.Prefix]netip.Addr
		l.gateway.must(t, "UnderlayRoutes", func() error {
			var err error
			routes, err = UnderlayRoutes("eth0")
			return err
		})
		return routes
	}
	if got := underlay()[workerRange]; got != workerIP {
		t.Fatalf("over the underlay the gateway routes the worker's pods via %v, want %s (no return needed)", got, workerIP)
	}
	makeOverlay(t, l)
	if got, ok := underlay()[workerRange]; ok {
		t.Fatalf("through the overlay the worker's pods still show as routed over the underlay via %s", got)
	}
	pods := map[nft.PodKey]uint16{{IP: podIP, HostIf: podHostIf}: 1}
	workerTable := openTable(t, l.worker)
	gatewayTable := openTable(t, l.gateway)
	applyPlan(t, l.worker, workerPlan())
	if err := workerTable.Apply(nftState(workerPlan(), pods)); err != nil {
		t.Fatal(err)
	}

	step(t, "without the return, the worker's strict rp_filter drops the replies that come over the overlay", func(t *testing.T) {
		noReturn := gatewayPlan()
		noReturn.Tunnels[0].Returns = nil
		applyPlan(t, l.gateway, noReturn)
		if err := gatewayTable.Apply(nftState(noReturn, nil)); err != nil {
			t.Fatal(err)
		}
		before := rpFilterDrops(t, l.worker)
		expectDropped(t, l.pod, backendURL)
		if after := rpFilterDrops(t, l.worker); after == before {
			t.Errorf("the worker's rp_filter dropped nothing (%d); the test's overlay does not reproduce the problem", after)
		}
	})

	step(t, "with the return, replies come back through the tunnel and the pod reaches the backend", func(t *testing.T) {
		applyPlan(t, l.gateway, gatewayPlan())
		if err := gatewayTable.Apply(nftState(gatewayPlan(), nil)); err != nil {
			t.Fatal(err)
		}
		rpBefore, tunBefore, overlayBefore := rpFilterDrops(t, l.worker), l.worker.stats(t, "nsg1"), l.worker.stats(t, "flannel.1")
		if src, _ := whoami(t, l.pod, backendURL); src != egressIP {
			t.Fatalf("the backend saw %s, want %s", src, egressIP)
		}
		if got := rpFilterDrops(t, l.worker); got != rpBefore {
			t.Errorf("the worker's rp_filter dropped %d packets", got-rpBefore)
		}
		if tun := l.worker.stats(t, "nsg1"); tun.RxPackets == tunBefore.RxPackets {
			t.Errorf("no reply came in on the worker's nsg1 (rx %d)", tun.RxPackets)
		}
		if o := l.worker.stats(t, "flannel.1"); o.RxPackets != overlayBefore.RxPackets {
			t.Errorf("%d packets still came in on the overlay", o.RxPackets-overlayBefore.RxPackets)
		}
		for key, want := range map[string]string{"net.ipv4.conf.all.rp_filter": "1", "net.ipv4.conf.flannel/1.rp_filter": "1",
			"net.ipv4.conf.nsg1.rp_filter": "1"} {
			if got := l.worker.readSysctl(t, key); got != want {
				t.Errorf("worker: %s = %s, want %s (no sysctl loosened)", key, got, want)
			}
		}
	})

	step(t, "a 10 MiB download (its data now returns through the tunnel) and upload complete", func(t *testing.T) {
		b, err := l.pod.get(answerTimeout, backendURL+"/download")
		if err != nil || !slices.Equal(b, payload) {
			t.Errorf("download: %d bytes, %v; want the %d-byte payload", len(b), err, len(payload))
		}
		if _, err := l.pod.upload(answerTimeout, backendURL+"/upload"); err != nil {
			t.Errorf("upload: %v", err)
		}
	})
}

// TestOtherSettingsCarryTheTrafficAndCheckNodeSeesConflicts: with mark
// bits, tables and rule priorities moved (as beside Calico), the policy's
// traffic still leaves with the egress IP and the node's rules show the
// new numbers; CheckNode refuses settings whose mark bits a rule of
// another component already matches, and accepts the moved ones.
func TestOtherSettingsCarryTheTrafficAndCheckNodeSeesConflicts(t *testing.T) {
	requireNetNS(t)
	l := newLab(t)
	moved := Settings{Marks: 0x00000fff, TableBase: 30000, RulePriority: 1500}
	// Another component's rule on the default mark bits, Calico-like.
	l.worker.run(t, "ip", "rule", "add", "priority", "100", "fwmark", "0x100000/0xffff0000", "lookup", "100")
	step(t, "CheckNode refuses the default mark bits and accepts the moved ones", func(t *testing.T) {
		var err error
		l.worker.must(t, "CheckNode", func() error { err = CheckNode(Settings{}, DefaultPort); return nil })
		if err == nil || !strings.Contains(err.Error(), "set mark-bits") {
			t.Errorf("CheckNode with the default bits = %v, want the rule named", err)
		}
		l.worker.must(t, "CheckNode", func() error { return CheckNode(moved, DefaultPort) })
	})
	step(t, "the pod reaches the backend with the egress IP", func(t *testing.T) {
		wp, gp := workerPlan(), gatewayPlan()
		wp.Settings, gp.Settings = moved, moved
		applyPlan(t, l.worker, wp)
		applyPlan(t, l.gateway, gp)
		ws, gs := nftState(wp, map[nft.PodKey]uint16{{IP: podIP, HostIf: podHostIf}: 1}), nftState(gp, nil)
		ws.Marks, gs.Marks = moved.Marks, moved.Marks
		if err := openTable(t, l.worker).Apply(ws); err != nil {
			t.Fatal(err)
		}
		if err := openTable(t, l.gateway).Apply(gs); err != nil {
			t.Fatal(err)
		}
		if src, _ := whoami(t, l.pod, backendURL); src != egressIP {
			t.Fatalf("the backend saw %s, want %s", src, egressIP)
		}
		rules := l.worker.run(t, "ip", "-4", "rule", "show")
		for _, want := range []string{"1500:\tfrom all fwmark 0x1/0xfff lookup 30001", "1499:\tfrom all iif nsg1 lookup main"} {
			if !strings.Contains(rules, want) {
				t.Errorf("worker rules lack %q:\n%s", want, rules)
			}
		}
		l.worker.must(t, "CheckNode after Apply", func() error { return CheckNode(moved, DefaultPort) })
	})
	step(t, "Remove with the same settings leaves nothing", func(t *testing.T) {
		l.worker.must(t, "Remove", func() error { return Remove(moved, "eth0", nil) })
		rules := l.worker.run(t, "ip", "-4", "rule", "show")
		if strings.Contains(rules, "1500:") || strings.Contains(rules, "1499:") || strings.Contains(l.worker.run(t, "ip", "route", "show", "table", "all"), "table 30001") {
			t.Errorf("rules or routes remain:\n%s", rules)
		}
	})
}
