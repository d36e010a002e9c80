package ha

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/nsegress/nsegress/agent/ctsync"
	"github.com/nsegress/nsegress/agent/datapath"
)

// DefaultPort is the UDP port of heartbeats and pushes, and the TCP port
// of connection-state replication.
const DefaultPort = 8480

// Config is what the HA runtime needs.
type Config struct {
	NodeName string
	// Uplink names the underlay interface; empty finds the one holding
	// the node's InternalIP.
	Uplink string
	// Port is the HA port (DefaultPort when 0).
	Port uint16
	// Key authenticates every message (HMAC-SHA256). Whoever knows it
	// can claim a floating IP towards every node: it is as secret as the
	// agent's own credentials.
	Key []byte
	// LoadKey, when Key is empty, is called by Run until it returns a key
	// (the controller creates it at install, perhaps after the agents
	// start); the runtime starts once it has one.
	LoadKey func(context.Context) ([]byte, error)
	// Interval is the heartbeat period (50 ms when 0); DeadAfter how long
	// a silent peer is alive (3 intervals when 0); FenceAfter how long a
	// holder that hears no peer and cannot reach its uplink's router keeps
	// its IPs (10 intervals when 0).
	Interval, DeadAfter, FenceAfter time.Duration
	// Replicate turns on connection-state replication between the
	// gateways of a group (package ctsync), in the process's own network
	// namespace; MarkMask is nsegress's conntrack mark bits.
	Replicate bool
	MarkMask  uint32
	// Kick asks the node role to reconcile now: the holders changed.
	Kick func()
	// Claimed is called with this node's takeovers whenever they change,
	// for the controller to adopt (the Node's claims annotation).
	Claimed func(map[netip.Addr]int64)
	Logf    func(format string, args ...any)
}

// Runtime watches the node's gateway peers and takes floating IPs over
// from dead ones, without the API server.
type Runtime struct {
	cfg  Config
	boot uint64

	mu    sync.Mutex
	world World
	self  netip.Addr
	// started is when the runtime began listening: a peer never heard
	// counts as silent since then.
	started   time.Time
	lastHeard map[string]time.Time
	hears     map[string][]string
	heard     map[netip.Addr]claim
	own       map[netip.Addr]int64
	holders   map[netip.Addr]Holder
	// fenced: this node holds nothing (no peer, no router); quietUntil:
	// after a fence, it holds nothing until it has heard its peers'
	// claims; suppressed: IPs another MAC announced.
	fenced     bool
	quietUntil time.Time
	suppressed map[netip.Addr]time.Time
	probing    map[netip.Addr]bool
	// draining are the IPs this node let go, until when it still
	// forwards and replicates their flows (DrainFor).
	draining map[netip.Addr]time.Time
	// takenFrom are the IPs this node took from another holder less than
	// DrainFor ago, and from which node (PassingOn).
	takenFrom map[netip.Addr]handback
	// peerSeen is when each peer was last one (peersLocked).
	peerSeen map[string]time.Time
	// placed is when this node saw each IP's API holder and epoch
	// first (freshLocked).
	placed map[netip.Addr]placement
	// handoverDue is when the earliest planned move this node waits for
	// falls back to the API's word (handOverLocked).
	handoverDue time.Time
	// uplinkCheckedAt paces the uplink checks of a silent holder.
	uplinkCheckedAt time.Time
	// silentLogged avoids logging a live datapath behind a dead agent at
	// every probe.
	silentLogged map[netip.Addr]bool
	// suspected are the IPs whose holder's silence was logged.
	suspected map[netip.Addr]bool
	seq       uint64
	conn      *net.UDPConn
	arp       *arpSocket
	uplink    string
	// router is the uplink's default router, refreshed by the run loop
	// (netlink lookups belong on the loop's thread, in the runtime's
	// network namespace).
	router   netip.Addr
	routerAt time.Time
	// server is the replication server, told to resync when the held IPs
	// change.
	server *ctsync.Server
}

