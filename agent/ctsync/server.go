package ctsync

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// Server streams this network namespace's selected SNAT entries to
// every authenticated follower: a full dump when the follower connects,
// then every NEW/UPDATE/DESTROY event, and a full dump again at every
// Resync and every ResyncEvery (UDP entries are refreshed by traffic
// without events, so only a periodic dump keeps the follower's timeouts
// alive).
type Server struct {
	Config
	// Select says whether an entry SNATed to natIP is replicated now:
	// the floating IPs this node holds. Called per entry, from several
	// goroutines; may change over time (call Resync after it changes).
	// nil selects none.
	Select func(natIP netip.Addr) bool
	// Allowed says whether a follower connecting from addr may follow
	// (the group's peers' node addresses). nil allows none.
	Allowed func(addr netip.Addr) bool
	// ResyncEvery is the period of full dumps; DefaultResyncEvery when
	// zero.
	ResyncEvery time.Duration

	mu       sync.Mutex
	sessions map[*session]struct{}
}

// session is one follower's queue: entries of events, and a pending
// full dump.
type session struct {
	events chan message
	resync chan struct{}
}

// eventQueue bounds a session's backlog of events; a follower that falls
// further behind gets a full dump instead, which also covers what was
// dropped.
const eventQueue = 4096

// eventBuffer is the event socket's receive buffer: large enough for a
// burst of new flows while the server is busy.
const eventBuffer = 8 << 20

// Serve accepts followers on ln until ctx ends, then returns nil; or
// returns the error that keeps it from serving. Its conntrack sockets are
// opened in the network namespace of the calling thread, so a caller in
// another namespace than the process's calls it on a goroutine locked to
// a thread in that namespace. Serve closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer ln.Close()
	cfg, err := s.Config.check()
	if err != nil {
		return err
	}
	every := s.ResyncEvery
	if every <= 0 {
		every = DefaultResyncEvery
	}
	// Both sockets are opened here, in the caller's namespace; they can
	// be used from any goroutine afterwards.
	dump, err := conntrack.Dial(nil)
	if err != nil {
		return fmt.Errorf("ctsync: open conntrack netlink: %w", err)
	}
	defer dump.Close()
	events, err := netfilter.Dial(nil)
	if err != nil {
		return fmt.Errorf("ctsync: open conntrack netlink: %w", err)
	}
	if err := events.JoinGroups(netfilter.GroupsCT); err != nil {
		_ = events.Close()
		return fmt.Errorf("ctsync: join conntrack event groups: %w", err)
	}
	if err := events.SetReadBuffer(eventBuffer); err != nil {
		cfg.Logf("ctsync: event buffer: %v", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() {
		_ = ln.Close()
		_ = events.Close()
	})
	defer stop()
	wg.Go(func() { s.watch(ctx, cfg, events) })
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.Resync()
			}
		}
	})
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("ctsync: accept: %w", err)
		}
		wg.Go(func() {
			defer c.Close()
			if err := s.serveConn(ctx, cfg, c, dump); err != nil && ctx.Err() == nil {
				cfg.Logf("ctsync: follower %s: %v", c.RemoteAddr(), err)
			}
		})
	}
}

// Resync makes every connected follower get a full dump, after Select
// changed.
func (s *Server) Resync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ss := range s.sessions {
		ss.requestDump()
	}
}

func (ss *session) requestDump() {
	select {
	case ss.resync <- struct{}{}:
	default: // one is pending already
	}
}

func (s *Server) selects(e entry) bool {
	return s.Select != nil && s.Select(e.natIP)
}

