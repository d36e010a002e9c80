package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/nsegress/nsegress/agent/datapath"
	"github.com/nsegress/nsegress/agent/ha"
	"github.com/nsegress/nsegress/nft"
	"github.com/nsegress/nsegress/nodestate"
)

// NFT is the part of the node's nft table the node role programs.
type NFT interface {
	// Pods is the pods map as it is.
	Pods() (map[nft.PodKey]uint16, error)
	// Apply makes the table what the state says, in one transaction.
	Apply(nft.State) error
	// Delete removes the table.
	Delete() error
	Close() error
}

// Links is the node's links, routes, ip rules and addresses, as the
// node role changes them.
type Links interface {
	// Uplink is the underlay interface and its MTU: the one named, or
	// when name is empty the one holding nodeIP.
	Uplink(name string, nodeIP netip.Addr) (string, int, error)
	// Apply makes the node's tunnels, routes, rules and floating IPs
	// what the plan says and returns the floating IPs it added.
	Apply(datapath.Plan) (added []netip.Addr, err error)
	// Interfaces are the names of the node's interfaces.
	Interfaces() (map[string]bool, error)
	// UnderlayRoutes are the main table's routes through the uplink with
	// a next hop (datapath.UnderlayRoutes).
	UnderlayRoutes(uplink string) (map[netip.Prefix]netip.Addr, error)
	// Announce tells the underlay that the node holds ip now.
	Announce(uplink string, ip netip.Addr) error
	// Remove deletes every nsegress link, rule and route (where the
	// settings place them), and the given floating IPs.
	Remove(s datapath.Settings, uplink string, floating []netip.Addr) error
	// PodInterface is a running pod's host interface (and bridge port),
	// found from its address as ADD found it, never the uplink
	// (datapath.PodInterface).
	PodInterface(ip netip.Addr, uplink string) (hostIf, port string, err error)
}

// Kernel is what the node role changes on the node: the nft table and the
// links. Tests give fakes; HostKernel is the node's own.
type Kernel struct {
	OpenNFT func() (NFT, error)
	Links   Links
}

// HostKernel is the kernel of the network namespace the agent runs in.
func HostKernel() Kernel {
	return Kernel{
		OpenNFT: func() (NFT, error) { return nft.Open() },
		Links:   hostLinks{},
	}
}

// hostLinks is Links on the node's own kernel, through package datapath.
type hostLinks struct{}

func (hostLinks) Uplink(name string, nodeIP netip.Addr) (string, int, error) {
	if name == "" {
		return datapath.FindUplink(nodeIP)
	}
	mtu, err := datapath.LinkMTU(name)
	return name, mtu, err
}

func (hostLinks) Apply(p datapath.Plan) ([]netip.Addr, error) { return datapath.Apply(p) }

func (hostLinks) Interfaces() (map[string]bool, error) { return datapath.InterfaceNames() }

func (hostLinks) UnderlayRoutes(uplink string) (map[netip.Prefix]netip.Addr, error) {
	return datapath.UnderlayRoutes(uplink)
}

func (hostLinks) Announce(uplink string, ip netip.Addr) error { return datapath.Announce(uplink, ip) }

func (hostLinks) PodInterface(ip netip.Addr, uplink string) (string, string, error) {
	return datapath.PodInterface(ip, uplink)
}

func (hostLinks) Remove(s datapath.Settings, uplink string, floating []netip.Addr) error {
	return datapath.Remove(s, uplink, floating)
}

// reconciler reads what the node holds, plans and applies. It is the
// node role without the informers, so that tests drive it with views of
// their own.
type reconciler struct {
	cfg      Config
	st       nodestate.State
	lastSnap []byte
	// now is the clock (time.Now; tests step their own).
	now func() time.Time
	// holding are the floating IPs the last apply held, for the repeated
	// announcements.
	mu      sync.Mutex
	holding []netip.Addr
	// logged is the last message logged per key (logOnce).
	logged map[string]string
	// ownNode is the last copy of this node's Node the API showed, seen
	// the nodes of the last view, and gone the other Nodes deleted lately
	// (withGoneNodes).
	ownNode *corev1.Node
	seen    map[string]*corev1.Node
	gone    map[string]goneNode
}

// goneNode is the last copy of a deleted Node, and when it went.
type goneNode struct {
	node *corev1.Node
	at   time.Time
}

