// Package datapath programs a node's links, routes and ip rules for
// nsegress (SPEC §2): one VXLAN device per policy, a routing table per
// policy that a fwmark rule selects, and on gateway nodes the floating IPs
// on the uplink. The nft package holds the packet rules; this package
// holds everything else, and both are computed from the same Plan.
package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/nsegress/nsegress/nft"
)

const (
	// DevicePrefix starts the name of every policy's VXLAN device:
	// "nsg" + tunnel ID.
	DevicePrefix = "nsg"
	// DefaultPort is the VXLAN UDP port. It avoids 4789 (the IANA port,
	// Calico and Antrea) and 8472 (flannel and Cilium), so that nsegress
	// runs beside any of them.
	DefaultPort = 8479
	// TableBase + tunnel ID is a policy's routing table.
	TableBase = 20000
	// RulePriority is the preference of nsegress's fwmark rules: before
	// the main table (32766), after the local table (0).
	RulePriority = 1900
	// vxlanOverhead is what VXLAN over IPv4 adds to a frame.
	vxlanOverhead = 50
)

// Nexthop is the next hop of every policy route: an address that never
// appears in a packet, resolved by a permanent neighbour entry to the
// gateway's device address (198.19.0.0/16 is the lab's tunnel-internal
// range; the address only lives in nsegress's own tables).
var Nexthop = netip.MustParseAddr("198.19.255.254")

// Tunnel is one policy's tunnel on this node.
type Tunnel struct {
	ID   uint16
	Mode nft.Mode
	// Gateway is the underlay address of the node holding the policy's
	// egress IP (ModeTunnel).
	Gateway netip.Addr
	// Destinations are the policy's destinations. On the gateway they are
	// "throw" routes in the policy's table, so that its table answers only
	// the reverse-path check of tunnel traffic (SPEC §7: strict rp_filter)
	// and never the forwarding of that traffic.
	Destinations []netip.Prefix
}

// Device is the tunnel's VXLAN device name.
func (t Tunnel) Device() string { return DeviceName(t.ID) }

// DeviceName is the VXLAN device of tunnel ID id.
func DeviceName(id uint16) string { return fmt.Sprintf("%s%d", DevicePrefix, id) }

// Table is the policy's routing table.
func (t Tunnel) Table() int { return TableBase + int(t.ID) }

// Plan is the desired link, route and rule state of a node.
type Plan struct {
	// Uplink is the interface holding the node's underlay address.
	Uplink string
	// NodeIP is the node's underlay address: the VXLAN source.
	NodeIP netip.Addr
	// Port is the VXLAN UDP port.
	Port uint16
	// Tunnels are the policies with a tunnel ID, in any mode.
	Tunnels []Tunnel
	// FloatingIPs are the egress IPs this node holds on its uplink.
	FloatingIPs []netip.Addr
	// ReleasedIPs are floating IPs of any group that this node must not
	// hold: removed from the uplink when present.
	ReleasedIPs []netip.Addr
}

// Validate checks a plan before anything on the node is touched, so that
// a bad plan fails with the field named and leaves the node as it was.
func (p Plan) Validate() error {
	if p.Uplink == "" {
		return errors.New("datapath plan: uplink is empty")
	}
	if !p.NodeIP.Is4() {
		return fmt.Errorf("datapath plan: node IP %q is not an IPv4 address", p.NodeIP)
	}
	if p.Port == 0 {
		return errors.New("datapath plan: VXLAN port is 0")
	}
	seen := map[uint16]bool{}
	for _, t := range p.Tunnels {
		if t.ID == 0 || t.ID > nft.MaxPolicyID {
			return fmt.Errorf("datapath plan: tunnel ID %d is outside 1..%d", t.ID, nft.MaxPolicyID)
		}
		if seen[t.ID] {
			return fmt.Errorf("datapath plan: tunnel ID %d appears twice", t.ID)
		}
		seen[t.ID] = true
		if t.Mode == nft.ModeTunnel && !t.Gateway.Is4() {
			return fmt.Errorf("datapath plan: tunnel %d: gateway %q is not an IPv4 address", t.ID, t.Gateway)
		}
		for _, d := range t.Destinations {
			if !d.Addr().Is4() {
				return fmt.Errorf("datapath plan: tunnel %d: destination %s is not IPv4", t.ID, d)
			}
		}
	}
	for _, ip := range append(slices.Clone(p.FloatingIPs), p.ReleasedIPs...) {
		if !ip.Is4() {
			return fmt.Errorf("datapath plan: floating IP %q is not an IPv4 address", ip)
		}
	}
	return nil
}

// DeviceMTU is the MTU of the VXLAN devices on an uplink of mtu.
func DeviceMTU(uplinkMTU int) int { return uplinkMTU - vxlanOverhead }

// MSS is the TCP MSS that fits a tunnel device of mtu.
func MSS(deviceMTU int) uint16 { return uint16(deviceMTU - 40) }

// DeviceMAC is the address of every nsegress device of the node with
// underlay address ip: locally administered, derived from ip, so that any
// node can compute a gateway's without asking it.
func DeviceMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0x6e, b[0], b[1], b[2], b[3]}
}

