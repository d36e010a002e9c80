package ctsync

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"github.com/nsegress/nsegress/e2e/privtest"
)

// flowsThroughA is how many flows the failover tests open from the pod
// with ports of the kernel's choosing, besides the two that share one.
const flowsThroughA = 20

// collidingPort is the source port two pods use at once: A maps one of
// them to another NAT port, which B must copy rather than choose.
const collidingPort = 40000

// openFlows opens the failover tests' flows through A.
func openFlows(t *testing.T, l *lab) []*flow {
	t.Helper()
	var flows []*flow
	for range flowsThroughA {
		flows = append(flows, l.connect(t, podIP, 0))
	}
	return append(flows, l.connect(t, podIP, collidingPort), l.connect(t, podIP2, collidingPort))
}

// snatTo returns n's conntrack entries SNATed to natIP, by original
// tuple.
func snatTo(t testing.TB, n *testNS, natIP netip.Addr) map[tupleKey]conntrack.Flow {
	t.Helper()
	out := make(map[tupleKey]conntrack.Flow)
	for _, f := range n.flows(t) {
		if f.Status.SrcNAT() && f.TupleReply.IP.DestinationAddress == natIP {
			o := f.TupleOrig
			out[tupleKey{proto: o.Proto.Protocol, src: o.IP.SourceAddress, dst: o.IP.DestinationAddress,
				srcPort: o.Proto.SourcePort, dstPort: o.Proto.DestinationPort}] = f
		}
	}
	return out
}

// waitCopied waits until B holds every entry A SNATs to natIP, with the
// same NAT binding.
func waitCopied(t *testing.T, l *lab, natIP netip.Addr) {
	t.Helper()
	want := snatTo(t, l.a, natIP)
	if len(want) == 0 {
		t.Fatalf("A has no entry SNATed to %s", natIP)
	}
	privtest.Eventually(t, 10*time.Second, "B to hold A's entries", func() (bool, error) {
		got := snatTo(t, l.b, natIP)
		for k, fa := range want {
			fb, ok := got[k]
			if !ok {
				return false, fmt.Errorf("B lacks %v", fa.TupleOrig)
			}
			if fb.TupleReply != fa.TupleReply || fb.Mark != fa.Mark {
				return false, fmt.Errorf("B holds %v reply %v mark %#x, A reply %v mark %#x",
					fb.TupleOrig, fb.TupleReply, fb.Mark, fa.TupleReply, fa.Mark)
			}
		}
		return true, nil
	})
}

func TestFailoverKeepsEveryFlowWithItsNATPort(t *testing.T) {
	l := newLab(t)
	flows := openFlows(t, l)
	nat := snatTo(t, l.a, floatIP)
	ports := make(map[uint16]bool)
	for _, f := range nat {
		ports[f.TupleReply.Proto.DestinationPort] = true
	}
	if len(nat) != len(flows) || len(ports) != len(flows) {
		t.Fatalf("A maps %d flows to %d NAT ports, want %d each", len(nat), len(ports), len(flows))
	}
	_, addr := l.startServer(t, time.Second, func(a netip.Addr) bool { return a == floatIP })
	f := l.startFollower(t, addr)
	waitCopied(t, l, floatIP)

	l.failover(t)
	for i, err := range exchangeAll(flows, 3*time.Second) {
		if err != nil {
			t.Errorf("flow %s after failover: %v", flows[i].name, err)
		}
	}
	if st := f.Stats(); st.Failed != 0 || st.Applied < uint64(len(flows)) {
		t.Errorf("follower stats %+v: want %d applied, none failed", st, len(flows))
	}
}

// Without a follower the same failover breaks every flow: B answers the
// server's segment with RST. This is what makes the test above able to
// fail.
func TestFailoverWithoutFollowerBreaksFlows(t *testing.T) {
	l := newLab(t)
	flows := openFlows(t, l)
	l.failover(t)
	for i, err := range exchangeAll(flows, 2*time.Second) {
		if err == nil {
			t.Errorf("flow %s survived the failover without a follower", flows[i].name)
		}
	}
}