// goneNodeFor is how long a deleted Node stays in the plan: tunnels to it
// keep working while the controller moves its floating IPs away and their
// new holder takes them.
const goneNodeFor = time.Minute

func newReconciler(cfg Config) reconciler {
	return reconciler{cfg: cfg, st: nodestate.State{Dir: cfg.StateDir}, now: time.Now}
}

// lockWait bounds how long a reconcile waits for the state lock that
// ADD and DEL hold for a few milliseconds each.
const lockWait = 10 * time.Second

// reconcile programs the node from v.
func (r *reconciler) reconcile(v view) error {
	v = r.withGoneNodes(v)
	if r.cfg.HA != nil {
		// First, whatever the reconcile then meets: the HA runtime acts
		// on the API's standbys, and a node whose reconcile fails (its
		// state lock held, nft busy) must still take over. Its world
		// holds the Nodes deleted lately too (withGoneNodes), whose
		// addresses it passes replies on to.
		r.cfg.HA.Update(v.haWorld())
	}
	if err := r.writeSnapshot(v); err != nil {
		// The snapshot is only the plugin's last resort: programming the
		// node matters more.
		r.cfg.Logf("node: %v", err)
	}
	uplink, added, err := r.apply(v)
	for _, ip := range added {
		r.cfg.Logf("node: holding floating IP %s on %s", ip, uplink)
		r.announce(uplink, ip, 0)
	}
	if len(added) > 0 {
		if r.cfg.HA != nil {
			r.cfg.HA.Holding(added)
		}
		// Again after 100 ms and a second: one gratuitous ARP may be lost
		// on its way, and some routers ignore one that arrives while they
		// are still resolving the address.
		go func() {
			for _, d := range []time.Duration{100 * time.Millisecond, 900 * time.Millisecond} {
				time.Sleep(d)
				for _, ip := range added {
					r.announce(uplink, ip, d)
				}
			}
		}()
	}
	return err
}

// announce sends a gratuitous ARP for ip if the node still holds it: a
// repeat for an IP released since would take it back from its new holder.
func (r *reconciler) announce(uplink string, ip netip.Addr, after time.Duration) {
	r.mu.Lock()
	held := slices.Contains(r.holding, ip)
	r.mu.Unlock()
	if !held {
		return
	}
	if err := r.cfg.Kernel.Links.Announce(uplink, ip); err != nil {
		r.cfg.Logf("node: %v (the announcement %s after taking it)", err, after)
	}
}