// Apply makes the node's links, routes, rules and floating addresses what
// p says, and removes nsegress's objects that p does not name. It returns
// the floating IPs it newly added, which the caller announces.
func Apply(p Plan) (added []netip.Addr, err error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	uplink, err := netlink.LinkByName(p.Uplink)
	if err != nil {
		return nil, fmt.Errorf("uplink %s: %w", p.Uplink, err)
	}
	// The rules at nsegress's priority, listed once: each tunnel's rule
	// and the stale ones are told apart by their table.
	rules, err := ourRules()
	if err != nil {
		return nil, err
	}
	keep := map[uint16]bool{}
	for _, t := range p.Tunnels {
		keep[t.ID] = true
		if err := ensureTunnel(p, uplink, t, rules); err != nil {
			return nil, fmt.Errorf("policy tunnel %d: %w", t.ID, err)
		}
	}
	if err := removeStale(keep, rules); err != nil {
		return nil, err
	}
	return syncFloating(uplink, p.FloatingIPs, p.ReleasedIPs)
}

// ensureTunnel creates or corrects one policy's device, table and rule.
func ensureTunnel(p Plan, uplink netlink.Link, t Tunnel, rules []netlink.Rule) error {
	link, err := ensureDevice(p, uplink, t)
	if err != nil {
		return err
	}
	if err := setSrcValidMark(link.Attrs().Index); err != nil {
		return err
	}
	if err := syncRoutes(link, t); err != nil {
		return err
	}
	if t.Mode == nft.ModeTunnel {
		if err := pointAtGateway(link, t.Gateway); err != nil {
			return err
		}
	} else if err := forgetGateway(link); err != nil {
		return err
	}
	return syncRule(t, rules)
}

// ensureDevice returns the policy's VXLAN device, (re)created when its
// VNI, port, source or uplink are not the plan's.
func ensureDevice(p Plan, uplink netlink.Link, t Tunnel) (netlink.Link, error) {
	name := t.Device()
	mtu := DeviceMTU(uplink.Attrs().MTU)
	if l, err := netlink.LinkByName(name); err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if ok && vx.VxlanId == int(t.ID) && vx.Port == int(p.Port) && vx.VtepDevIndex == uplink.Attrs().Index &&
			vx.SrcAddr.Equal(net.IP(p.NodeIP.AsSlice())) && !vx.Learning {
			return l, finishDevice(l, p.NodeIP, mtu)
		}
		if err := netlink.LinkDel(l); err != nil {
			return nil, fmt.Errorf("replace %s: %w", name, err)
		}
	}
	vx := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: name, MTU: mtu, HardwareAddr: DeviceMAC(p.NodeIP)},
		VxlanId:      int(t.ID),
		VtepDevIndex: uplink.Attrs().Index,
		SrcAddr:      net.IP(p.NodeIP.AsSlice()),
		Port:         int(p.Port),
		Learning:     false,
	}
	if err := netlink.LinkAdd(vx); err != nil {
		return nil, fmt.Errorf("create VXLAN device %s (VNI %d, port %d): %w", name, t.ID, p.Port, err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, err
	}
	return l, finishDevice(l, p.NodeIP, mtu)
}

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

// syncRoutes gives the policy's table its route into the tunnel and, on
// the gateway, throw routes for the destinations.
func syncRoutes(link netlink.Link, t Tunnel) error {
	want := []netlink.Route{{
		LinkIndex: link.Attrs().Index, Table: t.Table(), Dst: defaultRoute(), Type: unix.RTN_UNICAST,
		Gw: net.IP(Nexthop.AsSlice()), Flags: int(netlink.FLAG_ONLINK),
	}}
	if t.Mode == nft.ModeLocal {
		for _, d := range t.Destinations {
			want = append(want, netlink.Route{Table: t.Table(), Dst: prefixNet(d), Type: unix.RTN_THROW})
		}
	}
	have, err := tableRoutes(t.Table())
	if err != nil {
		return err
	}
	for _, r := range have {
		if !slices.ContainsFunc(want, func(w netlink.Route) bool { return sameRoute(r, w) }) {
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("table %d: remove %s: %w", t.Table(), r, err)
			}
		}
	}
	for i := range want {
		if err := netlink.RouteReplace(&want[i]); err != nil {
			return fmt.Errorf("table %d: route %s: %w", t.Table(), want[i].Dst, err)
		}
	}
	return nil
}

// sameRoute compares what nsegress sets; a listed route's type 0 and
// RTN_UNICAST are the same thing.
func sameRoute(a, b netlink.Route) bool {
	typ := func(t int) int {
		if t == 0 {
			return unix.RTN_UNICAST
		}
		return t
	}
	return a.Dst.String() == b.Dst.String() && typ(a.Type) == typ(b.Type) && a.Gw.Equal(b.Gw) && a.LinkIndex == b.LinkIndex
}

func defaultRoute() *net.IPNet { return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)} }

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}