func TestFollowerCopiesOnlySelectedAndDeletesDestroyed(t *testing.T) {
	l := newLab(t)
	kept := l.connect(t, podIP, 0)
	l.connect(t, podIPOther, 0)
	var selectOther atomic.Bool
	s, addr := l.startServer(t, time.Hour, func(a netip.Addr) bool {
		return a == floatIP || a == floatOther && selectOther.Load()
	})
	f := l.startFollower(t, addr)
	// Opened after the server started listening to events: with
	// nf_conntrack_events=2 (the default) the kernel gives an entry an
	// event cache, and so a DESTROY event, only when a listener exists at
	// its creation. Entries older than the server are deleted on the
	// follower by the next full dump instead.
	destroyed := l.connect(t, podIP, 0)
	waitCopied(t, l, floatIP)

	t.Run("an IP not selected is not copied", func(t *testing.T) {
		if got := snatTo(t, l.b, floatOther); len(got) != 0 {
			t.Errorf("B holds %d entries SNATed to %s, which A does not select", len(got), floatOther)
		}
	})

	t.Run("a destroyed entry is deleted", func(t *testing.T) {
		port := uint16(destroyed.client.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port())
		k := tupleKey{proto: unix.IPPROTO_TCP, src: podIP, dst: serverIP, srcPort: port, dstPort: serverPort}
		l.a.do(t, "delete A's entry", func() error {
			c, err := conntrack.Dial(nil)
			if err != nil {
				return err
			}
			defer c.Close()
			return c.Delete(plainFlow(k))
		})
		privtest.Eventually(t, 5*time.Second, "B to delete its copy", func() (bool, error) {
			got := snatTo(t, l.b, floatIP)
			_, still := got[k]
			return !still && len(got) == 1, fmt.Errorf("B holds %d entries", len(got))
		})
		if err := kept.exchange(time.Second); err != nil {
			t.Errorf("the other flow: %v", err)
		}
		if f.Stats().Deleted == 0 {
			t.Errorf("stats %+v: none deleted", f.Stats())
		}
	})

	t.Run("Resync copies what Select now selects", func(t *testing.T) {
		selectOther.Store(true)
		s.Resync()
		waitCopied(t, l, floatOther)
	})
}

// An entry the standby created itself from a mid-stream packet (no NAT)
// is replaced; an entry it holds with the same binding is updated.
func TestUpsertReplacesAnEntryWithoutNAT(t *testing.T) {
	requireNetNS(t)
	n := newTestNS(t, "standby")
	n.nft(t, gatewayRules) // registers the NAT hooks, as on a gateway
	e := entry{
		key:   tupleKey{proto: unix.IPPROTO_TCP, src: podIP, dst: serverIP, srcPort: 41000, dstPort: serverPort},
		natIP: floatIP, natPort: 41001, mark: markPol1, timeout: 300,
		status:   uint32(conntrack.StatusSeenReply | conntrack.StatusAssured | conntrack.StatusSrcNAT),
		tcpState: 3, // ESTABLISHED
	}
	n.do(t, "inject", func() error {
		in, err := dialInjector()
		if err != nil {
			return err
		}
		defer in.Close()
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		loose := plainFlow(e.key)
		loose.Timeout = 60
		if err := c.Create(loose); err != nil {
			return fmt.Errorf("create the loose entry: %w", err)
		}
		if err := in.upsert(e); err != nil {
			return err
		}
		e.timeout = 600
		if err := in.upsert(e); err != nil {
			return fmt.Errorf("again: %w", err)
		}
		got, err := in.get(e.key)
		if err != nil {
			return err
		}
		switch {
		case !sameBinding(got, e):
			return fmt.Errorf("entry %v reply %v status %s, want NAT to %s:%d", got.TupleOrig, got.TupleReply, got.Status, e.natIP, e.natPort)
		case got.Timeout < 500 || got.Mark != e.mark:
			return fmt.Errorf("timeout %d mark %#x, want about %d, %#x", got.Timeout, got.Mark, e.timeout, e.mark)
		case got.ProtoInfo.TCP == nil || got.ProtoInfo.TCP.State != 3 ||
			got.ProtoInfo.TCP.OriginalFlags>>8&tcpFlagBeLiberal == 0 || got.ProtoInfo.TCP.ReplyFlags>>8&tcpFlagBeLiberal == 0:
			return fmt.Errorf("TCP protoinfo %+v, want ESTABLISHED, BE_LIBERAL both ways", got.ProtoInfo.TCP)
		}
		if removed, err := in.remove(e); err != nil || !removed {
			return fmt.Errorf("remove: %t, %w", removed, err)
		}
		if _, err := in.get(e.key); !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("after remove: %w, want ENOENT", err)
		}
		return nil
	})
}

// plainFlow is a flow with original tuple k and its plain inverse as
// reply, as the kernel makes one without NAT.
func plainFlow(k tupleKey) conntrack.Flow {
	var f conntrack.Flow
	f.TupleOrig.IP = conntrack.IPTuple{SourceAddress: k.src, DestinationAddress: k.dst}
	f.TupleOrig.Proto = conntrack.ProtoTuple{Protocol: k.proto, SourcePort: k.srcPort, DestinationPort: k.dstPort}
	f.TupleReply.IP = conntrack.IPTuple{SourceAddress: k.dst, DestinationAddress: k.src}
	f.TupleReply.Proto = conntrack.ProtoTuple{Protocol: k.proto, SourcePort: k.dstPort, DestinationPort: k.srcPort}
	return f
}

