package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsegress/nsegress/e2e/privtest"
	"github.com/nsegress/nsegress/nft"
)

// forgedMarker is in the payload of every forged packet, so that the
// backend counts what arrives of them: "nothing arrived" is measured.
const forgedMarker = "nsegress-forged-datagram"

// sinkPort is where the backend counts forged datagrams.
const sinkPort = 9999

// forgedVXLAN is a VXLAN datagram's payload that a gateway holding the
// egress IP of policy vni would decapsulate, mark and SNAT: an inner UDP
// datagram from innerSrc to the backend's sink, addressed to the
// gateway's tunnel device, as the worker's kernel would send it.
func forgedVXLAN(vni uint32, innerSrc netip.Addr) []byte {
	payload := []byte(forgedMarker)
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], sinkPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...) // checksum 0: none, as IPv4 allows
	ip := make([]byte, 20, 20+len(udp))
	ip[0], ip[8], ip[9] = 0x45, 64, 17 // IPv4, 20-byte header; TTL; UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	src, dst := innerSrc.As4(), backendIP.As4()
	copy(ip[12:], src[:])
	copy(ip[16:], dst[:])
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	ip = append(ip, udp...)
	frame := append(append(append([]byte{}, DeviceMAC(gatewayIP)...), DeviceMAC(workerIP)...), 0x08, 0x00)
	frame = append(frame, ip...)
	hdr := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	return append(hdr, frame...)
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// sendForged sends the forged datagram to the gateway's tunnel port from
// inside n, count times.
func sendForged(n *testNS, vni uint32, innerSrc netip.Addr, count int) error {
	return n.do(func() error { return sendForgedHere(vni, innerSrc, count) })
}

func sendForgedHere(vni uint32, innerSrc netip.Addr, count int) error {
	c, err := net.Dial("udp4", net.JoinHostPort(gatewayIP.String(), strconv.Itoa(DefaultPort)))
	if err != nil {
		return err
	}
	defer c.Close()
	for range count {
		// A send may be refused (an ICMP error of an earlier one); the
		// backend's count is what the test judges.
		_, _ = c.Write(forgedVXLAN(vni, innerSrc))
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// forgedSink counts the forged datagrams that reach the backend.
type forgedSink struct{ n atomic.Int64 }

func startForgedSink(t *testing.T, n *testNS) *forgedSink {
	t.Helper()
	var conn net.PacketConn
	n.must(t, "listen for forged datagrams", func() error {
		var err error
		conn, err = net.ListenPacket("udp4", net.JoinHostPort(backendIP.String(), strconv.Itoa(sinkPort)))
		return err
	})
	t.Cleanup(func() { _ = conn.Close() })
	s := &forgedSink{}
	go func() {
		buf := make([]byte, 2048)
		for {
			m, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if bytes.Contains(buf[:m], []byte(forgedMarker)) {
				s.n.Add(1)
			}
		}
	}()
	return s
}

// forgeHelperEnv makes this test binary the unprivileged forger of
// TestForgedTunnelTrafficIsNeverSNATed: "vni,innerSrc".
const forgeHelperEnv = "NSEGRESS_FORGE_HELPER"

// TestForgeHelperProcess is not a test: the test binary runs it as an
// unprivileged process inside the worker's namespace.
func TestForgeHelperProcess(t *testing.T) {
	spec := os.Getenv(forgeHelperEnv)
	if spec == "" {
		return
	}
	var vni uint32
	var src string
	if _, err := fmt.Sscanf(spec, "%d,%s", &vni, &src); err != nil {
		t.Fatal(err)
	}
	if err := sendForgedHere(vni, netip.MustParseAddr(src), 10); err != nil {
		t.Fatal(err)
	}
}

// sendForgedUnprivileged runs the forger as user nobody in n.
func sendForgedUnprivileged(t *testing.T, n *testNS, vni uint32, innerSrc netip.Addr) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A copy of the binary that nobody can reach and run.
	dir, err := os.MkdirTemp("", "nsegress-forger")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := dir + "/forger"
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+privtest.NetNSPath(n.h), "--setuid=65534", "--setgid=65534", "--",
		bin, "-test.run=^TestForgeHelperProcess$")
	cmd.Env = append(os.Environ(), forgeHelperEnv+"="+fmt.Sprintf("%d,%s", vni, innerSrc))
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run the unprivileged forger: %v\n%s", err, out)
	}
	t.Logf("unprivileged forger: %v\n%s", err, out)
}

