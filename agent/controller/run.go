// Package controller is the controller role of the node agent. One agent in
// the cluster, elected on a Lease, places every NetworkGatewayGroup's
// floating IPs on healthy gateway nodes and gives every EgressNATPolicy its
// egress IP, gateway node and tunnel ID, writing both as status (docs/design.md §2).
// The decisions are made by Assign, a pure function; Run feeds it from
// informers and writes back what changed.
package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"
)

// LeaseName is the coordination.k8s.io Lease, in the install namespace,
// that the agents compete for; its holder is the controller.
const LeaseName = "nsegress-controller"

// Config is what Run needs.
type Config struct {
	// Client reads Nodes and holds the Lease.
	Client kubernetes.Interface
	// Dynamic reads EgressNATPolicies and NetworkGatewayGroups and
	// writes their status.
	Dynamic dynamic.Interface
	// Namespace is the install namespace, which holds the Lease.
	Namespace string
	// Identity names this agent in the Lease: the node name.
	Identity string
	// Resync is how often everything is reconciled without an event.
	// Default 30s.
	Resync time.Duration
	// LeaseDuration, RenewDeadline and RetryPeriod tune the election, as
	// in client-go's leaderelection. Defaults 15s, 10s, 2s.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Logf receives every status change, election event and error. Nil
	// discards them.
	Logf func(format string, args ...any)
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Client == nil:
		return c, errors.New("controller: Config.Client is required")
	case c.Dynamic == nil:
		return c, errors.New("controller: Config.Dynamic is required")
	case c.Namespace == "":
		return c, errors.New("controller: Config.Namespace (the install namespace, for the Lease) is required")
	case c.Identity == "":
		return c, errors.New("controller: Config.Identity (the node name) is required")
	}
	if c.Resync <= 0 {
		c.Resync = 30 * time.Second
	}
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = 15 * time.Second
	}
	if c.RenewDeadline <= 0 {
		c.RenewDeadline = 10 * time.Second
	}
	if c.RetryPeriod <= 0 {
		c.RetryPeriod = 2 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c, nil
}

// Run stands for election and, while this agent leads, keeps every
// policy's and group's status in line with Assign. After losing the lease
// it stands again. It blocks until ctx is done, then gives up the lease if
// it holds it, and returns nil; it returns an error only for a bad Config.
func Run(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	for {
		if err := campaign(ctx, cfg); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		cfg.Logf("controller: lost the Lease %s/%s; standing for election again", cfg.Namespace, LeaseName)
	}
}

// campaign runs one election: it waits for the lease, leads until the
// lease is lost or ctx is done, and returns once leading has stopped.
func campaign(ctx context.Context, cfg Config) error {
	started := make(chan context.Context, 1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.Namespace, Name: LeaseName},
			Client:     cfg.Client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: cfg.Identity},
		},
		LeaseDuration: cfg.LeaseDuration,
		RenewDeadline: cfg.RenewDeadline,
		RetryPeriod:   cfg.RetryPeriod,
		// On shutdown another agent takes over at once rather than after
		// LeaseDuration; writes in flight are cancelled by the same ctx.
		ReleaseOnCancel: true,
		Name:            LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			// Leading runs on campaign's goroutine, not the elector's, so
			// that campaign returns only once it has stopped.
			OnStartedLeading: func(lctx context.Context) { started <- lctx },
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				cfg.Logf("controller: the leader is %s", id)
			},
		},
	})
	if err != nil {
		return fmt.Errorf("controller: leader election: %w", err)
	}

	// stop ends this election early: a leader that cannot lead gives the
	// lease up rather than hold it idle.
	ectx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		le.Run(ectx)
	}()
	select {
	case lctx := <-started:
		cfg.Logf("controller: %s leads; assigning floating IPs and writing status", cfg.Identity)
		if err := lead(lctx, cfg); err != nil {
			cfg.Logf("controller: %v", err)
		}
		stop()
		cfg.Logf("controller: %s stopped leading", cfg.Identity)
	case <-done:
	}
	<-done
	return nil
}

// podLabelsOnly keeps of a pod what shadowing depends on.
func podLabelsOnly(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone, kept as it is
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels,
		ResourceVersion: p.ResourceVersion, UID: p.UID}}, nil
}

// queueKey is the workqueue's only key: every event means "reconcile
// everything", since one policy's decision depends on all the others.
const queueKey = "all"

