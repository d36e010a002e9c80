package ha

import (
	"context"
	"net/netip"
	"time"
)

// ARP probes: two requests 40 ms apart. A live kernel answers within a
// millisecond on a LAN; the second request covers one lost frame.
const (
	probeTries = 2
	probeWait  = 40 * time.Millisecond
)

// check looks, once per heartbeat, for floating IPs this node stands by
// for whose holder went silent, and for whether this node must fence
// itself.
func (r *Runtime) check(ctx context.Context) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.world.Groups {
		for ip, a := range g.IPs {
			h := r.holders[ip]
			// Only the standby acts: the one the holder last named in its
			// heartbeats, or else the API's (this node's view of the API
			// may lag: its watches may have broken in a partition). A
			// holder the API does not know is trusted only when it named
			// this node its standby itself.
			standby, active := a.Standby, a.Active
			if c, ok := r.heard[ip]; ok && c.node == h.Node && c.standby != "" {
				standby, active = c.standby, c.node
			}
			if standby != r.cfg.NodeName || h.Node == "" || h.Node == r.cfg.NodeName || h.Node != active || r.probing[ip] {
				continue
			}
			if r.aliveLocked(h.Node, now) || r.freshLocked(ip, h, now) {
				delete(r.silentLogged, ip)
				delete(r.suspected, ip)
				continue
			}
			if !r.suspected[ip] {
				r.suspected[ip] = true
				last, ok := r.lastHeard[h.Node]
				if !ok {
					last = r.started
				}
				r.cfg.Logf("ha: %s, holder of %s, silent for %s: probing", h.Node, ip, now.Sub(last).Round(time.Millisecond))
			}
			r.probing[ip] = true
			go r.probeAndTake(ctx, ip, h, g.Members)
		}
	}
	r.fenceLocked(ctx, now)
}

// aliveLocked says whether node was heard within DeadAfter; a node never
// heard counts as silent since the runtime started.
func (r *Runtime) aliveLocked(node string, now time.Time) bool {
	t, ok := r.lastHeard[node]
	if !ok {
		t = r.started
	}
	return now.Sub(t) < r.cfg.DeadAfter
}

// probeAndTake decides whether a silent holder is dead: its agent may be
// restarting while its kernel still forwards and answers ARP for the IP,
// and then nothing moves. A holder that does not answer either is dead,
// unless this node is the one cut off (its own router does not answer)
// or, in a group of three or more, a majority does not agree.
func (r *Runtime) probeAndTake(ctx context.Context, ip netip.Addr, h Holder, members []string) {
	defer func() {
		r.mu.Lock()
		delete(r.probing, ip)
		r.mu.Unlock()
	}()
	silentSince := time.Now()
	if mac := r.arp.probeMAC(ip, probeTries, probeWait); mac != nil {
		r.mu.Lock()
		first := !r.silentLogged[ip]
		r.silentLogged[ip] = true
		r.mu.Unlock()
		if first {
			r.cfg.Logf("ha: %s is silent, but %s still answers ARP (from %s): its datapath is up, %s stays there", h.Node, ip, mac, ip)
		}
		return
	}
	if ctx.Err() != nil {
		return
	}
	if !r.uplinkWorks() {
		r.cfg.Logf("ha: %s is silent and %s unanswered, but this node's own uplink does not work: not taking over", h.Node, ip)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur := r.holders[ip]; cur != h || r.fenced {
		return // the world moved on while probing
	}
	if !majority(r.cfg.NodeName, h.Node, members, r.hears) {
		r.cfg.Logf("ha: %s looks dead, but no majority of its group agrees: not taking over %s", h.Node, ip)
		return
	}
	r.own[ip] = h.Epoch + 1
	r.claimedLocked()
	r.recomputeLocked(time.Now())
	r.cfg.Logf("ha: taking over %s from %s at epoch %d (silent and no ARP answer; decided in %s)", ip, h.Node, h.Epoch+1, time.Since(silentSince).Round(time.Millisecond))
	r.cfg.Kick()
}

// uplinkWorks says whether this node still reaches its underlay: its
// default router, or else any peer, answers ARP. With neither known it
// cannot tell, and says yes.
func (r *Runtime) uplinkWorks() bool {
	r.mu.Lock()
	arp := r.arp
	var targets []netip.Addr
	if r.router.IsValid() {
		targets = append(targets, r.router)
	}
	for _, p := range r.peersLocked() {
		if ip, ok := r.world.Nodes[p]; ok {
			targets = append(targets, ip)
		}
	}
	r.mu.Unlock()
	if len(targets) == 0 {
		return true
	}
	for _, t := range targets {
		if arp.probe(t, 1, probeWait) {
			return true
		}
	}
	return false
}

// fenceLocked drops every IP of a holder that hears no peer for
// FenceAfter and cannot reach its uplink: another node has taken them
// over by now, and two holders must not answer when the link comes back.
// Once a peer is heard again the fence lifts, after a quiet time in
// which the peers' claims arrive.
func (r *Runtime) fenceLocked(ctx context.Context, now time.Time) {
	peers := r.peersLocked()
	if len(peers) == 0 {
		return
	}
	var last time.Time
	for _, p := range peers {
		if t := r.lastHeard[p]; t.After(last) {
			last = t
		}
	}
	if last.IsZero() {
		last = r.started
	}
	silent := now.Sub(last) >= r.cfg.FenceAfter
	switch {
	case r.fenced && !silent:
		r.fenced = false
		r.quietUntil = now.Add(2 * r.cfg.DeadAfter)
		r.cfg.Logf("ha: peers heard again: fence lifted; holding again after %s of listening", 2*r.cfg.DeadAfter)
		time.AfterFunc(2*r.cfg.DeadAfter+10*time.Millisecond, r.refresh)
	case silent && (r.fenced || r.holdsLocked()) && !r.probing[netip.Addr{}] && now.Sub(r.uplinkCheckedAt) >= r.cfg.FenceAfter/2:
		r.uplinkCheckedAt = now
		// Fenced, the check also lifts the fence when the uplink works
		// again although no peer answers (they may all be gone).
		r.probing[netip.Addr{}] = true // one uplink check at a time
		go func() {
			works := r.uplinkWorks()
			r.mu.Lock()
			delete(r.probing, netip.Addr{})
			switch {
			case ctx.Err() != nil:
			case !works && !r.fenced:
				r.fenced = true
				r.cfg.Logf("ha: no peer heard for %s and the uplink does not answer: fencing, releasing every floating IP", r.cfg.FenceAfter)
			case works && r.fenced:
				r.fenced = false
				r.quietUntil = time.Now().Add(2 * r.cfg.DeadAfter)
				r.cfg.Logf("ha: the uplink answers again: fence lifted; holding again after %s of listening", 2*r.cfg.DeadAfter)
				time.AfterFunc(2*r.cfg.DeadAfter+10*time.Millisecond, r.refresh)
			}
			changed := r.recomputeLocked(time.Now())
			r.mu.Unlock()
			if changed {
				r.cfg.Kick()
			}
		}()
	}
}

func (r *Runtime) holdsLocked() bool {
	for _, h := range r.holders {
		if h.Node == r.cfg.NodeName {
			return true
		}
	}
	return false
}
