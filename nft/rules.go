package nft

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Registers. reg1 is the 16-byte NFT_REG_1; a concatenation is loaded
// into consecutive 32-bit registers, where NFT_REG32_00 (8) aliases the
// start of reg1 and reg32x01 (9) follows it, as nft itself does.
const (
	reg1     = 1
	reg32x01 = 9
)

// TCP constants used by the MSS clamp.
const (
	tcpFlagsOffset = 13   // byte offset of the flags in the TCP header
	tcpFlagSyn     = 0x02 // SYN
	tcpFlagRst     = 0x04 // RST
	tcpOptMaxseg   = 2    // TCP option kind "maximum segment size"
	tcpOptMSSOff   = 2    // offset of the size inside the option
	ctDirReply     = 1    // IP_CT_DIR_REPLY
)

// preroutingRules steer tunnel ingress and pods into their policy chains.
func preroutingRules(m MarkBits, pols []Policy, prefix string) [][]expr.Any {
	var rules [][]expr.Any
	for _, p := range pols {
		switch p.Mode {
		case ModeLocal:
			// Tunnel traffic of a policy whose egress IP this node
			// holds: mark it so that it is SNATed like local pods'.
			rules = append(rules, concat(ifnameIs(expr.MetaKeyIIFNAME, p.Device),
				m.set(p.ID), m.setCt(p.ID), verdict(expr.VerdictAccept)))
			// Replies (un-NATed by now) to pods of the nodes that
			// replies return to: the mark routes them back into the
			// tunnel, towards the pod's node (docs/design.md §7).
			rules = append(rules, concat(ctReply(), m.ctIs(p.ID), daddrIn(setReturns),
				m.set(p.ID), verdict(expr.VerdictAccept)))
		case ModeTunnel:
			// Replies of connections this node sent into the tunnel
			// come back out of it (the gateway un-NATs them). The mark
			// lets the reverse-path check find the policy's table,
			// whose route points into the tunnel; the forwarding lookup
			// takes the main table ("iif <device>" rule).
			rules = append(rules, concat(ifnameIs(expr.MetaKeyIIFNAME, p.Device),
				ctReply(), m.ctIs(p.ID), m.set(p.ID), verdict(expr.VerdictAccept)))
		}
	}
	// Any other tunnel ingress, e.g. from a gateway that no longer holds
	// the egress IP, must not be routed (docs/design.md §5, no borrowing).
	rules = append(rules, concat(ifnamePrefix(expr.MetaKeyIIFNAME, prefix), verdict(expr.VerdictDrop)))
	rules = append(rules, podLookupRule())
	return rules
}

// podLookupRule is "ip saddr . iifname vmap @pods".
func podLookupRule() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg32x01},
		&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: mapPods},
	}
}

// policyRules are the rules of a policy's chain, which its pods jump to.
func policyRules(m MarkBits, p Policy) [][]expr.Any {
	if p.Mode == ModePass {
		return nil // traffic leaves the normal way
	}
	notDst := []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: reg1, SetName: dstSet(p.ID), Invert: true},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}
	// A packet of a connection the pod did not open (a reply to a client
	// that connected in, even from inside the destinations) is never
	// steered: replies stay replies (docs/design.md §5, no bypass).
	replies := concat(ctReply(), verdict(expr.VerdictReturn))
	if p.Mode == ModeDrop {
		return [][]expr.Any{replies, notDst, verdict(expr.VerdictDrop)}
	}
	// The ct mark lets later packets of the connection (replies, MSS
	// clamping) be recognised after the packet mark is cleared (docs/design.md §7).
	return [][]expr.Any{replies, notDst, concat(m.set(p.ID), m.setCt(p.ID))}
}

// forwardRules drop what a pod sends to the tunnel port, clamp the MSS
// of tunnelled connections and keep marked packets of tunnel policies
// from leaving any other way than the tunnel.
func forwardRules(m MarkBits, pols []Policy, mss, port uint16) [][]expr.Any {
	// The tunnel's own datagrams are the node's (output), never
	// forwarded: a forwarded one is a pod's, which the primary's
	// masquerade would give the node's address, the one source a gateway
	// accepts tunnel traffic from (docs/design.md §5, no borrowing).
	rules := [][]expr.Any{concat(udpDport(port), verdict(expr.VerdictDrop))}
	if mss != 0 {
		rules = append(rules, mssClampRule(m, mss))
	}
	for _, p := range pols {
		if p.Mode != ModeTunnel {
			continue
		}
		// A reply that came back out of the tunnel has done with its
		// mark (the reverse-path check): clear it before the leak guard.
		rules = append(rules, concat(ifnameIs(expr.MetaKeyIIFNAME, p.Device), m.clear()))
		rules = append(rules, concat(m.is(p.ID),
			ifnameIsNot(expr.MetaKeyOIFNAME, p.Device), verdict(expr.VerdictDrop)))
	}
	return rules
}

// daddrIn is "ip daddr @set".
func daddrIn(set string) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: reg1, SetName: set},
	}
}

