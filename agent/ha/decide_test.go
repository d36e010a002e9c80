package ha

import (
	"net/netip"
	"testing"
	"time"
)

var (
	ip1 = netip.MustParseAddr("198.51.100.101")
	ip2 = netip.MustParseAddr("198.51.100.102")
)

func twoGateways(active, standby string, epoch int64) World {
	return World{
		Nodes: map[string]netip.Addr{"gw-1": netip.MustParseAddr("198.51.100.21"), "gw-2": netip.MustParseAddr("198.51.100.22"), "worker-1": netip.MustParseAddr("198.51.100.11")},
		Groups: []Group{{Members: []string{"gw-1", "gw-2"}, IPs: map[netip.Addr]Assignment{
			ip1: {Active: active, Standby: standby, Epoch: epoch},
			ip2: {Active: standby, Standby: active, Epoch: 1},
		}}},
	}
}

func never(netip.Addr) bool { return false }

func TestEffectiveHolders(t *testing.T) {
	w := twoGateways("gw-1", "gw-2", 3)
	cases := []struct {
		name   string
		self   string
		heard  map[netip.Addr]claim
		own    map[netip.Addr]int64
		barred func(netip.Addr) bool
		want   Holder
	}{
		{name: "the API's active holds when nobody claims more", self: "worker-1", want: Holder{"gw-1", 3}},
		{name: "a claim at a higher epoch overrides the API", self: "worker-1", heard: map[netip.Addr]claim{ip1: {node: "gw-2", epoch: 4}}, want: Holder{"gw-2", 4}},
		{name: "a claim at the API's epoch does not", self: "worker-1", heard: map[netip.Addr]claim{ip1: {node: "gw-2", epoch: 3}}, want: Holder{"gw-1", 3}},
		{name: "a stale claim below the API's epoch does not", self: "worker-1", heard: map[netip.Addr]claim{ip1: {node: "gw-2", epoch: 2}}, want: Holder{"gw-1", 3}},
		{name: "the node's own takeover holds", self: "gw-2", own: map[netip.Addr]int64{ip1: 4}, want: Holder{"gw-2", 4}},
		{name: "a holder that hears a higher epoch lets the IP go", self: "gw-1", heard: map[netip.Addr]claim{ip1: {node: "gw-2", epoch: 4}}, want: Holder{"gw-2", 4}},
		{name: "a barred node holds nothing", self: "gw-1", barred: func(ip netip.Addr) bool { return ip == ip1 }, want: Holder{"", 3}},
		{name: "a bar on another node's IP changes nothing", self: "gw-2", barred: func(netip.Addr) bool { return true }, want: Holder{"gw-1", 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.barred
			if b == nil {
				b = never
			}
			got := effective(c.self, w, c.heard, c.own, b)
			if got[ip1] != c.want {
				t.Errorf("holder of %s = %+v, want %+v", ip1, got[ip1], c.want)
			}
			if got[ip2] != (Holder{"gw-2", 1}) && !(c.self == "gw-2" && c.barred != nil) {
				t.Errorf("holder of %s = %+v, want gw-2 at 1 (untouched)", ip2, got[ip2])
			}
		})
	}
}

func TestMajority(t *testing.T) {
	three := []string{"a", "b", "c"}
	cases := []struct {
		name    string
		members []string
		hears   map[string][]string
		want    bool
	}{
		{name: "two members decide alone", members: []string{"a", "b"}, want: true},
		{name: "of three, a node alone is no majority", members: three, want: false},
		{name: "of three, a peer that does not hear the dead node makes a majority", members: three, hears: map[string][]string{"b": {"a"}}, want: true},
		{name: "of three, a peer that still hears it does not", members: three, hears: map[string][]string{"b": {"a", "c"}}, want: false},
		{name: "of four, two of the three live ones are no majority", members: []string{"a", "b", "c", "d"}, hears: map[string][]string{"b": {"a"}}, want: false},
		{name: "of four, three are", members: []string{"a", "b", "c", "d"}, hears: map[string][]string{"b": {"a"}, "d": {}}, want: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := majority("a", "c", c.members, c.hears); got != c.want {
				t.Errorf("majority = %v, want %v", got, c.want)
			}
		})
	}
}

