package ctsync

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// ctnetlink attribute numbers from include/uapi/linux/netfilter/
// nfnetlink_conntrack.h, for the messages the library cannot build: a
// creation with CTA_NAT_SRC, and a deletion checked by CTA_ID.
const (
	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaStatus     = 3
	ctaProtoinfo  = 4
	ctaNATSrc     = 6
	ctaTimeout    = 7
	ctaMark       = 8
	ctaID         = 12

	ctaTupleIP    = 1 // CTA_TUPLE_IP
	ctaTupleProto = 2 // CTA_TUPLE_PROTO
	ctaIPv4Src    = 1 // CTA_IP_V4_SRC
	ctaIPv4Dst    = 2 // CTA_IP_V4_DST
	ctaProtoNum   = 1 // CTA_PROTO_NUM
	ctaProtoSrc   = 2 // CTA_PROTO_SRC_PORT
	ctaProtoDst   = 3 // CTA_PROTO_DST_PORT

	ctaNATV4MinIP   = 1 // CTA_NAT_V4_MINIP
	ctaNATV4MaxIP   = 2 // CTA_NAT_V4_MAXIP
	ctaNATProto     = 3 // CTA_NAT_PROTO
	ctaProtoNATMin  = 1 // CTA_PROTONAT_PORT_MIN
	ctaProtoNATMax  = 2 // CTA_PROTONAT_PORT_MAX
	ctaProtoinfoTCP = 1 // CTA_PROTOINFO_TCP

	ctaTCPState      = 1 // CTA_PROTOINFO_TCP_STATE
	ctaTCPWScaleOrig = 2 // CTA_PROTOINFO_TCP_WSCALE_ORIGINAL
	ctaTCPWScaleRep  = 3 // CTA_PROTOINFO_TCP_WSCALE_REPLY
	ctaTCPFlagsOrig  = 4 // CTA_PROTOINFO_TCP_FLAGS_ORIGINAL
	ctaTCPFlagsRep   = 5 // CTA_PROTOINFO_TCP_FLAGS_REPLY

	ipctnlMsgCTNew    = 0 // IPCTNL_MSG_CT_NEW
	ipctnlMsgCTGet    = 1 // IPCTNL_MSG_CT_GET
	ipctnlMsgCTDelete = 2 // IPCTNL_MSG_CT_DELETE

	// tcpFlagBeLiberal is IP_CT_TCP_FLAG_BE_LIBERAL: conntrack skips its
	// TCP window checks for the direction. An injected entry has no
	// window data (ctnetlink carries none), and the first segments the
	// standby sees are mid-stream, so without it they can be judged
	// out of window and marked INVALID.
	tcpFlagBeLiberal = 0x08

	// settableStatus are the IPS_* bits a creation copies from the
	// active: ctnetlink lets CTA_STATUS set SEEN_REPLY and ASSURED and
	// ignores the NAT bits (IPS_UNCHANGEABLE_MASK), which the kernel sets
	// itself from CTA_NAT_SRC.
	settableStatus = uint32(conntrack.StatusSeenReply | conntrack.StatusAssured)
	// createStatus must be in CTA_STATUS on creation: the kernel marks a
	// created entry IPS_CONFIRMED before it applies CTA_STATUS, and
	// nf_ct_change_status_common answers EBUSY to a status that would
	// change CONFIRMED.
	createStatus = uint32(conntrack.StatusConfirmed)
)

// injector writes entries into the conntrack table of the namespace its
// socket was opened in.
type injector struct {
	nl *nlSocket
}

func dialInjector() (*injector, error) {
	nl, err := openNLSocket()
	if err != nil {
		return nil, err
	}
	return &injector{nl: nl}, nil
}

func (in *injector) Close() error { return in.nl.Close() }

// upsert makes the table hold e with e's NAT binding. A NAT binding
// cannot change once an entry exists (ctnetlink refuses CTA_NAT_* on an
// existing entry), so an entry that is not already e's binding (one the
// kernel created from a mid-stream packet, or a stale copy of an older
// flow) is deleted and e created; e's own binding is updated in place.
func (in *injector) upsert(e entry) error {
	err := in.create(e)
	if !errors.Is(err, unix.EEXIST) {
		return err
	}
	cur, err := in.get(e.key)
	switch {
	case err == nil && sameBinding(cur, e):
		return in.update(e)
	case err == nil:
		if err := in.deleteFlow(cur); err != nil {
			return err
		}
	case !errors.Is(err, unix.ENOENT):
		return err
	}
	// The clash may also be on the NATed reply tuple: an entry another
	// flow holds with the same NAT address and port.
	if cur, err := in.get(natReplyKey(e)); err == nil {
		if err := in.deleteFlow(cur); err != nil {
			return err
		}
	} else if !errors.Is(err, unix.ENOENT) {
		return err
	}
	return in.create(e)
}