// clear is "meta mark set meta mark & ~m".
func (m MarkBits) clear() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		maskReg(^m.Mask(), 0),
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
	}
}

// mssClampRule is "ct mark & m != 0 tcp flags & (syn|rst) == syn
// tcp option maxseg size > mss tcp option maxseg size set mss".
func mssClampRule(m MarkBits, mss uint16) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
		maskReg(m.Mask(), 0),
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: native32(0)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: tcpFlagsOffset, Len: 1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1,
			Mask: []byte{tcpFlagSyn | tcpFlagRst}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{tcpFlagSyn}},
		&expr.Exthdr{DestRegister: reg1, Type: tcpOptMaxseg, Offset: tcpOptMSSOff, Len: 2, Op: expr.ExthdrOpTcpopt},
		&expr.Cmp{Op: expr.CmpOpGt, Register: reg1, Data: be16(mss)},
		&expr.Immediate{Register: reg1, Data: be16(mss)},
		&expr.Exthdr{SourceRegister: reg1, Type: tcpOptMaxseg, Offset: tcpOptMSSOff, Len: 2, Op: expr.ExthdrOpTcpopt},
	}
}

// snatRules bind the source NAT of marked connections.
func snatRules(m MarkBits, pols []Policy) [][]expr.Any {
	var rules [][]expr.Any
	for _, p := range pols {
		switch p.Mode {
		case ModeTunnel:
			// Identity SNAT: binds the connection's NAT so that the
			// primary CNI's masquerade (priority srcnat) does not
			// rewrite the pod's source before the tunnel (docs/design.md §7).
			rules = append(rules, concat(m.is(p.ID), ifnameIs(expr.MetaKeyOIFNAME, p.Device),
				[]expr.Any{&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}},
				snatToReg()))
		case ModeLocal:
			rules = append(rules, concat(m.is(p.ID),
				[]expr.Any{&expr.Immediate{Register: reg1, Data: p.EgressIP.AsSlice()}},
				snatToReg()))
		}
	}
	return rules
}

// clearMarkRule clears the nsegress part of the mark of packets entering
// a tunnel device: the outer VXLAN packet inherits the mark and would be
// routed back into the tunnel (docs/design.md §7, first pitfall).
func clearMarkRule(m MarkBits, prefix string) []expr.Any {
	return concat(ifnamePrefix(expr.MetaKeyOIFNAME, prefix), m.clear())
}

// udpDport matches UDP packets to port.
func udpDport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: be16(port)},
	}
}

// Offsets into a VXLAN datagram, from the start of its UDP header: the
// 8-byte UDP header, the 8-byte VXLAN header, then the inner Ethernet
// frame (14 bytes) and its IPv4 header.
const (
	vxlanInnerEtherType = 8 + 8 + 12
	vxlanInnerSource    = 8 + 8 + 14 + 12
)

// tunnelInnerIPv4Rule is "udp dport port @th,224,16 != 0x0800 drop": a
// tunnel carries the IPv4 packets of pods and nothing else (its
// neighbours are static, so not even ARP), and the source check below
// reads the inner IPv4 header.
func tunnelInnerIPv4Rule(port uint16) []expr.Any {
	return concat(udpDport(port), []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: vxlanInnerEtherType, Len: 2},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: be16(unix.ETH_P_IP)},
	}, verdict(expr.VerdictDrop))
}

// tunnelSourceRule is "udp dport port ip saddr . @th,336,32 != @sources
// drop": tunnel traffic must come from a cluster node, and the packet
// inside it from that node's own pods (docs/design.md §5, no borrowing).
// The inner header is read before decapsulation, where the outer source
// is still known; after it the two are no longer tied.
func tunnelSourceRule(port uint16) []expr.Any {
	return concat(udpDport(port), []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Payload{DestRegister: reg32x01, Base: expr.PayloadBaseTransportHeader, Offset: vxlanInnerSource, Len: 4},
		&expr.Lookup{SourceRegister: reg1, SetName: setSources, Invert: true},
		&expr.Verdict{Kind: expr.VerdictDrop},
	})
}

// tunnelIfaceRule is "udp dport port iifname != uplink drop": tunnel
// traffic comes from other nodes over the underlay; what reaches the
// port from a pod of this node or over the loopback is a forgery.
func tunnelIfaceRule(port uint16, uplink string) []expr.Any {
	return concat(udpDport(port), ifnameIsNot(expr.MetaKeyIIFNAME, uplink), verdict(expr.VerdictDrop))
}

