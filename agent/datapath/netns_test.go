package datapath

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nsegress/nsegress/e2e/privtest"
)

// testNS is an unnamed network namespace owned by one test. It is held
// only by a file descriptor of the test process (never a name in
// /run/netns), so it disappears when the test closes it, or when the
// process dies.
type testNS struct {
	name string // for messages only
	h    netns.NsHandle
}

// requireNetNS gates the privileged tests of this package.
func requireNetNS(t testing.TB) {
	t.Helper()
	privtest.RequireTools(t, "nsenter", "ip", "nft", "bridge", "sysctl")
}

// newTestNS creates a network namespace that is closed when t ends. It
// is created on a thread of its own that exits with its goroutine, so no
// other goroutine of the test ever runs in it and the machine's own
// namespace is never changed. IPv6 is off in it, so that no router
// solicitation or DAD probe moves the counters the tests read, and
// rp_filter is strict by default for every link that will appear in it.
func newTestNS(t testing.TB, name string) *testNS {
	t.Helper()
	h := privtest.NewNetNS(t)
	n := &testNS{name: name, h: h}
	n.sysctl(t, "net.ipv6.conf.all.disable_ipv6", "1")
	n.sysctl(t, "net.ipv6.conf.default.disable_ipv6", "1")
	n.sysctl(t, "net.ipv4.conf.default.rp_filter", "1")
	n.sysctl(t, "net.ipv4.conf.all.rp_filter", "1")
	n.run(t, "ip", "link", "set", "lo", "up")
	return n
}

// tryRun runs a command inside the namespace.
func (n *testNS) tryRun(args ...string) (string, error) {
	out, err := privtest.RunIn(n.h, "", args...)
	if err != nil {
		return out, fmt.Errorf("in %s: %w", n.name, err)
	}
	return out, nil
}

// run runs a command inside the namespace and fails the test if it
// fails.
func (n *testNS) run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.tryRun(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runStdin runs a command inside the namespace with stdin.
func (n *testNS) runStdin(t testing.TB, stdin string, args ...string) {
	t.Helper()
	if _, err := privtest.RunIn(n.h, stdin, args...); err != nil {
		t.Fatalf("in %s: %v", n.name, err)
	}
}

func (n *testNS) sysctl(t testing.TB, key, value string) {
	t.Helper()
	n.run(t, "sysctl", "-q", "-w", key+"="+value)
}

// readSysctl reads a sysctl of the namespace.
func (n *testNS) readSysctl(t testing.TB, key string) string {
	t.Helper()
	return strings.TrimSpace(n.run(t, "sysctl", "-n", key))
}

// do runs fn inside the namespace (see privtest.Do) and returns its
// error. The datapath package uses netlink's default handle, which
// opens its sockets in the calling thread's namespace; so does every
// socket fn opens.
func (n *testNS) do(fn func() error) error {
	return privtest.Do(n.h, fn)
}

// must runs fn in the namespace and fails the test on error.
func (n *testNS) must(t testing.TB, what string, fn func() error) {
	t.Helper()
	if err := n.do(fn); err != nil {
		t.Fatalf("%s in %s: %v", what, n.name, err)
	}
}

// netlink returns a netlink handle bound to the namespace, for setting
// the topology up from the test's goroutine.
func (n *testNS) netlink(t testing.TB) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(n.h)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", n.name, err)
	}
	t.Cleanup(h.Close)
	return h
}

// veth connects namespace a (interface aName) with namespace b
// (interface bName), both up, MTU 1500.
func veth(t testing.TB, a *testNS, aName string, b *testNS, bName string) {
	t.Helper()
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName, MTU: 1500},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(int(b.h)),
	}
	if err := a.netlink(t).LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s - %s/%s: %v", a.name, aName, b.name, bName, err)
	}
	a.run(t, "ip", "link", "set", aName, "mtu", "1500", "up")
	b.run(t, "ip", "link", "set", bName, "mtu", "1500", "up")
}

// links returns the names of the namespace's links.
func (n *testNS) links(t testing.TB) []string {
	t.Helper()
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(n.run(t, "ip", "-o", "link", "show")), "\n") {
		// "7: nsg1: <BROADCAST,…" or "8: eth0@if9: <…"
		f := strings.Fields(line)
		if len(f) > 1 {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return names
}

// linkStats are a link's counters as the kernel keeps them (read with
// the ip CLI, not with the code under test).
type linkStats struct{ RxPackets, TxPackets, TxBytes uint64 }

func (n *testNS) stats(t testing.TB, link string) linkStats {
	t.Helper()
	var out []struct {
		Stats64 struct {
			Rx struct{ Packets uint64 }        `json:"rx"`
			Tx struct{ Packets, Bytes uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	raw := n.run(t, "ip", "-j", "-s", "link", "show", "dev", link)
	if err := json.Unmarshal([]byte(raw), &out); err != nil || len(out) != 1 {
		t.Fatalf("%s: counters of %s: %v\n%s", n.name, link, err, raw)
	}
	s := out[0].Stats64
	return linkStats{RxPackets: s.Rx.Packets, TxPackets: s.Tx.Packets, TxBytes: s.Tx.Bytes}
}

var tableRE = regexp.MustCompile(`\btable (\d+)\b`)

// policyRoutes lists the IPv4 routes of the namespace that live in a
// table nsegress may own (see ownedTable), as `ip route` prints them.
func (n *testNS) policyRoutes(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(n.run(t, "ip", "-4", "route", "show", "table", "all"), "\n") {
		m := tableRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if id, _ := strconv.Atoi(m[1]); (Settings{}).withDefaults().ownsTable(id) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// tableRoutesCLI lists the routes of one table, as `ip route` prints them.
func (n *testNS) tableRoutesCLI(t testing.TB, table int) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(n.run(t, "ip", "-4", "route", "show", "table", strconv.Itoa(table))), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// nsegressRules lists the IPv4 rules at nsegress's priority.
func (n *testNS) nsegressRules(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(n.run(t, "ip", "-4", "rule", "show"), "\n") {
		if strings.HasPrefix(line, strconv.Itoa(DefaultRulePriority)+":") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	// Rules of one priority are listed in the order they were added.
	slices.Sort(out)
	return out
}

// addrs lists the IPv4 addresses of a link.
func (n *testNS) addrs(t testing.TB, link string) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, f := range strings.Fields(n.run(t, "ip", "-4", "-o", "addr", "show", "dev", link)) {
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out
}

// expectClean fails t unless the namespace holds no nsegress link, rule,
// policy route or nft table.
func (n *testNS) expectClean(t testing.TB) {
	t.Helper()
	for _, l := range n.links(t) {
		if strings.HasPrefix(l, DevicePrefix) {
			t.Errorf("%s: link %s remains", n.name, l)
		}
	}
	if r := n.nsegressRules(t); len(r) != 0 {
		t.Errorf("%s: rules at priority %d remain: %q", n.name, DefaultRulePriority, r)
	}
	for _, line := range strings.Split(n.run(t, "ip", "-4", "rule", "show"), "\n") {
		if strings.HasPrefix(line, strconv.Itoa(DefaultRulePriority-1)+":") {
			t.Errorf("%s: return rule remains: %q", n.name, line)
		}
	}
	if r := n.policyRoutes(t); len(r) != 0 {
		t.Errorf("%s: policy routes remain: %q", n.name, r)
	}
	if out := n.run(t, "nft", "list", "tables"); strings.Contains(out, "table ip nsegress") {
		t.Errorf("%s: the nsegress nft table remains:\n%s", n.name, out)
	}
}
