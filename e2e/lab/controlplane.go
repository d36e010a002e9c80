package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// APIServerPort is the API server's port on ControlPlaneIP.
const APIServerPort = 6443

// serviceAPIIP is the first address of the service range: the API server
// certificate names it because in-cluster clients know it as
// kubernetes.default.
var serviceAPIIP = netip.MustParseAddr("198.19.0.1")

// startControlPlane runs etcd, the API server, the controller manager and
// the scheduler in the control-plane host, and a loopback forwarder so
// that clients on the machine (tests, kubectl, a person) reach the API
// server without the machine joining the underlay.
func (l *Lab) startControlPlane(ctx context.Context, cp *host) error {
	b := l.cfg.Bins
	pk := l.pki
	apiHosts := []string{ControlPlaneIP.String(), "127.0.0.1", serviceAPIIP.String(),
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost"}
	issues := []struct {
		name, cn string
		groups   []string
		hosts    []string
	}{
		{"apiserver", "kube-apiserver", nil, apiHosts},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil},
		{"admin", "lab-admin", []string{"system:masters"}, nil},
		{"controller-manager", "system:kube-controller-manager", nil, nil},
		{"scheduler", "system:kube-scheduler", nil, nil},
	}
	for _, c := range issues {
		if err := pk.issue(c.name, c.cn, c.groups, c.hosts); err != nil {
			return err
		}
	}
	inside := fmt.Sprintf("https://%s:%d", ControlPlaneIP, APIServerPort)
	for _, name := range []string{"controller-manager", "scheduler", "admin"} {
		if err := pk.kubeconfig(l.path("pki", name+".kubeconfig"), inside, name); err != nil {
			return err
		}
	}

	etcdDir := l.path("etcd")
	if _, err := l.startIn(cp, "etcd", []string{b.Etcd,
		"--name=lab", "--data-dir=" + etcdDir,
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=lab=http://127.0.0.1:2380",
		// A throwaway cluster: durability buys nothing and fsync costs
		// seconds on a busy disk.
		"--unsafe-no-fsync",
		"--log-level=warn",
	}); err != nil {
		return err
	}

	l.apiArgv = []string{b.APIServer,
		"--etcd-servers=http://127.0.0.1:2379",
		"--advertise-address=" + ControlPlaneIP.String(),
		"--bind-address=0.0.0.0",
		"--secure-port=" + strconv.Itoa(APIServerPort),
		"--service-cluster-ip-range=" + ServicePrefix.String(),
		"--client-ca-file=" + pk.path("ca.crt"),
		"--tls-cert-file=" + pk.path("apiserver.crt"),
		"--tls-private-key-file=" + pk.path("apiserver.key"),
		// Where it would write a self-signed serving certificate; the
		// default, /var/run/kubernetes, is the machine's own (the control
		// plane shares the machine's mounts).
		"--cert-dir=" + l.path("control-plane", "apiserver-certs"),
		// kubectl exec and logs go API server -> kubelet with this client
		// certificate.
		"--kubelet-client-certificate=" + pk.path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + pk.path("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + pk.path("sa.pub"),
		"--service-account-signing-key-file=" + pk.path("sa.key"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	}
	api, err := l.startIn(cp, "kube-apiserver", l.apiArgv)
	if err != nil {
		return err
	}
	l.apiServer = api

	if err := l.startAPIForwarder(cp); err != nil {
		return err
	}
	if err := pk.kubeconfig(l.Kubeconfig(), "https://"+l.forwarder.Addr().String(), "admin"); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", l.Kubeconfig())
	if err != nil {
		return fmt.Errorf("load lab kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	l.client, err = kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := l.waitAPIReady(ctx, api); err != nil {
		return err
	}

	if _, err := l.startIn(cp, "kube-controller-manager", []string{b.ControllerManager,
		"--kubeconfig=" + l.path("pki", "controller-manager.kubeconfig"),
		"--authentication-kubeconfig=" + l.path("pki", "controller-manager.kubeconfig"),
		"--authorization-kubeconfig=" + l.path("pki", "controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1",
		"--service-account-private-key-file=" + pk.path("sa.key"),
		"--root-ca-file=" + pk.path("ca.crt"),
		"--cluster-signing-cert-file=" + pk.path("ca.crt"),
		"--cluster-signing-key-file=" + pk.path("ca.key"),
		"--use-service-account-credentials=true",
		"--service-cluster-ip-range=" + ServicePrefix.String(),
		// Its FlexVolume prober creates this folder when it is missing;
		// the default, /usr/libexec/kubernetes/kubelet-plugins/volume/exec,
		// would be created on the machine and outlive the lab.
		"--flex-volume-plugin-dir=" + l.path("control-plane", "volume-plugins"),
		"--leader-elect=false",
		"--v=1",
	}); err != nil {
		return err
	}
	_, err = l.startIn(cp, "kube-scheduler", []string{b.Scheduler,
		"--kubeconfig=" + l.path("pki", "scheduler.kubeconfig"),
		"--authentication-kubeconfig=" + l.path("pki", "scheduler.kubeconfig"),
		"--authorization-kubeconfig=" + l.path("pki", "scheduler.kubeconfig"),
		"--bind-address=127.0.0.1",
		"--leader-elect=false",
		"--v=1",
	})
	return err
}

// waitAPIReady waits for /readyz and for the default namespace's
// ServiceAccount machinery to be usable.
func (l *Lab) waitAPIReady(ctx context.Context, api *proc) error {
	rc := l.client.Discovery().RESTClient()
	err := waitFor(60*time.Second, func() (bool, error) {
		if api.exited() {
			return false, fmt.Errorf("kube-apiserver exited: %w\n%s", api.err, api.tail(30))
		}
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		body, err := rc.Get().AbsPath("/readyz").DoRaw(c)
		return err == nil && string(body) == "ok", nil
	})
	if err != nil {
		return fmt.Errorf("wait for kube-apiserver: %w\n%s", err, api.tail(30))
	}
	return nil
}

// forwarder accepts connections on the machine's loopback and splices
// each to the API server, dialled from inside the control-plane host.
type forwarder struct {
	ln     net.Listener
	target string
	netns  ns.NetNS
	wg     sync.WaitGroup // the accept loop and every splice

	mu     sync.Mutex
	conns  map[net.Conn]bool // open client connections, closed by close
	closed bool              // set by close; later connections are refused
}

func (l *Lab) startAPIForwarder(cp *host) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the API forwarder: %w", err)
	}
	f := &forwarder{ln: ln, target: net.JoinHostPort(ControlPlaneIP.String(), strconv.Itoa(APIServerPort)),
		netns: cp.netns, conns: map[net.Conn]bool{}}
	l.forwarder = f
	f.wg.Add(1)
	go f.serve()
	return nil
}

// Addr is the loopback address clients use.
func (f *forwarder) Addr() net.Addr { return f.ln.Addr() }

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			c.Close()
			continue
		}
		f.conns[c] = true
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.splice(c)
			f.mu.Lock()
			delete(f.conns, c)
			f.mu.Unlock()
		}()
	}
}