// tableRoutes lists the IPv4 routes of one table.
func tableRoutes(table int) ([]netlink.Route, error) {
	rs, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list table %d: %w", table, err)
	}
	for i := range rs {
		if rs[i].Dst == nil {
			rs[i].Dst = defaultRoute()
		}
	}
	return rs, nil
}

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
	fdbs, err := netlink.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("%s: list FDB: %w", link.Attrs().Name, err)
	}
	for _, f := range fdbs {
		if f.HardwareAddr.String() != mac.String() || !f.IP.Equal(net.IP(gw.AsSlice())) {
			f := f
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
		entries, err := netlink.NeighList(link.Attrs().Index, fam)
		if err != nil {
			return fmt.Errorf("%s: list neighbours: %w", link.Attrs().Name, err)
		}
		for _, e := range entries {
			if e.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			if err := netlink.NeighDel(&e); err != nil && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("%s: remove %s: %w", link.Attrs().Name, e.HardwareAddr, err)
			}
		}
	}
	return nil
}

// syncRule keeps "fwmark Mark(ID)/MarkMask lookup table" for tunnel and
// local modes and removes it otherwise; rules are nsegress's rules as
// listed before.
func syncRule(t Tunnel, rules []netlink.Rule) error {
	want := t.Mode == nft.ModeTunnel || t.Mode == nft.ModeLocal
	found := false
	for _, r := range rules {
		if r.Table != t.Table() {
			continue
		}
		if want && !found && r.Mark == nft.Mark(t.ID) && r.Mask != nil && *r.Mask == nft.MarkMask {
			found = true
			continue
		}
		if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("remove rule to table %d: %w", t.Table(), err)
		}
	}
	if !want || found {
		return nil
	}
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority = RulePriority
	r.Mark = nft.Mark(t.ID)
	mask := uint32(nft.MarkMask)
	r.Mask = &mask
	r.Table = t.Table()
	if err := netlink.RuleAdd(r); err != nil {
		return fmt.Errorf("rule fwmark %#x/%#x lookup %d: %w", r.Mark, mask, r.Table, err)
	}
	return nil
}

// ourRules lists the IPv4 rules at nsegress's priority.
func ourRules() ([]netlink.Rule, error) {
	rules, err := netlink.RuleList(unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list ip rules: %w", err)
	}
	var out []netlink.Rule
	for _, r := range rules {
		if r.Priority == RulePriority {
			out = append(out, r)
		}
	}
	return out, nil
}

// ownedTable says whether a routing table is a policy's.
func ownedTable(t int) bool { return t > TableBase && t <= TableBase+4095 }

// removeStale deletes the devices, rules and tables of policies the node
// no longer has: all but the tunnel IDs in keep.
func removeStale(keep map[uint16]bool, rules []netlink.Rule) error {
	devices := map[string]bool{}
	for id := range keep {
		devices[DeviceName(id)] = true
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		name := l.Attrs().Name
		if _, ok := l.(*netlink.Vxlan); ok && strings.HasPrefix(name, DevicePrefix) && !devices[name] {
			if err := netlink.LinkDel(l); err != nil {
				return fmt.Errorf("remove %s: %w", name, err)
			}
		}
	}
	keepTable := func(t int) bool { return t > TableBase && keep[uint16(t-TableBase)] }
	for _, r := range rules {
		if ownedTable(r.Table) && !keepTable(r.Table) {
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("remove rule to table %d: %w", r.Table, err)
			}
		}
	}
	all, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range all {
		if ownedTable(r.Table) && !keepTable(r.Table) {
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("remove route in table %d: %w", r.Table, err)
			}
		}
	}
	return nil
}

// syncFloating adds the held floating IPs to the uplink as /32s and
// removes released ones.
func syncFloating(uplink netlink.Link, hold, release []netip.Addr) ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(uplink, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("%s: list addresses: %w", uplink.Attrs().Name, err)
	}
	have := map[netip.Addr]netlink.Addr{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			have[ip] = a
		}
	}
	for _, ip := range release {
		if a, ok := have[ip]; ok && !slices.Contains(hold, ip) {
			if err := netlink.AddrDel(uplink, &a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
				return nil, fmt.Errorf("%s: release %s: %w", uplink.Attrs().Name, ip, err)
			}
		}
	}
	var added []netip.Addr
	for _, ip := range hold {
		if _, ok := have[ip]; ok {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(32, 32)}}
		if err := netlink.AddrAdd(uplink, a); err != nil && !errors.Is(err, syscall.EEXIST) {
			return nil, fmt.Errorf("%s: hold %s: %w", uplink.Attrs().Name, ip, err)
		}
		added = append(added, ip)
	}
	return added, nil
}

// Remove deletes every nsegress device, rule and policy route, and the
// given floating IPs from the uplink (from any link when uplink is empty):
// the agent's uninstall.
func Remove(uplink string, floating []netip.Addr) error {
	rules, err := ourRules()
	if err != nil {
		return err
	}
	errs := []error{removeStale(nil, rules)}
	links, err := netlink.LinkList()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list links: %w", err))...)
	}
	for _, l := range links {
		if uplink == "" || l.Attrs().Name == uplink {
			_, err := syncFloating(l, nil, floating)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