// For an IP this node holds, a peer's entry only fills a gap or moves a
// handshake on: a flow whose SYN the former holder sent, and whose
// handshake completed there, must not stay SYN_SENT here (its pod's
// segments would be invalid), but the kernel's own later state is never
// moved back.
func TestAdoptMovesOnlyAHandshakeOn(t *testing.T) {
	requireNetNS(t)
	n := newTestNS(t, "holder")
	n.nft(t, gatewayRules)
	syn := entry{
		key:   tupleKey{proto: unix.IPPROTO_TCP, src: podIP, dst: serverIP, srcPort: 42000, dstPort: serverPort},
		natIP: floatIP, natPort: 42001, mark: markPol1, timeout: 120,
		status: uint32(conntrack.StatusSrcNAT), tcpState: tcpSynSent,
	}
	established := syn
	established.timeout, established.tcpState = 600, tcpEstablished
	established.status |= uint32(conntrack.StatusSeenReply | conntrack.StatusAssured)
	finWait := established
	finWait.tcpState = 4 // FIN_WAIT
	other := established
	other.natPort = 42002
	n.do(t, "adopt", func() error {
		in, err := dialInjector()
		if err != nil {
			return err
		}
		defer in.Close()
		state := func() (uint8, conntrack.Status, error) {
			got, err := in.get(syn.key)
			if err != nil {
				return 0, 0, err
			}
			if got.ProtoInfo.TCP == nil {
				return 0, 0, errors.New("no TCP protoinfo")
			}
			return got.ProtoInfo.TCP.State, got.Status, nil
		}
		for _, step := range []struct {
			what    string
			e       entry
			changed bool
			want    uint8
		}{
			{"the SYN, on an empty table", syn, true, tcpSynSent},
			{"the same SYN again", syn, false, tcpSynSent},
			{"another binding of the flow", other, false, tcpSynSent},
			{"the completed handshake", established, true, tcpEstablished},
			{"a later state, the kernel's own now", finWait, false, tcpEstablished},
			{"the SYN, late", syn, false, tcpEstablished},
		} {
			changed, err := in.adopt(step.e)
			if err != nil {
				return fmt.Errorf("%s: %w", step.what, err)
			}
			got, status, err := state()
			if err != nil {
				return fmt.Errorf("%s: %w", step.what, err)
			}
			if changed != step.changed || got != step.want {
				return fmt.Errorf("%s: changed %t, state %d; want %t, %d", step.what, changed, got, step.changed, step.want)
			}
			if got == tcpEstablished && (!status.SeenReply() || !status.Assured() || !status.SrcNAT()) {
				return fmt.Errorf("%s: status %s, want SEEN_REPLY, ASSURED and the NAT bits", step.what, status)
			}
		}
		return nil
	})
}

func TestHandshakeBehind(t *testing.T) {
	tcp := func(s uint8) conntrack.Flow {
		var f conntrack.Flow
		f.ProtoInfo.TCP = &conntrack.ProtoInfoTCP{State: s}
		return f
	}
	e := func(proto, s uint8) entry { return entry{key: tupleKey{proto: proto}, tcpState: s} }
	for _, c := range []struct {
		cur  conntrack.Flow
		e    entry
		want bool
	}{
		{tcp(tcpSynSent), e(unix.IPPROTO_TCP, tcpSynRecv), true},
		{tcp(tcpSynSent), e(unix.IPPROTO_TCP, tcpEstablished), true},
		{tcp(tcpSynSent2), e(unix.IPPROTO_TCP, tcpEstablished), true},
		{tcp(tcpSynRecv), e(unix.IPPROTO_TCP, tcpEstablished), true},
		{tcp(tcpSynRecv), e(unix.IPPROTO_TCP, tcpClose), true},
		{tcp(tcpSynSent), e(unix.IPPROTO_TCP, tcpSynSent2), false},
		{tcp(tcpSynRecv), e(unix.IPPROTO_TCP, tcpSynSent), false},
		{tcp(tcpSynSent), e(unix.IPPROTO_TCP, tcpSynSent), false},
		{tcp(tcpEstablished), e(unix.IPPROTO_TCP, 4), false},
		{tcp(tcpSynSent), e(unix.IPPROTO_TCP, tcpClose+1), false},
		{tcp(tcpSynSent), e(unix.IPPROTO_UDP, tcpEstablished), false},
		{conntrack.Flow{}, e(unix.IPPROTO_TCP, tcpEstablished), false},
	} {
		if got := handshakeBehind(c.cur, c.e); got != c.want {
			t.Errorf("kernel %+v, peer state %d proto %d: %t, want %t", c.cur.ProtoInfo.TCP, c.e.tcpState, c.e.key.proto, got, c.want)
		}
	}
}
