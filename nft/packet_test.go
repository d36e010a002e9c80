package nft

import (
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nsegress/nsegress/e2e/privtest"
)

// probeRuleset counts, in the node, marked packets after our forward
// chain and packets after source NAT, in a table of its own.
const probeRuleset = `
table ip probe {
	counter marked {}
	counter snatted {}
	counter plain {}
	chain probe_forward {
		type filter hook forward priority 10; policy accept;
		meta mark & 0x0fff0000 == 0x00090000 ct mark & 0x0fff0000 == 0x00090000 counter name marked
	}
	chain probe_post {
		type filter hook postrouting priority 400; policy accept;
		ip saddr 192.0.2.9 counter name snatted
		ip saddr 198.18.1.5 ip daddr 198.51.100.0/24 meta mark & 0x0fff0000 == 0 counter name plain
	}
}
`

// linkUp adds addrs to the link name in h and sets it up.
func linkUp(t *testing.T, h *netlink.Handle, name string, addrs ...string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	for _, a := range addrs {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddrAdd(l, addr); err != nil {
			t.Fatalf("add %s to %s: %v", a, name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
	return l
}

// handleAt opens a netlink handle in ns, closed when t ends.
func handleAt(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// wirePod connects a "pod" netns to the node netns with a veth pair
// (vethpod in the node, eth0 198.18.1.5 in the pod) and gives the node a
// veth uplink towards 203.0.113.0/24 and 198.51.100.0/24.
func wirePod(t *testing.T, node, podNS netns.NsHandle) {
	t.Helper()
	nh, ph := handleAt(t, node), handleAt(t, podNS)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vethpod"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(podNS))}
	if err := nh.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	// The uplink is a veth whose peer stays in the node: nothing answers
	// behind it, and the counters sit before neighbour resolution.
	if err := nh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "uplinkpeer"}); err != nil {
		t.Fatalf("add uplink veth: %v", err)
	}
	linkUp(t, nh, "uplinkpeer")
	linkUp(t, nh, "lo")
	linkUp(t, nh, "vethpod", "198.18.1.1/24")
	linkUp(t, nh, "uplink", "203.0.113.1/24", "198.51.100.1/24")
	linkUp(t, ph, "lo")
	eth0 := linkUp(t, ph, "eth0", "198.18.1.5/24")
	route := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("198.18.1.1")}
	if err := ph.RouteAdd(route); err != nil {
		t.Fatalf("pod default route: %v", err)
	}
	runIn(t, node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
}

// counterPackets reads the packet count of a named counter of the probe
// table.
func counterPackets(t *testing.T, ns netns.NsHandle, name string) int {
	t.Helper()
	out := runIn(t, ns, "nft", "list", "counter", "ip", "probe", name)
	m := regexp.MustCompile(`packets (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no packet count in:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// udpFrom sends count UDP datagrams from ns to dst (port 9, discard);
// nothing answers. The socket is made inside ns by privtest.Do.
func udpFrom(t *testing.T, ns netns.NsHandle, dst string, count int) {
	t.Helper()
	err := privtest.Do(ns, func() error {
		c, err := net.Dial("udp4", net.JoinHostPort(dst, "9"))
		if err != nil {
			return err
		}
		defer c.Close()
		for range count {
			if _, err := c.Write([]byte("nsegress")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send to %s: %v", dst, err)
	}
}

func TestPacketsOfAPodAreMarkedAndSNATed(t *testing.T) {
	tbl, node := newTestTable(t)
	podNS := newNetNS(t)
	wirePod(t, node, podNS)
	s := State{
		Policies: []Policy{{ID: 9, Mode: ModeLocal, Device: "nsg9", EgressIP: netip.MustParseAddr("192.0.2.9"),
			Destinations: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}},
		Pods:         map[PodKey]uint16{pod("198.18.1.5", "vethpod"): 9},
		TunnelPort:   4789,
		Uplink:       "eth0",
		DevicePrefix: "nsg",
	}
	mustApply(t, tbl, s)
	cmd := exec.Command("nsenter", "--net="+nsPath(node), "--", "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(probeRuleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("probe table: %v\n%s", err, out)
	}

	udpFrom(t, podNS, "203.0.113.50", 2)  // a destination of policy 9
	udpFrom(t, podNS, "198.51.100.50", 1) // not a destination
	for _, c := range []struct {
		counter string
		want    int
	}{
		{"marked", 2},  // both datagrams carried the mark and ct mark
		{"snatted", 2}, // and left with the egress IP
		{"plain", 1},   // the other destination: no mark, no SNAT
	} {
		if got := counterPackets(t, node, c.counter); got != c.want {
			t.Errorf("counter %s = %d packets, want %d\n%s", c.counter, got, c.want, runIn(t, node, "nft", "list", "ruleset"))
		}
	}
}

// TestTCPToAHandedOverIPReachesThePreviousHolder: a gateway that took
// 192.0.2.9 over moments ago (PassOn to 10.1.0.2) gets a TCP segment for
// it that it has no state for, from the router's side: a copy reaches the
// previous holder, and the gateway itself neither answers nor resets.
func TestTCPToAHandedOverIPReachesThePreviousHolder(t *testing.T) {
	tbl, node := newTestTable(t)
	router, prev := newNetNS(t), newNetNS(t)
	nh := handleAt(t, node)
	for _, l := range []*netlink.Veth{
		{LinkAttrs: netlink.LinkAttrs{Name: "r0"}, PeerName: "r1", PeerNamespace: netlink.NsFd(int(router))},
		{LinkAttrs: netlink.LinkAttrs{Name: "a0"}, PeerName: "a1", PeerNamespace: netlink.NsFd(int(prev))},
	} {
		if err := nh.LinkAdd(l); err != nil {
			t.Fatalf("add veth %s: %v", l.Name, err)
		}
	}
	linkUp(t, nh, "lo")
	linkUp(t, nh, "r0", "10.0.0.1/24", "192.0.2.9/32")
	linkUp(t, nh, "a0", "10.1.0.1/24")
	rh, ph := handleAt(t, router), handleAt(t, prev)
	linkUp(t, rh, "lo")
	r1 := linkUp(t, rh, "r1", "10.0.0.9/24")
	if err := rh.RouteAdd(&netlink.Route{LinkIndex: r1.Attrs().Index, Dst: &net.IPNet{IP: net.ParseIP("192.0.2.9").To4(), Mask: net.CIDRMask(32, 32)}, Gw: net.ParseIP("10.0.0.1")}); err != nil {
		t.Fatalf("router's route: %v", err)
	}
	linkUp(t, ph, "lo")
	linkUp(t, ph, "a1", "10.1.0.2/24")
	runIn(t, prev, "nft", "-f", "-", "--", "add table ip probe\nadd counter ip probe passed\nadd chain ip probe pre { type filter hook prerouting priority -300; }\nadd rule ip probe pre ip daddr 192.0.2.9 meta l4proto tcp counter name passed\n")
	mustApply(t, tbl, State{
		Policies: []Policy{{ID: 9, Mode: ModeLocal, Device: "nsg9", EgressIP: netip.MustParseAddr("192.0.2.9"),
			Destinations: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}},
		Pods:         map[PodKey]uint16{},
		TunnelPort:   4789,
		Uplink:       "r0",
		DevicePrefix: "nsg",
		HeldIPs:      []netip.Addr{netip.MustParseAddr("192.0.2.9")},
		PassOn:       map[netip.Addr]netip.Addr{netip.MustParseAddr("192.0.2.9"): netip.MustParseAddr("10.1.0.2")},
	})

	err := privtest.Do(router, func() error {
		c, err := net.DialTimeout("tcp4", "192.0.2.9:80", 300*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil || strings.Contains(err.Error(), "refused") {
		t.Errorf("connecting to the handed-over IP: %v; want a timeout (no answer, no reset, from the new holder)", err)
	}
	if n := counterPackets(t, prev, "passed"); n == 0 {
		t.Errorf("the previous holder got no copy of the segment")
	}
}
