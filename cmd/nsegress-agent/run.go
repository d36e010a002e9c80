package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nsegress/nsegress/agent/datapath"
	"github.com/nsegress/nsegress/agent/ha"
	"github.com/nsegress/nsegress/agent/install"
	"github.com/nsegress/nsegress/agent/node"
	"github.com/nsegress/nsegress/nodestate"
)

// serviceAccountCA is where every pod finds its cluster's CA.
const serviceAccountCA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

// runAgent keeps nsegress installed until SIGTERM, serves /healthz and
// /readyz, and uninstalls on the way out if the DaemonSet is being
// deleted.
func runAgent(o options) error {
	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	cfg, client, dyn, err := apiClients(o.apiKubeconfig)
	if err != nil {
		return err
	}
	if o.nodeName == "" || o.namespace == "" {
		return errors.New("node name and namespace are required (flags -node-name and -namespace, or env NODE_NAME and POD_NAMESPACE)")
	}
	// Before anything is programmed: the ports, marks, tables and rule
	// priorities must not be another component's.
	if err := datapath.CheckNode(o.settings, o.vxlanPort); err != nil {
		return err
	}
	k, err := newKeeper(o, logger.Printf)
	if err != nil {
		return err
	}
	k.Creds = &install.Credentials{
		Client: client, Namespace: o.namespace, ServiceAccount: o.pluginServiceAccount,
		Server: cfg.Host, CAFile: o.caFile, Path: o.kubeconfig, Lifetime: time.Hour,
		BoundNode: o.nodeName,
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Uninstall only on an observed deletion of the DaemonSet or its
	// namespace, remembered from while the agent could still look.
	removals := install.WatchRemoval(ctx, client, o.namespace, o.daemonSet)
	// Gateway HA: heartbeats, takeovers and pushes need a key every agent
	// shares, which the controller creates. Until the agent has it (from
	// the API, or its cached copy), it runs with the API's placement alone
	// and says so.
	claims := ha.NewClaimWriter(client, o.nodeName, logger.Printf)
	haRuntime := ha.New(ha.Config{NodeName: o.nodeName, Uplink: o.uplink, Port: o.haPort, Logf: logger.Printf, Claimed: claims.Set,
		Replicate: true, MarkMask: o.settings.Marks.Mask(),
		LoadKey: func(ctx context.Context) ([]byte, error) {
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return ha.LoadKey(c, client, o.namespace, o.haKeySecret, nodestate.State{Dir: o.stateDir}.HAKeyPath())
		}})
	role := node.New(node.Config{
		Client: client, Dynamic: dyn, NodeName: o.nodeName, StateDir: o.stateDir,
		Port: o.vxlanPort, Settings: o.settings, IgnorePodRanges: o.ignorePodRanges, Uplink: o.uplink, Resync: o.resync, Logf: logger.Printf,
		HA: haRuntime,
	})
	haRuntime.SetKick(role.Kick)
	// The roles run beside the install loop. A role that returns while the
	// agent still runs has died: it is logged and fails liveness, so that
	// the kubelet restarts the agent, while the plugin stays chained.
	var roles errgroup.Group
	var died roleDeaths
	runRole := func(name string, run func(context.Context) error) {
		roles.Go(func() error {
			err := run(ctx)
			if ctx.Err() == nil {
				if err == nil {
					err = errors.New("returned")
				}
				logger.Printf("%s role died: %v", name, err)
				died.add(name, err)
			}
			return err
		})
	}
	runRole("node", role.Run)
	// The plugin asks the agent socket first; without it, ADD asks the
	// API server.
	runRole("agent socket", role.Serve)
	runRole("gateway HA", haRuntime.Run)
	runRole("claims", claims.Run)
	closeHealth, err := serveHealth(healthServer(o.healthAddr, k, role, &died), logger.Printf)
	if err != nil {
		return err
	}
	defer closeHealth()

	becameReady := func() {
		logger.Printf("ready: nsegress is installed and chained on %s", o.nodeName)
		if o.startupTaint != "" {
			// Off the keeper's loop: a slow API server must not hold up
			// re-chaining, and a failure is retried until it works.
			go liftTaint(ctx, client, o.nodeName, o.startupTaint, logger.Printf)
		}
	}
	if err := k.Run(ctx, becameReady); err != nil {
		return err
	}

	// What the API says now wins; what the watch saw counts when the API
	// cannot tell (the credentials already deleted with the install).
	removed, known, why := install.BeingRemoved(context.Background(), client, o.namespace, o.daemonSet)
	if seen, sawWhy := removals.Seen(); !known && seen {
		removed, why = true, sawWhy+" (seen while the agent ran; now: "+why+")"
	}
	logger.Printf("stopping: %s", why)
	if !removed {
		return nil
	}
	stop()
	// The roles' errors were logged as they died; what matters now is
	// that none of them still changes the node while it is uninstalled.
	_ = roles.Wait()
	// Best effort: the credentials may be gone with the install.
	clearCtx, cancelClear := context.WithTimeout(context.Background(), 5*time.Second)
	if err := claims.Clear(clearCtx); err != nil {
		logger.Printf("uninstall: the claims annotation of node %s stays: %v", o.nodeName, err)
	}
	cancelClear()
	if err := uninstall(k, o); err != nil {
		return err
	}
	logger.Printf("uninstalled nsegress from %s", o.nodeName)
	return nil
}

// liftTaint removes the startup taint from the node, retrying until it
// succeeds or ctx ends.
func liftTaint(ctx context.Context, client kubernetes.Interface, node, key string, logf func(string, ...any)) {
	if retryUntil(ctx, fmt.Sprintf("remove taint %s from %s", key, node), logf, func(c context.Context) error {
		return install.RemoveTaint(c, client, node, key)
	}) {
		logf("lifted the startup taint %s from %s", key, node)
	}
}

// retryUntil calls try, each call bounded to 10 s, until it succeeds
// (true) or ctx ends (false), pausing 1 s, 2 s, … up to 30 s between
// calls and logging each failure as "what (retrying in …): error".
func retryUntil(ctx context.Context, what string, logf func(string, ...any), try func(context.Context) error) bool {
	wait := time.Second
	for {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := try(c)
		cancel()
		if err == nil {
			return true
		}
		logf("%s (retrying in %s): %v", what, wait, err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// apiClients are the process's API clients, in-cluster unless a
// kubeconfig is given.
func apiClients(kubeconfig string) (*rest.Config, kubernetes.Interface, dynamic.Interface, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, nil, nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("API client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("API client: %w", err)
	}
	return cfg, client, dyn, nil
}

// serveHealth serves srv on its address until the returned function
// closes it.
func serveHealth(srv *http.Server, logf func(string, ...any)) (func(), error) {
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return nil, fmt.Errorf("health server: %w", err)
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logf("health server: %v", err)
		}
	}()
	return func() { _ = srv.Close() }, nil // closing ends Serve; nothing to report
}

// restConfig is the agent's own API access: in-cluster unless a
// kubeconfig is given.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("in-cluster API config (run in a pod, or pass -kubeconfig): %w", err)
	}
	return cfg, nil
}

// uninstall unchains the plugin first, so that no new pod is programmed,
// then removes the datapath: nft table, tunnels, rules, routes, floating
// IPs and the plugin's records.
func uninstall(k *install.Keeper, o options) error {
	if err := k.Uninstall(); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	if err := node.Uninstall(o.stateDir, o.uplink, o.settings, node.HostKernel()); err != nil {
		return fmt.Errorf("uninstall the datapath: %w", err)
	}
	return nil
}

// roleDeaths collects the roles that died, for liveness.
type roleDeaths struct {
	mu   sync.Mutex
	dead []string
}

func (d *roleDeaths) add(name string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dead = append(d.dead, fmt.Sprintf("the %s role died: %v", name, err))
}

// err says which roles died, or nil.
func (d *roleDeaths) err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.dead) == 0 {
		return nil
	}
	return errors.New(strings.Join(d.dead, "; "))
}

func healthServer(addr string, k *install.Keeper, role *node.Role, died *roleDeaths) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !k.Alive() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "the install loop has not run for three resync periods")
			return
		}
		if err := died.err(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, err := k.Ready(); !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		if !role.Programmed() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: the node's datapath is not programmed yet")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}
