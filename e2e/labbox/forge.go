package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// markerMagic starts the payload of every packet that "labbox forge" and
// "labbox send-marker" send; the echo server's marker counter counts only
// payloads that start with it, so that a test of the attacks of
// docs/design.md §5 judges by what a backend received.
const markerMagic = "labbox-marker:"

// maxMarkerLen bounds a marker, so that a counter keyed by marker stays
// small whatever arrives.
const maxMarkerLen = 64

// vxlanPort is nsegress's default VXLAN port.
const vxlanPort = 8479

// forgeConfig is the parsed command line of "labbox forge".
type forgeConfig struct {
	gateway  netip.Addr
	port     int
	vnis     []uint32
	protos   []string
	innerSrc netip.Addr
	dst      netip.AddrPort
	marker   string
	count    int
	interval time.Duration
}

// listFlag is a flag that may be repeated and takes comma-separated
// values: "-vni 1 -vni 2,3" gives [1 2 3].
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// parseForge parses the arguments of "labbox forge".
func parseForge(fs *flag.FlagSet, args []string) (forgeConfig, error) {
	var cfg forgeConfig
	var gateway, innerSrc, dst string
	var vnis, protos listFlag
	fs.StringVar(&gateway, "gateway", "", "the gateway node's underlay `address`")
	fs.IntVar(&cfg.port, "port", vxlanPort, "the gateway's VXLAN UDP `port`")
	fs.Var(&vnis, "vni", "VXLAN network `identifiers`, repeatable or comma-separated")
	fs.Var(&protos, "proto", "inner transport `protocols`: udp (a datagram) and/or tcp (a SYN carrying the marker); default udp")
	fs.StringVar(&innerSrc, "inner-src", "", "the inner packet's source `address`")
	fs.StringVar(&dst, "dst", "", "the inner packet's destination `ip:port`")
	fs.StringVar(&cfg.marker, "marker", "", "the `marker` the payload carries")
	fs.IntVar(&cfg.count, "count", 5, "send `n` packets per VNI and protocol")
	fs.DurationVar(&cfg.interval, "interval", 2*time.Millisecond, "pause between packets")
	if err := parseFlags(fs, args); err != nil {
		return forgeConfig{}, err
	}
	if fs.NArg() != 0 {
		return forgeConfig{}, usagef("forge takes no arguments, got %q", fs.Args())
	}
	var err error
	if cfg.gateway, err = netip.ParseAddr(gateway); err != nil || !cfg.gateway.Is4() {
		return forgeConfig{}, usagef("forge: -gateway %q is not an IPv4 address", gateway)
	}
	if cfg.innerSrc, err = netip.ParseAddr(innerSrc); err != nil || !cfg.innerSrc.Is4() {
		return forgeConfig{}, usagef("forge: -inner-src %q is not an IPv4 address", innerSrc)
	}
	if cfg.dst, err = netip.ParseAddrPort(dst); err != nil || !cfg.dst.Addr().Is4() {
		return forgeConfig{}, usagef("forge: -dst %q is not an IPv4 ip:port", dst)
	}
	if len(vnis) == 0 {
		return forgeConfig{}, usagef("forge: at least one -vni is required")
	}
	for _, v := range vnis {
		n, err := strconv.ParseUint(v, 0, 24)
		if err != nil {
			return forgeConfig{}, usagef("forge: -vni %q is not a 24-bit number", v)
		}
		cfg.vnis = append(cfg.vnis, uint32(n))
	}
	if len(protos) == 0 {
		protos = listFlag{"udp"}
	}
	for _, p := range protos {
		if p != "udp" && p != "tcp" {
			return forgeConfig{}, usagef("forge: -proto %q: want udp or tcp", p)
		}
	}
	cfg.protos = protos
	if err := checkMarker(cfg.marker); err != nil {
		return forgeConfig{}, usagef("forge: %v", err)
	}
	if cfg.port <= 0 || cfg.port > 65535 || cfg.count < 1 || cfg.interval < 0 {
		return forgeConfig{}, usagef("forge: -port must be a port, -count at least 1 and -interval not negative")
	}
	return cfg, nil
}

// checkMarker refuses a marker the counter would not count as sent.
func checkMarker(m string) error {
	if m == "" || len(m) > maxMarkerLen {
		return fmt.Errorf("-marker must have 1 to %d bytes, got %d", maxMarkerLen, len(m))
	}
	for _, r := range m {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("-marker %q: only printable ASCII without spaces", m)
		}
	}
	return nil
}

