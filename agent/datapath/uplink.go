package datapath

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
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
