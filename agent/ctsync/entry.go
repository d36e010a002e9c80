package ctsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// tcpConntrackMax is TCP_CONNTRACK_MAX: the kernel rejects a TCP state
// at or above it (nlattr_to_tcp), so the decoder does too.
const tcpConntrackMax = 10

// maxWScale is the largest TCP window scale (RFC 7323 section 2.3).
const maxWScale = 14

// tupleKey names a flow by its original tuple, the key the kernel looks
// an entry up by.
type tupleKey struct {
	proto            uint8
	src, dst         netip.Addr
	srcPort, dstPort uint16
}

// entry is one replicated SNAT conntrack entry: what the follower needs
// to recreate it with the same NAT binding. IPv4, TCP or UDP only.
type entry struct {
	key     tupleKey
	natIP   netip.Addr // the reply tuple's destination: the floating IP
	natPort uint16     // the reply tuple's destination port, as the active chose it
	mark    uint32
	timeout uint32 // seconds left
	status  uint32 // the active's IPS_* bits; the follower keeps the settable ones
	// TCP only: the conntrack state and, per direction, the
	// IP_CT_TCP_FLAG_* bits and the window scale.
	tcpState                  uint8
	tcpFlagsOrig, tcpFlagsRep uint8
	wscaleOrig, wscaleRep     uint8
}

func (e entry) String() string {
	return fmt.Sprintf("%d %s:%d>%s:%d nat %s:%d mark %#x", e.key.proto,
		e.key.src, e.key.srcPort, e.key.dst, e.key.dstPort, e.natIP, e.natPort, e.mark)
}

// entryFromFlow returns the entry of a kernel flow when it is one that
// ctsync replicates: IPv4 TCP or UDP, source-NATed, not destination-NATed
// (the reply's source is the original destination), with a mark bit in
// mask. complete says whether the flow must carry what a creation needs
// (a timeout, and a TCP state); DESTROY events need only the tuples.
func entryFromFlow(f conntrack.Flow, mask uint32, complete bool) (entry, bool) {
	o, r := f.TupleOrig, f.TupleReply
	st := conntrack.Status(f.Status)
	if !st.SrcNAT() || st.DstNAT() || f.Mark&mask == 0 {
		return entry{}, false
	}
	if !o.IP.SourceAddress.Is4() || !o.IP.DestinationAddress.Is4() || !r.IP.DestinationAddress.Is4() {
		return entry{}, false
	}
	if o.Proto.Protocol != unix.IPPROTO_TCP && o.Proto.Protocol != unix.IPPROTO_UDP {
		return entry{}, false
	}
	if r.IP.SourceAddress != o.IP.DestinationAddress || r.Proto.SourcePort != o.Proto.DestinationPort {
		return entry{}, false
	}
	e := entry{
		key: tupleKey{proto: o.Proto.Protocol, src: o.IP.SourceAddress, dst: o.IP.DestinationAddress,
			srcPort: o.Proto.SourcePort, dstPort: o.Proto.DestinationPort},
		natIP: r.IP.DestinationAddress, natPort: r.Proto.DestinationPort,
		mark: f.Mark, timeout: f.Timeout, status: uint32(f.Status),
	}
	if e.key.proto == unix.IPPROTO_TCP {
		if tcp := f.ProtoInfo.TCP; tcp != nil {
			// The library keeps struct nf_ct_tcp_flags {flags, mask} as
			// one big-endian uint16: the flags are the high byte.
			e.tcpState = tcp.State
			e.tcpFlagsOrig, e.tcpFlagsRep = uint8(tcp.OriginalFlags>>8), uint8(tcp.ReplyFlags>>8)
			e.wscaleOrig, e.wscaleRep = tcp.OriginalWindowScale, tcp.ReplyWindowScale
		} else if complete {
			return entry{}, false
		}
	}
	if complete && e.timeout == 0 {
		return entry{}, false
	}
	return e, true
}

// Message kinds. A dump is framed by kindDumpStart and kindDumpEnd so
// that the follower can remove, at the end, what it injected earlier and
// the dump no longer has (a DESTROY it missed while disconnected).
const (
	kindHeartbeat uint8 = iota + 1
	kindDumpStart
	kindDumpEnd
	kindUpsert
	kindDelete
)

// message is one frame's payload: a kind, when the server saw what it
// carries (for the follower's lag), and entries for the upsert and
// delete kinds.
type message struct {
	kind    uint8
	seen    time.Time
	entries []entry
}

const (
	entrySize     = 36
	messageHeader = 1 + 8 // kind, seen (Unix nanoseconds)
	// maxBatch bounds the entries of one frame, and so a frame's size.
	maxBatch   = 1024
	maxPayload = messageHeader + maxBatch*entrySize
)

