// Package lab builds a real multi-node Kubernetes cluster on one machine,
// without Docker: a control-plane host running etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler; worker and gateway nodes each
// with their own containerd, kubelet and kube-proxy; a firewall that joins the
// underlay to an on-prem segment with HTTP echo backends (docs/design.md §6).
//
// Every host is a network namespace (nodes also get a mount namespace)
// held open by a process of the lab, and every process the lab starts
// lives in the cgroup subtree "nsegress-lab" ("nsegress-lab-N" in slot N,
// NSEGRESS_LAB_SLOT, so that labs of different slots run at once).
// Closing the lab, or starting the next one of its slot after a killed
// run, kills that subtree and removes the lab's folder; nothing of the
// machine's own network, mounts or sysctls is touched.
package lab

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
)

// markerFile marks a folder as the lab's own, so that cleaning up a
// leftover never removes a folder the lab did not make.
const markerFile = ".nsegress-lab"

// Lab is a running lab cluster.
type Lab struct {
	cfg       Config
	lock      *os.File
	ownLock   bool // Close releases lock
	pki       *pki
	hosts     map[string]*host
	procs     []*proc
	nodes     []*Node
	backends  []Backend
	forwarder *forwarder
	ports     atomic.Uint32 // numbers the switch's ports
	client    kubernetes.Interface
	apiServer *proc    // the running kube-apiserver (SetAPIServer replaces it)
	apiArgv   []string // its command line, to start it again

	mu sync.Mutex // guards procs and hosts, which grow from several goroutines

	closeOnce sync.Once
	closeErr  error
	stopSig   func()
}

// Start builds the lab and waits until every node is Ready. On error it
// removes whatever it had built. Only one lab of a slot (NSEGRESS_LAB_SLOT)
// runs at a time: Start waits for the slot's previous one to close.
func Start(ctx context.Context, cfg Config) (*Lab, error) {
	if slotErr != nil {
		return nil, slotErr
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root: it creates namespaces, cgroups and mounts")
	}
	lock, err := acquireLock(ctx)
	if err != nil {
		return nil, err
	}
	l, err := start(ctx, cfg, lock)
	if err != nil {
		return nil, err
	}
	l.ownLock = true
	return l, nil
}

