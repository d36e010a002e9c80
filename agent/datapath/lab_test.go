package datapath

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The lab's addresses (docs/design.md §6 uses the same documentation ranges).
var (
	workerIP  = netip.MustParseAddr("198.51.100.11")
	gatewayIP = netip.MustParseAddr("198.51.100.21")
	routerIP  = netip.MustParseAddr("198.51.100.1")
	egressIP  = netip.MustParseAddr("198.51.100.101")
	backendIP = netip.MustParseAddr("203.0.113.11")
	podIP     = netip.MustParseAddr("198.18.1.5")
	pod2IP    = netip.MustParseAddr("198.18.1.6")
	backendNs = netip.MustParsePrefix("203.0.113.0/24")
	// The pod ranges of the worker (its ptp pods in 198.18.1.0/24, its
	// bridge pods in 198.18.2.0/24) and of the gateway.
	workerPods  = netip.MustParsePrefix("198.18.0.0/22")
	gatewayPods = netip.MustParsePrefix("198.18.9.0/24")
)

// Host-side veth names of the two pods on the worker.
const (
	podHostIf  = "vethpod1"
	pod2HostIf = "vethpod2"
)

// lab is a throwaway network of namespaces:
//
//	pod  (198.18.1.5) ─┐ ptp veth
//	pod2 (198.18.1.6) ─┤
//	                 worker .11 ─┐
//	                 gateway .21 ─┼─ switch (bridge, 198.51.100.0/24)
//	                 router  .1  ─┘
//	                 router 203.0.113.1 ── backend 203.0.113.11
//
// The router is the on-premises firewall: it forwards to the backend
// only what comes from the egress IP 198.51.100.101 (and what belongs to
// connections it let through), and drops all ICMP, as the firewall of
// docs/design.md §7 does, so that no path-MTU signal from beyond it can help.
type lab struct {
	sw, worker, gateway, router, backend, pod, pod2 *testNS

	backendSrv, routerSrv *echoServer
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{
		sw:      newTestNS(t, "switch"),
		worker:  newTestNS(t, "worker"),
		gateway: newTestNS(t, "gateway"),
		router:  newTestNS(t, "router"),
		backend: newTestNS(t, "backend"),
		pod:     newTestNS(t, "pod"),
		pod2:    newTestNS(t, "pod2"),
	}
	for _, n := range []*testNS{l.worker, l.gateway, l.router} {
		n.sysctl(t, "net.ipv4.ip_forward", "1")
	}

	l.sw.run(t, "ip", "link", "add", "br0", "mtu", "1500", "type", "bridge")
	l.sw.run(t, "ip", "link", "set", "br0", "up")
	for _, m := range []struct {
		ns   *testNS
		port string
		addr string
	}{
		{l.worker, "sw-worker", workerIP.String() + "/24"},
		{l.gateway, "sw-gateway", gatewayIP.String() + "/24"},
		{l.router, "sw-router", routerIP.String() + "/24"},
	} {
		veth(t, l.sw, m.port, m.ns, "eth0")
		l.sw.run(t, "ip", "link", "set", m.port, "master", "br0")
		m.ns.run(t, "ip", "addr", "add", m.addr, "dev", "eth0")
	}
	for _, n := range []*testNS{l.worker, l.gateway} {
		n.run(t, "ip", "route", "add", "default", "via", routerIP.String())
	}
	// The gateway reaches the worker's pods over the underlay, as a
	// cluster's pod CIDR routes do: replies go straight back.
	l.gateway.run(t, "ip", "route", "add", "198.18.1.0/24", "via", workerIP.String())

	veth(t, l.router, "eth1", l.backend, "eth0")
	l.router.run(t, "ip", "addr", "add", "203.0.113.1/24", "dev", "eth1")
	l.backend.run(t, "ip", "addr", "add", backendIP.String()+"/24", "dev", "eth0")
	l.backend.run(t, "ip", "route", "add", "default", "via", "203.0.113.1")
	l.router.runStdin(t, fmt.Sprintf(`
table inet firewall {
	chain forward {
		type filter hook forward priority filter; policy drop;
		meta l4proto icmp drop
		ct state established,related accept
		ip saddr %s ip daddr %s accept
	}
}
`, egressIP, backendNs), "nft", "-f", "-")

	l.addPod(t, l.pod, podHostIf, podIP)
	l.addPod(t, l.pod2, pod2HostIf, pod2IP)
	// The primary CNI's masquerade, as ptp's ipMasq writes it: without
	// nsegress's identity SNAT it would rewrite the pod's source before
	// the tunnel (docs/design.md §7).
	l.worker.runStdin(t, `
table ip ptpmasq {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 198.18.1.0/24 ip daddr != 198.18.0.0/16 masquerade
	}
}
`, "nft", "-f", "-")

	l.backendSrv = startEcho(t, l.backend, netip.AddrPortFrom(backendIP, 80))
	l.routerSrv = startEcho(t, l.router, netip.AddrPortFrom(routerIP, 80))
	return l
}

