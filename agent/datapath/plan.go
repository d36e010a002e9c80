// Package datapath programs a node's links, routes and ip rules for
// nsegress (docs/design.md §2): one VXLAN device per policy, a routing
// table per policy that a fwmark rule selects, and on gateway nodes the
// floating IPs on the uplink. The nft package holds the packet rules; this
// package holds everything else, and both are computed from the same Plan:
// each Tunnel gives its nft.Policy (Tunnel.Policy).
//
// The files of the package, by concern:
//
//	plan.go      the Plan, its Tunnels, their names and numbers, Validate
//	apply.go     Apply and Remove, and the removal of stale objects
//	device.go    a policy's VXLAN device
//	routes.go    a policy's routing table and ip rule
//	neigh.go     the neighbour and FDB entries towards a policy's gateway
//	floating.go  the floating IPs on the uplink
//	uplink.go    finding the uplink and its MTU
//	dump.go      netlink dumps that survive a concurrent change
//	garp.go      the gratuitous ARP that announces a floating IP
package datapath

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"

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
	// DefaultTableBase + tunnel ID is a policy's routing table.
	DefaultTableBase = 20000
	// DefaultRulePriority is the preference of nsegress's fwmark rules:
	// before the main table (32766), after the local table (0).
	DefaultRulePriority = 1900
	// vxlanOverhead is what VXLAN over IPv4 adds to a frame.
	vxlanOverhead = 50
)

// Nexthop is the next hop of every policy route: an address that never
// appears in a packet, resolved by a permanent neighbour entry to the
// gateway's device address (198.19.0.0/16 is the lab's tunnel-internal
// range; the address only lives in nsegress's own tables).
var Nexthop = netip.MustParseAddr("198.19.255.254")

// Tunnel is one policy's tunnel on this node: everything the node needs
// to program the policy, its links and routes here and its nft rules
// through Policy.
type Tunnel struct {
	// ID is the policy's tunnel ID, 1..nft.MaxPolicyID.
	ID   uint16
	Mode nft.Mode
	// Gateway is the underlay address of the node holding the policy's
	// egress IP (ModeTunnel).
	Gateway netip.Addr
	// EgressIP is the policy's egress IP, which this node holds
	// (ModeLocal, required there); the other modes ignore it.
	EgressIP netip.Addr
	// Destinations are the policy's destinations. On the gateway they are
	// "throw" routes in the policy's table, so that its table answers only
	// the reverse-path check of tunnel traffic (docs/design.md §7: strict
	// rp_filter) and never the forwarding of that traffic.
	Destinations []netip.Prefix
	// Returns are the other nodes whose pods' replies this gateway sends
	// back through the tunnel (ModeLocal), each with its pod ranges: the
	// replies then arrive at the pod's node on the device its request
	// left by, which a strict reverse-path check on an overlay primary
	// requires (docs/design.md §7).
	Returns []Return
	// Generation tells apart the policies that held this tunnel ID over
	// time (TunnelGeneration); 0 when unknown. It is the upper half of
	// the device's VXLAN network identifier (VNI), so that a node still
	// steering with an ID's old meaning sends a VNI that the gateway has
	// no device for: the kernel drops it instead of SNATing one policy's
	// pods to another's egress IP.
	Generation uint16
}

// Return is a node that replies are tunnelled back to, and its pods'
// ranges.
type Return struct {
	Node   netip.Addr
	Ranges []netip.Prefix
}

// maxGeneration is the largest Generation: 12 bits, above the 12 of the
// ID in the 24-bit VNI.
const maxGeneration = 1<<12 - 1

// TunnelGeneration is the generation of the tunnel of the policy with
// uid: a hash of the UID in 1..4095, the same on every node without any
// coordination. A policy deleted and another created with its tunnel ID
// get different generations, except with probability 1/4095, which the
// controller's tunnel IDs, never handed out again before the range
// wraps, make moot.
func TunnelGeneration(uid string) uint16 {
	h := fnv.New32a()
	h.Write([]byte(uid)) // a hash's Write never fails
	return uint16(h.Sum32()%maxGeneration) + 1
}

// VNI is the tunnel's VXLAN network identifier: the generation above the
// ID.
func (t Tunnel) VNI() uint32 { return uint32(t.Generation)<<12 | uint32(t.ID) }

// Device is the tunnel's VXLAN device name.
func (t Tunnel) Device() string { return DeviceName(t.ID) }

// DeviceName is the VXLAN device of tunnel ID id.
func DeviceName(id uint16) string { return fmt.Sprintf("%s%d", DevicePrefix, id) }

// Settings are the numbers nsegress takes from spaces it shares with
// other networking software on the node: mark bits, routing tables, rule
// priorities. Zero fields take the defaults; the agent's flags set them.
type Settings struct {
	// Marks are the packet and conntrack mark bits
	// (nft.DefaultMarkBits).
	Marks nft.MarkBits
	// TableBase + tunnel ID is a policy's routing table: tables
	// TableBase+1 .. TableBase+4095 are nsegress's (DefaultTableBase).
	TableBase int
	// RulePriority is the preference of the fwmark rules
	// (DefaultRulePriority). The rules "iif nsg<ID> lookup main" take
	// RulePriority - 1, just before: a reply that comes back out of the
	// tunnel carries the policy's mark for the reverse-path check (whose
	// lookup has no input interface) but is forwarded to the pod by the
	// main table.
	RulePriority int
}