// New prepares the runtime; Run starts it.
func New(cfg Config) *Runtime {
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Interval == 0 {
		cfg.Interval = 50 * time.Millisecond
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = 3 * cfg.Interval
	}
	if cfg.FenceAfter == 0 {
		cfg.FenceAfter = 10 * cfg.Interval
	}
	if cfg.Kick == nil {
		cfg.Kick = func() {}
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on Linux
	return &Runtime{
		cfg: cfg, boot: binary.LittleEndian.Uint64(b[:]),
		lastHeard: map[string]time.Time{}, hears: map[string][]string{}, heard: map[netip.Addr]claim{},
		own: map[netip.Addr]int64{}, holders: map[netip.Addr]Holder{}, suppressed: map[netip.Addr]time.Time{},
		probing: map[netip.Addr]bool{}, silentLogged: map[netip.Addr]bool{}, suspected: map[netip.Addr]bool{}, draining: map[netip.Addr]time.Time{}, takenFrom: map[netip.Addr]handback{}, peerSeen: map[string]time.Time{},
	}
}

// SetKick sets Config.Kick: the node role that the runtime kicks is made
// with the runtime. Call it before Run.
func (r *Runtime) SetKick(kick func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg.Kick = kick
}

// Update gives the runtime the API's current world and returns every
// floating IP's holder as this node knows it.
func (r *Runtime) Update(w World) map[netip.Addr]Holder {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	r.world = w
	r.self = w.Nodes[r.cfg.NodeName]
	// When each IP got the holder the API names: a holder is given time
	// to put a fresh IP on its uplink before its silence means anything.
	placed := map[netip.Addr]placement{}
	for _, g := range w.Groups {
		for ip, a := range g.IPs {
			p := placement{node: a.Active, epoch: a.Epoch, at: now}
			if old, ok := r.placed[ip]; ok && old.node == p.node && old.epoch == p.epoch {
				p.at = old.at
			}
			placed[ip] = p
		}
	}
	r.placed = placed
	for _, p := range w.peersOf(r.cfg.NodeName) {
		r.peerSeen[p] = now
	}
	// A takeover the API has caught up with (adopted, or overtaken by a
	// later move) is the API's now.
	for ip, e := range r.own {
		if g, ok := w.groupOf(ip); !ok || g.IPs[ip].Epoch >= e {
			delete(r.own, ip)
			r.claimedLocked()
		}
	}
	r.recomputeLocked(time.Now())
	return maps.Clone(r.holders)
}

// placement is an IP's API holder and epoch, and when this node first
// saw them.
type placement struct {
	node  string
	epoch int64
	at    time.Time
}

// PlaceGrace is how long a holder the API has just named may stay silent
// without being probed: until its node role has put the IP on its uplink
// (it answers ARP for it only then), a silent holder with no answer is
// not dead but new, and its agent may still be waiting for the HA key.
const PlaceGrace = 3 * time.Second

// freshLocked says whether holder h of ip was named by the API less than
// PlaceGrace ago and has not been heard since.
func (r *Runtime) freshLocked(ip netip.Addr, h Holder, now time.Time) bool {
	p, ok := r.placed[ip]
	if !ok || p.node != h.Node || p.epoch != h.Epoch || now.Sub(p.at) >= PlaceGrace {
		return false
	}
	heard, ok := r.lastHeard[h.Node]
	return !ok || heard.Before(p.at)
}

// peerGrace is how long a node stays a peer after it left this node's
// groups (or this node left them): a node relabelled out of a group hands
// its IPs over like a cordoned one, and its flows must keep replicating
// while it drains (DrainFor).
const peerGrace = 10 * time.Second

// peersLocked are the nodes this node heartbeats with and replicates
// to: its groups' peers, and those that were until peerGrace ago.
func (r *Runtime) peersLocked() []string {
	now := time.Now()
	var out []string
	for p, t := range r.peerSeen {
		if now.Sub(t) < peerGrace {
			out = append(out, p)
		} else {
			delete(r.peerSeen, p)
		}
	}
	slices.Sort(out)
	return out
}

// Holders is every floating IP's holder as this node knows it.
func (r *Runtime) Holders() map[netip.Addr]Holder {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.holders)
}

