package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Node is one worker or gateway node of the lab.
type Node struct {
	// Name is the Kubernetes node name.
	Name string
	// IP is the node's underlay address.
	IP netip.Addr
	// PodCIDR is the range its primary CNI hands out.
	PodCIDR netip.Prefix
	// Primary is its primary CNI plugin (PrimaryPTP, PrimaryBridge).
	Primary string
	// Gateway is true for nodes labelled for gateway duty.
	Gateway bool
	// Dir is the node's root on the machine: its /run, /var/lib,
	// /var/log and /opt are the folders run, var-lib, var-log and opt
	// below it.
	Dir string

	host       *host
	containerd *proc
	kubelet    *proc
	kubeProxy  *proc
	flanneld   *proc
	kubeRouter *proc
}

// Host paths bind-mounted per node. containerd 1.6 and the kubelet
// hard-code paths below them, and a DaemonSet's hostPath must land on its
// own node only.
var nodeMounts = []struct{ dir, target string }{
	{"run", "/run"},
	{"var-lib", "/var/lib"},
	{"var-log", "/var/log"},
	{"opt", "/opt"},
}

// CNIConfDir is the node's CNI configuration folder, as containerd sees it.
// /etc/cni/net.d is not used because making it a per-node mount would need
// a folder in the machine's /etc.
const CNIConfDir = "/opt/cni/net.d"

// CNIBinDir is the node's CNI plugin folder, as containerd sees it.
const CNIBinDir = "/opt/cni/bin"

// kernelDefaults are the values the kubelet with protectKernelDefaults
// insists on. Each node's mount namespace sees a file with the value bind
// mounted over the /proc/sys entry, so the machine's own sysctls stay
// as they are.
var kernelDefaults = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// HostPath is where a path inside the node (like /opt/cni/bin/x) lives on
// the machine, for paths below the per-node mounts.
func (n *Node) HostPath(p string) (string, error) {
	for _, m := range nodeMounts {
		if p == m.target || strings.HasPrefix(p, m.target+"/") {
			return filepath.Join(n.Dir, m.dir, strings.TrimPrefix(p, m.target)), nil
		}
	}
	return "", fmt.Errorf("%s is not below a per-node folder of %s", p, n.Name)
}

// ContainerdSocket is the node's containerd socket as seen from the
// machine.
func (n *Node) ContainerdSocket() string {
	return filepath.Join(n.Dir, "run", "containerd", "containerd.sock")
}