// adopt adds e for an IP this node holds, where the kernel's own
// entries are authoritative, and says whether it changed the table: it
// creates e when the kernel has no entry of the flow, and moves the
// kernel's entry of e's binding on to e's TCP state when the kernel's
// is still in the handshake and e's is past it. That is a flow opened
// at a move: the former holder sent the SYN and its entry was copied
// here, then the handshake completed at the former holder (the reply
// was passed on to it, or the pod's ACK went there), whose updates
// would otherwise never land here, so the pod's next segments would
// be invalid in a SYN_SENT entry and dropped. Anything else is left as
// the kernel keeps it.
func (in *injector) adopt(e entry) (bool, error) {
	err := in.create(e)
	if err == nil || !errors.Is(err, unix.EEXIST) {
		return err == nil, err
	}
	cur, err := in.get(e.key)
	if errors.Is(err, unix.ENOENT) {
		return false, nil // gone meanwhile: the kernel's call
	}
	if err != nil {
		return false, err
	}
	if !sameBinding(cur, e) || !handshakeBehind(cur, e) {
		return false, nil
	}
	// SEEN_REPLY and ASSURED can only be set, so the kernel's bits and
	// the peer's together are a valid change.
	status := uint32(cur.Status) | e.status&settableStatus
	if err := in.update(e, netfilter.Attribute{Type: ctaStatus, Data: netfilter.Uint32Bytes(status)}); err != nil {
		return false, err
	}
	return true, nil
}

// TCP conntrack states (enum tcp_conntrack) that handshakeBehind
// orders.
const (
	tcpSynSent     = 1
	tcpSynRecv     = 2
	tcpEstablished = 3
	tcpClose       = 8
	tcpSynSent2    = 9
)

// handshakeBehind says whether the kernel's TCP entry cur is still in
// the handshake (SYN_SENT, SYN_SENT2, SYN_RECV) and e's state is later
// in the connection's life.
func handshakeBehind(cur conntrack.Flow, e entry) bool {
	if e.key.proto != unix.IPPROTO_TCP || cur.ProtoInfo.TCP == nil {
		return false
	}
	rank := func(s uint8) uint8 {
		if s == tcpSynSent2 {
			return tcpSynSent
		}
		return s
	}
	now, peer := rank(cur.ProtoInfo.TCP.State), rank(e.tcpState)
	return now >= tcpSynSent && now <= tcpSynRecv && peer > now && peer <= tcpClose
}

// remove deletes e's copy when the table holds e's binding, and says
// whether it did; an entry of the same tuple with another binding is not
// e's to delete.
func (in *injector) remove(e entry) (bool, error) {
	cur, err := in.get(e.key)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !sameBinding(cur, e) {
		return false, nil
	}
	return true, in.deleteFlow(cur)
}

func (in *injector) get(k tupleKey) (conntrack.Flow, error) {
	cur, err := in.nl.get(k)
	if err != nil {
		return conntrack.Flow{}, fmt.Errorf("get %d %s:%d>%s:%d: %w", k.proto, k.src, k.srcPort, k.dst, k.dstPort, err)
	}
	return cur, nil
}

// sameBinding says whether the kernel's flow is e's flow with e's NAT
// binding.
func sameBinding(f conntrack.Flow, e entry) bool {
	o, r := f.TupleOrig, f.TupleReply
	return conntrack.Status(f.Status).SrcNAT() &&
		o.Proto.Protocol == e.key.proto &&
		o.IP.SourceAddress == e.key.src && o.IP.DestinationAddress == e.key.dst &&
		o.Proto.SourcePort == e.key.srcPort && o.Proto.DestinationPort == e.key.dstPort &&
		r.IP.SourceAddress == e.key.dst && r.Proto.SourcePort == e.key.dstPort &&
		r.IP.DestinationAddress == e.natIP && r.Proto.DestinationPort == e.natPort
}

// natReplyKey is e's NATed reply tuple (the kernel's lookup matches a
// tuple of either direction).
func natReplyKey(e entry) tupleKey {
	return tupleKey{proto: e.key.proto, src: e.key.dst, dst: e.natIP, srcPort: e.key.dstPort, dstPort: e.natPort}
}

// inverse is k's plain reply tuple.
func (k tupleKey) inverse() tupleKey {
	return tupleKey{proto: k.proto, src: k.dst, dst: k.src, srcPort: k.dstPort, dstPort: k.srcPort}
}

// keyOf is a kernel tuple's key.
func keyOf(t conntrack.Tuple) tupleKey {
	return tupleKey{proto: t.Proto.Protocol, src: t.IP.SourceAddress, dst: t.IP.DestinationAddress,
		srcPort: t.Proto.SourcePort, dstPort: t.Proto.DestinationPort}
}