// TestForgedTunnelTrafficIsNeverSNATed sends VXLAN datagrams that carry
// a frame for the policy's tunnel to the gateway: from a pod of the
// worker that no policy selects (the primary's masquerade gives it the
// worker's address, the one source the gateway accepts tunnel traffic
// from), from an unprivileged process of the worker, and from a host
// outside the cluster. The inner source is the selected pod's address,
// and then the sender's own. The backend counts what arrives: nothing
// may. The selected pod still reaches the backend, and a client inside
// the destinations that connects in to the selected pod gets its
// answers from the pod's own address, not the egress IP.
func TestForgedTunnelTrafficIsNeverSNATed(t *testing.T) {
	requireNetNS(t)
	l := newLab(t)
	programPolicy(t, l, map[nft.PodKey]uint16{{IP: podIP, HostIf: podHostIf}: 1}, nil)
	sink := startForgedSink(t, l.backend)

	step(t, "the selected pod reaches the backend with the egress IP", func(t *testing.T) {
		if src, _ := whoami(t, l.pod, backendURL); src != egressIP {
			t.Fatalf("the backend saw %s, want %s", src, egressIP)
		}
	})

	const vni = 1
	for _, c := range []struct {
		name string
		send func(t *testing.T, innerSrc netip.Addr)
	}{
		{"a pod no policy selects", func(t *testing.T, innerSrc netip.Addr) {
			if err := sendForged(l.pod2, vni, innerSrc, 10); err != nil {
				t.Fatal(err)
			}
		}},
		{"an unprivileged process of the worker", func(t *testing.T, innerSrc netip.Addr) {
			sendForgedUnprivileged(t, l.worker, vni, innerSrc)
		}},
		{"a host outside the cluster", func(t *testing.T, innerSrc netip.Addr) {
			if err := sendForged(l.router, vni, innerSrc, 10); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		for _, innerSrc := range []netip.Addr{podIP, pod2IP} {
			step(t, fmt.Sprintf("%s forging tunnel traffic from %s", c.name, innerSrc), func(t *testing.T) {
				before := sink.n.Load()
				c.send(t, innerSrc)
				// Forged datagrams that got through would arrive in
				// milliseconds; give them a generous second.
				time.Sleep(time.Second)
				if got := sink.n.Load() - before; got != 0 {
					t.Errorf("the backend received %d forged datagrams, SNATed to the egress IP", got)
				}
			})
		}
	}

	// Root on the worker is trusted with its own pods' range (the trust
	// boundary), but not with anyone else's: an inner source outside the
	// worker's range is dropped at the gateway, before decapsulation.
	for _, innerSrc := range []netip.Addr{workerIP, gatewayPods.Addr().Next(), netip.MustParseAddr("192.0.2.7")} {
		step(t, fmt.Sprintf("root on the worker tunnelling %s, outside its pod range", innerSrc), func(t *testing.T) {
			before := sink.n.Load()
			if err := sendForged(l.worker, vni, innerSrc, 10); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if got := sink.n.Load() - before; got != 0 {
				t.Errorf("the backend received %d forged datagrams, SNATed to the egress IP", got)
			}
		})
	}
	step(t, "root on the worker tunnelling from its own pod range is the trust assumption: it arrives", func(t *testing.T) {
		// The control case: what the rule above keeps out is not kept out
		// by anything else, so the drops are the source check's.
		before := sink.n.Load()
		if err := sendForged(l.worker, vni, workerPods.Addr().Next().Next(), 10); err != nil {
			t.Fatal(err)
		}
		privtest.Eventually(t, 5*time.Second, "a datagram from the worker's own range at the backend", func() (bool, error) {
			return sink.n.Load() > before, nil
		})
	})

	step(t, "a client inside the destinations that connects in gets answers from the pod's own address", func(t *testing.T) {
		// The firewall lets the backend's network reach the pods, and
		// the router knows the way.
		l.router.run(t, "nft", "add", "rule", "inet", "firewall", "forward", "ip", "saddr", backendNs.String(), "ip", "daddr", "198.18.0.0/16", "accept")
		l.router.run(t, "ip", "route", "add", "198.18.1.0/24", "via", workerIP.String())
		podSrv := startEcho(t, l.pod, netip.AddrPortFrom(podIP, 8080))
		wBefore := l.worker.stats(t, "nsg1")
		b, err := l.backend.get(answerTimeout, "http://"+podIP.String()+":8080/whoami")
		if err != nil {
			t.Fatalf("the backend's connection to the pod: %v (its replies were steered)", err)
		}
		if got := podSrv.sources(); len(got) != 1 || got[0] != backendIP {
			t.Errorf("the pod saw %v (answer %q), want the backend %s", got, b, backendIP)
		}
		if w := l.worker.stats(t, "nsg1"); w.TxPackets != wBefore.TxPackets {
			t.Errorf("the pod's replies went into the tunnel (tx %d -> %d)", wBefore.TxPackets, w.TxPackets)
		}
	})
}

// TestAWorkerSteeringWithAnOldGenerationIsNotSNATed: tunnel ID 1 meant
// one policy on the worker, which has not seen the change yet, and means
// another on the gateway now. The worker's VNI names the old generation,
// for which the gateway has no device: nothing is SNATed. Once the worker
// catches up, the pod's traffic flows again.
func TestAWorkerSteeringWithAnOldGenerationIsNotSNATed(t *testing.T) {
	requireNetNS(t)
	l := newLab(t)
	workerTable := openTable(t, l.worker)
	gatewayTable := openTable(t, l.gateway)
	withGeneration := func(p Plan, gen uint16) Plan {
		p.Tunnels[0].Generation = gen
		return p
	}
	oldGen, newGen := TunnelGeneration("uid-of-the-deleted-policy"), TunnelGeneration("uid-of-the-new-policy")
	applyPlan(t, l.worker, withGeneration(workerPlan(), oldGen))
	if err := workerTable.Apply(nftState(workerPlan(), map[nft.PodKey]uint16{{IP: podIP, HostIf: podHostIf}: 1})); err != nil {
		t.Fatal(err)
	}
	applyPlan(t, l.gateway, withGeneration(gatewayPlan(), newGen))
	if err := gatewayTable.Apply(nftState(gatewayPlan(), nil)); err != nil {
		t.Fatal(err)
	}
	step(t, "the stale worker's traffic is dropped at the gateway", func(t *testing.T) {
		expectDropped(t, l.pod, backendURL)
		if got := l.backendSrv.sources(); len(got) != 0 {
			t.Errorf("the backend saw %v", got)
		}
	})
	step(t, "the worker catches up and the pod reaches the backend", func(t *testing.T) {
		applyPlan(t, l.worker, withGeneration(workerPlan(), newGen))
		if src, _ := whoami(t, l.pod, backendURL); src != egressIP {
			t.Errorf("the backend saw %s, want %s", src, egressIP)
		}
	})
}
