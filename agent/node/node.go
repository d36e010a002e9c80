// Package node is the agent's node and gateway roles: it keeps the node's
// tunnels, policy routes, nft table and floating IPs in line with the API,
// re-programs running pods when policies, namespaces or pod labels change,
// and writes the snapshot the plugin falls back to (SPEC §2, §5).
package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/fsnotify/fsnotify"
	"github.com/vishvananda/netlink"

	"github.com/nsegress/nsegress/agent/datapath"
	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/nft"
	"github.com/nsegress/nsegress/plugin"
)

// UnknownPodGrace is how long a pod record whose pod the agent's informer
// does not know keeps its element: long enough for any watch lag, short
// enough that a lost DEL leaves no element behind for good.
const UnknownPodGrace = 2 * time.Minute

// Config is what the node role needs.
type Config struct {
	Client   kubernetes.Interface
	Dynamic  dynamic.Interface
	NodeName string
	// StateDir is the state directory shared with the plugin.
	StateDir string
	// Port is the VXLAN UDP port (datapath.DefaultPort when 0).
	Port uint16
	// Uplink names the underlay interface; empty finds the one holding
	// the node's InternalIP.
	Uplink string
	// Resync is the period of a full reconcile without events.
	Resync time.Duration
	Logf   func(format string, args ...any)
}

// Role runs the node role.
type Role struct {
	cfg        Config
	st         plugin.State
	kick       chan struct{}
	policies   cache.SharedIndexInformer
	groups     cache.SharedIndexInformer
	nodes      cache.SharedIndexInformer
	nss        cache.SharedIndexInformer
	pods       cache.SharedIndexInformer
	lastSnap   []byte
	lastHeld   []netip.Addr
	programmed atomic.Bool
	synced     atomic.Bool
}

// New prepares the role; Run starts it.
func New(cfg Config) *Role {
	if cfg.Port == 0 {
		cfg.Port = datapath.DefaultPort
	}
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	r := &Role{cfg: cfg, st: plugin.State{Dir: cfg.StateDir}, kick: make(chan struct{}, 1)}
	dyn := dynamicinformer.NewDynamicSharedInformerFactory(cfg.Dynamic, cfg.Resync)
	r.policies = dyn.ForResource(v1alpha1.EgressNATPoliciesResource).Informer()
	r.groups = dyn.ForResource(v1alpha1.NetworkGatewayGroupsResource).Informer()
	core := informers.NewSharedInformerFactory(cfg.Client, cfg.Resync)
	r.nodes = core.Core().V1().Nodes().Informer()
	r.nss = core.Core().V1().Namespaces().Informer()
	local := informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	r.pods = local.Core().V1().Pods().Informer()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.Kick() },
		UpdateFunc: func(any, any) { r.Kick() },
		DeleteFunc: func(any) { r.Kick() },
	}
	for _, inf := range []cache.SharedIndexInformer{r.policies, r.groups, r.nodes, r.nss, r.pods} {
		_, _ = inf.AddEventHandler(h)
	}
	return r
}

// Kick asks for a reconcile soon.
func (r *Role) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Programmed says whether a reconcile has succeeded.
func (r *Role) Programmed() bool { return r.programmed.Load() }

// Start runs the role's informers until ctx ends and returns once their
// caches have synced: from then on Serve answers the plugin.
func (r *Role) Start(ctx context.Context) error {
	for _, inf := range []cache.SharedIndexInformer{r.policies, r.groups, r.nodes, r.nss, r.pods} {
		go inf.Run(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), r.policies.HasSynced, r.groups.HasSynced, r.nodes.HasSynced, r.nss.HasSynced, r.pods.HasSynced) {
		return ctx.Err()
	}
	r.synced.Store(true)
	return nil
}

// Run starts the informers and reconciles on every change and every
// resync until ctx ends.
func (r *Role) Run(ctx context.Context) error {
	if err := r.Start(ctx); err != nil {
		return err
	}
	if err := r.watchRecords(ctx); err != nil {
		r.cfg.Logf("node: %v (pod records are then picked up at each resync)", err)
	}
	tick := time.NewTicker(r.cfg.Resync)
	defer tick.Stop()
	backoff := time.Duration(0)
	for {
		if err := r.reconcile(); err != nil {
			r.cfg.Logf("node: reconcile: %v", err)
			backoff = min(max(2*backoff, 200*time.Millisecond), 10*time.Second)
		} else {
			backoff = 0
			r.programmed.Store(true)
		}
		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
			// Let a burst of events settle into one reconcile.
			time.Sleep(20 * time.Millisecond)
		case <-tick.C:
		case <-retry:
		}
	}
}

