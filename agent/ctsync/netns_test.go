package ctsync

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nsegress/nsegress/e2e/privtest"
)

// testNS is a throwaway network namespace (see privtest.NewNetNS).
type testNS struct {
	name string // for messages only
	h    netns.NsHandle
}

// requireNetNS gates the privileged tests of this package.
func requireNetNS(t testing.TB) {
	t.Helper()
	privtest.RequireTools(t, "nsenter", "ip", "nft", "sysctl")
}

// newTestNS creates a namespace that forwards, with loopback up and
// rp_filter off (the failover moves a flow's packets to other links).
func newTestNS(t testing.TB, name string) *testNS {
	t.Helper()
	n := &testNS{name: name, h: privtest.NewNetNS(t)}
	n.run(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	n.run(t, "ip", "link", "set", "lo", "up")
	return n
}

func (n *testNS) run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := privtest.RunIn(n.h, "", args...)
	if err != nil {
		t.Fatalf("in %s: %v", n.name, err)
	}
	return out
}

func (n *testNS) nft(t testing.TB, ruleset string) {
	t.Helper()
	if _, err := privtest.RunIn(n.h, ruleset, "nft", "-f", "-"); err != nil {
		t.Fatalf("in %s: %v", n.name, err)
	}
}

// do runs fn inside the namespace (privtest.Do): what fn opens lives in
// it.
func (n *testNS) do(t testing.TB, what string, fn func() error) {
	t.Helper()
	if err := privtest.Do(n.h, fn); err != nil {
		t.Fatalf("%s in %s: %v", what, n.name, err)
	}
}

// flows dumps the namespace's conntrack table.
func (n *testNS) flows(t testing.TB) []conntrack.Flow {
	t.Helper()
	var flows []conntrack.Flow
	n.do(t, "dump conntrack", func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		flows, err = c.Dump(nil)
		return err
	})
	return flows
}

// veth links a (aName, aAddr) with b (bName, bAddr), both up; the
// addresses are CIDR prefixes.
func veth(t testing.TB, a *testNS, aName, aAddr string, b *testNS, bName, bAddr string) {
	t.Helper()
	h, err := netlink.NewHandleAt(a.h)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName, PeerNamespace: netlink.NsFd(int(b.h))}
	if err := h.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s - %s/%s: %v", a.name, aName, b.name, bName, err)
	}
	for _, end := range []struct {
		n          *testNS
		name, addr string
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		end.n.run(t, "ip", "addr", "add", end.addr, "dev", end.name)
		end.n.run(t, "ip", "link", "set", "dev", end.name, "up")
	}
}

// The failover lab. Pods (the client namespace's loopback addresses)
// reach the server through gateway A, which SNATs them to the floating
// IP; gateway B has the same rules and takes the floating IP over.
//
//	client ─pod─ A ─up─ server
//	   └───pod─ B ─up────┘
//	            A ─sync─ B
var (
	podIP      = netip.MustParseAddr("198.18.0.10") // policy 1
	podIP2     = netip.MustParseAddr("198.18.0.11") // policy 1 too
	podIPOther = netip.MustParseAddr("198.18.0.12") // policy 2, floating IP not held
	serverIP   = netip.MustParseAddr("203.0.113.10")
	floatIP    = netip.MustParseAddr("198.51.100.101")
	floatOther = netip.MustParseAddr("198.51.100.102")
	syncAddrA  = netip.MustParseAddr("198.19.3.1")
	syncAddrB  = netip.MustParseAddr("198.19.3.2")
)

const (
	serverPort = 7000
	markPol1   = 0x00010000
	markPol2   = 0x00020000
)

// gatewayRules is what nsegress programs on every gateway of the group:
// mark the policy in the conntrack mark, SNAT by policy.
var gatewayRules = fmt.Sprintf(`table ip nsegress {
	chain pre {
		type filter hook prerouting priority mangle; policy accept;
		iifname "pod" ip saddr { %s, %s } ct mark set %#x
		iifname "pod" ip saddr %s ct mark set %#x
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "up" ct mark %#x snat to %s
		oifname "up" ct mark %#x snat to %s
	}
}
`, podIP, podIP2, markPol1, podIPOther, markPol2, markPol1, floatIP, markPol2, floatOther)

type lab struct {
	client, a, b, server *testNS
	ln                   net.Listener
	accepted             chan net.Conn
}

func newLab(t *testing.T) *lab {
	t.Helper()
	requireNetNS(t)
	l := &lab{
		client: newTestNS(t, "client"), a: newTestNS(t, "gateway A"),
		b: newTestNS(t, "gateway B"), server: newTestNS(t, "server"),
	}
	veth(t, l.client, "to-a", "198.18.1.2/24", l.a, "pod", "198.18.1.1/24")
	veth(t, l.client, "to-b", "198.18.2.2/24", l.b, "pod", "198.18.2.1/24")
	veth(t, l.a, "up", "198.19.1.1/24", l.server, "to-a", "198.19.1.2/24")
	veth(t, l.b, "up", "198.19.2.1/24", l.server, "to-b", "198.19.2.2/24")
	veth(t, l.a, "sync", syncAddrA.String()+"/24", l.b, "sync", syncAddrB.String()+"/24")
	for _, p := range []netip.Addr{podIP, podIP2, podIPOther} {
		l.client.run(t, "ip", "addr", "add", p.String()+"/32", "dev", "lo")
	}
	l.client.run(t, "ip", "route", "add", "203.0.113.0/24", "via", "198.18.1.1")
	l.server.run(t, "ip", "addr", "add", serverIP.String()+"/32", "dev", "lo")
	l.server.run(t, "ip", "route", "add", "198.51.100.0/24", "via", "198.19.1.1")
	l.a.run(t, "ip", "addr", "add", floatIP.String()+"/32", "dev", "up")
	for gw, n := range map[string]*testNS{"198.18.1.2": l.a, "198.18.2.2": l.b} {
		n.run(t, "ip", "route", "add", "198.18.0.0/24", "via", gw)
	}
	l.a.run(t, "ip", "route", "add", "203.0.113.0/24", "via", "198.19.1.2")
	l.b.run(t, "ip", "route", "add", "203.0.113.0/24", "via", "198.19.2.2")
	l.a.nft(t, gatewayRules)
	l.b.nft(t, gatewayRules)

	l.accepted = make(chan net.Conn, 64)
	l.server.do(t, "listen", func() error {
		var err error
		l.ln, err = net.Listen("tcp", netip.AddrPortFrom(serverIP, serverPort).String())
		return err
	})
	t.Cleanup(func() { _ = l.ln.Close() })
	go func() {
		for {
			c, err := l.ln.Accept()
			if err != nil {
				return
			}
			l.accepted <- c
		}
	}()
	return l
}