// appendEntry encodes e in entrySize bytes, big-endian:
//
//	0 proto | 1 TCP state | 2 TCP flags orig | 3 TCP flags reply |
//	4 wscale orig | 5 wscale reply | 6 NAT port (2) | 8 src (4) |
//	12 dst (4) | 16 src port (2) | 18 dst port (2) | 20 NAT IP (4) |
//	24 mark (4) | 28 timeout (4) | 32 status (4)
func appendEntry(b []byte, e entry) []byte {
	b = append(b, e.key.proto, e.tcpState, e.tcpFlagsOrig, e.tcpFlagsRep, e.wscaleOrig, e.wscaleRep)
	b = binary.BigEndian.AppendUint16(b, e.natPort)
	src, dst, nat := e.key.src.As4(), e.key.dst.As4(), e.natIP.As4()
	b = append(b, src[:]...)
	b = append(b, dst[:]...)
	b = binary.BigEndian.AppendUint16(b, e.key.srcPort)
	b = binary.BigEndian.AppendUint16(b, e.key.dstPort)
	b = append(b, nat[:]...)
	b = binary.BigEndian.AppendUint32(b, e.mark)
	b = binary.BigEndian.AppendUint32(b, e.timeout)
	return binary.BigEndian.AppendUint32(b, e.status)
}

var errBadEntry = errors.New("bad entry")

// decodeEntry decodes what appendEntry encoded, and rejects what the
// kernel would reject or ctsync never sends.
func decodeEntry(b []byte) (entry, error) {
	if len(b) != entrySize {
		return entry{}, fmt.Errorf("%w: %d bytes, want %d", errBadEntry, len(b), entrySize)
	}
	be := binary.BigEndian
	e := entry{
		key: tupleKey{proto: b[0],
			src: netip.AddrFrom4([4]byte(b[8:12])), dst: netip.AddrFrom4([4]byte(b[12:16])),
			srcPort: be.Uint16(b[16:]), dstPort: be.Uint16(b[18:])},
		tcpState: b[1], tcpFlagsOrig: b[2], tcpFlagsRep: b[3], wscaleOrig: b[4], wscaleRep: b[5],
		natPort: be.Uint16(b[6:]), natIP: netip.AddrFrom4([4]byte(b[20:24])),
		mark: be.Uint32(b[24:]), timeout: be.Uint32(b[28:]), status: be.Uint32(b[32:]),
	}
	switch e.key.proto {
	case unix.IPPROTO_TCP:
		if e.tcpState >= tcpConntrackMax || e.wscaleOrig > maxWScale || e.wscaleRep > maxWScale {
			return entry{}, fmt.Errorf("%w: TCP state %d, window scales %d/%d", errBadEntry, e.tcpState, e.wscaleOrig, e.wscaleRep)
		}
	case unix.IPPROTO_UDP:
		if e.tcpState|e.tcpFlagsOrig|e.tcpFlagsRep|e.wscaleOrig|e.wscaleRep != 0 {
			return entry{}, fmt.Errorf("%w: TCP fields in a UDP entry", errBadEntry)
		}
	default:
		return entry{}, fmt.Errorf("%w: protocol %d", errBadEntry, e.key.proto)
	}
	return e, nil
}

// encodeMessage encodes m; m has at most maxBatch entries.
func encodeMessage(m message) []byte {
	b := make([]byte, 0, messageHeader+len(m.entries)*entrySize)
	b = append(b, m.kind)
	b = binary.BigEndian.AppendUint64(b, uint64(m.seen.UnixNano()))
	for _, e := range m.entries {
		b = appendEntry(b, e)
	}
	return b
}

var errBadMessage = errors.New("bad message")

// decodeMessage decodes a frame's payload.
func decodeMessage(b []byte) (message, error) {
	if len(b) < messageHeader || len(b) > maxPayload {
		return message{}, fmt.Errorf("%w: %d bytes", errBadMessage, len(b))
	}
	m := message{kind: b[0], seen: time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9])))}
	rest := b[messageHeader:]
	switch m.kind {
	case kindHeartbeat, kindDumpStart, kindDumpEnd:
		if len(rest) != 0 {
			return message{}, fmt.Errorf("%w: kind %d with %d bytes of entries", errBadMessage, m.kind, len(rest))
		}
		return m, nil
	case kindUpsert, kindDelete:
	default:
		return message{}, fmt.Errorf("%w: kind %d", errBadMessage, m.kind)
	}
	if len(rest) == 0 || len(rest)%entrySize != 0 {
		return message{}, fmt.Errorf("%w: %d bytes of entries", errBadMessage, len(rest))
	}
	m.entries = make([]entry, 0, len(rest)/entrySize)
	for len(rest) > 0 {
		e, err := decodeEntry(rest[:entrySize])
		if err != nil {
			return message{}, err
		}
		m.entries = append(m.entries, e)
		rest = rest[entrySize:]
	}
	return m, nil
}