func (f *forwarder) splice(c net.Conn) {
	defer c.Close()
	var up net.Conn
	// A socket belongs to the network namespace of the thread that
	// creates it; ns.Do pins the thread while we dial.
	err := f.netns.Do(func(ns.NetNS) error {
		var err error
		up, err = net.DialTimeout("tcp", f.target, 3*time.Second)
		return err
	})
	if err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	// When one side ends, end both: a watch that idles upstream must not
	// keep the splice (and close) waiting.
	<-done
	c.Close()
	up.Close()
	<-done
}

// close stops accepting, cuts every open connection and waits until no
// goroutine uses the control plane's namespace any more.
func (f *forwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// Client is an admin clientset for the lab's API server.
func (l *Lab) Client() kubernetes.Interface { return l.client }

// NodeKubeconfig is the path of an admin kubeconfig that works from
// inside the lab's namespaces (the API server's underlay address), e.g.
// for a plugin that libcni runs on a node.
func (l *Lab) NodeKubeconfig() string { return l.path("pki", "admin.kubeconfig") }

// Kubeconfig is the path of an admin kubeconfig that works from the
// machine (through the loopback forwarder) while the lab runs.
func (l *Lab) Kubeconfig() string { return l.path("kubeconfig") }

// KubectlCacheDir is the discovery and HTTP cache for kubectl run against
// the lab. kubectl's default, ~/.kube/cache, is in the user's home and
// would outlive the lab.
func (l *Lab) KubectlCacheDir() string { return l.path("home", ".kube", "cache") }

// ToolEnv is the environment for kubectl and other clients run from the
// machine against the lab: the lab's kubeconfig, and a HOME and kubectl
// cache inside the lab's folder, so that nothing is written into the
// user's home.
func (l *Lab) ToolEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + l.path("home"),
		"KUBECONFIG=" + l.Kubeconfig(),
		"KUBECACHEDIR=" + l.KubectlCacheDir(),
	}
}

func (l *Lab) path(parts ...string) string {
	return filepath.Join(append([]string{l.cfg.Dir}, parts...)...)
}
