// Package node is the agent's node and gateway roles: it keeps the node's
// tunnels, policy routes, nft table and floating IPs in line with the API,
// re-programs running pods when policies, namespaces or pod labels change,
// and writes the snapshot the plugin falls back to (docs/design.md §2, §5).
//
// Its work is split along three seams: view.go turns the informers'
// content into a typed view; plan.go computes the node's whole desired
// state from that view and what the node holds, as a pure function; and
// apply.go reads what the node holds and applies the desired state
// through two small interfaces (NFT, Links), which tests replace with
// fakes.
package node

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/fsnotify/fsnotify"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nsegress/nsegress/agent/datapath"
	"github.com/nsegress/nsegress/agent/ha"
	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/nodestate"
)

// Config is what the node role needs.
type Config struct {
	Client   kubernetes.Interface
	Dynamic  dynamic.Interface
	NodeName string
	// StateDir is the state directory shared with the plugin.
	StateDir string
	// Port is the VXLAN UDP port (datapath.DefaultPort when 0).
	Port uint16
	// Settings place nsegress's marks, routing tables and rules.
	Settings datapath.Settings
	// IgnorePodRanges says that pods are not where their Nodes'
	// spec.podCIDRs say (an IPAM that ignores them): a node may then
	// tunnel any inner source, and replies are not returned through the
	// tunnel.
	IgnorePodRanges bool
	// Uplink names the underlay interface; empty finds the one holding
	// the node's InternalIP.
	Uplink string
	// Resync is the period of a full reconcile without events.
	Resync time.Duration
	// Kernel is what the role changes on the node (HostKernel when
	// zero).
	Kernel Kernel
	// HA is the gateway HA runtime: who holds each floating IP now, ahead
	// of the API after a takeover. Nil: the groups' status alone.
	HA   *ha.Runtime
	Logf func(format string, args ...any)
}

// Role runs the node role.
type Role struct {
	reconciler
	kick       chan struct{}
	policies   cache.SharedIndexInformer
	groups     cache.SharedIndexInformer
	nodes      cache.SharedIndexInformer
	nss        cache.SharedIndexInformer
	pods       cache.SharedIndexInformer
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
	if cfg.Kernel.OpenNFT == nil || cfg.Kernel.Links == nil {
		cfg.Kernel = HostKernel()
	}
	r := &Role{reconciler: newReconciler(cfg), kick: make(chan struct{}, 1)}
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
	for _, inf := range r.informers() {
		// The registration handle is only needed to remove the handler,
		// which the role never does.
		_, _ = inf.AddEventHandler(h)
	}
	return r
}

func (r *Role) informers() []cache.SharedIndexInformer {
	return []cache.SharedIndexInformer{r.policies, r.groups, r.nodes, r.nss, r.pods}
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
	synced := make([]cache.InformerSynced, 0, 5)
	for _, inf := range r.informers() {
		go inf.Run(ctx.Done())
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("node: informers not synced: %w", ctx.Err())
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
	if err := r.watchRoutes(ctx); err != nil {
		r.cfg.Logf("node: %v (route changes are then picked up at each resync)", err)
	}
	tick := time.NewTicker(r.cfg.Resync)
	defer tick.Stop()
	backoff := time.Duration(0)
	for {
		if err := r.reconcileView(); err != nil {
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

// reconcileView reconciles the node with the informers' content.
func (r *Role) reconcileView() error {
	v, err := r.view()
	if err != nil {
		return err
	}
	return r.reconcile(v)
}

// watchRoutes kicks a reconcile whenever a route of the main table
// changes: whether a gateway returns a node's replies through the tunnel
// depends on how the main table routes that node's pods (plan's
// returnNodes), which the primary changes when nodes come and go or it
// recreates its devices. nsegress's own routes live in other tables.
func (r *Role) watchRoutes(ctx context.Context) error {
	updates := make(chan netlink.RouteUpdate, 64)
	if err := netlink.RouteSubscribeWithOptions(updates, ctx.Done(), netlink.RouteSubscribeOptions{
		ErrorCallback: func(error) { r.Kick() },
	}); err != nil {
		return fmt.Errorf("watch routes: %w", err)
	}
	go func() {
		for u := range updates {
			if u.Table == unix.RT_TABLE_MAIN {
				r.Kick()
			}
		}
	}()
	return nil
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
		_ = w.Close() // the Add error is what matters
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
				name := ev.Name[strings.LastIndexByte(ev.Name, '/')+1:]
				if !nodestate.IsTempName(name) && strings.HasSuffix(name, ".json") &&
					ev.Op&(fsnotify.Create|fsnotify.Rename|fsnotify.Remove) != 0 {
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
