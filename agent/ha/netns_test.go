package ha

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/nsegress/nsegress/e2e/privtest"
)

// segment is a throwaway underlay: a switch namespace with a bridge, a
// router (.1) and two gateways (.21, .22), each on a veth named eth0.
type segment struct {
	t      *testing.T
	sw     netns.NsHandle
	router netns.NsHandle
	gws    map[string]netns.NsHandle
	addrs  map[string]netip.Addr
}

func run(t *testing.T, ns netns.NsHandle, args ...string) {
	t.Helper()
	if out, err := privtest.RunIn(ns, "", args...); err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
}

func newSegment(t *testing.T) *segment {
	privtest.Require(t)
	s := &segment{t: t, sw: privtest.NewNetNS(t), router: privtest.NewNetNS(t), gws: map[string]netns.NsHandle{},
		addrs: map[string]netip.Addr{"gw-1": netip.MustParseAddr("198.51.100.21"), "gw-2": netip.MustParseAddr("198.51.100.22")}}
	run(t, s.sw, "ip", "link", "add", "br0", "type", "bridge")
	run(t, s.sw, "ip", "link", "set", "br0", "up")
	attach := func(name string, ns netns.NsHandle, addr string) {
		run(t, s.sw, "ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", privtest.NetNSPath(ns))
		run(t, s.sw, "ip", "link", "set", name, "master", "br0", "up")
		run(t, ns, "ip", "addr", "add", addr+"/24", "dev", "eth0")
		run(t, ns, "ip", "link", "set", "eth0", "up")
		run(t, ns, "ip", "link", "set", "lo", "up")
	}
	attach("r", s.router, "198.51.100.1")
	for _, n := range []string{"gw-1", "gw-2"} {
		ns := privtest.NewNetNS(t)
		s.gws[n] = ns
		attach(n, ns, s.addrs[n].String())
		run(t, ns, "ip", "route", "add", "default", "via", "198.51.100.1")
	}
	return s
}