// runForge implements "labbox forge": VXLAN datagrams, sent over an
// ordinary UDP socket (no privilege needed), that carry a frame for a
// gateway's nsegress tunnel device, as a node's kernel would send it. A
// gateway that decapsulated and SNATed them would hand the backend a
// packet from the egress IP with the marker in its payload. Sends the
// kernel refuses are counted and reported, not fatal: what the backends
// saw is what a test judges.
func runForge(ctx context.Context, p proc, fs *flag.FlagSet, args []string) error {
	cfg, err := parseForge(fs, args)
	if err != nil {
		return err
	}
	conn, err := net.Dial("udp4", netip.AddrPortFrom(cfg.gateway, uint16(cfg.port)).String())
	if err != nil {
		return fmt.Errorf("open a UDP socket to %s:%d: %w", cfg.gateway, cfg.port, err)
	}
	defer conn.Close()
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	for _, vni := range cfg.vnis {
		for _, proto := range cfg.protos {
			sent, refused := 0, 0
			var firstErr error
			for i := 0; i < cfg.count; i++ {
				inner := innerPacket(proto, netip.AddrPortFrom(cfg.innerSrc, uint16(40000+i)), cfg.dst, uint16(i), []byte(markerMagic+cfg.marker))
				frame := vxlanDatagram(vni, deviceMAC(cfg.gateway), deviceMAC(local), inner)
				if _, err := conn.Write(frame); err != nil {
					refused++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					sent++
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(cfg.interval):
				}
			}
			fmt.Fprintf(p.stdout, "vni %d %s: sent %d, refused %d", vni, proto, sent, refused)
			if firstErr != nil {
				fmt.Fprintf(p.stdout, " (%v)", firstErr)
			}
			fmt.Fprintln(p.stdout)
		}
	}
	return nil
}

// deviceMAC is the MAC address of every nsegress device of the node with
// underlay address ip: 02:6e followed by the address's octets.
func deviceMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x02, 0x6e, b[0], b[1], b[2], b[3]}
}

// vxlanDatagram is the payload of a VXLAN UDP datagram: the 8-byte VXLAN
// header (flags 0x08: the VNI is valid) and an Ethernet frame from src to
// dst carrying the IPv4 packet inner.
func vxlanDatagram(vni uint32, dst, src net.HardwareAddr, inner []byte) []byte {
	out := make([]byte, 0, 8+14+len(inner))
	out = append(out, 0x08, 0, 0, 0, byte(vni>>16), byte(vni>>8), byte(vni), 0)
	out = append(out, dst...)
	out = append(out, src...)
	out = append(out, 0x08, 0x00) // EtherType IPv4
	return append(out, inner...)
}

// innerPacket is an IPv4 packet from src to dst carrying payload: a UDP
// datagram, or for "tcp" a SYN with the payload as data (which a backend
// kernel discards, but a raw socket sees). Checksums are complete, so
// that no hop drops it for a bad one.
func innerPacket(proto string, src, dst netip.AddrPort, id uint16, payload []byte) []byte {
	var l4 []byte
	var protoNum byte
	switch proto {
	case "tcp":
		protoNum = 6
		l4 = make([]byte, 20, 20+len(payload))
		binary.BigEndian.PutUint16(l4[0:], src.Port())
		binary.BigEndian.PutUint16(l4[2:], dst.Port())
		binary.BigEndian.PutUint32(l4[4:], 0x6e000000|uint32(id)) // sequence number
		l4[12] = 5 << 4                                           // data offset: 20 bytes
		l4[13] = 0x02                                             // SYN
		binary.BigEndian.PutUint16(l4[14:], 65535)                // window
		l4 = append(l4, payload...)
		binary.BigEndian.PutUint16(l4[16:], l4Checksum(src.Addr(), dst.Addr(), protoNum, l4))
	default:
		protoNum = 17
		l4 = make([]byte, 8, 8+len(payload))
		binary.BigEndian.PutUint16(l4[0:], src.Port())
		binary.BigEndian.PutUint16(l4[2:], dst.Port())
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(payload)))
		l4 = append(l4, payload...)
		sum := l4Checksum(src.Addr(), dst.Addr(), protoNum, l4)
		if sum == 0 {
			sum = 0xffff // 0 means "no checksum" in UDP
		}
		binary.BigEndian.PutUint16(l4[6:], sum)
	}
	ip := make([]byte, 20, 20+len(l4))
	ip[0] = 0x45 // IPv4, 20-byte header
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(ip[4:], id)
	ip[8], ip[9] = 64, protoNum // TTL, protocol
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(0, ip))
	return append(ip, l4...)
}

// l4Checksum is the TCP or UDP checksum of segment, over the IPv4
// pseudo-header.
func l4Checksum(src, dst netip.Addr, proto byte, segment []byte) uint16 {
	s, d := src.As4(), dst.As4()
	pseudo := make([]byte, 0, 12)
	pseudo = append(pseudo, s[:]...)
	pseudo = append(pseudo, d[:]...)
	pseudo = append(pseudo, 0, proto, byte(len(segment)>>8), byte(len(segment)))
	return checksum(sum16(0, pseudo), segment)
}

