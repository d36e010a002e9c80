package nft

import (
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

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
