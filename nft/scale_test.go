package nft

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/nsegress/nsegress/e2e/privtest"
)

// manyPods returns n pods, alternating between policies 7 and 9.
func manyPods(n int) map[PodKey]uint16 {
	pods := make(map[PodKey]uint16, n)
	for i := range n {
		ip := netip.AddrFrom4([4]byte{198, 18, byte(i / 250), byte(i%250 + 1)})
		pods[PodKey{IP: ip, HostIf: fmt.Sprintf("veth%05d", i)}] = []uint16{7, 9}[i%2]
	}
	return pods
}

// monitor records `nft monitor` in a netns, to see exactly which
// elements a transaction touched.
type monitor struct {
	t   testing.TB
	ns  netns.NsHandle
	cmd *exec.Cmd
	out privtest.SyncBuffer
}

// text returns what the monitor printed so far.
func (m *monitor) text() string { return m.out.String() }

// startMonitor starts `nft monitor` in ns and returns once it reports
// events.
func startMonitor(t testing.TB, ns netns.NsHandle) *monitor {
	t.Helper()
	m := &monitor{t: t, ns: ns}
	m.cmd = exec.Command("nsenter", "--net="+nsPath(ns), "--", "nft", "monitor")
	m.cmd.Stdout, m.cmd.Stderr = &m.out, &m.out
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.cmd.Process.Kill(); _ = m.cmd.Wait() })
	m.sync("start")
	return m
}

// sync creates and deletes a marker table until the monitor has printed
// its deletion: every event before it has been printed too. The marker
// is made again at every check, since a monitor that is only starting
// may have missed the first one.
func (m *monitor) sync(name string) {
	m.t.Helper()
	marker := "marker_" + name
	privtest.Eventually(m.t, 10*time.Second, "nft monitor to report the marker "+marker, func() (bool, error) {
		if strings.Contains(m.text(), "delete table ip "+marker) {
			return true, nil
		}
		runIn(m.t, m.ns, "nft", "add table ip "+marker+"; delete table ip "+marker)
		return false, fmt.Errorf("the monitor printed:\n%s", m.text())
	})
}

// podEvents returns the monitor lines about elements of the pods map
// between the markers "from" and "to".
func (m *monitor) podEvents(from, to string) []string {
	text := m.text()
	_, text, _ = strings.Cut(text, "delete table ip marker_"+from)
	text, _, _ = strings.Cut(text, "add table ip marker_"+to)
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, "element ip "+DefaultTableName+" "+mapPods+" ") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

func TestApplyIsADiffAt2000Pods(t *testing.T) {
	tbl, ns := newTestTable(t)
	s := twoPolicies()
	s.Pods = manyPods(2000)
	mustApply(t, tbl, s)
	wantPods(t, tbl, s.Pods)

	mon := startMonitor(t, ns)
	mustApply(t, tbl, s)
	mon.sync("same")
	if ev := mon.podEvents("start", "same"); len(ev) != 0 {
		t.Fatalf("Apply of the same state touched %d pods elements, want none: %v", len(ev), ev)
	}
	wantPods(t, tbl, s.Pods)

	gone := PodKey{IP: netip.MustParseAddr("198.18.0.8"), HostIf: "veth00007"}
	if _, ok := s.Pods[gone]; !ok {
		t.Fatalf("test bug: %s is not among the pods", gone)
	}
	delete(s.Pods, gone)
	mustApply(t, tbl, s)
	mon.sync("one_less")
	ev := mon.podEvents("same", "one_less")
	if len(ev) != 1 || !strings.HasPrefix(ev[0], "delete element ip nsegress pods") || !strings.Contains(ev[0], gone.String()) {
		t.Fatalf("Apply without %s: pods events = %v, want its deletion only", gone, ev)
	}
	wantPods(t, tbl, s.Pods)
}

func TestApplyFrom2000PodsToNone(t *testing.T) {
	tbl, _ := newTestTable(t)
	s := twoPolicies()
	s.Pods = manyPods(2000)
	mustApply(t, tbl, s)
	s.Pods = nil
	s.Policies = s.Policies[:1] // and drop policy 9, whose chain had 1,000 jumps
	mustApply(t, tbl, s)
	wantPods(t, tbl, map[PodKey]uint16{})
}

func TestApplyChangesModesWithPodsInPlace(t *testing.T) {
	tbl, _ := newTestTable(t)
	s := twoPolicies()
	s.Pods = manyPods(20)
	for _, m := range []Mode{ModeLocal, ModeDrop, ModePass, ModeTunnel} {
		p := &s.Policies[0]
		p.Mode = m
		p.EgressIP = netip.MustParseAddr("192.0.2.7")
		mustApply(t, tbl, s)
		wantPods(t, tbl, s.Pods)
	}
	// Moving pods between policies replaces their elements.
	for k, id := range s.Pods {
		s.Pods[k] = 16 - id
	}
	mustApply(t, tbl, s)
	wantPods(t, tbl, s.Pods)
}

// TestConcurrentAddDelPod races AddPod and DelPod through two handles of
// the same table, each its own netlink connection as two plugin processes
// have: every pod is added, replaced and re-added, and half of them are
// then deleted (twice, as containerd's two DELs do), while 64 more that
// existed before are deleted too. The map ends exactly as the survivors
// say, whatever the interleaving.
func TestConcurrentAddDelPod(t *testing.T) {
	a, ns := newTestTable(t)
	b, err := Open(WithNetNS(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	s := twoPolicies()
	all := manyPods(192)
	existing := map[PodKey]uint16{}
	fresh := map[PodKey]uint16{}
	for k, id := range all {
		if k.IP.As4()[3]%3 == 0 {
			existing[k] = id
		} else {
			fresh[k] = id
		}
	}
	s.Pods = existing
	mustApply(t, a, s)

	want := map[PodKey]uint16{}
	var wg sync.WaitGroup
	errs := make(chan error, 6*len(all))
	i := 0
	for k, id := range fresh {
		keep := i%2 == 0
		i++
		if keep {
			want[k] = id
		}
		wg.Go(func() {
			errs <- a.AddPod(k, id)
			errs <- b.AddPod(k, 16-id) // replace, from the other handle
			errs <- a.AddPod(k, id)
			if !keep {
				errs <- b.DelPod(k)
				errs <- a.DelPod(k)
			}
		})
	}
	for k := range existing {
		wg.Go(func() { errs <- b.DelPod(k) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(want) == 0 || len(want) == len(fresh) {
		t.Fatalf("the test keeps %d of %d pods: it must both keep and delete", len(want), len(fresh))
	}
	wantPods(t, a, want)
	wantPods(t, b, want)
}

func BenchmarkAddDelPod(b *testing.B) {
	for _, existing := range []int{10, 2000} {
		b.Run(fmt.Sprintf("existing=%d", existing), func(b *testing.B) {
			tbl, _ := newTestTable(b)
			s := twoPolicies()
			s.Pods = manyPods(existing)
			mustApply(b, tbl, s)
			k := pod("198.19.0.1", "vethbench")
			b.ResetTimer()
			for b.Loop() {
				if err := tbl.AddPod(k, 7); err != nil {
					b.Fatal(err)
				}
				if err := tbl.DelPod(k); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