func TestSealedMessagesOpenOnlyWithTheKey(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	m := message{Node: "gw-1", Boot: 7, Seq: 1, Time: time.Now().UnixNano(), Holds: map[netip.Addr]int64{ip1: 3}, Hears: []string{"gw-2"}}
	b, err := seal(key, m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := open(key, b)
	if err != nil || got.Node != "gw-1" || got.Holds[ip1] != 3 {
		t.Fatalf("open = %+v, %v", got, err)
	}
	if _, err := open([]byte("another key, just as long as one"), b); err == nil {
		t.Error("a message opened with another key")
	}
	b[5] ^= 1
	if _, err := open(key, b); err == nil {
		t.Error("a changed message opened")
	}
}

func TestReplayedMessagesAreRefused(t *testing.T) {
	now := time.Now()
	var g replayGuard
	m := message{Node: "gw-1", Boot: 1, Seq: 5, Time: now.UnixNano()}
	if err := g.accept(m, now); err != nil {
		t.Fatal(err)
	}
	if err := g.accept(m, now); err == nil {
		t.Error("the same message accepted twice")
	}
	old := message{Node: "gw-1", Boot: 2, Seq: 9, Time: now.Add(-time.Second).UnixNano()}
	if err := g.accept(old, now); err == nil {
		t.Error("a message of another, older boot accepted")
	}
	stale := message{Node: "gw-2", Boot: 1, Seq: 1, Time: now.Add(-time.Minute).UnixNano()}
	if err := g.accept(stale, now); err == nil {
		t.Error("a message a minute old accepted")
	}
	next := message{Node: "gw-1", Boot: 1, Seq: 6, Time: now.UnixNano()}
	if err := g.accept(next, now); err != nil {
		t.Errorf("the next message refused: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	key := []byte("0123456789abcdef0123456789abcdef")
	b, _ := seal(key, message{Node: "gw-1", Holds: map[netip.Addr]int64{ip1: 1}})
	f.Add(b)
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := open(key, b)
		if err == nil && m.Node == "" {
			t.Error("a message without a sender opened")
		}
	})
}

// TestOnlyAGatewayOfTheGroupIsBelieved: every node has the HA key, so a
// claim is believed only from a gateway of the IP's group; a worker's
// claim at any epoch changes nobody's view.
func TestOnlyAGatewayOfTheGroupIsBelieved(t *testing.T) {
	r := New(Config{NodeName: "worker-2"})
	r.Update(twoGateways("gw-1", "gw-2", 3))
	now := time.Now()
	r.hear(message{Node: "worker-1", Holds: map[netip.Addr]int64{ip1: 99}}, now)
	if h := r.Holders()[ip1]; h != (Holder{"gw-1", 3}) {
		t.Errorf("after a worker's claim the holder is %+v; want gw-1 at epoch 3", h)
	}
	r.hear(message{Node: "gw-2", Holds: map[netip.Addr]int64{ip1: 4}}, now)
	if h := r.Holders()[ip1]; h != (Holder{"gw-2", 4}) {
		t.Errorf("after the standby's claim the holder is %+v; want gw-2 at epoch 4", h)
	}
}

// TestAFreshlyPlacedHolderIsNotProbedUntilItCouldHoldTheIP: a holder the
// API has just named answers ARP for the IP only once its node role has
// put it on its uplink, and its agent may still wait for the HA key; its
// standby does not take its silence for a death for PlaceGrace, unless it
// has heard it since.
func TestAFreshlyPlacedHolderIsNotProbedUntilItCouldHoldTheIP(t *testing.T) {
	r := New(Config{NodeName: "gw-2"})
	r.Update(twoGateways("gw-1", "gw-2", 3))
	h := Holder{"gw-1", 3}
	now := time.Now()
	r.mu.Lock()
	fresh, later := r.freshLocked(ip1, h, now), r.freshLocked(ip1, h, now.Add(PlaceGrace))
	r.mu.Unlock()
	if !fresh || later {
		t.Errorf("fresh now: %v, after PlaceGrace: %v; want true, false", fresh, later)
	}
	r.Update(twoGateways("gw-1", "gw-2", 3)) // the same placement: not fresher
	r.hear(message{Node: "gw-1", Holds: map[netip.Addr]int64{ip1: 3}}, time.Now())
	r.mu.Lock()
	heard := r.freshLocked(ip1, h, time.Now())
	r.mu.Unlock()
	if heard {
		t.Errorf("a holder heard since its placement is still fresh")
	}
	// A move is a new placement.
	r.Update(twoGateways("gw-1", "gw-2", 4))
	r.mu.Lock()
	moved := r.freshLocked(ip1, Holder{"gw-1", 4}, time.Now())
	r.mu.Unlock()
	if !moved {
		t.Errorf("a new epoch is not a fresh placement")
	}
}

// TestAPlannedMoveWaitsForTheNewHolder: when the API moves an IP (a
// drain, a relabel), the worker and the old holder keep the old holder
// until the new one claims the IP (it does once its datapath holds it),
// or HandoverWait later should the claim be lost; the new holder takes it
// at once, and a takeover heard is never held back.
func TestAPlannedMoveWaitsForTheNewHolder(t *testing.T) {
	for _, self := range []string{"worker-1", "gw-1"} {
		r := New(Config{NodeName: self})
		r.Update(twoGateways("gw-1", "gw-2", 3))
		r.Update(twoGateways("gw-2", "gw-1", 4))
		if h := r.Holders()[ip1]; h != (Holder{"gw-1", 3}) {
			t.Errorf("%s: right after the API moved %s, the holder is %+v; want still gw-1 at epoch 3", self, ip1, h)
		}
		r.hear(message{Node: "gw-2", Holds: map[netip.Addr]int64{ip1: 4}}, time.Now())
		if h := r.Holders()[ip1]; h != (Holder{"gw-2", 4}) {
			t.Errorf("%s: once gw-2 claimed %s, the holder is %+v; want gw-2 at epoch 4", self, ip1, h)
		}

		// The claim lost: the API's word after HandoverWait.
		r = New(Config{NodeName: self})
		r.Update(twoGateways("gw-1", "gw-2", 3))
		r.Update(twoGateways("gw-2", "gw-1", 4))
		r.mu.Lock()
		p := r.placed[ip1]
		p.at = p.at.Add(-HandoverWait)
		r.placed[ip1] = p
		r.mu.Unlock()
		r.refresh()
		if h := r.Holders()[ip1]; h != (Holder{"gw-2", 4}) {
			t.Errorf("%s: HandoverWait after the move with no claim heard, the holder is %+v; want gw-2 at epoch 4", self, h)
		}
	}

	r := New(Config{NodeName: "gw-2"})
	r.Update(twoGateways("gw-1", "gw-2", 3))
	r.Update(twoGateways("gw-2", "gw-1", 4))
	if h := r.Holders()[ip1]; h != (Holder{"gw-2", 4}) {
		t.Errorf("the new holder itself sees %+v; want gw-2 at epoch 4 at once", h)
	}
	// It passes stateless replies for the IP on to the old holder for
	// DrainFor.
	if got := r.PassingOn(); len(got) != 1 || got[ip1] != netip.MustParseAddr("198.51.100.21") {
		t.Errorf("the new holder passes on %v; want %s to gw-1 (198.51.100.21)", got, ip1)
	}
	r.mu.Lock()
	b := r.takenFrom[ip1]
	b.until = time.Now()
	r.takenFrom[ip1] = b
	r.mu.Unlock()
	if got := r.PassingOn(); len(got) != 0 {
		t.Errorf("DrainFor after the move, the new holder still passes on %v", got)
	}

	// The old holder's Node deleted (the move's reason): the node role
	// keeps it in the world for a minute (node.goneNodeFor), with its
	// address to pass on to, though it is no member of the group.
	r = New(Config{NodeName: "gw-2"})
	r.Update(twoGateways("gw-1", "gw-2", 3))
	w := twoGateways("gw-2", "", 4)
	w.Groups[0].Members = []string{"gw-2"}
	r.Update(w)
	if got := r.PassingOn(); got[ip1] != netip.MustParseAddr("198.51.100.21") {
		t.Errorf("after gw-1's Node was deleted, the new holder passes on %v; want %s to 198.51.100.21", got, ip1)
	}

	// A takeover heard before the API adopts it moves at once.
	r = New(Config{NodeName: "worker-1"})
	r.Update(twoGateways("gw-1", "gw-2", 3))
	r.hear(message{Node: "gw-2", Holds: map[netip.Addr]int64{ip1: 4}}, time.Now())
	r.Update(twoGateways("gw-2", "gw-1", 4))
	if h := r.Holders()[ip1]; h != (Holder{"gw-2", 4}) {
		t.Errorf("after a heard takeover the API adopted, the holder is %+v; want gw-2 at epoch 4", h)
	}
}