// heldUnprivilegedRule is "ip saddr @held meta skuid != 0 drop": a
// floating IP is a local address of the gateway holding it, which any
// local process could bind and send from, past the firewall that admits
// the egress IP. Only the SNAT of the selected pods' traffic (forwarded,
// no local socket) and root, the trust boundary, send from it.
func heldUnprivilegedRule() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: reg1, SetName: setHeld},
		&expr.Meta{Key: expr.MetaKeySKUID, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: native32(0)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// heldTCPRule is "ip daddr @held meta l4proto tcp drop": TCP that
// reaches a held floating IP as a local address is no reply of a
// connection the gateway SNATs (conntrack un-NATs those to the pod's
// address before routing, so they are forwarded). It is a segment of a
// flow this gateway has no conntrack entry for: one that moved here from
// a failed gateway before its state did. Dropped, the segment is
// retransmitted and the flow recovers once the state arrives; delivered,
// the gateway's TCP stack would answer it with a reset and end the flow.
// No connection is ever meant to end at a floating IP.
func heldTCPRule() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: reg1, SetName: setHeld},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// handoverRules pass on, and drop, TCP to floating IPs that moved
// moments ago (State.PassOn, State.Released). At this chain's priority
// conntrack has un-NATed every reply it has state for: what is still
// addressed to a floating IP has none here. For a held IP it is "ip daddr
// IP meta l4proto tcp dup to PREV", and the input chain then drops the
// original (heldTCPRule); for a released IP, "ip daddr IP meta l4proto tcp
// drop", so that a copy this node has no state for either does not go
// back out towards the holder.
func handoverRules(passOn map[netip.Addr]netip.Addr, released []netip.Addr) [][]expr.Any {
	var rules [][]expr.Any
	for _, ip := range slices.SortedFunc(maps.Keys(passOn), netip.Addr.Compare) {
		rules = append(rules, concat(daddrTCP(ip), []expr.Any{
			&expr.Immediate{Register: reg1, Data: passOn[ip].AsSlice()},
			&expr.Dup{RegAddr: reg1},
		}))
	}
	for _, ip := range released {
		rules = append(rules, concat(daddrTCP(ip), verdict(expr.VerdictDrop)))
	}
	return rules
}

// daddrTCP is "ip daddr IP meta l4proto tcp".
func daddrTCP(ip netip.Addr) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ip.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// tunnelUnprivilegedRule is "udp dport port meta skuid != 0 drop": a
// local process that is not root cannot send to the tunnel port. The
// tunnel's own datagrams have no socket of a user (they are forwarded
// pod packets, encapsulated by the kernel), so the rule leaves them
// alone; root on the node is the trust boundary.
func tunnelUnprivilegedRule(port uint16) []expr.Any {
	return concat(udpDport(port), []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: native32(0)},
	}, verdict(expr.VerdictDrop))
}

// set is "meta mark set meta mark & ~m | m.Mark(id)".
func (m MarkBits) set(id uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		maskReg(^m.Mask(), m.Mark(id)),
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
	}
}

// setCt is "ct mark set ct mark & ~m | m.Mark(id)".
func (m MarkBits) setCt(id uint16) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
		maskReg(^m.Mask(), m.Mark(id)),
		&expr.Ct{Key: expr.CtKeyMARK, SourceRegister: true, Register: reg1},
	}
}

// is is "meta mark & m == m.Mark(id)".
func (m MarkBits) is(id uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		maskReg(m.Mask(), 0),
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: native32(m.Mark(id))},
	}
}

// ctIs is "ct mark & m == m.Mark(id)".
func (m MarkBits) ctIs(id uint16) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
		maskReg(m.Mask(), 0),
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: native32(m.Mark(id))},
	}
}

// ctReply is "ct direction reply".
func ctReply() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{ctDirReply}},
	}
}

// maskReg computes reg1 = reg1 & mask ^ xor on a 32-bit host-order value
// (marks are host order).
func maskReg(mask, xor uint32) *expr.Bitwise {
	return &expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
		Mask: native32(mask), Xor: native32(xor)}
}

// ifnameIs matches the interface name key (iifname or oifname) exactly.
func ifnameIs(key expr.MetaKey, name string) []expr.Any {
	return ifnameCmp(key, expr.CmpOpEq, padIfName(name))
}

// ifnameIsNot is the negation of ifnameIs.
func ifnameIsNot(key expr.MetaKey, name string) []expr.Any {
	return ifnameCmp(key, expr.CmpOpNeq, padIfName(name))
}

// ifnamePrefix matches interface names starting with prefix; nft prints
// it as "prefix*".
func ifnamePrefix(key expr.MetaKey, prefix string) []expr.Any {
	return ifnameCmp(key, expr.CmpOpEq, []byte(prefix))
}

// ifnameCmp loads the interface name and compares its first len(data)
// bytes.
func ifnameCmp(key expr.MetaKey, op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Cmp{Op: op, Register: reg1, Data: data},
	}
}

// snatToReg is "snat to <reg1>": the address in reg1 is the new source.
func snatToReg() []expr.Any {
	return []expr.Any{&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1}}
}

// verdict is a rule tail with just the verdict kind.
func verdict(k expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: k}}
}

// concat joins expression lists into one rule.
func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// padIfName pads an interface name with NULs to IFNAMSIZ, as nft does
// for an exact match.
func padIfName(name string) []byte {
	b := make([]byte, ifNameSize)
	copy(b, name)
	return b
}

// native32 encodes v in host byte order (marks).
func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// be32 encodes v in network byte order (addresses).
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// be16 encodes v in network byte order (ports, MSS).
func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
