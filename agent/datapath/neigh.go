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
	return syncNeighbours(link, map[netip.Addr]netip.Addr{Nexthop: gw})
}

// pointAtNodes resolves each return node's underlay address, the next hop
// of its pod ranges in the policy's table, to that node's device address,
// and sends the address's frames to the node.
func pointAtNodes(link netlink.Link, returns []Return) error {
	want := make(map[netip.Addr]netip.Addr, len(returns))
	for _, r := range returns {
		want[r.Node] = r.Node
	}
	return syncNeighbours(link, want)
}

// forgetGateway removes the neighbour and FDB entries of a device whose
// policy sends nothing into the tunnel from this node.
func forgetGateway(link netlink.Link) error { return syncNeighbours(link, nil) }

// syncNeighbours makes the device's permanent neighbour and FDB entries
// exactly want: each next hop (key) resolves to the device address of a
// node (value, its underlay address), whose frames the FDB sends to that
// node. Wanted entries are set first and others removed after, so that a
// next hop that stays never goes unresolved.
func syncNeighbours(link netlink.Link, want map[netip.Addr]netip.Addr) error {
	name, idx := link.Attrs().Name, link.Attrs().Index
	wantNeigh := map[string]string{} // next hop -> MAC
	wantFDB := map[string]string{}   // MAC -> node
	for hop, node := range want {
		mac := DeviceMAC(node)
		wantNeigh[hop.String()] = mac.String()
		wantFDB[mac.String()] = node.String()
		neigh := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: net.IP(hop.AsSlice()), HardwareAddr: mac}
		if err := netlink.NeighSet(neigh); err != nil {
			return fmt.Errorf("%s: neighbour %s: %w", name, hop, err)
		}
		fdb := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, IP: net.IP(node.AsSlice()), HardwareAddr: mac}
		if err := netlink.NeighSet(fdb); err != nil {
			return fmt.Errorf("%s: FDB %s -> %s: %w", name, mac, node, err)
		}
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_BRIDGE} {
		entries, err := neighList(name+": list neighbours", link, fam)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			keep := wantNeigh[e.IP.String()] == e.HardwareAddr.String()
			if fam == unix.AF_BRIDGE {
				keep = wantFDB[e.HardwareAddr.String()] == e.IP.String()
			}
			if keep {
				continue
			}
			// ENOENT: the entry is gone already.
			if err := netlink.NeighDel(&e); err != nil && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("%s: remove %s %s: %w", name, e.IP, e.HardwareAddr, err)
			}
		}
	}
	return nil
}