// newNode prepares a node's folders and namespaces and wires its network.
func (l *Lab) newNode(plan nodePlan) (*Node, error) {
	n := &Node{Name: plan.Name, IP: plan.IP, PodCIDR: plan.PodCIDR, Gateway: plan.Gateway, Primary: plan.Primary,
		Dir: l.path("nodes", plan.Name)}
	for _, d := range []string{"run", "var-lib", "var-log", "opt/cni/bin", "opt/cni/net.d", "etc", "sysctl"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	var setup strings.Builder
	for _, m := range nodeMounts {
		fmt.Fprintf(&setup, "mount --bind %s %s\n", shellQuote(filepath.Join(n.Dir, m.dir)), m.target)
	}
	// containerd's content store, snapshots and metadata live in memory:
	// its fsyncs on every pod start would otherwise stall the shared disk's
	// journal for everything else on the machine, other nodes' agents
	// included. The tmpfs is mounted in the node's own mount namespace and
	// goes with it.
	setup.WriteString("mkdir -p /var/lib/containerd\nmount -t tmpfs -o mode=0711 nsegress-lab /var/lib/containerd\n")
	for k, v := range kernelDefaults {
		f := filepath.Join(n.Dir, "sysctl", strings.ReplaceAll(k, "/", "."))
		if err := os.WriteFile(f, []byte(v+"\n"), 0o644); err != nil {
			return nil, err
		}
		fmt.Fprintf(&setup, "mount --bind %s /proc/sys/%s\n", shellQuote(f), k)
	}
	h, err := l.newHost(plan.Name, true, setup.String())
	if err != nil {
		return nil, err
	}
	n.host = h
	if err := l.attach(h, "eth0", underlayBridge, withBits(n.IP, UnderlayPrefix)); err != nil {
		return nil, err
	}
	if err := route(h, netip.MustParsePrefix("0.0.0.0/0"), FirewallUnderlayIP); err != nil {
		return nil, err
	}
	// Hardened hosts check reverse paths strictly (docs/design.md §6); nodes route
	// for their pods.
	if err := h.sysctl(map[string]string{
		"net.ipv4.conf.all.rp_filter":     "1",
		"net.ipv4.conf.default.rp_filter": "1",
		"net.ipv4.ip_forward":             "1",
	}); err != nil {
		return nil, err
	}
	return n, nil
}

// installCNI copies the primary CNI plugins into the node and writes its
// conflist: ptp + host-local with the node's pod range, as kindnet would.
func (l *Lab) installCNI(n *Node) error {
	for _, name := range []string{"ptp", "bridge", "host-local", "loopback"} {
		if err := copyFile(filepath.Join(l.cfg.Bins.CNIDir, name), filepath.Join(n.Dir, "opt/cni/bin", name), 0o755); err != nil {
			return err
		}
	}
	if IsFlannel(n.Primary) {
		if err := copyFile(l.cfg.Bins.CNIFlannel, filepath.Join(n.Dir, "opt/cni/bin", "flannel"), 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(n.Dir, "opt/cni/net.d", "10-lab.conflist"), []byte(PrimaryConflist(n.Primary, n.PodCIDR)), 0o644)
}

// PrimaryConflist is the lab's primary CNI configuration for a node with
// primary plugin primary and pod range cidr, with masquerade (pods leave
// with the node's address, as with kindnet) and host-local IPAM: ptp (a
// veth per pod, routed), or bridge (the pods' veths are ports of cni0,
// which holds the range's gateway address).
func PrimaryConflist(primary string, cidr netip.Prefix) string {
	if IsFlannel(primary) {
		// flannel's own manifest: the range, the MTU and the masquerade
		// come from flanneld's subnet file.
		return `{
  "cniVersion": "0.3.1",
  "name": "cbr0",
  "plugins": [
    {
      "type": "flannel",
      "subnetFile": "/run/flannel/subnet.env",
      "dataDir": "/var/lib/cni/flannel",
      "delegate": {"hairpinMode": true, "isDefaultGateway": true}
    }
  ]
}
`
	}
	if primary == PrimaryKubeRouter {
		// kube-router's own manifest: bridge kube-bridge with host-local
		// on the node's range (which kube-router would write itself
		// with --enable-cni), masquerading like the other lab primaries.
		return fmt.Sprintf(`{
  "cniVersion": "0.3.0",
  "name": "mynet",
  "plugins": [
    {
      "name": "kubernetes",
      "type": "bridge",
      "bridge": "kube-bridge",
      "isDefaultGateway": true,
      "hairpinMode": true,
      "mtu": %d,
      "ipMasq": true,
      "ipam": {"type": "host-local", "subnet": "%s"}
    }
  ]
}
`, underlayMTU, cidr)
	}
	plugin := fmt.Sprintf(`"type": "ptp",
      "mtu": %d,`, underlayMTU)
	if primary == PrimaryBridge {
		plugin = fmt.Sprintf(`"type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "mtu": %d,`, underlayMTU)
	}
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "lab",
  "plugins": [
    {
      %s
      "ipMasq": true,
      "ipMasqBackend": "nftables",
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "%s"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
`, plugin, cidr)
}

// startContainerd writes the node's containerd configuration and starts
// it inside the node's namespaces.
func (l *Lab) startContainerd(ctx context.Context, n *Node) error {
	cfg := fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # The machine lacks CAP_SYS_RESOURCE: without this runc fails with
  # "can't get final child's PID from pipe" when it lowers oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`, l.cfg.SandboxImage, CNIBinDir, CNIConfDir)
	path := filepath.Join(n.Dir, "etc", "containerd.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := l.startIn(n.host, "containerd", []string{l.cfg.Bins.Containerd, "--config", path})
	if err != nil {
		return err
	}
	n.containerd = p
	if err := waitFor(20*time.Second, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("containerd on %s exited: %w\n%s", n.Name, p.err, p.tail(20))
		}
		_, err := os.Stat(n.ContainerdSocket())
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("start containerd on %s: %w", n.Name, err)
	}
	for _, img := range l.cfg.Images {
		if err := l.importImage(ctx, n, img); err != nil {
			return err
		}
	}
	return nil
}

// importImage loads an image tarball into the node's containerd, in the
// namespace the CRI uses.
func (l *Lab) importImage(ctx context.Context, n *Node, tarball string) error {
	out, err := l.run(ctx, n.host, nil, l.cfg.Bins.Ctr, "--address", "/run/containerd/containerd.sock",
		"-n", "k8s.io", "images", "import", tarball)
	if err != nil {
		return fmt.Errorf("import %s into %s: %w", filepath.Base(tarball), n.Name, err)
	}
	l.cfg.logf("%s: imported %s", n.Name, strings.TrimSpace(string(out)))
	return nil
}

// startKubelet issues the node's credentials, writes its configuration and
// starts the kubelet in the node's namespaces.
func (l *Lab) startKubelet(n *Node) error {
	pk := l.pki
	certName := "kubelet-" + n.Name
	if err := pk.issue(certName, "system:node:"+n.Name, []string{"system:nodes"}, nil); err != nil {
		return err
	}
	kubeconfig := filepath.Join(n.Dir, "etc", "kubelet.kubeconfig")
	if err := pk.kubeconfig(kubeconfig, fmt.Sprintf("https://%s:%d", ControlPlaneIP, APIServerPort), certName); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
# cgroups v1 hybrid without systemd (docs/design.md §6).
cgroupDriver: cgroupfs
cgroupRoot: /%s/%s/pods
failCgroupV1: false
# No CAP_SYS_RESOURCE: the kubelet must not lower its own oom_score_adj.
oomScoreAdj: 0
# Never rewrite the machine's sysctls; the node's mount namespace shows
# the expected values instead.
protectKernelDefaults: true
# Below the node's own /var/lib: the default, /usr/libexec/kubernetes/...,
# which the kubelet creates, is the machine's (the node shares its /usr).
# The root and cert folders default to /var/lib/kubelet, the node's too.
volumePluginDir: /var/lib/kubelet/volumeplugins
podLogsDir: /var/log/pods
resolvConf: ""
failSwapOn: false
staticPodPath: ""
# Images are imported, never pulled; keep them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
serializeImagePulls: false
nodeStatusReportFrequency: 10s
`, n.IP, pk.path("ca.crt"), cgroupName, n.Name)
	cfgPath := filepath.Join(n.Dir, "etc", "kubelet.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	if err := makeCgroup(n.Name + "/pods"); err != nil {
		return err
	}
	labels := "nsegress.io/lab=true"
	if n.Gateway {
		labels += "," + GatewayLabel + "=true"
	}
	p, err := l.startIn(n.host, "kubelet", []string{l.cfg.Bins.Kubelet,
		"--config=" + cfgPath,
		"--kubeconfig=" + kubeconfig,
		"--hostname-override=" + n.Name,
		"--node-ip=" + n.IP.String(),
		"--node-labels=" + labels,
		"--v=1",
	})
	if err != nil {
		return err
	}
	n.kubelet = p
	return nil
}

// startKubeProxy runs kube-proxy in nftables mode in the node's namespaces,
// as the system:kube-proxy user (the built-in system:node-proxier binding
// covers it), and waits until it has programmed its table, so that Services
// work once the lab is up.
func (l *Lab) startKubeProxy(ctx context.Context, n *Node) error {
	pk := l.pki
	certName := "kube-proxy-" + n.Name
	if err := pk.issue(certName, "system:kube-proxy", nil, nil); err != nil {
		return err
	}
	kubeconfig := filepath.Join(n.Dir, "etc", "kube-proxy.kubeconfig")
	if err := pk.kubeconfig(kubeconfig, fmt.Sprintf("https://%s:%d", ControlPlaneIP, APIServerPort), certName); err != nil {
		return err
	}
	// Its start-up cleanup of the ipvs mode runs `modprobe -va ip_vs`; on
	// a machine with modules that would load one machine-wide. A stub
	// first on its PATH does nothing and fails, so kube-proxy skips that
	// cleanup as on a kernel without ipvs (a fresh node has no ipvs state
	// to clean). A stub that succeeded would let it go on to ask the
	// kernel for the IPVS netlink family, which may load the module all
	// the same.
	stubDir := filepath.Join(n.Dir, "etc", "kube-proxy-bin")
	if err := os.MkdirAll(stubDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stubDir, "modprobe"), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
bindAddress: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: %s
detectLocalMode: ClusterCIDR
# No CAP_SYS_RESOURCE: it must not lower its own oom_score_adj.
oomScoreAdj: 0
# Leave every conntrack sysctl alone: in a child network namespace
# nf_conntrack_max is read-only and the hash size is machine-wide.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
`, kubeconfig, n.Name, n.IP, PodPrefix)
	cfgPath := filepath.Join(n.Dir, "etc", "kube-proxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := l.startIn(n.host, "kube-proxy", []string{"env", "PATH=" + stubDir + ":" + labPath, l.cfg.Bins.KubeProxy,
		"--config=" + cfgPath,
		"--v=1",
	})
	if err != nil {
		return err
	}
	n.kubeProxy = p
	err = waitFor(60*time.Second, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("kube-proxy on %s exited: %w\n%s", n.Name, p.err, p.tail(30))
		}
		// Its chains appear with its first full sync, which needs the
		// Services and EndpointSlices listed.
		_, err := l.run(ctx, n.host, nil, "nft", "list", "chain", "ip", "kube-proxy", "services")
		if err != nil {
			time.Sleep(200 * time.Millisecond)
		}
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("kube-proxy on %s: %w\n%s", n.Name, err, p.tail(30))
	}
	return nil
}