// sum16 adds b to the ones'-complement running sum.
func sum16(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

// checksum is the Internet checksum of b, continuing a running sum.
func checksum(sum uint32, b []byte) uint16 {
	sum = sum16(sum, b)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// sendMarkerConfig is the parsed command line of "labbox send-marker".
type sendMarkerConfig struct {
	proto string
	// src, when valid, is the local address to send from.
	src     netip.Addr
	dst     netip.AddrPort
	marker  string
	timeout time.Duration
	// spoof sends one packet from src over a raw socket, src being an
	// address this host does not have (needs CAP_NET_RAW, which pods
	// have by default): a pod forging another pod's address.
	spoof bool
}

func parseSendMarker(fs *flag.FlagSet, args []string) (sendMarkerConfig, error) {
	var cfg sendMarkerConfig
	var dst, src string
	fs.StringVar(&src, "src", "", "send from local `address` (bind before connecting)")
	fs.StringVar(&cfg.proto, "proto", "tcp", "`protocol`: tcp (one connection) or udp (one datagram)")
	fs.StringVar(&dst, "dst", "", "destination `ip:port`")
	fs.StringVar(&cfg.marker, "marker", "", "the `marker` the payload carries")
	fs.DurationVar(&cfg.timeout, "timeout", 3*time.Second, "give up after `duration`")
	fs.BoolVar(&cfg.spoof, "spoof", false, "send one packet from -src over a raw socket, without owning the address")
	if err := parseFlags(fs, args); err != nil {
		return sendMarkerConfig{}, err
	}
	if fs.NArg() != 0 {
		return sendMarkerConfig{}, usagef("send-marker takes no arguments, got %q", fs.Args())
	}
	var err error
	if cfg.dst, err = netip.ParseAddrPort(dst); err != nil {
		return sendMarkerConfig{}, usagef("send-marker: -dst %q is not an ip:port", dst)
	}
	if src != "" {
		if cfg.src, err = netip.ParseAddr(src); err != nil {
			return sendMarkerConfig{}, usagef("send-marker: -src %q is not an address", src)
		}
	}
	if cfg.proto != "tcp" && cfg.proto != "udp" {
		return sendMarkerConfig{}, usagef("send-marker: -proto %q: want tcp or udp", cfg.proto)
	}
	if err := checkMarker(cfg.marker); err != nil {
		return sendMarkerConfig{}, usagef("send-marker: %v", err)
	}
	if cfg.timeout <= 0 {
		return sendMarkerConfig{}, usagef("send-marker: -timeout must be positive")
	}
	if cfg.spoof && !cfg.src.IsValid() {
		return sendMarkerConfig{}, usagef("send-marker: -spoof needs -src")
	}
	return cfg, nil
}

// sendSpoofed sends the marker in one IPv4 packet from cfg.src (an address
// this host need not have) over a raw socket: a UDP datagram, or a TCP SYN
// carrying it.
func sendSpoofed(cfg sendMarkerConfig) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	pkt := innerPacket(cfg.proto, netip.AddrPortFrom(cfg.src, 40001), cfg.dst, 1, []byte(markerMagic+cfg.marker))
	to := &unix.SockaddrInet4{Addr: cfg.dst.Addr().As4()}
	if err := unix.Sendto(fd, pkt, 0, to); err != nil {
		return fmt.Errorf("send from %s to %s: %w", cfg.src, cfg.dst, err)
	}
	return nil
}

// runSendMarker implements "labbox send-marker": the marker over an
// ordinary socket, through whatever path this host's packets take. It is
// the control of the forgery tests: what it sends through an allowed path
// must be counted by the backend.
func runSendMarker(ctx context.Context, p proc, fs *flag.FlagSet, args []string) error {
	cfg, err := parseSendMarker(fs, args)
	if err != nil {
		return err
	}
	if cfg.spoof {
		if err := sendSpoofed(cfg); err != nil {
			return err
		}
		fmt.Fprintf(p.stdout, "sent %s over raw %s from %s to %s\n", cfg.marker, cfg.proto, cfg.src, cfg.dst)
		return nil
	}
	d := net.Dialer{Timeout: cfg.timeout}
	if cfg.src.IsValid() {
		if cfg.proto == "tcp" {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(cfg.src, 0))
		} else {
			d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(cfg.src, 0))
		}
	}
	conn, err := d.DialContext(ctx, cfg.proto+"4", cfg.dst.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(cfg.timeout))
	if _, err := conn.Write([]byte(markerMagic + cfg.marker)); err != nil {
		return fmt.Errorf("send to %s: %w", cfg.dst, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		// Wait for the peer's answer or close, so that the marker is
		// known to have arrived before the command returns.
		_ = tc.CloseWrite()
		buf := make([]byte, 512)
		for {
			if _, err := tc.Read(buf); err != nil {
				break
			}
		}
	}
	fmt.Fprintf(p.stdout, "sent %s over %s from %s to %s\n", cfg.marker, cfg.proto, conn.LocalAddr(), cfg.dst)
	return nil
}