// start builds the lab while the caller holds lock. On error it removes
// what it built; the lock stays with the caller until Close of a lab
// that owns it.
func start(ctx context.Context, cfg Config, lock *os.File) (_ *Lab, err error) {
	l := &Lab{cfg: cfg, hosts: map[string]*host{}, lock: lock}
	defer func() {
		if err != nil {
			if cerr := l.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("clean up the failed lab: %w", cerr))
			}
		}
	}()
	// Catch Ctrl-C and kill so the lab goes with the process that made it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	stop := make(chan struct{})
	l.stopSig = func() { signal.Stop(sigs); close(stop) }
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "lab: %v: removing the lab\n", s)
			_ = l.Close()
			os.Exit(130)
		case <-stop:
		}
	}()

	if err := clearLeftovers(cfg.Dir); err != nil {
		return nil, fmt.Errorf("clear leftovers of an earlier lab: %w", err)
	}
	for _, d := range []string{"logs", "run", "home", "nodes"} {
		if err := os.MkdirAll(l.path(d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(l.path(markerFile), []byte(labName), 0o644); err != nil {
		return nil, err
	}
	if l.pki, err = newPKI(l.path("pki")); err != nil {
		return nil, err
	}
	if cfg.Labbox == "" {
		return nil, errors.New("lab config: Labbox (the echo server binary) is required")
	}

	start := time.Now()
	if _, err := l.makeSwitch(); err != nil {
		return nil, err
	}
	if err := l.startFirewall(ctx); err != nil {
		return nil, err
	}
	cp, err := l.newHost("control-plane", false, "")
	if err != nil {
		return nil, err
	}
	if err := l.attach(cp, "eth0", underlayBridge, withBits(ControlPlaneIP, UnderlayPrefix)); err != nil {
		return nil, err
	}
	if err := route(cp, netip.MustParsePrefix("0.0.0.0/0"), FirewallUnderlayIP); err != nil {
		return nil, err
	}
	for _, p := range cfg.plan() {
		n, err := l.newNode(p)
		if err != nil {
			return nil, err
		}
		l.nodes = append(l.nodes, n)
	}
	// Routes between nodes' pod ranges on the underlay, as kindnet sets up;
	// the firewall, the on-prem router, knows them too, so that on-prem
	// clients can connect in to pods.
	// Between nodes of a primary that routes itself (flannel, kube-router),
	// the primary does instead.
	for _, n := range l.nodes {
		for _, h := range append([]*host{cp, l.host("firewall")}, l.nodeHosts()...) {
			if h == n.host || (routesItself(n.Primary) && l.primaryOfHost(h) == n.Primary) {
				continue
			}
			if err := route(h, n.PodCIDR, n.IP); err != nil {
				return nil, err
			}
		}
	}
	cfg.logf("lab: network up in %s", time.Since(start).Round(time.Millisecond))

	if err := l.startControlPlane(ctx, cp); err != nil {
		return nil, err
	}
	cfg.logf("lab: API server ready in %s", time.Since(start).Round(time.Millisecond))

	g, gctx := errgroup.WithContext(ctx)
	for _, n := range l.nodes {
		if err := l.installCNI(n); err != nil {
			return nil, err
		}
		g.Go(func() error {
			if err := l.startContainerd(gctx, n); err != nil {
				return err
			}
			if err := l.startKubelet(n); err != nil {
				return err
			}
			if err := l.waitNodeReady(gctx, n, 90*time.Second); err != nil {
				return err
			}
			if err := l.publishPodCIDR(gctx, n); err != nil {
				return err
			}
			if IsFlannel(n.Primary) {
				if err := l.startFlannel(n); err != nil {
					return err
				}
			}
			if n.Primary == PrimaryKubeRouter {
				if err := l.startKubeRouter(n); err != nil {
					return err
				}
			}
			// After the Node exists: kube-proxy reads its addresses.
			return l.startKubeProxy(gctx, n)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := l.waitKubeRouterRoutes(ctx); err != nil {
		return nil, err
	}
	cfg.logf("lab: %d nodes Ready in %s", len(l.nodes), time.Since(start).Round(time.Millisecond))
	return l, nil
}

// primaryOfHost is the primary CNI of the node whose host is h, or "".
func (l *Lab) primaryOfHost(h *host) string {
	for _, n := range l.nodes {
		if n.host == h {
			return n.Primary
		}
	}
	return ""
}

func (l *Lab) nodeHosts() []*host {
	out := make([]*host, len(l.nodes))
	for i, n := range l.nodes {
		out[i] = n.host
	}
	return out
}

// Nodes lists the worker and gateway nodes, workers first.
func (l *Lab) Nodes() []*Node { return append([]*Node(nil), l.nodes...) }

// Dir is the lab's folder.
func (l *Lab) Dir() string { return l.cfg.Dir }

// Close stops every process of the lab and removes its namespaces,
// cgroups and folder. It is safe to call more than once.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		if l.stopSig != nil {
			l.stopSig()
		}
		if l.forwarder != nil {
			// Before the hosts' handles go: open connections dial
			// through the control plane's namespace handle.
			l.forwarder.close()
		}
		// Kubelets first, so they do not restart what we kill.
		for _, n := range l.nodes {
			if n.kubelet != nil {
				n.kubelet.stop(5 * time.Second)
			}
		}
		l.mu.Lock()
		for _, h := range l.hosts {
			h.close()
		}
		l.mu.Unlock()
		l.closeErr = clearLeftovers(l.cfg.Dir)
		l.mu.Lock()
		procs := l.procs
		l.mu.Unlock()
		for _, p := range procs {
			// Every process was in the subtree that was just killed;
			// one that somehow was not gets killed directly.
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		if l.ownLock {
			l.lock.Close()
		}
	})
	return l.closeErr
}

// clearLeftovers kills every process in the lab's cgroup subtree, removes
// the subtree and removes dir if it is a lab folder of the slot.
func clearLeftovers(dir string) error {
	var errs []error
	if err := killCgroupTree(); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroupTree(); err != nil {
		errs = append(errs, err)
	}
	if err := removeLabFolder(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeLabFolder removes dir if it is a lab folder of this slot; a
// folder that is not a lab's, or is another slot's, is an error.
func removeLabFolder(dir string) error {
	mark, err := os.ReadFile(filepath.Join(dir, markerFile))
	if err != nil {
		if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
			return fmt.Errorf("%s exists and is not a lab folder (no %s); refusing to remove it", dir, markerFile)
		}
		return nil
	}
	// The marker names the lab's slot (empty: from before slots, slot
	// 0's): a folder another slot's lab may be using is not ours.
	if owner := cmp.Or(string(mark), "nsegress-lab"); owner != labName {
		return fmt.Errorf("%s is the folder of lab %s, not of this slot's %s; refusing to remove it (give each slot its own NSEGRESS_LAB_DIR)", dir, owner, labName)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// lockPath is the lab lock of the process's slot. It is one file whatever
// the lab's folder, because the cgroup subtree a lab kills is the slot's
// whatever the folder.
func lockPath() string { return filepath.Join(os.TempDir(), labName+".lock") }

// acquireLock takes the slot's lab lock, waiting for a lab of the slot
// that another process runs to close.
func acquireLock(ctx context.Context) (*os.File, error) {
	f, err := os.OpenFile(lockPath(), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lab lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for another lab to finish: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
