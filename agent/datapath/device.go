package datapath

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ensureDevice returns the policy's VXLAN device, (re)created when its
// VNI, port, source or uplink are not the plan's.
func ensureDevice(p Plan, uplink netlink.Link, t Tunnel) (netlink.Link, error) {
	name := t.Device()
	mtu := DeviceMTU(uplink.Attrs().MTU)
	// Any error of the lookup counts as "no such device": the device is
	// then created, and LinkAdd fails with the cause if one remains.
	if l, err := netlink.LinkByName(name); err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if ok && vx.VxlanId == int(t.VNI()) && vx.Port == int(p.Port) && vx.VtepDevIndex == uplink.Attrs().Index &&
			vx.SrcAddr.Equal(net.IP(p.NodeIP.AsSlice())) && !vx.Learning {
			return l, finishDevice(l, p.NodeIP, mtu)
		}
		if err := netlink.LinkDel(l); err != nil {
			return nil, fmt.Errorf("replace %s: %w", name, err)
		}
	}
	vx := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: name, MTU: mtu, HardwareAddr: DeviceMAC(p.NodeIP)},
		VxlanId:      int(t.VNI()),
		VtepDevIndex: uplink.Attrs().Index,
		SrcAddr:      net.IP(p.NodeIP.AsSlice()),
		Port:         int(p.Port),
		Learning:     false,
	}
	if err := netlink.LinkAdd(vx); err != nil {
		return nil, fmt.Errorf("create VXLAN device %s (VNI %d, port %d): %w", name, t.VNI(), p.Port, err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("created VXLAN device %s: %w", name, err)
	}
	return l, finishDevice(l, p.NodeIP, mtu)
}

// finishDevice gives a policy's device the node's device address and
// mtu, and brings it up: each only when it differs.
func finishDevice(l netlink.Link, nodeIP netip.Addr, mtu int) error {
	mac := DeviceMAC(nodeIP)
	if l.Attrs().HardwareAddr.String() != mac.String() {
		if err := netlink.LinkSetHardwareAddr(l, mac); err != nil {
			return fmt.Errorf("%s: set address: %w", l.Attrs().Name, err)
		}
	}
	if l.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("%s: set MTU %d: %w", l.Attrs().Name, mtu, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s: up: %w", l.Attrs().Name, err)
		}
	}
	return nil
}

// ipv4DevconfSrcVmark is IPV4_DEVCONF_SRC_VMARK of linux/ip.h.
const ipv4DevconfSrcVmark = 24

// setSrcValidMark turns on src_valid_mark for the device alone, through
// netlink rather than /proc/sys (read-only in a container): the reverse
// path check of tunnel traffic then sees the mark nft gave it, and finds
// the policy's table. The host-wide rp_filter stays as the operator set
// it.
func setSrcValidMark(index int) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	inet := spec.AddRtAttr(unix.AF_INET, nil)
	conf := inet.AddRtAttr(unix.IFLA_INET_CONF, nil)
	conf.AddRtAttr(ipv4DevconfSrcVmark, nl.Uint32Attr(1))
	req.AddData(spec)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("set src_valid_mark on link %d: %w", index, err)
	}
	return nil
}