// watchRecords kicks a reconcile whenever the plugin writes or removes a
// pod record: a policy, namespace or label change that raced with a
// pod's ADD (decided before the change, recorded after the agent's
// reconcile of it) is then applied to that pod at once, not at the next
// resync.
func (r *Role) watchRecords(ctx context.Context) error {
	dir := r.st.PodsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("watch pod records: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch pod records: %w", err)
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		return fmt.Errorf("watch pod records in %s: %w", dir, err)
	}
	go func() {
		defer w.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if strings.HasSuffix(ev.Name, ".json") && ev.Op&(fsnotify.Create|fsnotify.Rename|fsnotify.Remove) != 0 {
					r.Kick()
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
				r.Kick() // an overflow: reconcile everything
			}
		}
	}()
	return nil
}

// view is the informers' content, typed.
type view struct {
	policies []v1alpha1.EgressNATPolicy
	groups   []v1alpha1.NetworkGatewayGroup
	nodes    map[string]*corev1.Node
	nss      map[string]map[string]string
	pods     map[string]map[string]string // "ns/name" -> labels
}

func (r *Role) view() (view, error) {
	v := view{nodes: map[string]*corev1.Node{}, nss: map[string]map[string]string{}, pods: map[string]map[string]string{}}
	var err error
	if v.policies, err = r.listPolicies(); err != nil {
		return v, err
	}
	v1alpha1.SortByAge(v.policies)
	for _, o := range r.groups.GetStore().List() {
		var g v1alpha1.NetworkGatewayGroup
		if err := fromUnstructured(o, &g); err != nil {
			return v, err
		}
		v.groups = append(v.groups, g)
	}
	for _, o := range r.nodes.GetStore().List() {
		n := o.(*corev1.Node)
		v.nodes[n.Name] = n
	}
	for _, o := range r.nss.GetStore().List() {
		ns := o.(*corev1.Namespace)
		v.nss[ns.Name] = ns.Labels
	}
	for _, o := range r.pods.GetStore().List() {
		p := o.(*corev1.Pod)
		v.pods[p.Namespace+"/"+p.Name] = p.Labels
	}
	return v, nil
}

