package lab

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Segment names: bridges inside the lab's switch host.
const (
	underlayBridge = "underlay"
	onPremBridge   = "onprem"
)

// underlayMTU is the MTU of every lab link (docs/design.md §6: underlay and pods at
// 1500).
const underlayMTU = 1500

// makeSwitch creates the host that holds the lab's L2 segments as bridges.
func (l *Lab) makeSwitch() (*host, error) {
	sw, err := l.newHost("switch", false, "")
	if err != nil {
		return nil, err
	}
	for _, name := range []string{underlayBridge, onPremBridge} {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: underlayMTU}}
		if err := sw.nl.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("add bridge %s: %w", name, err)
		}
		if err := sw.nl.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("set bridge %s up: %w", name, err)
		}
	}
	return sw, sw.nl.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo"}})
}

// attach plugs h into a segment: a veth named ifname inside h, its peer on
// the bridge in the switch host, with addr on it.
func (l *Lab) attach(h *host, ifname, bridge string, addr netip.Prefix) error {
	sw := l.host("switch")
	br, err := sw.nl.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", bridge, err)
	}
	// Interface names hold 15 bytes at most, too few for host names;
	// number the switch ports instead (the holder's log says which is
	// whose).
	port := fmt.Sprintf("port%d", l.ports.Add(1))
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port, MTU: underlayMTU, MasterIndex: br.Attrs().Index},
		PeerName:      ifname,
		PeerMTU:       underlayMTU,
		PeerNamespace: netlink.NsFd(int(h.netns.Fd())),
	}
	if err := sw.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s for %s: %w", port, h.name, err)
	}
	if err := sw.nl.LinkSetUp(veth); err != nil {
		return fmt.Errorf("set %s up: %w", port, err)
	}
	l.mu.Lock()
	if h.ports == nil {
		h.ports = map[string]string{}
	}
	h.ports[bridge] = port
	l.mu.Unlock()
	link, err := h.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifname, h.name, err)
	}
	if err := h.nl.AddrAdd(link, &netlink.Addr{IPNet: prefixNet(addr)}); err != nil {
		return fmt.Errorf("add %s to %s in %s: %w", addr, ifname, h.name, err)
	}
	if err := h.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up in %s: %w", ifname, h.name, err)
	}
	lo, err := h.nl.LinkByName("lo")
	if err != nil {
		return err
	}
	return h.nl.LinkSetUp(lo)
}

// route adds dst via gw in h.
func route(h *host, dst netip.Prefix, gw netip.Addr) error {
	r := &netlink.Route{Dst: prefixNet(dst), Gw: net.IP(gw.AsSlice())}
	if err := h.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("route %s via %s in %s: %w", dst, gw, h.name, err)
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// withBits turns an address into a prefix of the given segment's length.
func withBits(a netip.Addr, seg netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(a, seg.Bits())
}
