package ha

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// arpSocket sends ARP requests on the uplink and reads every ARP frame
// there: the answers to its probes, and announcements of addresses this
// node holds by other machines.
type arpSocket struct {
	fd  int
	ifi *net.Interface
	src netip.Addr

	mu      sync.Mutex
	waiters map[netip.Addr][]chan net.HardwareAddr
	// seen is called for every ARP frame another machine sends, with its
	// sender address and MAC.
	seen func(ip netip.Addr, mac net.HardwareAddr)
}

// openARP opens the socket on uplink; src is the sender address of its
// probes (the node's own, so every stack answers it).
func openARP(uplink string, src netip.Addr, seen func(netip.Addr, net.HardwareAddr)) (*arpSocket, error) {
	ifi, err := net.InterfaceByName(uplink)
	if err != nil {
		return nil, fmt.Errorf("ARP on %s: %w", uplink, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return nil, fmt.Errorf("ARP on %s: packet socket: %w", uplink, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index}); err != nil {
		_ = unix.Close(fd) // the bind error is what matters
		return nil, fmt.Errorf("ARP on %s: bind: %w", uplink, err)
	}
	// A read wakes at least every 200 ms, so that close is noticed.
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("ARP on %s: %w", uplink, err)
	}
	return &arpSocket{fd: fd, ifi: ifi, src: src, waiters: map[netip.Addr][]chan net.HardwareAddr{}, seen: seen}, nil
}

// read delivers ARP frames until done is closed.
func (s *arpSocket) read(done <-chan struct{}) {
	buf := make([]byte, 1500)
	for {
		select {
		case <-done:
			return
		default:
		}
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		ip, mac, ok := parseARP(buf[:n])
		if !ok || bytes.Equal(mac, s.ifi.HardwareAddr) {
			continue
		}
		s.mu.Lock()
		ws := s.waiters[ip]
		delete(s.waiters, ip)
		s.mu.Unlock()
		for _, w := range ws {
			w <- mac
		}
		if s.seen != nil {
			s.seen(ip, mac)
		}
	}
}

// probe asks who has ip, tries times, waiting wait after each; it says
// whether anyone answered.
func (s *arpSocket) probe(ip netip.Addr, tries int, wait time.Duration) bool {
	return s.probeMAC(ip, tries, wait) != nil
}

// probeMAC is probe returning who answered, or nil.
func (s *arpSocket) probeMAC(ip netip.Addr, tries int, wait time.Duration) net.HardwareAddr {
	ch := make(chan net.HardwareAddr, 1)
	s.mu.Lock()
	s.waiters[ip] = append(s.waiters[ip], ch)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.waiters[ip] = removeChan(s.waiters[ip], ch)
		if len(s.waiters[ip]) == 0 {
			delete(s.waiters, ip)
		}
		s.mu.Unlock()
	}()
	for range tries {
		// A send that fails (the uplink is down) is a probe nobody
		// answers.
		_ = s.send(arpFrame(1, s.ifi.HardwareAddr, s.src, ip))
		select {
		case mac := <-ch:
			return mac
		case <-time.After(wait):
		}
	}
	return nil
}

// announce sends a gratuitous ARP for ip.
func (s *arpSocket) announce(ip netip.Addr) error {
	return s.send(arpFrame(1, s.ifi.HardwareAddr, ip, ip))
}

func (s *arpSocket) send(frame []byte) error {
	to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: s.ifi.Index, Halen: 6,
		Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	if err := unix.Sendto(s.fd, frame, 0, to); err != nil {
		return fmt.Errorf("ARP on %s: %w", s.ifi.Name, err)
	}
	return nil
}

func (s *arpSocket) close() error { return unix.Close(s.fd) }

func removeChan(cs []chan net.HardwareAddr, c chan net.HardwareAddr) []chan net.HardwareAddr {
	out := cs[:0]
	for _, x := range cs {
		if x != c {
			out = append(out, x)
		}
	}
	return out
}

// arpFrame is an Ethernet/IPv4 ARP packet of operation op from (mac, src)
// about target.
func arpFrame(op uint16, mac net.HardwareAddr, src, target netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], op)
	copy(b[8:14], mac)
	s, t := src.As4(), target.As4()
	copy(b[14:18], s[:])
	copy(b[24:28], t[:])
	return b
}

// parseARP returns an Ethernet/IPv4 ARP packet's sender address and MAC.
func parseARP(b []byte) (netip.Addr, net.HardwareAddr, bool) {
	if len(b) < 28 || binary.BigEndian.Uint16(b[0:]) != 1 || binary.BigEndian.Uint16(b[2:]) != 0x0800 || b[4] != 6 || b[5] != 4 {
		return netip.Addr{}, nil, false
	}
	ip := netip.AddrFrom4([4]byte(b[14:18]))
	if !ip.IsValid() || ip.IsUnspecified() {
		return netip.Addr{}, nil, false
	}
	return ip, net.HardwareAddr(bytes.Clone(b[8:14])), true
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