// lead watches policies, groups and nodes and reconciles on every change
// until ctx is done. It returns an error only when the informers cannot be
// set up; failed reconciles are retried with backoff.
func lead(ctx context.Context, cfg Config) error {
	dynFactory := dynamicinformer.NewDynamicSharedInformerFactory(cfg.Dynamic, cfg.Resync)
	coreFactory := informers.NewSharedInformerFactory(cfg.Client, cfg.Resync)
	// Shutdown waits for the informers, which stop when ctx is cancelled:
	// cancel is deferred last so that it runs first.
	defer dynFactory.Shutdown()
	defer coreFactory.Shutdown()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: LeaseName},
	)
	defer queue.ShutDown()
	enqueue := func() { queue.Add(queueKey) }
	always := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { enqueue() },
		UpdateFunc: func(any, any) { enqueue() },
		DeleteFunc: func(any) { enqueue() },
	}

	policies := dynFactory.ForResource(policiesGVR)
	groups := dynFactory.ForResource(groupsGVR)
	nodes := coreFactory.Core().V1().Nodes()
	if _, err := policies.Informer().AddEventHandler(always); err != nil {
		return fmt.Errorf("watch EgressNATPolicies: %w", err)
	}
	if _, err := groups.Informer().AddEventHandler(always); err != nil {
		return fmt.Errorf("watch NetworkGatewayGroups: %w", err)
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { enqueue() },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Node)
			c, ok2 := cur.(*corev1.Node)
			if !ok1 || !ok2 || nodeChanged(o, c) {
				enqueue()
			}
		},
		DeleteFunc: func(any) { enqueue() },
	}); err != nil {
		return fmt.Errorf("watch Nodes: %w", err)
	}

	// Namespaces' and pods' labels tell which policies shadow others. A
	// pod is kept as its name and labels only: a cluster's pods are many.
	namespaces := coreFactory.Core().V1().Namespaces()
	pods := coreFactory.Core().V1().Pods()
	if err := pods.Informer().SetTransform(podLabelsOnly); err != nil {
		return fmt.Errorf("watch Pods: %w", err)
	}
	labelsChanged := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { enqueue() },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(metav1.Object)
			c, ok2 := cur.(metav1.Object)
			if !ok1 || !ok2 || !maps.Equal(o.GetLabels(), c.GetLabels()) {
				enqueue()
			}
		},
		DeleteFunc: func(any) { enqueue() },
	}
	if _, err := namespaces.Informer().AddEventHandler(labelsChanged); err != nil {
		return fmt.Errorf("watch Namespaces: %w", err)
	}
	if _, err := pods.Informer().AddEventHandler(labelsChanged); err != nil {
		return fmt.Errorf("watch Pods: %w", err)
	}

	dynFactory.Start(ctx.Done())
	coreFactory.Start(ctx.Done())
	// These wait until the first list succeeds (the reflectors log why
	// not, e.g. missing RBAC) or leading ends.
	for _, ok := range dynFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil
		}
	}
	for _, ok := range coreFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil
		}
	}

	broadcaster, events := newEventRecorder(cfg.Client, cfg.Identity)
	// An Event still queued when leading ends may be lost; the status,
	// which nodes act on, does not depend on Events.
	defer broadcaster.Shutdown()
	r := &reconciler{
		events:    events,
		dyn:       cfg.Dynamic,
		policies:  policies.Lister(),
		groups:    groups.Lister(),
		nodes:     nodes.Lister(),
		nss:       namespaces.Lister(),
		pods:      pods.Lister(),
		logf:      cfg.Logf,
		now:       time.Now,
		highWater: &highWaterStore{client: cfg.Client, namespace: cfg.Namespace},
		client:    cfg.Client,
	}
	enqueue() // once even when there is nothing to watch yet
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	for work(ctx, queue, r, cfg.Logf) {
	}
	return nil
}

// work reconciles once per queued key; it returns false once the queue is
// shut down.
func work(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string], r *reconciler, logf func(string, ...any)) bool {
	key, quit := queue.Get()
	if quit {
		return false
	}
	defer queue.Done(key)
	if err := r.reconcile(ctx); err != nil {
		if ctx.Err() == nil {
			logf("controller: reconcile (retrying): %v", err)
			queue.AddRateLimited(key)
		}
		return true
	}
	queue.Forget(key)
	return true
}
