package ctsync

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Follower keeps a peer's entries in this namespace's conntrack table.
type Follower struct {
	Config
	// Local says whether this node holds natIP now. The entries of an IP
	// it holds are its own kernel's to keep: what a peer says of them is
	// only ever added where the kernel has no entry of the flow (a flow a
	// former holder opened while it handed the IP over), or moved on
	// where the kernel's entry is still in a TCP handshake state the peer
	// has passed (a flow opened at the move, whose handshake completed at
	// the peer); never deleted or moved back (a dump of a former holder
	// that no longer has them, its DESTROY events as its stale copies
	// time out), or the live flows of a takeover would lose their state.
	// nil holds none.
	Local func(natIP netip.Addr) bool

	mu    sync.Mutex
	stats Stats
}

// owned is an entry this follower injected, and the dump that last
// confirmed it.
type owned struct {
	e   entry
	gen uint64
}

// Run dials addr (host:port), authenticates, and applies every entry
// received until ctx ends; on any error it reconnects with backoff
// (100 ms doubling to 2 s) and gets a full dump again. It returns nil
// when ctx ends, or an error that retrying cannot cure (the Config, or
// the conntrack socket).
//
// Its conntrack sockets are opened when Run starts, and every connection
// to addr dialed, in the network namespace of the calling thread: a
// caller in another namespace than the process's calls it on a goroutine
// locked to a thread in that namespace. A lost server leaves its entries
// in place: keeping them for when this node takes over is the point.
func (f *Follower) Run(ctx context.Context, addr string) error {
	cfg, err := f.Config.check()
	if err != nil {
		return err
	}
	in, err := dialInjector()
	if err != nil {
		return fmt.Errorf("ctsync: %w", err)
	}
	defer in.Close()
	st := &followState{cfg: cfg, f: f, in: in, owned: make(map[tupleKey]owned)}
	backoff := minBackoff
	for {
		synced, err := st.session(ctx, addr)
		f.setConnected(false)
		if ctx.Err() != nil {
			return nil
		}
		if synced {
			backoff = minBackoff
		}
		cfg.Logf("ctsync: following %s: %v; again in %s", addr, err, backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// Stats returns the follower's counters.
func (f *Follower) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

func (f *Follower) setConnected(up bool) {
	f.mu.Lock()
	f.stats.Connected = up
	f.mu.Unlock()
}

func (f *Follower) count(applied, deleted, failed uint64, lag time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Applied += applied
	f.stats.Deleted += deleted
	f.stats.Failed += failed
	if lag != 0 {
		f.stats.LastLag = lag
	}
}

// followState is what outlives a session: the entries injected, so
// that the first full dump of the next session removes those the server
// no longer has.
type followState struct {
	cfg   Config
	f     *Follower
	in    *injector
	owned map[tupleKey]owned
	gen   uint64
}

// session runs one connection; synced says whether it got as far as a
// full dump.
func (st *followState) session(ctx context.Context, addr string) (synced bool, err error) {
	// Dialed on the calling goroutine: the socket is created in its
	// thread's namespace.
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	c, err := d.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return false, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	key, err := followerHandshake(c, st.cfg.Key)
	if err != nil {
		return false, err
	}
	st.f.setConnected(true)
	fr := newFrameReader(bufio.NewReader(c), key)
	for {
		_ = c.SetReadDeadline(time.Now().Add(readTimeout))
		b, err := fr.read()
		if err != nil {
			return synced, err
		}
		m, err := decodeMessage(b)
		if err != nil {
			return synced, err
		}
		if m.kind == kindDumpEnd {
			synced = true
		}
		st.apply(m)
	}
}

// local says whether this node holds ip (Follower.Local).
func (st *followState) local(ip netip.Addr) bool {
	return st.f.Local != nil && st.f.Local(ip)
}

func (st *followState) apply(m message) {
	var applied, deleted, failed uint64
	var lag time.Duration
	switch m.kind {
	case kindDumpStart:
		st.gen++
	case kindDumpEnd:
		for k, o := range st.owned {
			if o.gen == st.gen {
				continue
			}
			if st.local(o.e.natIP) {
				delete(st.owned, k) // this node's own now: no longer the peer's
				continue
			}
			removed, err := st.in.remove(o.e)
			if err != nil {
				st.cfg.Logf("ctsync: %v", err)
				failed++
				continue
			}
			delete(st.owned, k)
			if removed {
				deleted++
			}
		}
	case kindUpsert:
		lag = time.Since(m.seen)
		for _, e := range m.entries {
			if e.mark&st.cfg.MarkMask == 0 {
				failed++
				continue
			}
			if st.local(e.natIP) {
				if changed, err := st.in.adopt(e); err != nil {
					st.cfg.Logf("ctsync: %v", err)
					failed++
				} else if changed {
					applied++
				}
				continue
			}
			if err := st.in.upsert(e); err != nil {
				st.cfg.Logf("ctsync: %v", err)
				failed++
				continue
			}
			st.owned[e.key] = owned{e: e, gen: st.gen}
			applied++
		}
	case kindDelete:
		lag = time.Since(m.seen)
		for _, e := range m.entries {
			if st.local(e.natIP) {
				delete(st.owned, e.key)
				continue
			}
			removed, err := st.in.remove(e)
			if err != nil {
				st.cfg.Logf("ctsync: %v", err)
				failed++
				continue
			}
			delete(st.owned, e.key)
			if removed {
				deleted++
			}
		}
	}
	st.f.count(applied, deleted, failed, lag)
}