// watch reads conntrack events and queues the replicated ones to every
// session. Events are per namespace (the socket's).
func (s *Server) watch(ctx context.Context, cfg Config, events *netfilter.Conn) {
	for {
		msgs, err := events.Receive()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// ENOBUFS: the kernel dropped events because the socket's
			// buffer was full. The socket still works; a full dump to
			// everyone covers what was lost.
			if errors.Is(err, unix.ENOBUFS) {
				cfg.Logf("ctsync: conntrack events lost, resyncing")
				s.Resync()
				continue
			}
			cfg.Logf("ctsync: read conntrack events: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		seen := time.Now()
		for _, nlm := range msgs {
			var ev conntrack.Event
			if err := ev.Unmarshal(nlm); err != nil || ev.Flow == nil {
				continue
			}
			var m message
			switch ev.Type {
			case conntrack.EventNew, conntrack.EventUpdate:
				e, ok := entryFromFlow(*ev.Flow, cfg.MarkMask, true)
				if !ok || !s.selects(e) {
					continue
				}
				m = message{kind: kindUpsert, seen: seen, entries: []entry{e}}
			case conntrack.EventDestroy:
				// Not filtered by Select: the follower deletes only a
				// copy it holds with the same binding.
				e, ok := entryFromFlow(*ev.Flow, cfg.MarkMask, false)
				if !ok {
					continue
				}
				m = message{kind: kindDelete, seen: seen, entries: []entry{e}}
			default:
				continue
			}
			s.broadcast(m)
		}
	}
}

func (s *Server) broadcast(m message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ss := range s.sessions {
		select {
		case ss.events <- m:
		default:
			// The follower is behind: drop the event, and dump.
			ss.requestDump()
		}
	}
}

// serveConn authenticates one follower and streams to it until the
// connection or ctx ends.
func (s *Server) serveConn(ctx context.Context, cfg Config, c net.Conn, dump *conntrack.Conn) error {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return err
	}
	if s.Allowed == nil || !s.Allowed(ap.Addr().Unmap()) {
		return errors.New("not allowed to follow")
	}
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	key, err := serverHandshake(c, cfg.Key)
	if err != nil {
		return err
	}
	_ = c.SetDeadline(time.Time{})

	ss := &session{events: make(chan message, eventQueue), resync: make(chan struct{}, 1)}
	// Registered before the first dump, so that no event between the
	// dump and the registration is lost.
	s.mu.Lock()
	if s.sessions == nil {
		s.sessions = make(map[*session]struct{})
	}
	s.sessions[ss] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, ss)
		s.mu.Unlock()
	}()
	ss.requestDump()

	bw := bufio.NewWriter(c)
	fw := newFrameWriter(bw, key)
	send := func(m message) error {
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
		return fw.write(encodeMessage(m))
	}
	heartbeat := time.NewTicker(heartbeatEvery)
	defer heartbeat.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-ss.resync:
			err = s.sendDump(cfg, dump, send)
		case m := <-ss.events:
			err = send(m)
			// Send what else is queued before flushing.
			for err == nil && len(ss.events) > 0 {
				err = send(<-ss.events)
			}
		case <-heartbeat.C:
			err = send(message{kind: kindHeartbeat, seen: time.Now()})
		}
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			return err
		}
	}
}

// sendDump sends a full dump of the selected entries, framed by
// kindDumpStart and kindDumpEnd. ctnetlink does not flag a dump that
// concurrent changes interrupted; a change it missed arrives as an event
// queued meanwhile, sent after the dump.
func (s *Server) sendDump(cfg Config, dump *conntrack.Conn, send func(message) error) error {
	seen := time.Now()
	flows, err := dump.Dump(nil)
	if err != nil {
		return fmt.Errorf("dump conntrack: %w", err)
	}
	if err := send(message{kind: kindDumpStart, seen: seen}); err != nil {
		return err
	}
	batch := make([]entry, 0, maxBatch)
	for _, f := range flows {
		e, ok := entryFromFlow(f, cfg.MarkMask, true)
		if !ok || !s.selects(e) {
			continue
		}
		batch = append(batch, e)
		if len(batch) == maxBatch {
			if err := send(message{kind: kindUpsert, seen: seen, entries: batch}); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		if err := send(message{kind: kindUpsert, seen: seen, entries: batch}); err != nil {
			return err
		}
	}
	return send(message{kind: kindDumpEnd, seen: seen})
}