// recomputeLocked refreshes holders and says whether they changed.
func (r *Runtime) recomputeLocked(now time.Time) bool {
	barred := func(ip netip.Addr) bool {
		return r.fenced || now.Before(r.quietUntil) || now.Before(r.suppressed[ip])
	}
	h := effective(r.cfg.NodeName, r.world, r.heard, r.own, barred)
	r.handOverLocked(h, now, barred)
	if maps.Equal(h, r.holders) {
		return false
	}
	for ip, old := range r.holders {
		if old.Node == r.cfg.NodeName && h[ip].Node != r.cfg.NodeName {
			r.draining[ip] = now.Add(DrainFor)
			time.AfterFunc(DrainFor+10*time.Millisecond, r.endDrain)
		}
	}
	for ip, cur := range h {
		if cur.Node != r.cfg.NodeName {
			delete(r.takenFrom, ip)
			continue
		}
		delete(r.draining, ip)
		if old := r.holders[ip]; old.Node != "" && old.Node != r.cfg.NodeName {
			// A deleted Node is still in the world: the node role keeps
			// it for a minute (node.goneNodeFor).
			if addr, ok := r.world.Nodes[old.Node]; ok {
				r.takenFrom[ip] = handback{addr: addr, until: now.Add(DrainFor)}
				time.AfterFunc(DrainFor+10*time.Millisecond, r.endDrain)
			}
		}
	}
	r.holders = h
	r.resyncLocked()
	return true
}

// HandoverWait is how long, after the API moved a floating IP to another
// node (a planned move: a drain, a relabel, a deleted Node), every other
// node keeps following its previous holder unless it hears the new holder
// claim the IP first. The new holder claims it (Holding) only once its
// datapath is programmed for it, so no worker's tunnel points at a gateway
// that is not ready yet, and the old holder keeps the address until the
// new one has it; the API's word is the fallback should the claim be lost.
const HandoverWait = time.Second

// handOverLocked puts back the previous holder of each IP that the API
// has just moved to another node, until HandoverWait after this node saw
// the move or until it hears the new holder's claim; the new holder itself
// takes the IP at once. A takeover (a claim heard, or this node's own) is
// never held back: it already comes from a holder that is ready.
func (r *Runtime) handOverLocked(h map[netip.Addr]Holder, now time.Time, barred func(netip.Addr) bool) {
	var due time.Time
	for ip, cur := range h {
		old, ok := r.holders[ip]
		if !ok || old.Node == "" || old.Node == cur.Node || cur.Node == r.cfg.NodeName || old.Epoch >= cur.Epoch {
			continue
		}
		if c, heard := r.heard[ip]; heard && c.node == cur.Node && c.epoch >= cur.Epoch {
			continue
		}
		p, ok := r.placed[ip]
		if !ok || p.node != cur.Node || p.epoch != cur.Epoch || now.Sub(p.at) >= HandoverWait {
			continue
		}
		if old.Node == r.cfg.NodeName && barred(ip) {
			continue
		}
		h[ip] = old
		if end := p.at.Add(HandoverWait); due.IsZero() || end.Before(due) {
			due = end
		}
	}
	if !due.IsZero() && !due.Equal(r.handoverDue) {
		r.handoverDue = due
		time.AfterFunc(due.Sub(now)+10*time.Millisecond, r.refresh)
	}
}

func (r *Runtime) claimedLocked() {
	if r.cfg.Claimed != nil {
		r.cfg.Claimed(maps.Clone(r.own))
	}
}

