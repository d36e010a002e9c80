package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNotLocalPod: the node does not route the address to a pod of its
// own (through a veth, or a bridge with the pod's port known).
var ErrNotLocalPod = errors.New("not routed to a local pod's interface")

// PodInterface finds the host interface of a running pod from its
// address, as ADD found it: the device the node routes the address
// through without a next hop, which must be a veth (ptp-style primaries)
// or a bridge, and not the uplink. On a
// bridge, port is the pod's port, found from the bridge's neighbour entry
// for the address and its forwarding database; without both the pod's
// address could not be guarded, and the answer is ErrNotLocalPod.
func PodInterface(ip netip.Addr, uplink string) (hostIf, port string, err error) {
	routes, err := netlink.RouteGet(net.IP(ip.AsSlice()))
	if err != nil || len(routes) == 0 {
		return "", "", fmt.Errorf("route to %s: %w", ip, errors.Join(err, ErrNotLocalPod))
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return "", "", fmt.Errorf("the interface towards %s: %w", ip, err)
	}
	name := link.Attrs().Name
	if routes[0].Gw != nil {
		// Through a router (the default route, say, on an uplink that is
		// itself a veth): not a pod of this node.
		return "", "", fmt.Errorf("%s is routed through %s via %s: %w", ip, name, routes[0].Gw, ErrNotLocalPod)
	}
	if name == uplink {
		return "", "", fmt.Errorf("%s is on the uplink %s: %w", ip, name, ErrNotLocalPod)
	}
	switch link.(type) {
	case *netlink.Veth:
		return name, "", nil
	case *netlink.Bridge:
	default:
		return "", "", fmt.Errorf("%s is routed through %s (%s): %w", ip, name, link.Type(), ErrNotLocalPod)
	}
	neighs, err := neighList(name+": list neighbours", link, unix.AF_INET)
	if err != nil {
		return "", "", err
	}
	var mac net.HardwareAddr
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP.To4()); ok && a == ip && len(n.HardwareAddr) == 6 {
			mac = n.HardwareAddr
		}
	}
	if mac == nil {
		return "", "", fmt.Errorf("%s is on the bridge %s, which has no neighbour entry for it: its port is unknown: %w", ip, name, ErrNotLocalPod)
	}
	links, err := linkList()
	if err != nil {
		return "", "", err
	}
	for _, l := range links {
		if l.Attrs().MasterIndex != link.Attrs().Index {
			continue
		}
		fdb, err := neighList(l.Attrs().Name+": list the forwarding database", l, unix.AF_BRIDGE)
		if err != nil {
			return "", "", err
		}
		for _, e := range fdb {
			if bytes.Equal(e.HardwareAddr, mac) && e.LinkIndex == l.Attrs().Index {
				return name, l.Attrs().Name, nil
			}
		}
	}
	return "", "", fmt.Errorf("%s (%s) is on the bridge %s, whose forwarding database has no port for it: %w", ip, mac, name, ErrNotLocalPod)
}
