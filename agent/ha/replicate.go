package ha

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/nsegress/nsegress/agent/ctsync"
)

// replicate keeps this node's peers' connection state in its kernel and
// serves its own to them, until ctx ends: a ctsync server on the HA port
// (TCP) that streams the entries of the floating IPs this node holds now,
// and a follower of every peer in this node's groups. A standby thus
// holds its active's SNAT entries before it takes the IP over, and the
// old active holds the new one's when it comes back (fail-back keeps
// flows too). Followers dial from the calling goroutine's thread, which
// Run keeps in the node's network namespace.
func (r *Runtime) replicate(ctx context.Context, self netip.Addr) {
	cfg := ctsync.Config{Key: r.cfg.Key, MarkMask: r.cfg.MarkMask, Logf: r.cfg.Logf}
	holds := func(ip netip.Addr) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.holders[ip].Node == r.cfg.NodeName
	}
	srv := &ctsync.Server{
		Config: cfg,
		// The IPs it holds, and those it is handing over: flows it opens
		// while draining reach the new holder.
		Select: func(ip netip.Addr) bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.holders[ip].Node == r.cfg.NodeName || r.drainingLocked(time.Now())[ip]
		},
		Allowed: func(a netip.Addr) bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, p := range r.peersLocked() {
				if r.world.Nodes[p] == a.Unmap() {
					return true
				}
			}
			return false
		},
	}
	r.mu.Lock()
	r.server = srv
	r.mu.Unlock()
	ln, err := net.Listen("tcp4", netip.AddrPortFrom(self, r.cfg.Port).String())
	if err != nil {
		r.cfg.Logf("ha: connection-state replication is off: %v", err)
		return
	}
	go func() {
		if err := srv.Serve(ctx, ln); err != nil {
			r.cfg.Logf("ha: connection-state replication server: %v", err)
		}
	}()
	following := map[string]context.CancelFunc{}
	defer func() {
		for _, cancel := range following {
			cancel()
		}
	}()
	for {
		r.mu.Lock()
		want := map[string]bool{}
		for _, p := range r.peersLocked() {
			if ip, ok := r.world.Nodes[p]; ok {
				want[netip.AddrPortFrom(ip, r.cfg.Port).String()] = true
			}
		}
		r.mu.Unlock()
		for addr, cancel := range following {
			if !want[addr] {
				cancel()
				delete(following, addr)
			}
		}
		for addr := range want {
			if _, ok := following[addr]; ok {
				continue
			}
			c, cancel := context.WithCancel(ctx)
			following[addr] = cancel
			f := &ctsync.Follower{Config: cfg, Local: holds}
			go func() {
				if err := f.Run(c, addr); err != nil {
					r.cfg.Logf("ha: follow %s: %v", addr, err)
				}
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// resyncLocked asks the replication server for a full dump to every follower:
// the IPs this node holds changed.
func (r *Runtime) resyncLocked() {
	if r.server != nil {
		go r.server.Resync()
	}
}
