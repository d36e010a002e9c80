package datapath

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

// TestPodInterfaceFindsWhatADDFound: the agent rebuilds a lost pod record
// from the pod's address alone. On a ptp-style node that is the veth the
// node routes the address through; on a bridge, the bridge and the pod's
// port, once the bridge has heard the pod; an address routed elsewhere
// (the uplink, nowhere) is no local pod's.
func TestPodInterfaceFindsWhatADDFound(t *testing.T) {
	requireNetNS(t)
	node := newTestNS(t, "podif-node")
	ptpPod, bridged := newTestNS(t, "podif-ptp"), newTestNS(t, "podif-bridged")
	ptpIP, bridgedIP := netip.MustParseAddr("198.18.1.7"), netip.MustParseAddr("198.18.2.7")

	veth(t, node, "vethptp", ptpPod, "eth0")
	node.run(t, "ip", "addr", "add", "198.18.1.1/32", "dev", "vethptp")
	node.run(t, "ip", "route", "add", ptpIP.String()+"/32", "dev", "vethptp")
	ptpPod.run(t, "ip", "addr", "add", ptpIP.String()+"/32", "dev", "eth0")

	node.run(t, "ip", "link", "add", "cni0", "type", "bridge")
	node.run(t, "ip", "addr", "add", "198.18.2.1/24", "dev", "cni0")
	node.run(t, "ip", "link", "set", "cni0", "up")
	veth(t, node, "vethbr", bridged, "eth0")
	node.run(t, "ip", "link", "set", "vethbr", "master", "cni0")
	bridged.run(t, "ip", "addr", "add", bridgedIP.String()+"/24", "dev", "eth0")

	find := func(ip netip.Addr) (hostIf, port string, err error) {
		node.must(t, "PodInterface", func() error {
			hostIf, port, err = PodInterface(ip, "eth0")
			return nil
		})
		return
	}
	if hostIf, port, err := find(ptpIP); err != nil || hostIf != "vethptp" || port != "" {
		t.Errorf("ptp pod: %q, %q, %v; want vethptp", hostIf, port, err)
	}
	if _, _, err := find(bridgedIP); !errors.Is(err, ErrNotLocalPod) {
		t.Errorf("a bridged pod the bridge has not heard: %v; want ErrNotLocalPod (its port is unknown)", err)
	}
	// The pod speaks: the node learns its neighbour entry, the bridge its
	// port.
	bridged.must(t, "send to the bridge", func() error {
		c, err := net.Dial("udp4", "198.18.2.1:9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		return err
	})
	var hostIf, port string
	var err error
	for range 50 {
		if hostIf, port, err = find(bridgedIP); err == nil {
			break
		}
		node.run(t, "sleep", "0.1")
	}
	if err != nil || hostIf != "cni0" || port != "vethbr" {
		t.Errorf("bridged pod: %q, %q, %v; want cni0 and its port vethbr", hostIf, port, err)
	}
	if _, _, err := find(netip.MustParseAddr("203.0.113.9")); !errors.Is(err, ErrNotLocalPod) {
		t.Errorf("an address routed nowhere: %v; want ErrNotLocalPod", err)
	}
	// The node's uplink is a veth too (as in the lab): a pod's address
	// routed through it, by the default route or its connected network,
	// is no local pod's.
	uplinkPeer := newTestNS(t, "podif-router")
	veth(t, node, "eth0", uplinkPeer, "eth0")
	node.run(t, "ip", "addr", "add", "192.0.2.10/24", "dev", "eth0")
	node.run(t, "ip", "route", "add", "default", "via", "192.0.2.1")
	for _, ip := range []string{"203.0.113.9", "192.0.2.77"} {
		if _, _, err := find(netip.MustParseAddr(ip)); !errors.Is(err, ErrNotLocalPod) {
			t.Errorf("%s, routed through the uplink: %v; want ErrNotLocalPod", ip, err)
		}
	}
}