// listPolicies is the policy informer's content, typed.
func (r *Role) listPolicies() ([]v1alpha1.EgressNATPolicy, error) {
	var out []v1alpha1.EgressNATPolicy
	for _, o := range r.policies.GetStore().List() {
		var p v1alpha1.EgressNATPolicy
		if err := fromUnstructured(o, &p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func fromUnstructured(o any, into any) error {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return fmt.Errorf("unexpected object %T", o)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		return fmt.Errorf("decode %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}

// reconcile programs the node from the informers' view.
func (r *Role) reconcile() error {
	v, err := r.view()
	if err != nil {
		return err
	}
	if err := r.writeSnapshot(v); err != nil {
		r.cfg.Logf("node: %v", err)
	}
	self, ok := v.nodes[r.cfg.NodeName]
	if !ok {
		return fmt.Errorf("node %s not found in the API", r.cfg.NodeName)
	}
	nodeIP, err := internalIP(self)
	if err != nil {
		return err
	}
	uplink, mtu, err := r.uplink(nodeIP)
	if err != nil {
		return err
	}
	plan, state := r.plan(v, nodeIP, uplink, mtu)

	added, err := datapath.Apply(plan)
	if err != nil {
		return err
	}
	if err := r.saveHeld(plan.FloatingIPs); err != nil {
		r.cfg.Logf("node: %v", err)
	}
	for _, ip := range added {
		r.cfg.Logf("node: holding floating IP %s on %s", ip, uplink)
		for i := 0; i < 2; i++ {
			if err := datapath.Announce(uplink, ip); err != nil {
				r.cfg.Logf("node: %v", err)
			}
		}
	}
	return r.applyNFT(v, state)
}

// plan computes the node's link and nft state, without the pods.
func (r *Role) plan(v view, nodeIP netip.Addr, uplink string, mtu int) (datapath.Plan, nft.State) {
	plan := datapath.Plan{Uplink: uplink, NodeIP: nodeIP, Port: r.cfg.Port}
	state := nft.State{
		MSS:          datapath.MSS(datapath.DeviceMTU(mtu)),
		TunnelPort:   r.cfg.Port,
		DevicePrefix: datapath.DevicePrefix,
	}
	for _, n := range v.nodes {
		if ip, err := internalIP(n); err == nil {
			state.TunnelPeers = append(state.TunnelPeers, ip)
		}
	}
	slices.SortFunc(state.TunnelPeers, func(a, b netip.Addr) int { return a.Compare(b) })
	for _, p := range v.policies {
		id := p.Status.TunnelID
		if id <= 0 || id > 4095 {
			continue
		}
		t := datapath.Tunnel{ID: uint16(id), Destinations: destinations(p)}
		t.Mode, t.Gateway = r.mode(v, p)
		np := nft.Policy{ID: t.ID, Destinations: t.Destinations, Mode: t.Mode, Device: t.Device()}
		if t.Mode == nft.ModeLocal {
			np.EgressIP, _ = netip.ParseAddr(p.Status.EgressIP)
		}
		plan.Tunnels = append(plan.Tunnels, t)
		state.Policies = append(state.Policies, np)
	}
	// Whatever this node held before and no group gives it now is
	// released too, also when the group no longer lists the IP.
	held, _ := LoadHeld(r.cfg.StateDir)
	plan.ReleasedIPs = append(plan.ReleasedIPs, held...)
	for _, g := range v.groups {
		for _, s := range g.Spec.FloatingIPs {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			if g.Status.FloatingIPs[s] == r.cfg.NodeName {
				plan.FloatingIPs = append(plan.FloatingIPs, ip)
			} else {
				plan.ReleasedIPs = append(plan.ReleasedIPs, ip)
			}
		}
	}
	return plan, state
}

// mode decides how this node handles a policy's traffic.
func (r *Role) mode(v view, p v1alpha1.EgressNATPolicy) (nft.Mode, netip.Addr) {
	fail := nft.ModeDrop
	if p.Spec.FailMode == v1alpha1.FailModeOpen {
		fail = nft.ModePass
	}
	gw := p.Status.GatewayNode
	if _, err := netip.ParseAddr(p.Status.EgressIP); err != nil || gw == "" {
		return fail, netip.Addr{}
	}
	if gw == r.cfg.NodeName {
		return nft.ModeLocal, netip.Addr{}
	}
	n, ok := v.nodes[gw]
	if !ok {
		return fail, netip.Addr{}
	}
	ip, err := internalIP(n)
	if err != nil {
		return fail, netip.Addr{}
	}
	return nft.ModeTunnel, ip
}

func destinations(p v1alpha1.EgressNATPolicy) []netip.Prefix {
	var out []netip.Prefix
	for _, d := range p.Spec.Destinations {
		if pf, err := netip.ParsePrefix(d.CIDR); err == nil && pf.Addr().Is4() {
			out = append(out, pf.Masked())
		}
	}
	return out
}

// applyNFT computes the pods map from the plugin's records and applies the
// whole table, under the state lock so that no ADD or DEL interleaves.
func (r *Role) applyNFT(v view, state nft.State) error {
	unlock, err := r.st.LockWithin(10 * time.Second)
	if err != nil {
		return err
	}
	defer unlock()
	t, err := nft.Open()
	if err != nil {
		return err
	}
	defer t.Close()
	current, err := t.Pods()
	if err != nil {
		return err
	}
	recs, err := r.st.Records()
	if err != nil {
		return err
	}
	state.Pods = r.desiredPods(v, recs, current, state.Policies, time.Now())
	if err := t.Apply(state); err != nil {
		return err
	}
	r.updateRecords(v, recs, state.Pods)
	return nil
}

// updateRecords rewrites the records of pods the reconcile moved into,
// out of or between policies, so that the plugin's CHECK and a later
// DEL see what the node does now.
func (r *Role) updateRecords(v view, recs []plugin.PodRecord, pods map[nft.PodKey]uint16) {
	names := map[uint16]string{}
	for _, p := range v.policies {
		if id := p.Status.TunnelID; id > 0 && id <= nft.MaxPolicyID {
			names[uint16(id)] = p.Name
		}
	}
	for _, rec := range recs {
		id := pods[nft.PodKey{IP: rec.IP, HostIf: rec.HostIf}]
		if id == rec.TunnelID {
			continue
		}
		rec.TunnelID, rec.Policy = id, names[id]
		if err := r.st.Save(rec); err != nil {
			r.cfg.Logf("node: update the record of %s/%s: %v", rec.Namespace, rec.Name, err)
		}
	}
}

// desiredPods is the pods map the node should have: each recorded pod on
// the policy that governs it now.
func (r *Role) desiredPods(v view, recs []plugin.PodRecord, current map[nft.PodKey]uint16, policies []nft.Policy, now time.Time) map[nft.PodKey]uint16 {
	ids := map[uint16]bool{}
	for _, p := range policies {
		ids[p.ID] = true
	}
	pods := map[nft.PodKey]uint16{}
	for _, rec := range recs {
		k := nft.PodKey{IP: rec.IP, HostIf: rec.HostIf}
		id, ok := r.podPolicy(v, rec)
		if !ok {
			// Labels not seen yet: keep what ADD programmed, unless the
			// pod has been unknown for so long that its DEL was lost
			// (a node crash, a runtime that forgot it).
			if cur, has := current[k]; has && ids[cur] && now.Sub(rec.Added) < UnknownPodGrace {
				pods[k] = cur
			}
			continue
		}
		if id != 0 && ids[id] {
			pods[k] = id
		}
	}
	return pods
}

// podPolicy is the tunnel ID of the policy that governs a recorded pod
// now; ok is false when the pod's labels are not known yet.
func (r *Role) podPolicy(v view, rec plugin.PodRecord) (uint16, bool) {
	labels, ok := v.pods[rec.Namespace+"/"+rec.Name]
	if !ok {
		return 0, false
	}
	nsLabels, ok := v.nss[rec.Namespace]
	if !ok {
		return 0, false
	}
	p, err := v1alpha1.SelectPolicy(v.policies, nsLabels, nonNil(labels))
	if err != nil || p == nil {
		return 0, err == nil
	}
	id := p.Status.TunnelID
	if id <= 0 || id > 4095 {
		return 0, true
	}
	return uint16(id), true
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// writeSnapshot saves what the plugin falls back to, when it changed.
func (r *Role) writeSnapshot(v view) error {
	snap := plugin.Snapshot{Namespaces: v.nss, Pods: v.pods, Policies: v.policies}
	b, err := json.Marshal(snap)
	if err != nil {
		return err
	}
	if bytes.Equal(b, r.lastSnap) {
		return nil
	}
	snap.Written = time.Now()
	if err := r.st.WriteSnapshot(snap); err != nil {
		return err
	}
	r.lastSnap = b
	return nil
}

// heldFile records the floating IPs this node holds, for uninstall.
func (r *Role) heldFile() string { return filepath.Join(r.cfg.StateDir, "floating-ips.json") }

func (r *Role) saveHeld(ips []netip.Addr) error {
	sort.Slice(ips, func(i, j int) bool { return ips[i].Less(ips[j]) })
	if slices.Equal(ips, r.lastHeld) {
		return nil
	}
	prev, _ := LoadHeld(r.cfg.StateDir)
	all := append(slices.Clone(ips), prev...)
	slices.SortFunc(all, func(a, b netip.Addr) int { return a.Compare(b) })
	all = slices.Compact(all)
	b, _ := json.Marshal(all)
	if err := os.WriteFile(r.heldFile(), b, 0o600); err != nil {
		return fmt.Errorf("record floating IPs: %w", err)
	}
	r.lastHeld = slices.Clone(ips)
	return nil
}

// LoadHeld reads the floating IPs the node has held.
func LoadHeld(stateDir string) ([]netip.Addr, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, "floating-ips.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	return ips, json.Unmarshal(b, &ips)
}

// Uninstall removes everything the node role made: the nft table, the
// tunnels, rules and routes, the floating IPs it held, the records and the
// snapshot.
func Uninstall(stateDir, uplink string) error {
	var errs []error
	if t, err := nft.Open(); err == nil {
		errs = append(errs, t.Delete())
		t.Close()
	} else {
		errs = append(errs, err)
	}
	held, err := LoadHeld(stateDir)
	errs = append(errs, err)
	errs = append(errs, datapath.Remove(uplink, held))
	errs = append(errs, plugin.State{Dir: stateDir}.RemoveAll())
	errs = append(errs, os.RemoveAll(filepath.Join(stateDir, "floating-ips.json")))
	return errors.Join(errs...)
}

// internalIP is a node's IPv4 InternalIP.
func internalIP(n *corev1.Node) (netip.Addr, error) {
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("node %s has no IPv4 InternalIP", n.Name)
}

// uplink finds the interface holding nodeIP (or the configured one) and
// its MTU.
func (r *Role) uplink(nodeIP netip.Addr) (string, int, error) {
	if r.cfg.Uplink != "" {
		l, err := netlink.LinkByName(r.cfg.Uplink)
		if err != nil {
			return "", 0, fmt.Errorf("uplink %s: %w", r.cfg.Uplink, err)
		}
		return r.cfg.Uplink, l.Attrs().MTU, nil
	}
	return FindUplink(nodeIP)
}

// FindUplink returns the interface that holds ip, and its MTU.
func FindUplink(ip netip.Addr) (string, int, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", 0, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.IP.Equal(net.IP(ip.AsSlice())) {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "", 0, err
			}
			return l.Attrs().Name, l.Attrs().MTU, nil
		}
	}
	return "", 0, fmt.Errorf("no interface holds the node's address %s (set -uplink)", ip)
}