// gateway is one gateway's runtime with a stand-in for the node role:
// at every kick it holds the floating IPs the runtime gives it, and
// releases the rest.
type gateway struct {
	name   string
	r      *Runtime
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *segment) start(name string, w World) *gateway {
	t := s.t
	ns := s.gws[name]
	kicks := make(chan struct{}, 1)
	r := New(Config{NodeName: name, Uplink: "eth0", Key: []byte("0123456789abcdef0123456789abcdef"), Logf: t.Logf,
		Kick: func() {
			select {
			case kicks <- struct{}{}:
			default:
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{name: name, r: r, cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := privtest.Do(ns, func() error { return r.Run(ctx) }); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}()
	go func() {
		defer wg.Done()
		held := map[netip.Addr]bool{}
		apply := func() {
			for ip, h := range r.Update(w) {
				mine := h.Node == name
				if mine == held[ip] {
					continue
				}
				verb := "del"
				if mine {
					verb = "add"
				}
				if out, err := privtest.RunIn(ns, "", "ip", "addr", verb, ip.String()+"/32", "dev", "eth0"); err != nil && !strings.Contains(out, "exists") {
					t.Errorf("%s: ip addr %s %s: %v: %s", name, verb, ip, err, out)
				}
				held[ip] = mine
				if mine {
					r.Holding([]netip.Addr{ip})
				}
			}
		}
		apply()
		for {
			select {
			case <-ctx.Done():
				return
			case <-kicks:
				apply()
			case <-time.After(100 * time.Millisecond):
				apply()
			}
		}
	}()
	go func() { wg.Wait(); close(g.done) }()
	return g
}

func (g *gateway) stop() {
	g.cancel()
	<-g.done
}

// holders are the gateways whose eth0 has ip.
func (s *segment) holders(ip netip.Addr) []string {
	var out []string
	for _, n := range []string{"gw-1", "gw-2"} {
		o, err := privtest.RunIn(s.gws[n], "", "ip", "-4", "-o", "addr", "show", "dev", "eth0")
		if err == nil && strings.Contains(o, " "+ip.String()+"/32") {
			out = append(out, n)
		}
	}
	return out
}

func (s *segment) world() World {
	return World{
		Nodes:  map[string]netip.Addr{"gw-1": s.addrs["gw-1"], "gw-2": s.addrs["gw-2"]},
		Groups: []Group{{Members: []string{"gw-1", "gw-2"}, IPs: map[netip.Addr]Assignment{ip1: {Active: "gw-1", Standby: "gw-2", Epoch: 1}}}},
	}
}

// holding starts gw-1 with world w1 and gw-2 with w2, and returns once
// gw-1 holds ip1 and their heartbeats flow.
func (s *segment) holding(w1, w2 World) (gw1, gw2 *gateway) {
	gw1, gw2 = s.start("gw-1", w1), s.start("gw-2", w2)
	waitFor(s.t, "gw-1 holds the IP", 2*time.Second, func() bool { return equal(s.holders(ip1), "gw-1") })
	time.Sleep(300 * time.Millisecond) // heartbeats flowing
	return gw1, gw2
}

func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if ok() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("not within %s: %s", within, what)
	return 0
}

func equal(a []string, b ...string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestADeadAgentOnALiveGatewayMovesNothing(t *testing.T) {
	s := newSegment(t)
	gw1, gw2 := s.holding(s.world(), s.world())
	defer gw2.stop()
	gw1.stop() // the agent dies; the kernel keeps the IP and answers ARP
	time.Sleep(time.Second)
	if h := s.holders(ip1); !equal(h, "gw-1") {
		t.Fatalf("a second after gw-1's agent died, %s is held by %v; want gw-1 alone", ip1, h)
	}
	if h := gw2.r.Holders()[ip1]; h != (Holder{"gw-1", 1}) {
		t.Errorf("gw-2 thinks %+v holds it", h)
	}
}

// How fast is BenchmarkGatewayFailover's to say (e2e); this test says
// that the standby takes over, at the next epoch.
func TestTheStandbyTakesOverADeadGateway(t *testing.T) {
	s := newSegment(t)
	gw1, gw2 := s.holding(s.world(), s.world())
	defer gw2.stop()
	// The node dies: its agent with it, and its link.
	gw1.stop()
	run(t, s.gws["gw-1"], "ip", "link", "set", "eth0", "down")
	took := waitFor(t, "gw-2 holds the IP", 2*time.Second, func() bool {
		return gw2.r.Holders()[ip1] == Holder{"gw-2", 2} && slicesContain(s.holders(ip1), "gw-2")
	})
	t.Logf("gw-2 held %s %s after gw-1 died", ip1, took)
}

func TestAPartitionedHolderFencesItselfAndYieldsOnHeal(t *testing.T) {
	s := newSegment(t)
	gw1, gw2 := s.holding(s.world(), s.world())
	defer gw1.stop()
	defer gw2.stop()
	// Cut gw-1 off the switch; its agent runs on.
	run(t, s.sw, "ip", "link", "set", "gw-1", "down")
	waitFor(t, "gw-2 takes the IP over", 2*time.Second, func() bool { return slicesContain(s.holders(ip1), "gw-2") })
	waitFor(t, "gw-1 fences itself", 3*time.Second, func() bool { return !slicesContain(s.holders(ip1), "gw-1") })
	time.Sleep(2 * time.Second)
	run(t, s.sw, "ip", "link", "set", "gw-1", "up")
	// Healed: exactly one holder, the newer one, and it stays so.
	waitFor(t, "gw-1 hears gw-2's claim", 2*time.Second, func() bool { return gw1.r.Holders()[ip1] == Holder{"gw-2", 2} })
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if h := s.holders(ip1); !equal(h, "gw-2") {
			t.Fatalf("after the heal %s is held by %v; want gw-2 alone", ip1, h)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestAStandbyWithAStaleViewLearnsItsDutyFromTheHolder(t *testing.T) {
	s := newSegment(t)
	// gw-2's own view of the API is stale: it does not know it is the
	// standby (its watches broke, say). gw-1's heartbeats tell it.
	stale := s.world()
	stale.Groups[0].IPs[ip1] = Assignment{Active: "gw-1", Epoch: 1}
	gw1, gw2 := s.holding(s.world(), stale)
	defer gw2.stop()
	gw1.stop()
	run(t, s.gws["gw-1"], "ip", "link", "set", "eth0", "down")
	waitFor(t, "gw-2 holds the IP", 2*time.Second, func() bool { return slicesContain(s.holders(ip1), "gw-2") })
}