// update refreshes what may change on an existing entry: timeout, mark
// and TCP state and flags, and extra. The status is left out unless
// extra has one that keeps the entry's bits: ctnetlink refuses to clear
// SEEN_REPLY or ASSURED (EBUSY). So are NAT attributes, which it refuses
// on an existing entry (EOPNOTSUPP).
func (in *injector) update(e entry, extra ...netfilter.Attribute) error {
	attrs := append(append([]netfilter.Attribute{tupleAttr(ctaTupleOrig, e.key)}, extra...), e.mutableAttrs()...)
	if _, err := in.nl.execute(ipctnlMsgCTNew, 0, attrs); err != nil {
		return fmt.Errorf("update %s: %w", e, err)
	}
	return nil
}

// mutableAttrs are e's attributes that an update may change.
func (e entry) mutableAttrs() []netfilter.Attribute {
	attrs := []netfilter.Attribute{
		{Type: ctaTimeout, Data: netfilter.Uint32Bytes(e.timeout)},
		{Type: ctaMark, Data: netfilter.Uint32Bytes(e.mark)},
	}
	if e.key.proto == unix.IPPROTO_TCP {
		attrs = append(attrs, netfilter.Attribute{Type: ctaProtoinfo, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaProtoinfoTCP, Nested: true, Children: []netfilter.Attribute{
				{Type: ctaTCPState, Data: []byte{e.tcpState}},
				{Type: ctaTCPWScaleOrig, Data: []byte{e.wscaleOrig}},
				{Type: ctaTCPWScaleRep, Data: []byte{e.wscaleRep}},
				// struct nf_ct_tcp_flags {flags, mask}: the active's
				// flags, plus BE_LIBERAL, over all eight bits.
				{Type: ctaTCPFlagsOrig, Data: []byte{e.tcpFlagsOrig | tcpFlagBeLiberal, 0xff}},
				{Type: ctaTCPFlagsRep, Data: []byte{e.tcpFlagsRep | tcpFlagBeLiberal, 0xff}},
			}},
		}})
	}
	return attrs
}

// create creates e. What the kernel needs for the standby to un-NAT the
// flow's replies (see doc.go):
//   - the reply tuple as the plain inverse of the original: the kernel
//     computes the NATed reply itself from CTA_NAT_SRC, and only then
//     sets IPS_SRC_NAT and IPS_SRC_NAT_DONE, which ctnetlink does not let
//     CTA_STATUS set. An entry created with the NATed reply and no
//     CTA_NAT_SRC has the right tuples but no NAT status, and its replies
//     are not translated.
//   - CTA_NAT_SRC with the address and, as a one-port range, the port
//     the active chose: a standby choosing its own port would pick the
//     same one for two flows the active mapped apart, and EEXIST.
func (in *injector) create(e entry) error {
	attrs := []netfilter.Attribute{
		tupleAttr(ctaTupleOrig, e.key),
		tupleAttr(ctaTupleReply, e.key.inverse()),
		{Type: ctaNATSrc, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaNATV4MinIP, Data: e.natIP.AsSlice()},
			{Type: ctaNATV4MaxIP, Data: e.natIP.AsSlice()},
			{Type: ctaNATProto, Nested: true, Children: []netfilter.Attribute{
				{Type: ctaProtoNATMin, Data: netfilter.Uint16Bytes(e.natPort)},
				{Type: ctaProtoNATMax, Data: netfilter.Uint16Bytes(e.natPort)},
			}},
		}},
		{Type: ctaStatus, Data: netfilter.Uint32Bytes(e.status&settableStatus | createStatus)},
	}
	attrs = append(attrs, e.mutableAttrs()...)
	if _, err := in.nl.execute(ipctnlMsgCTNew, netlink.Create|netlink.Excl, attrs); err != nil {
		return fmt.Errorf("create %s: %w", e, err)
	}
	return nil
}

// deleteFlow deletes f by its original tuple and its ID, so that an
// entry that replaced f meanwhile is left alone (ENOENT is success).
func (in *injector) deleteFlow(f conntrack.Flow) error {
	_, err := in.nl.execute(ipctnlMsgCTDelete, 0, []netfilter.Attribute{
		tupleAttr(ctaTupleOrig, keyOf(f.TupleOrig)),
		{Type: ctaID, Data: netfilter.Uint32Bytes(f.ID)},
	})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete %s: %w", f.TupleOrig, err)
	}
	return nil
}

// tupleAttr encodes k as CTA_TUPLE_ORIG or CTA_TUPLE_REPLY (the
// library's encoder is unexported).
func tupleAttr(typ uint16, k tupleKey) netfilter.Attribute {
	return netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{
		{Type: ctaTupleIP, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaIPv4Src, Data: addr4(k.src)},
			{Type: ctaIPv4Dst, Data: addr4(k.dst)},
		}},
		{Type: ctaTupleProto, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaProtoNum, Data: []byte{k.proto}},
			{Type: ctaProtoSrc, Data: netfilter.Uint16Bytes(k.srcPort)},
			{Type: ctaProtoDst, Data: netfilter.Uint16Bytes(k.dstPort)},
		}},
	}}
}

func addr4(a netip.Addr) []byte {
	b := a.As4()
	return b[:]
}