// Run listens on the HA port and heartbeats with the node's peers until
// ctx ends. Until it has a key it does nothing: holders are the API's.
func (r *Runtime) Run(ctx context.Context) error {
	key, err := r.waitKey(ctx)
	if err != nil {
		return nil // ctx ended
	}
	self, err := r.waitSelf(ctx)
	if err != nil {
		return nil // ctx ended
	}
	uplink := r.cfg.Uplink
	if uplink == "" {
		if uplink, _, err = datapath.FindUplink(self); err != nil {
			return fmt.Errorf("ha: %w", err)
		}
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(self.AsSlice()), Port: int(r.cfg.Port)})
	if err != nil {
		return fmt.Errorf("ha: listen on %s:%d: %w", self, r.cfg.Port, err)
	}
	defer conn.Close()
	arp, err := openARP(uplink, self, r.seenARP)
	if err != nil {
		return fmt.Errorf("ha: %w", err)
	}
	defer arp.close()
	r.mu.Lock()
	r.cfg.Key = key
	r.conn, r.arp, r.uplink = conn, arp, uplink
	r.started = time.Now()
	r.mu.Unlock()
	done := make(chan struct{})
	defer close(done)
	go arp.read(done)
	go r.receive(conn)
	if r.cfg.Replicate {
		go r.replicate(ctx, self)
	}
	go func() {
		<-ctx.Done()
		_ = conn.Close() // ends receive
	}()
	r.cfg.Logf("ha: heartbeats on %s:%d every %s; a peer is dead after %s of silence and no ARP answer", self, r.cfg.Port, r.cfg.Interval, r.cfg.DeadAfter)
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			r.refreshRouter()
			r.beat()
			r.check(ctx)
		}
	}
}