// addPod attaches a pod namespace to the worker the way ptp does: a
// /32 on each side, a host route to the pod and a default route in the
// pod via the host side.
func (l *lab) addPod(t *testing.T, pod *testNS, hostIf string, ip netip.Addr) {
	t.Helper()
	veth(t, l.worker, hostIf, pod, "eth0")
	l.worker.run(t, "ip", "addr", "add", "198.18.1.1/32", "dev", hostIf)
	l.worker.run(t, "ip", "route", "add", ip.String()+"/32", "dev", hostIf)
	pod.run(t, "ip", "addr", "add", ip.String()+"/32", "dev", "eth0")
	pod.run(t, "ip", "route", "add", "198.18.1.1/32", "dev", "eth0")
	pod.run(t, "ip", "route", "add", "default", "via", "198.18.1.1", "dev", "eth0")
}

// payload is what the download serves and the upload sends: 10 MiB, a
// pattern rather than zeros so that a corrupted segment shows.
var payload = func() []byte {
	b := make([]byte, 10<<20)
	for i := range b {
		b[i] = byte(i * 7 / 3)
	}
	return b
}()

// echoServer answers HTTP inside a namespace with what it saw of the
// caller: its source address, the connection's MSS, what it uploaded.
type echoServer struct {
	mu   sync.Mutex
	seen []netip.Addr // source address of every request, in order
}

type connKey struct{}

// startEcho listens on addr inside ns. The listening socket is created
// on a thread in ns and stays in ns; the server's goroutines may then
// run anywhere.
func startEcho(t *testing.T, ns *testNS, addr netip.AddrPort) *echoServer {
	t.Helper()
	var ln net.Listener
	ns.must(t, "listen on "+addr.String(), func() error {
		var err error
		ln, err = net.Listen("tcp4", addr.String())
		return err
	})
	e := &echoServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %d", e.source(r), connMSS(r))
	})
	mux.HandleFunc("GET /download", func(w http.ResponseWriter, r *http.Request) {
		e.source(r)
		w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
		_, _ = w.Write(payload)
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		src := e.source(r)
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%s %d %x", src, n, h.Sum(nil))
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return e
}

// source records and returns the request's source address.
func (e *echoServer) source(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen = append(e.seen, ap.Addr())
	return ap.Addr()
}

// sources returns the distinct source addresses seen so far.
func (e *echoServer) sources() []netip.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := slices.Clone(e.seen)
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

// connMSS is the MSS the server's side of the connection sends with:
// the kernel's mss_cache, bounded by the MSS option of the client's SYN
// (after any clamping on the way) less TCP options in use.
func connMSS(r *http.Request) int {
	c, ok := r.Context().Value(connKey{}).(*net.TCPConn)
	if !ok {
		return -1
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	mss := -1
	_ = rc.Control(func(fd uintptr) {
		if v, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG); err == nil {
			mss = v
		}
	})
	return mss
}

// client is an HTTP client whose connections start inside ns: each dial
// opens its socket on a thread in ns. Keep-alive is off, so that every
// request is a new connection with a SYN of its own.
func (n *testNS) client(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:             nil, // never the machine's HTTP proxy
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := n.do(func() error {
					var err error
					c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		},
	}
}

// get fetches url from inside ns and returns the body.
func (n *testNS) get(timeout time.Duration, url string) ([]byte, error) {
	resp, err := n.client(timeout).Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return b, fmt.Errorf("GET %s: read body after %d bytes: %w", url, len(b), err)
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, nil
}

// upload posts payload from inside ns and returns the server's answer.
func (n *testNS) upload(timeout time.Duration, url string) (string, error) {
	resp, err := n.client(timeout).Post(url, "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST %s: %s: %s", url, resp.Status, b)
	}
	return string(b), nil
}

// payloadDigest is what the upload's answer must end with.
func payloadDigest() string {
	s := sha256.Sum256(payload)
	return hex.EncodeToString(s[:])
}
