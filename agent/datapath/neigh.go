package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// pointAtGateway resolves the next hop to the gateway's device address
// and sends that address's frames to the gateway's underlay address.
func pointAtGateway(link netlink.Link, gw netip.Addr) error {
	mac := DeviceMAC(gw)
	idx := link.Attrs().Index
	neigh := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: net.IP(Nexthop.AsSlice()), HardwareAddr: mac}
	if err := netlink.NeighSet(neigh); err != nil {
		return fmt.Errorf("%s: neighbour %s: %w", link.Attrs().Name, Nexthop, err)
	}
	fdbs, err := neighList(link.Attrs().Name+": list FDB", link, unix.AF_BRIDGE)
	if err != nil {
		return err
	}
	for _, f := range fdbs {
		if f.HardwareAddr.String() != mac.String() || !f.IP.Equal(net.IP(gw.AsSlice())) {
			// ENOENT: the entry is gone already.
			if err := netlink.NeighDel(&f); err != nil && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("%s: remove FDB entry %s: %w", link.Attrs().Name, f.HardwareAddr, err)
			}
		}
	}
	fdb := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: net.IP(gw.AsSlice()), HardwareAddr: mac}
	if err := netlink.NeighSet(fdb); err != nil {
		return fmt.Errorf("%s: FDB %s -> %s: %w", link.Attrs().Name, mac, gw, err)
	}
	return nil
}

// forgetGateway removes the neighbour and FDB entries of a device whose
// policy no longer sends into the tunnel from this node.
func forgetGateway(link netlink.Link) error {
	for _, fam := range []int{unix.AF_INET, unix.AF_BRIDGE} {
		entries, err := neighList(link.Attrs().Name+": list neighbours", link, fam)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			// ENOENT: the entry is gone already.
			if err := netlink.NeighDel(&e); err != nil && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("%s: remove %s: %w", link.Attrs().Name, e.HardwareAddr, err)
			}
		}
	}
	return nil
}