// waitKey returns Config.Key, or the first key Config.LoadKey returns;
// it retries with a growing pause, logging the first failure and every
// change of reason.
func (r *Runtime) waitKey(ctx context.Context) ([]byte, error) {
	if len(r.cfg.Key) > 0 {
		return r.cfg.Key, nil
	}
	if r.cfg.LoadKey == nil {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	pause, said := 500*time.Millisecond, ""
	for {
		key, err := r.cfg.LoadKey(ctx)
		if err == nil {
			if said != "" {
				r.cfg.Logf("ha: got the key; gateway HA is on")
			}
			return key, nil
		}
		if err.Error() != said {
			said = err.Error()
			r.cfg.Logf("ha: gateway HA waits for its key (holders are the API's meanwhile): %v", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// waitSelf waits until the world names this node's address.
func (r *Runtime) waitSelf(ctx context.Context) (netip.Addr, error) {
	for {
		r.mu.Lock()
		self := r.self
		r.mu.Unlock()
		if self.IsValid() {
			return self, nil
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// messageLocked is what this node says now.
func (r *Runtime) messageLocked(now time.Time, push bool) message {
	r.seq++
	m := message{Node: r.cfg.NodeName, Boot: r.boot, Seq: r.seq, Time: now.UnixNano(), Push: push}
	for ip, h := range r.holders {
		if h.Node == r.cfg.NodeName {
			if m.Holds == nil {
				m.Holds = map[netip.Addr]int64{}
				m.Standbys = map[netip.Addr]string{}
			}
			m.Holds[ip] = h.Epoch
			if g, ok := r.world.groupOf(ip); ok && g.IPs[ip].Standby != "" && g.IPs[ip].Standby != r.cfg.NodeName {
				m.Standbys[ip] = g.IPs[ip].Standby
			}
		}
	}
	for p, t := range r.lastHeard {
		if now.Sub(t) < r.cfg.DeadAfter {
			m.Hears = append(m.Hears, p)
		}
	}
	slices.Sort(m.Hears)
	return m
}

// beat sends a heartbeat to every peer.
func (r *Runtime) beat() {
	r.mu.Lock()
	now := time.Now()
	peers := r.peersLocked()
	if len(peers) == 0 {
		r.mu.Unlock()
		return
	}
	m := r.messageLocked(now, false)
	var to []netip.Addr
	for _, p := range peers {
		if ip, ok := r.world.Nodes[p]; ok {
			to = append(to, ip)
		}
	}
	r.mu.Unlock()
	r.send(m, to)
}

func (r *Runtime) send(m message, to []netip.Addr) {
	b, err := seal(r.cfg.Key, m)
	if err != nil {
		r.cfg.Logf("ha: %v", err)
		return
	}
	for _, ip := range to {
		// A lost heartbeat is what the protocol is built for.
		_, _ = r.conn.WriteToUDPAddrPort(b, netip.AddrPortFrom(ip, r.cfg.Port))
	}
}

// Holding tells the runtime that the node now holds ips on its uplink:
// every node hears it at once (and twice more, in case of loss), so that
// workers re-point their tunnels without waiting for the API.
func (r *Runtime) Holding(ips []netip.Addr) {
	if len(ips) == 0 {
		return
	}
	go func() {
		for _, d := range []time.Duration{0, 100 * time.Millisecond, time.Second} {
			time.Sleep(d)
			r.mu.Lock()
			if r.conn == nil {
				r.mu.Unlock()
				return
			}
			m := r.messageLocked(time.Now(), true)
			var to []netip.Addr
			for n, ip := range r.world.Nodes {
				if n != r.cfg.NodeName {
					to = append(to, ip)
				}
			}
			r.mu.Unlock()
			r.send(m, to)
		}
	}()
}

// receive reads messages until the connection closes.
func (r *Runtime) receive(conn *net.UDPConn) {
	var guard replayGuard
	buf := make([]byte, maxMessage)
	// Refused datagrams are logged at most once a second, with how many
	// were refused meanwhile: anyone on the node network (a pod, through
	// its node's masquerade) can send to the port, and must not be able
	// to flood the log.
	var refused int
	var loggedAt time.Time
	refuse := func(format string, args ...any) {
		refused++
		if time.Since(loggedAt) >= time.Second {
			r.cfg.Logf("ha: refused %d message(s); the last: "+format, append([]any{refused}, args...)...)
			refused, loggedAt = 0, time.Now()
		}
	}
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m, err := open(r.cfg.Key, buf[:n])
		if err != nil {
			refuse("from %s: %v", from.Addr(), err)
			continue
		}
		now := time.Now()
		r.mu.Lock()
		sender, known := r.world.Nodes[m.Node]
		r.mu.Unlock()
		if !known || sender != from.Addr().Unmap() {
			refuse("a message for node %s came from %s, not from its address", m.Node, from.Addr())
			continue
		}
		if err := guard.accept(m, now); err != nil {
			refuse("%v", err)
			continue
		}
		r.hear(m, now)
	}
}

// hear records what a peer said.
func (r *Runtime) hear(m message, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastHeard[m.Node] = now
	r.hears[m.Node] = m.Hears
	for ip, c := range r.heard {
		if _, still := m.Holds[ip]; c.node == m.Node && !still {
			delete(r.heard, ip) // it let the IP go
		}
	}
	for ip, e := range m.Holds {
		if !r.mayHoldLocked(m.Node, ip) {
			// Only a gateway of the IP's group may hold it: root on any
			// other node has the key too, and must not be able to draw
			// other nodes' tunnels to itself.
			continue
		}
		if c, ok := r.heard[ip]; !ok || c.node == m.Node || e > c.epoch {
			r.heard[ip] = claim{node: m.Node, epoch: e, standby: m.Standbys[ip]}
		}
	}
	if r.recomputeLocked(now) {
		r.cfg.Kick()
	}
}

// mayHoldLocked says whether node is a gateway (Up or not) of the group
// of the floating IP, as the API says.
func (r *Runtime) mayHoldLocked(node string, ip netip.Addr) bool {
	g, ok := r.world.groupOf(ip)
	return ok && slices.Contains(g.peers(), node)
}

// seenARP handles an ARP frame from another machine: one that announces
// an IP this node holds means two holders. The one with the higher epoch
// keeps it; without a higher epoch this node lets it go for a while.
func (r *Runtime) seenARP(ip netip.Addr, mac net.HardwareAddr) {
	r.mu.Lock()
	h, ok := r.holders[ip]
	if !ok || h.Node != r.cfg.NodeName {
		r.mu.Unlock()
		return
	}
	if c, heard := r.heard[ip]; !heard || c.epoch < h.Epoch {
		if _, mine := r.own[ip]; mine {
			// This node's takeover is the newest word on the IP: say it
			// again.
			arp := r.arp
			r.mu.Unlock()
			r.cfg.Logf("ha: %s announced %s, which this node holds at epoch %d: announcing again", mac, ip, h.Epoch)
			if arp != nil {
				_ = arp.announce(ip) // a lost announcement is repeated at the next conflict
			}
			return
		}
	}
	now := time.Now()
	r.suppressed[ip] = now.Add(2 * time.Second)
	changed := r.recomputeLocked(now)
	r.mu.Unlock()
	r.cfg.Logf("ha: %s announced %s, which this node holds at epoch %d: letting it go", mac, ip, h.Epoch)
	if changed {
		r.cfg.Kick()
	}
	time.AfterFunc(2*time.Second+10*time.Millisecond, r.refresh)
}

// DrainFor is how long a node that let a floating IP go keeps
// forwarding, SNATing and replicating the policy traffic that still
// arrives through its tunnels: nodes re-point their tunnels to the new
// holder within this time, and a connection one of them opens meanwhile
// is replicated to the new holder, which receives its replies (it answers
// ARP for the IP now), instead of losing its SYN.
const DrainFor = 2 * time.Second

// Draining are the floating IPs this node let go less than DrainFor ago.
func (r *Runtime) Draining() map[netip.Addr]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.drainingLocked(time.Now())
}

func (r *Runtime) drainingLocked(now time.Time) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for ip, until := range r.draining {
		if now.Before(until) {
			out[ip] = true
		} else {
			delete(r.draining, ip)
		}
	}
	return out
}

// handback is the address of the node an IP was taken from, until when.
type handback struct {
	addr  netip.Addr
	until time.Time
}

// PassingOn maps each floating IP this node took from another node less
// than DrainFor ago to that node's address: replies of connections it
// SNATed just before the move may reach this node before their
// replicated state, and are passed on to it (nft State.PassOn).
func (r *Runtime) PassingOn() map[netip.Addr]netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	out := map[netip.Addr]netip.Addr{}
	for ip, b := range r.takenFrom {
		if now.Before(b.until) {
			out[ip] = b.addr
		} else {
			delete(r.takenFrom, ip)
		}
	}
	return out
}

// endDrain asks the node role to stop forwarding an IP whose drain ended.
func (r *Runtime) endDrain() {
	r.mu.Lock()
	r.drainingLocked(time.Now())
	r.mu.Unlock()
	r.cfg.Kick()
}

// refresh recomputes the holders when a time bar ends.
func (r *Runtime) refresh() {
	r.mu.Lock()
	changed := r.recomputeLocked(time.Now())
	r.mu.Unlock()
	if changed {
		r.cfg.Kick()
	}
}

// refreshRouter looks up the uplink's default router every few seconds.
func (r *Runtime) refreshRouter() {
	r.mu.Lock()
	uplink, at := r.uplink, r.routerAt
	r.mu.Unlock()
	if time.Since(at) < 5*time.Second {
		return
	}
	var gw netip.Addr
	if routes, err := datapath.UnderlayRoutes(uplink); err == nil {
		gw = routes[netip.PrefixFrom(netip.IPv4Unspecified(), 0)]
	}
	r.mu.Lock()
	r.router, r.routerAt = gw, time.Now()
	r.mu.Unlock()
}