// flow is one TCP connection from a pod to the server, both ends.
type flow struct {
	name           string
	client, server net.Conn
}

// connect opens a flow from pod (port 0: any) and exchanges a first
// message each way.
func (l *lab) connect(t *testing.T, pod netip.Addr, port uint16) *flow {
	t.Helper()
	f := &flow{name: fmt.Sprintf("%s:%d", pod, port)}
	l.client.do(t, "dial", func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(pod, port)), Timeout: 5 * time.Second}
		var err error
		f.client, err = d.Dial("tcp", netip.AddrPortFrom(serverIP, serverPort).String())
		return err
	})
	t.Cleanup(func() { _ = f.client.Close() })
	select {
	case f.server = <-l.accepted:
	case <-time.After(5 * time.Second):
		t.Fatalf("flow %s not accepted", f.name)
	}
	t.Cleanup(func() { _ = f.server.Close() })
	if err := f.exchange(time.Second); err != nil {
		t.Fatalf("flow %s before failover: %v", f.name, err)
	}
	return f
}

// exchange sends a message from the server first (its segment is what a
// standby without the entry answers with RST), then one back.
func (f *flow) exchange(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, dir := range []struct {
		from, to net.Conn
		what     string
	}{{f.server, f.client, "server to pod"}, {f.client, f.server, "pod to server"}} {
		msg := []byte("ping\n")
		_ = dir.from.SetWriteDeadline(deadline)
		if _, err := dir.from.Write(msg); err != nil {
			return fmt.Errorf("%s: write: %w", dir.what, err)
		}
		_ = dir.to.SetReadDeadline(deadline)
		got := make([]byte, len(msg))
		for n := 0; n < len(got); {
			m, err := dir.to.Read(got[n:])
			if err != nil {
				return fmt.Errorf("%s: read: %w", dir.what, err)
			}
			n += m
		}
	}
	return nil
}

// exchangeAll runs exchange on every flow at once and returns each
// flow's error.
func exchangeAll(flows []*flow, timeout time.Duration) []error {
	errs := make([]error, len(flows))
	var wg sync.WaitGroup
	for i, f := range flows {
		wg.Go(func() { errs[i] = f.exchange(timeout) })
	}
	wg.Wait()
	return errs
}

// failover cuts A off, gives B the floating IP and points the client's
// and server's routes at B.
func (l *lab) failover(t *testing.T) {
	t.Helper()
	for _, link := range []string{"pod", "up", "sync"} {
		l.a.run(t, "ip", "link", "set", "dev", link, "down")
	}
	l.b.run(t, "ip", "addr", "add", floatIP.String()+"/32", "dev", "up")
	l.client.run(t, "ip", "route", "replace", "203.0.113.0/24", "via", "198.18.2.1")
	l.server.run(t, "ip", "route", "replace", "198.51.100.0/24", "via", "198.19.2.1")
}

var testKey = []byte(strings.Repeat("k", 32))

// startServer runs a Server in A that replicates what it SNATs to
// selected IPs, with full dumps every resyncEvery; it stops with t.
func (l *lab) startServer(t *testing.T, resyncEvery time.Duration, selected func(netip.Addr) bool) (*Server, string) {
	t.Helper()
	s := &Server{
		Config:      Config{Key: testKey, MarkMask: DefaultMarkMask, Logf: t.Logf},
		Select:      selected,
		Allowed:     func(a netip.Addr) bool { return a == syncAddrB },
		ResyncEvery: resyncEvery,
	}
	var ln net.Listener
	l.a.do(t, "listen", func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(syncAddrA, 0).String())
		return err
	})
	l.runIn(t, l.a, "Server.Serve", func(ctx context.Context) error { return s.Serve(ctx, ln) })
	return s, ln.Addr().String()
}

// startFollower runs a Follower in B following the server at addr, and
// waits until it is connected.
func (l *lab) startFollower(t *testing.T, addr string) *Follower {
	t.Helper()
	f := &Follower{Config: Config{Key: testKey, Logf: t.Logf}}
	l.runIn(t, l.b, "Follower.Run", func(ctx context.Context) error { return f.Run(ctx, addr) })
	// Connected means the server listens to events: it joins the event
	// groups before it accepts.
	privtest.Eventually(t, 5*time.Second, "the follower to connect", func() (bool, error) {
		return f.Stats().Connected, nil
	})
	return f
}

// runIn runs fn on a thread of n until t ends, and reports its error.
func (l *lab) runIn(t *testing.T, n *testNS, what string, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- privtest.Do(n.h, func() error { return fn(ctx) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s in %s: %v", what, n.name, err)
		}
	})
}