// apply reads the node's facts, plans and applies: links first, so that
// the routes exist before nft marks any packet for them, then the nft
// table with the pods map. It holds the state lock throughout, so that no
// ADD or DEL changes the records or the pods map between the read and
// the write. It returns the uplink and the floating IPs it added, which
// the caller announces once the lock is released.
func (r *reconciler) apply(v view) (uplink string, added []netip.Addr, err error) {
	k := r.cfg.Kernel
	nodeIP, err := v.nodeIP(r.cfg.NodeName)
	if err != nil {
		return "", nil, err
	}
	uplink, mtu, err := k.Links.Uplink(r.cfg.Uplink, nodeIP)
	if err != nil {
		return "", nil, err
	}
	unlock, err := r.st.LockWithin(lockWait)
	if err != nil {
		return "", nil, err
	}
	defer unlock()
	recs, err := r.st.Records()
	if err != nil {
		return "", nil, err
	}
	ifaces, err := k.Links.Interfaces()
	if err != nil {
		// Unknown: every recorded pod keeps its element.
		r.cfg.Logf("node: %v", err)
	}
	recs = r.rebuild(v, recs, ifaces, uplink)
	held, err := r.st.Held()
	if err != nil {
		// Unreadable: plan without it; the list is rewritten below with
		// what the node holds now.
		r.cfg.Logf("node: %v", err)
	}
	t, err := k.OpenNFT()
	if err != nil {
		return "", nil, fmt.Errorf("open the nft table: %w", err)
	}
	defer t.Close()
	pods, err := t.Pods()
	if err != nil {
		return "", nil, err
	}
	direct, err := k.Links.UnderlayRoutes(uplink)
	if err != nil {
		// Unknown: return every node's replies through the tunnel, which
		// works whatever the primary routes.
		r.cfg.Logf("node: %v", err)
	}
	var holders map[netip.Addr]ha.Holder
	var draining map[netip.Addr]bool
	var passOn map[netip.Addr]netip.Addr
	if r.cfg.HA != nil {
		holders = r.cfg.HA.Update(v.haWorld())
		draining = r.cfg.HA.Draining()
		passOn = r.cfg.HA.PassingOn()
	}
	d, err := plan(v, facts{
		nodeName: r.cfg.NodeName, port: r.cfg.Port, uplink: uplink, uplinkMTU: mtu, underlayRoutes: direct,
		records: recs, held: held, pods: pods, ifaces: ifaces, now: r.now(), ignorePodRanges: r.cfg.IgnorePodRanges, settings: r.cfg.Settings,
		holders: holders, draining: draining, passOn: passOn,
	})
	if err != nil {
		return "", nil, err
	}
	r.mu.Lock()
	r.holding = d.links.FloatingIPs
	r.mu.Unlock()
	// Record a floating IP before holding it, so that an uninstall
	// after a crash in between still releases it.
	if !slices.Equal(d.held, held) {
		if err := r.st.SaveHeld(d.held); err != nil {
			return "", nil, err
		}
	}
	added, err = k.Links.Apply(d.links)
	if err != nil {
		return "", nil, err
	}
	if err := t.Apply(d.nft); err != nil {
		return uplink, added, err
	}
	for _, rec := range d.records {
		if err := r.st.Save(rec); err != nil {
			// The node is programmed; a stale record only makes CHECK
			// and a later DEL look at the old policy, and the next
			// reconcile rewrites it.
			r.cfg.Logf("node: update the record of %s/%s: %v", rec.Namespace, rec.Name, err)
		}
	}
	return uplink, added, nil
}

// rebuild returns recs with a record for every running pod of the node
// (view.running) that has none: a record lost (a state disk wiped or
// restored from an old copy, a record ADD could not write) is rebuilt
// from the API (the pod's name and address) and the node (its host
// interface and bridge port, by a route lookup, as ADD found them), so
// that a running selected pod keeps or regains its element. The rebuilt
// record takes the container ID of an index that still names it, so that
// the pod's DEL removes it; it is saved when the disk allows, and used
// for this reconcile either way. A pod whose interface cannot be found is
// logged once and left without. A rebuilt record is removed once its pod
// no longer runs and its interface is gone, or once another running pod
// has its address.
func (r *reconciler) rebuild(v view, recs []nodestate.PodRecord, ifaces map[string]bool, uplink string) []nodestate.PodRecord {
	have := map[netip.Addr]bool{}
	runningAt := map[netip.Addr]string{}
	for key, ip := range v.running {
		runningAt[ip] = key
	}
	out := recs[:0:0]
	for _, rec := range recs {
		key := rec.Namespace + "/" + rec.Name
		_, running := v.running[key]
		// A rebuilt record goes when its pod no longer runs and its
		// interface is gone (no DEL may ever name it), and when another
		// running pod has its address now.
		if other, taken := runningAt[rec.IP]; rec.Rebuilt && (taken && other != key || !running && ifaces != nil && !podInterfaceExists(rec, ifaces)) {
			if err := r.st.Forget(rec.ContainerID, rec.IfName, rec, true); err != nil {
				r.cfg.Logf("node: remove the rebuilt record of %s/%s: %v", rec.Namespace, rec.Name, err)
			}
			continue
		}
		have[rec.IP] = true
		out = append(out, rec)
	}
	for _, key := range slices.Sorted(maps.Keys(v.running)) {
		ip := v.running[key]
		if have[ip] {
			continue
		}
		hostIf, port, err := r.cfg.Kernel.Links.PodInterface(ip, uplink)
		if err != nil {
			r.logOnce("rebuild "+key, fmt.Sprintf("node: pod %s (%s) runs without a record, which cannot be rebuilt: %v", key, ip, err))
			continue
		}
		ns, name, _ := strings.Cut(key, "/")
		rec := nodestate.PodRecord{Namespace: ns, Name: name, IP: ip, HostIf: hostIf, Port: port, Added: r.now(), Rebuilt: true}
		var found bool
		if rec.ContainerID, rec.IfName, found = r.st.ContainerOf(ip, hostIf); !found {
			// No index names it: a container ID of its own, which no
			// runtime's DEL names (the record goes with the pod, above)
			// and a runtime's GC forgets.
			rec.ContainerID, rec.IfName = "rebuilt-"+ns+"."+name, "eth0"
		}
		if err := r.st.Save(rec); err != nil {
			r.logOnce("save "+key, fmt.Sprintf("node: the rebuilt record of %s (%s on %s) is not saved, only used: %v", key, ip, hostIf, err))
		} else {
			r.cfg.Logf("node: rebuilt the lost record of pod %s (%s on %s) from the API", key, ip, hostIf)
		}
		have[ip] = true
		out = append(out, rec)
	}
	return out
}