// withDefaults fills the zero fields.
func (s Settings) withDefaults() Settings {
	if s.Marks == 0 {
		s.Marks = nft.DefaultMarkBits
	}
	if s.TableBase == 0 {
		s.TableBase = DefaultTableBase
	}
	if s.RulePriority == 0 {
		s.RulePriority = DefaultRulePriority
	}
	return s
}

// Validate checks the settings alone; CheckNode checks them against the
// node.
func (s Settings) Validate() error {
	s = s.withDefaults()
	if err := s.Marks.Validate(); err != nil {
		return err
	}
	// 253..255 are the kernel's default, main and local tables.
	if s.TableBase < 256 || s.TableBase+nft.MaxPolicyID > 1<<31-1 {
		return fmt.Errorf("datapath: table base %d: tables %d..%d must lie in 256..%d", s.TableBase, s.TableBase+1, s.TableBase+nft.MaxPolicyID, 1<<31-1)
	}
	// 0 is the local table's rule, 32766 and 32767 main's and default's.
	if s.RulePriority < 2 || s.RulePriority > 32765 {
		return fmt.Errorf("datapath: rule priority %d (and %d for the return rules) must lie in 2..32765, after the local table's rule and before main's", s.RulePriority, s.RulePriority-1)
	}
	return nil
}

// table is the routing table of tunnel ID id.
func (s Settings) table(id uint16) int { return s.TableBase + int(id) }

// returnPriority is the preference of the "iif nsg<ID>" rules.
func (s Settings) returnPriority() int { return s.RulePriority - 1 }

// ownsTable says whether a routing table is a policy's: TableBase + a
// tunnel ID of 1..nft.MaxPolicyID.
func (s Settings) ownsTable(t int) bool { return t > s.TableBase && t <= s.TableBase+nft.MaxPolicyID }

// Policy is the tunnel's policy as the nft package implements it: the
// same ID, destinations (a copy) and mode, the tunnel's device, and the
// egress IP in ModeLocal only.
func (t Tunnel) Policy() nft.Policy {
	p := nft.Policy{ID: t.ID, Destinations: slices.Clone(t.Destinations), Mode: t.Mode, Device: t.Device()}
	if t.Mode == nft.ModeLocal {
		p.EgressIP = t.EgressIP
	}
	return p
}

// Plan is the desired link, route and rule state of a node.
type Plan struct {
	Settings
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
	if err := p.Settings.Validate(); err != nil {
		return err
	}
	seen := map[uint16]bool{}
	for _, t := range p.Tunnels {
		if t.ID == 0 || t.ID > nft.MaxPolicyID {
			return fmt.Errorf("datapath plan: tunnel ID %d is outside 1..%d", t.ID, nft.MaxPolicyID)
		}
		if t.Generation > maxGeneration {
			return fmt.Errorf("datapath plan: tunnel %d: generation %d is outside 0..%d", t.ID, t.Generation, maxGeneration)
		}
		if seen[t.ID] {
			return fmt.Errorf("datapath plan: tunnel ID %d appears twice", t.ID)
		}
		seen[t.ID] = true
		if err := t.validate(); err != nil {
			return err
		}
	}
	for _, ip := range append(slices.Clone(p.FloatingIPs), p.ReleasedIPs...) {
		if !ip.Is4() {
			return fmt.Errorf("datapath plan: floating IP %q is not an IPv4 address", ip)
		}
	}
	return nil
}

// validate checks the fields of one tunnel that depend on its mode. The
// egress IP is checked as the nft package checks a policy's (required
// and IPv4 in mode local), so that a tunnel Validate accepts gives a
// Policy that nft accepts.
func (t Tunnel) validate() error {
	if t.Mode == nft.ModeTunnel && !t.Gateway.Is4() {
		return fmt.Errorf("datapath plan: tunnel %d: gateway %q is not an IPv4 address", t.ID, t.Gateway)
	}
	if t.Mode == nft.ModeLocal {
		if !t.EgressIP.IsValid() {
			return fmt.Errorf("datapath plan: tunnel %d: mode local needs an egress IP", t.ID)
		}
		if !t.EgressIP.Is4() {
			return fmt.Errorf("datapath plan: tunnel %d: egress IP %q is not an IPv4 address", t.ID, t.EgressIP)
		}
	}
	for _, d := range t.Destinations {
		if !d.Addr().Is4() {
			return fmt.Errorf("datapath plan: tunnel %d: destination %s is not IPv4", t.ID, d)
		}
	}
	for _, r := range t.Returns {
		if !r.Node.Is4() {
			return fmt.Errorf("datapath plan: tunnel %d: return node %q is not an IPv4 address", t.ID, r.Node)
		}
		for _, p := range r.Ranges {
			if !p.Addr().Is4() {
				return fmt.Errorf("datapath plan: tunnel %d: return range %s of node %s is not IPv4", t.ID, p, r.Node)
			}
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