// publishPodCIDR writes the node's pod range into its Node's
// spec.podCIDR(s), as a cluster's node IPAM (the controller manager's
// --allocate-node-cidrs) does: what overlays and nsegress's tunnel source
// check read. Fields that are set already are left alone, as the API
// server refuses to change them.
func (l *Lab) publishPodCIDR(ctx context.Context, n *Node) error {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	patch := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q]}}`, n.PodCIDR, n.PodCIDR)
	_, err := l.client.CoreV1().Nodes().Patch(c, n.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("node %s: publish pod range %s: %w", n.Name, n.PodCIDR, err)
	}
	return nil
}

// flannelNetConf is flanneld's network configuration: the lab's pod range,
// each node's /24 taken from its Node's spec.podCIDR, and the backend:
// VXLAN (VNI 1, UDP 8472) or host-gw.
func flannelNetConf(primary string) string {
	backend := "vxlan"
	if primary == PrimaryFlannelHostGW {
		backend = "host-gw"
	}
	return fmt.Sprintf(`{"Network": "198.18.0.0/16", "SubnetLen": 24, "Backend": {"Type": %q}}`, backend)
}

// startFlannel runs flanneld in the node's namespaces, as flannel's
// DaemonSet would (kube subnet manager, masquerade), and waits for its
// subnet file, which the flannel CNI plugin reads at every ADD.
func (l *Lab) startFlannel(n *Node) error {
	conf := l.path("etc", "flannel-net-conf-"+n.Name+".json")
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(conf, []byte(flannelNetConf(n.Primary)), 0o644); err != nil {
		return err
	}
	p, err := l.startIn(n.host, "flanneld", []string{"/usr/bin/env", "NODE_NAME=" + n.Name, l.cfg.Bins.Flanneld,
		"--kube-subnet-mgr", "--kubeconfig-file=" + l.NodeKubeconfig(), "--iface=eth0", "--ip-masq",
		"--subnet-file=/run/flannel/subnet.env", "--net-config-path=" + conf})
	if err != nil {
		return err
	}
	n.flanneld = p
	subnetFile := filepath.Join(n.Dir, "run", "flannel", "subnet.env")
	if err := waitFor(60*time.Second, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("flanneld on %s exited: %w\n%s", n.Name, p.err, p.tail(30))
		}
		_, err := os.Stat(subnetFile)
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("flanneld on %s: %w\n%s", n.Name, err, p.tail(30))
	}
	return nil
}

// startKubeRouter runs kube-router in the node's namespaces with routing
// alone (no firewall, no service proxy, no overlay): iBGP with every other
// node, announcing the node's spec.podCIDR.
func (l *Lab) startKubeRouter(n *Node) error {
	p, err := l.startIn(n.host, "kube-router", []string{l.cfg.Bins.KubeRouter,
		"--kubeconfig=" + l.NodeKubeconfig(), "--hostname-override=" + n.Name,
		"--run-router=true", "--run-firewall=false", "--run-service-proxy=false",
		"--enable-cni=false", "--enable-pod-egress=false", "--enable-overlay=false",
		"--enable-ibgp=true", "--bgp-graceful-restart=false", "--metrics-port=0", "--health-port=0"})
	if err != nil {
		return err
	}
	n.kubeRouter = p
	return nil
}

// waitKubeRouterRoutes waits until every kube-router node routes every
// other kube-router node's pod range, which BGP converging gives.
func (l *Lab) waitKubeRouterRoutes(ctx context.Context) error {
	for _, n := range l.nodes {
		if n.Primary != PrimaryKubeRouter {
			continue
		}
		for _, other := range l.nodes {
			if other == n || other.Primary != PrimaryKubeRouter {
				continue
			}
			err := waitFor(90*time.Second, func() (bool, error) {
				if n.kubeRouter.exited() {
					return false, fmt.Errorf("kube-router on %s exited: %w\n%s", n.Name, n.kubeRouter.err, n.kubeRouter.tail(30))
				}
				out, err := l.run(ctx, n.host, nil, "ip", "-4", "route", "show", other.PodCIDR.String())
				return err == nil && strings.Contains(string(out), "via "+other.IP.String()), nil
			})
			if err != nil {
				return fmt.Errorf("kube-router on %s: no route to %s's pods: %w\n%s", n.Name, other.Name, err, n.kubeRouter.tail(30))
			}
		}
	}
	return nil
}

// RecreateOverlay does to a flannel node what an upgrade or a crash of
// flannel does: flanneld stops, its overlay device flannel.1 goes, and a
// new flanneld creates it again with its routes. It returns once the
// device routes again.
func (l *Lab) RecreateOverlay(ctx context.Context, node string) error {
	var n *Node
	for _, c := range l.nodes {
		if c.Name == node {
			n = c
		}
	}
	if n == nil || n.Primary != PrimaryFlannel || n.flanneld == nil {
		// host-gw has no overlay device to recreate.
		return fmt.Errorf("no flannel (VXLAN) node %q in the lab", node)
	}
	n.flanneld.stop(5 * time.Second)
	if _, err := l.run(ctx, n.host, nil, "ip", "link", "del", "flannel.1"); err != nil {
		return err
	}
	if err := l.startFlannel(n); err != nil {
		return err
	}
	return waitFor(60*time.Second, func() (bool, error) {
		out, err := l.run(ctx, n.host, nil, "ip", "-4", "route", "show", "dev", "flannel.1")
		return err == nil && len(strings.TrimSpace(string(out))) > 0, nil
	})
}

// waitNodeReady waits until the node reports Ready.
func (l *Lab) waitNodeReady(ctx context.Context, n *Node, timeout time.Duration) error {
	err := waitFor(timeout, func() (bool, error) {
		if n.kubelet.exited() {
			return false, fmt.Errorf("kubelet on %s exited: %w\n%s", n.Name, n.kubelet.err, n.kubelet.tail(30))
		}
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		node, err := l.client.CoreV1().Nodes().Get(c, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("node %s not Ready: %w\n%s", n.Name, err, n.kubelet.tail(30))
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return out.Close()
}

// LoadImage imports an image tarball into every node's containerd.
func (l *Lab) LoadImage(ctx context.Context, tarball string) error {
	for _, n := range l.nodes {
		if err := l.importImage(ctx, n, tarball); err != nil {
			return err
		}
	}
	return nil
}

// ReadNodeFile reads a file as the named node sees it, for paths below the
// node's own folders (/run, /var/lib, /var/log, /opt).
func (l *Lab) ReadNodeFile(node, path string) ([]byte, error) {
	for _, n := range l.nodes {
		if n.Name == node {
			p, err := n.HostPath(path)
			if err != nil {
				return nil, err
			}
			return os.ReadFile(p)
		}
	}
	return nil, fmt.Errorf("no node %q in the lab", node)
}

// NodeExec runs a short command inside the named node's network and mount
// namespaces (nft, ip) and returns its combined output.
func (l *Lab) NodeExec(ctx context.Context, node string, argv ...string) ([]byte, error) {
	for _, n := range l.nodes {
		if n.Name == node {
			return l.run(ctx, n.host, nil, argv...)
		}
	}
	return nil, fmt.Errorf("no node %q in the lab", node)
}

// NetNSPath is the path of the node's network namespace, for code that
// programs it directly (benchmarks).
func (n *Node) NetNSPath() string { return n.host.NetNSPath() }
