package datapath

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Announce sends a gratuitous ARP for ip from the uplink, so that the
// underlay's neighbours (the firewall, the router) learn at once which
// node holds the floating IP now.
func Announce(uplink string, ip netip.Addr) error {
	ifi, err := net.InterfaceByName(uplink)
	if err != nil {
		return fmt.Errorf("announce %s: %w", ip, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return fmt.Errorf("announce %s: packet socket: %w", ip, err)
	}
	// The frame is sent or Sendto failed: a failed close of the socket
	// has nothing left to report.
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{
		Protocol: htons(unix.ETH_P_ARP),
		Ifindex:  ifi.Index,
		Halen:    6,
		Addr:     [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
	if err := unix.Sendto(fd, garp(ifi.HardwareAddr, ip), 0, to); err != nil {
		return fmt.Errorf("announce %s on %s: %w", ip, uplink, err)
	}
	return nil
}

// garp is an ARP request whose sender and target are both ip: the form
// every stack accepts as an update of its neighbour entry.
func garp(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	copy(b[8:14], mac)
	a := ip.As4()
	copy(b[14:18], a[:])
	// target hardware address stays zero
	copy(b[24:28], a[:])
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
