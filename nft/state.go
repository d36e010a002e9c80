// Package nft programs the nftables side of nsegress on one node.
//
// The desired state of a node (policies, their destinations, the pods each
// policy selects, the tunnel parameters) is plain data, a State. Apply
// turns it into one private table, "ip nsegress", in a single netlink
// transaction: it either fully happens or not at all. Per-pod state is an
// element of the verdict map "pods", keyed by the pod's address and the
// host-side interface its packets arrive on, so that adding or removing a
// pod costs one small transaction (AddPod, DelPod) whatever the number of
// pods (docs/design.md §2: data structures grow with policies, not with pods).
//
// The table is IPv4 only.
package nft

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// Mode says what this node does with a policy's traffic.
type Mode uint8

const (
	// ModeTunnel sends the policy's traffic into the policy's VXLAN
	// device: the gateway holding the egress IP is another node.
	ModeTunnel Mode = iota
	// ModeLocal SNATs the policy's traffic to the egress IP, which this
	// node holds; it also accepts the policy's tunnel traffic from other
	// nodes.
	ModeLocal
	// ModeDrop drops the policy's traffic to its destinations: the
	// policy's failMode is Closed and no gateway holds its egress IP.
	ModeDrop
	// ModePass lets the policy's traffic leave the normal way: the
	// policy's failMode is Open and no gateway holds its egress IP.
	ModePass
)

