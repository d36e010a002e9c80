package datapath

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FindUplink returns the interface that holds ip, the node's underlay
// address, and the interface's MTU.
func FindUplink(ip netip.Addr) (name string, mtu int, err error) {
	addrs, err := AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", 0, err
	}
	for _, a := range addrs {
		if a.IP.Equal(net.IP(ip.AsSlice())) {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "", 0, fmt.Errorf("interface %d holding %s: %w", a.LinkIndex, ip, err)
			}
			return l.Attrs().Name, l.Attrs().MTU, nil
		}
	}
	return "", 0, fmt.Errorf("no interface holds the node's address %s (set -uplink)", ip)
}

// LinkMTU returns the MTU of the interface name: a configured uplink.
func LinkMTU(name string) (int, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("uplink %s: %w", name, err)
	}
	return l.Attrs().MTU, nil
}

// UnderlayRoutes lists the main table's routes through the uplink with a
// next hop: destination and next hop. A pod range routed this way to its
// own node (ptp with kindnet-style routes, flannel host-gw, kube-router)
// gets replies from the gateway on the node's uplink, where a strict
// reverse-path check accepts them; any other way (an overlay device, the
// default route) needs the replies returned through the tunnel.
func UnderlayRoutes(uplink string) (map[netip.Prefix]netip.Addr, error) {
	l, err := netlink.LinkByName(uplink)
	if err != nil {
		return nil, fmt.Errorf("uplink %s: %w", uplink, err)
	}
	routes, err := routeList("list main routes of "+uplink, &netlink.Route{Table: unix.RT_TABLE_MAIN, LinkIndex: l.Attrs().Index},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
	if err != nil {
		return nil, err
	}
	out := map[netip.Prefix]netip.Addr{}
	for _, r := range routes {
		if r.Dst == nil || r.Gw == nil {
			continue
		}
		dst, ok1 := netip.AddrFromSlice(r.Dst.IP.To4())
		gw, ok2 := netip.AddrFromSlice(r.Gw.To4())
		bits, _ := r.Dst.Mask.Size()
		if ok1 && ok2 {
			out[netip.PrefixFrom(dst, bits).Masked()] = gw
		}
	}
	return out, nil
}

// InterfaceNames lists the names of the node's interfaces.
func InterfaceNames() (map[string]bool, error) {
	links, err := linkList()
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(links))
	for _, l := range links {
		out[l.Attrs().Name] = true
	}
	return out, nil
}