// withGoneNodes is v with the Nodes the API no longer shows but that
// matter still: this node's own, its last copy, for as long as it is gone
// (a Node deleted while its machine runs on, kubectl delete node, must not
// freeze the node's datapath with the floating IPs the controller moved
// away still on its uplink: planned with its last copy, the node lets them
// go once their new holder claims them, and keeps its pods steered); and
// every other for goneNodeFor after it went, so that tunnels to a deleted
// gateway keep working until its IPs have moved.
func (r *reconciler) withGoneNodes(v view) view {
	now := r.now()
	if r.gone == nil {
		r.gone = map[string]goneNode{}
	}
	for name, n := range r.seen {
		if _, ok := v.nodes[name]; !ok && name != r.cfg.NodeName {
			r.gone[name] = goneNode{node: n, at: now}
		}
	}
	r.seen = v.nodes
	if n, ok := v.nodes[r.cfg.NodeName]; ok {
		r.ownNode = n
		r.mu.Lock()
		delete(r.logged, "own-node")
		r.mu.Unlock()
	}
	extra := map[string]*corev1.Node{}
	for name, g := range r.gone {
		if _, back := v.nodes[name]; back || now.Sub(g.at) >= goneNodeFor {
			delete(r.gone, name)
			continue
		}
		extra[name] = g.node
	}
	if _, ok := v.nodes[r.cfg.NodeName]; !ok && r.ownNode != nil {
		r.logOnce("own-node", fmt.Sprintf("node: the Node %s is gone from the API: planning with its last copy", r.cfg.NodeName))
		extra[r.cfg.NodeName] = r.ownNode
	}
	if len(extra) == 0 {
		return v
	}
	nodes := maps.Clone(v.nodes)
	maps.Copy(nodes, extra)
	v.nodes = nodes
	return v
}

// logOnce logs msg unless the last message logged under key was msg.
func (r *reconciler) logOnce(key, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.logged == nil {
		r.logged = map[string]string{}
	}
	if r.logged[key] == msg {
		return
	}
	r.logged[key] = msg
	r.cfg.Logf("%s", msg)
}

// writeSnapshot saves what the plugin falls back to, when it changed.
func (r *reconciler) writeSnapshot(v view) error {
	snap := nodestate.Snapshot{Namespaces: v.nss, Pods: v.pods, Policies: v.policies}
	b, err := json.Marshal(snap)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if bytes.Equal(b, r.lastSnap) {
		return nil
	}
	snap.Written = r.now()
	if err := r.st.WriteSnapshot(snap); err != nil {
		return err
	}
	r.lastSnap = b
	return nil
}

// Uninstall removes everything the node role made: the nft table, the
// tunnels, rules and routes, the floating IPs it held, the records and the
// snapshot. It goes on past errors, so that one failure leaves as little
// as possible behind, and reports them all.
func Uninstall(stateDir, uplink string, s datapath.Settings, k Kernel) error {
	var errs []error
	if t, err := k.OpenNFT(); err == nil {
		errs = append(errs, t.Delete(), t.Close())
	} else {
		errs = append(errs, fmt.Errorf("open the nft table: %w", err))
	}
	st := nodestate.State{Dir: stateDir}
	held, err := st.Held()
	errs = append(errs, err)
	removeErr := k.Links.Remove(s, uplink, held)
	errs = append(errs, removeErr, st.RemoveAll())
	if removeErr != nil && len(held) > 0 {
		// Not released: keep the list, so that uninstalling again
		// releases them.
		errs = append(errs, st.SaveHeld(held))
	}
	return errors.Join(errs...)
}