// String returns the mode's name as used in errors.
func (m Mode) String() string {
	switch m {
	case ModeTunnel:
		return "tunnel"
	case ModeLocal:
		return "local"
	case ModeDrop:
		return "drop"
	case ModePass:
		return "pass"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// MaxPolicyID is the largest policy ID: the API's largest tunnel ID, 12
// bits wide so that every ID fits the 12 mark bits (a test checks that
// it does).
const MaxPolicyID = v1alpha1.MaxTunnelID

// MarkBits is the part of the packet mark and the conntrack mark that
// nsegress owns, as a mask: 12 contiguous bits, which hold a policy's ID.
// The other bits belong to whoever else marks packets (kube-proxy, the
// primary CNI) and are preserved. It is configurable because other
// software picks its own bits (Calico's default is 0xffff0000).
type MarkBits uint32

// DefaultMarkBits are bits 16..27.
const DefaultMarkBits MarkBits = 0x0fff0000

// Mask is the bits as a mask.
func (m MarkBits) Mask() uint32 { return uint32(m) }

// Mark returns the mark of policy id: the ID shifted into the bits.
func (m MarkBits) Mark(id uint16) uint32 {
	return uint32(id) << bits.TrailingZeros32(uint32(m))
}

// Validate checks that m is 12 contiguous bits.
func (m MarkBits) Validate() error {
	if bits.OnesCount32(uint32(m)) != 12 || uint32(m)>>bits.TrailingZeros32(uint32(m)) != 0xfff {
		return fmt.Errorf("nft: mark bits %#08x are not 12 contiguous bits (for example 0x0fff0000 or 0x00000fff)", uint32(m))
	}
	return nil
}

// ifNameSize is IFNAMSIZ: an interface name has at most 15 bytes and a
// terminating NUL.
const ifNameSize = 16

// Policy is one egress policy as this node must implement it.
type Policy struct {
	// ID is the policy's cluster-wide tunnel ID, 1..MaxPolicyID.
	ID uint16
	// Destinations are the IPv4 prefixes the policy applies to. Host bits
	// of a prefix are ignored; overlapping prefixes are merged.
	Destinations []netip.Prefix
	// Mode is what this node does with the policy's traffic.
	Mode Mode
	// Device is the policy's VXLAN device on this node (for example
	// "nsg7"); it must start with State.DevicePrefix. Required for
	// ModeTunnel and ModeLocal, optional otherwise.
	Device string
	// EgressIP is the policy's egress IPv4 address, required for
	// ModeLocal.
	EgressIP netip.Addr
}

// PodKey identifies a pod's packets: its IPv4 address and the host-side
// interface they arrive on. Keying on both means that a pod cannot claim
// another pod's policy by forging its source address, and that a late DEL
// of a pod whose IP was reused removes nothing the new pod owns (its
// interface differs).
type PodKey struct {
	// IP is the pod's IPv4 address.
	IP netip.Addr
	// HostIf is the host-side interface the pod's packets arrive on: the
	// ptp veth, Calico's cali… device, or a bridge.
	HostIf string
}

// String prints the key the way nft prints a map element key.
func (k PodKey) String() string {
	return fmt.Sprintf("%s . %q", k.IP, k.HostIf)
}

// State is the desired nftables state of one node.
type State struct {
	// Policies are the policies this node implements.
	Policies []Policy
	// Pods maps each selected pod to its policy's ID; every ID must be
	// one of Policies.
	Pods map[PodKey]uint16
	// MSS is the TCP MSS that tunnelled connections are clamped to
	// (docs/design.md §7: a VXLAN device has a smaller MTU than the uplink); 0
	// disables clamping.
	MSS uint16
	// TunnelPort is the VXLAN UDP port.
	TunnelPort uint16
	// HeldIPs are the floating IPs this node holds: local addresses that
	// only root may send from (the egress IPs' SNAT is the kernel's).
	HeldIPs []netip.Addr
	// PassOn maps a held floating IP to the underlay address of the node
	// that held it moments ago (a planned move or a takeover): TCP that
	// still reaches the IP, after conntrack un-NATed every reply it has
	// state for, is a reply of a connection that node SNATed just before
	// the move, whose state has not been replicated here yet. A copy goes
	// to that node, which has the state and returns the reply to its pod;
	// the original is dropped here (no reset).
	PassOn map[netip.Addr]netip.Addr
	// Released are the floating IPs this node let go moments ago and
	// still drains: TCP still addressed to one of them has no state here
	// (a copy passed on for a connection this node never had, a stray)
	// and is dropped, rather than routed back out towards the holder.
	Released []netip.Addr
	// Guards maps the address of each selected pod on a bridge to its
	// bridge port (host-side veth): frames from that address must enter
	// the bridge there (see bridge.go).
	Guards map[netip.Addr]string
	// Uplink is the interface tunnel traffic arrives on: the one holding
	// the node's underlay address. Tunnel traffic arriving on any other
	// interface (a pod's, the loopback) is dropped.
	Uplink string
	// ReturnRanges are the pod ranges of the nodes that a gateway returns
	// replies to through the tunnel (the policies' Returns, all nodes'
	// ranges but its own): a reply of a tunnelled connection to one of
	// them gets its policy's mark, which routes it into the tunnel.
	ReturnRanges []netip.Prefix
	// TunnelPeers are the nodes allowed to send VXLAN to this node, each
	// with the inner source addresses it may tunnel.
	TunnelPeers []TunnelPeer
	// Marks are the mark bits nsegress owns; 0 means DefaultMarkBits.
	Marks MarkBits
	// DevicePrefix starts the name of every policy device, for example
	// "nsg". Tunnel ingress on a prefixed device that no ModeLocal
	// policy owns is dropped.
	DevicePrefix string
}

// TunnelPeer is a node allowed to send tunnel traffic to this one.
type TunnelPeer struct {
	// Addr is the node's underlay address: the outer source.
	Addr netip.Addr
	// Sources are the inner source ranges the node may tunnel: the pod
	// ranges the cluster gave it, so that a node cannot pass off another
	// node's pods, or itself, as its own pods. Empty means any inner
	// source, for a node whose primary CNI publishes no range.
	Sources []netip.Prefix
}

// minMSS is the smallest MSS accepted: the IPv4 default MSS (RFC 879).
// A smaller value is certainly a mistake, not a tunnel MTU.
const minMSS = 536

// Validate checks s and returns an error naming the first bad field.
func (s *State) Validate() error {
	if err := s.validateNode(); err != nil {
		return err
	}
	seenID := make(map[uint16]bool, len(s.Policies))
	seenDev := make(map[string]uint16, len(s.Policies))
	for i := range s.Policies {
		p := &s.Policies[i]
		if err := p.validate(s.DevicePrefix); err != nil {
			return err
		}
		if seenID[p.ID] {
			return fmt.Errorf("nft: policy %d: duplicated ID", p.ID)
		}
		seenID[p.ID] = true
		if other, ok := seenDev[p.Device]; ok && p.Device != "" {
			return fmt.Errorf("nft: policy %d: device %q is also the device of policy %d", p.ID, p.Device, other)
		}
		seenDev[p.Device] = p.ID
	}
	for _, r := range s.ReturnRanges {
		if !r.IsValid() || !r.Addr().Is4() {
			return fmt.Errorf("nft: return range %s is not an IPv4 prefix", r)
		}
	}
	for _, ip := range s.HeldIPs {
		if !ip.Is4() {
			return fmt.Errorf("nft: held IP %s is not IPv4", ip)
		}
	}
	for ip, to := range s.PassOn {
		if !slices.Contains(s.HeldIPs, ip) {
			return fmt.Errorf("nft: pass-on for %s, which is not a held IP", ip)
		}
		if !to.Is4() || to == ip {
			return fmt.Errorf("nft: pass-on for %s: %s is not another IPv4 address", ip, to)
		}
	}
	for _, ip := range s.Released {
		if !ip.Is4() || slices.Contains(s.HeldIPs, ip) {
			return fmt.Errorf("nft: released IP %s is not IPv4, or is held", ip)
		}
	}
	for ip, port := range s.Guards {
		if err := validatePodKey(PodKey{IP: ip, HostIf: port}, s.DevicePrefix); err != nil {
			return fmt.Errorf("nft: guard: %w", err)
		}
	}
	for k, id := range s.Pods {
		if err := validatePodKey(k, s.DevicePrefix); err != nil {
			return err
		}
		if !seenID[id] {
			return fmt.Errorf("nft: pod %s: policy %d is not in Policies", k, id)
		}
	}
	return nil
}

// marks are the state's mark bits, the default when unset.
func (s *State) marks() MarkBits {
	if s.Marks == 0 {
		return DefaultMarkBits
	}
	return s.Marks
}

// validateNode checks the fields that do not belong to a policy or pod.
func (s *State) validateNode() error {
	if err := s.marks().Validate(); err != nil {
		return err
	}
	if err := validateIfName("DevicePrefix", s.DevicePrefix); err != nil {
		return err
	}
	if err := validateIfName("Uplink", s.Uplink); err != nil {
		return err
	}
	if s.TunnelPort == 0 {
		return errors.New("nft: TunnelPort is 0: the VXLAN port is required to filter tunnel senders")
	}
	if s.MSS != 0 && s.MSS < minMSS {
		return fmt.Errorf("nft: MSS %d is below %d (use 0 to disable clamping)", s.MSS, minMSS)
	}
	for _, p := range s.TunnelPeers {
		if !p.Addr.Is4() {
			return fmt.Errorf("nft: tunnel peer %s is not IPv4", p.Addr)
		}
		for _, r := range p.Sources {
			if !r.IsValid() || !r.Addr().Is4() {
				return fmt.Errorf("nft: tunnel peer %s: source range %s is not an IPv4 prefix", p.Addr, r)
			}
		}
	}
	return nil
}

// validate checks one policy; prefix is the required device name prefix.
func (p *Policy) validate(prefix string) error {
	if err := validatePolicyID(p.ID); err != nil {
		return err
	}
	if p.Mode > ModePass {
		return fmt.Errorf("nft: policy %d: unknown mode %d", p.ID, uint8(p.Mode))
	}
	for _, d := range p.Destinations {
		if !d.IsValid() || !d.Addr().Is4() {
			return fmt.Errorf("nft: policy %d: destination %s is not IPv4", p.ID, d)
		}
	}
	if err := p.validateDevice(prefix); err != nil {
		return err
	}
	if p.Mode == ModeLocal && !p.EgressIP.IsValid() {
		return fmt.Errorf("nft: policy %d: mode local needs an EgressIP", p.ID)
	}
	if p.EgressIP.IsValid() && !p.EgressIP.Is4() {
		return fmt.Errorf("nft: policy %d: egress IP %s is not IPv4", p.ID, p.EgressIP)
	}
	return nil
}

// validateDevice checks the policy's device name.
func (p *Policy) validateDevice(prefix string) error {
	if p.Device == "" {
		if p.Mode == ModeTunnel || p.Mode == ModeLocal {
			return fmt.Errorf("nft: policy %d: mode %s needs a Device", p.ID, p.Mode)
		}
		return nil
	}
	if err := validateIfName(fmt.Sprintf("policy %d: Device", p.ID), p.Device); err != nil {
		return err
	}
	if !strings.HasPrefix(p.Device, prefix) || p.Device == prefix {
		return fmt.Errorf("nft: policy %d: device %q does not start with the device prefix %q", p.ID, p.Device, prefix)
	}
	return nil
}

// validatePolicyID checks that id fits the mark.
func validatePolicyID(id uint16) error {
	if id == 0 || id > MaxPolicyID {
		return fmt.Errorf("nft: policy ID %d is out of range 1..%d", id, MaxPolicyID)
	}
	return nil
}

// Validate checks that k can be an element of the pods map of a table
// whose policy devices start with devicePrefix.
func (k PodKey) Validate(devicePrefix string) error { return validatePodKey(k, devicePrefix) }

// validatePodKey checks a pod key; prefix is the policy device prefix,
// which a pod's interface must not start with (such packets count as
// tunnel ingress and are dropped).
func validatePodKey(k PodKey, prefix string) error {
	if !k.IP.Is4() {
		return fmt.Errorf("nft: pod %s: address is not IPv4", k)
	}
	if err := validateIfName(fmt.Sprintf("pod %s: HostIf", k), k.HostIf); err != nil {
		return err
	}
	if prefix != "" && strings.HasPrefix(k.HostIf, prefix) {
		return fmt.Errorf("nft: pod %s: host interface starts with the tunnel device prefix %q", k, prefix)
	}
	return nil
}

// validateIfName checks that name can be an interface name; field names
// it in the error.
func validateIfName(field, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("nft: %s is empty", field)
	case len(name) >= ifNameSize:
		return fmt.Errorf("nft: %s %q is longer than %d bytes", field, name, ifNameSize-1)
	case strings.ContainsAny(name, "\x00*"):
		return fmt.Errorf("nft: %s %q contains NUL or '*'", field, name)
	}
	return nil
}
