package datapath

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/nsegress/nsegress/nft"
)

// TestAPodOnABridgeCannotBorrowItsNeighboursPolicy: on a bridge primary
// every pod's packets reach the IP layer on the bridge, so the pods map
// cannot tell a selected pod from a neighbour that forges its address.
// The bridge guard does: a frame with the selected pod's address as
// source must enter the bridge on that pod's port. The neighbour's forged
// datagrams never reach the backend; the selected pod's own do.
func TestAPodOnABridgeCannotBorrowItsNeighboursPolicy(t *testing.T) {
	requireNetNS(t)
	l := newLab(t)
	selected, neighbour := newTestNS(t, "bridged-selected"), newTestNS(t, "bridged-neighbour")
	selectedIP, neighbourIP := netip.MustParseAddr("198.18.2.5"), netip.MustParseAddr("198.18.2.6")
	// The bridge primary: cni0 with the pods' gateway address, a veth
	// port per pod.
	l.worker.run(t, "ip", "link", "add", "cni0", "type", "bridge")
	l.worker.run(t, "ip", "addr", "add", "198.18.2.1/24", "dev", "cni0")
	l.worker.run(t, "ip", "link", "set", "cni0", "up")
	for _, p := range []struct {
		ns   *testNS
		port string
		ip   netip.Addr
	}{{selected, "vethsel", selectedIP}, {neighbour, "vethnbr", neighbourIP}} {
		veth(t, l.worker, p.port, p.ns, "eth0")
		l.worker.run(t, "ip", "link", "set", p.port, "master", "cni0")
		p.ns.run(t, "ip", "addr", "add", p.ip.String()+"/24", "dev", "eth0")
		p.ns.run(t, "ip", "route", "add", "default", "via", "198.18.2.1")
	}
	programPolicy(t, l, map[nft.PodKey]uint16{{IP: selectedIP, HostIf: "cni0"}: 1}, map[netip.Addr]string{selectedIP: "vethsel"})
	sink := startForgedSink(t, l.backend)
	send := func(n *testNS, from netip.Addr) {
		t.Helper()
		n.must(t, "send to the backend", func() error {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)),
				net.UDPAddrFromAddrPort(netip.AddrPortFrom(backendIP, sinkPort)))
			if err != nil {
				return err
			}
			defer c.Close()
			for range 10 {
				// A lost send is judged by the backend's count.
				_, _ = c.Write([]byte(forgedMarker))
				time.Sleep(5 * time.Millisecond)
			}
			return nil
		})
	}
	step(t, "the selected pod reaches the backend with the egress IP", func(t *testing.T) {
		before := sink.n.Load()
		send(selected, selectedIP)
		time.Sleep(time.Second)
		if sink.n.Load() == before {
			t.Fatal("none of the selected pod's datagrams reached the backend: the control fails")
		}
	})
	step(t, "the neighbour forging the selected pod's address reaches nothing", func(t *testing.T) {
		neighbour.run(t, "ip", "addr", "add", selectedIP.String()+"/32", "dev", "eth0")
		before := sink.n.Load()
		send(neighbour, selectedIP)
		time.Sleep(time.Second)
		if got := sink.n.Load() - before; got != 0 {
			t.Errorf("the backend received %d of the neighbour's forged datagrams, SNATed to the selected pod's egress IP", got)
		}
	})
}
