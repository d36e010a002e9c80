package lab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
)

// Address plan (docs/design.md §6): documentation and benchmarking ranges only, so
// nothing the lab sends can ever be meant for a real host.
var (
	// UnderlayPrefix is the L2 segment shared by the control plane, the
	// nodes and the firewall's inside leg.
	UnderlayPrefix = netip.MustParsePrefix("198.51.100.0/24")
	// FirewallUnderlayIP is the firewall's inside address and every
	// underlay host's default gateway.
	FirewallUnderlayIP = netip.MustParseAddr("198.51.100.1")
	// ControlPlaneIP is where the API server listens and advertises.
	ControlPlaneIP = netip.MustParseAddr("198.51.100.2")
	// OnPremPrefix is the segment behind the firewall that holds the
	// backends.
	OnPremPrefix = netip.MustParsePrefix("203.0.113.0/24")
	// FirewallOnPremIP is the firewall's outside address and the
	// backends' default gateway.
	FirewallOnPremIP = netip.MustParseAddr("203.0.113.1")
	// PodPrefix is the cluster's pod range; node i gets 198.18.i.0/24.
	PodPrefix = netip.MustParsePrefix("198.18.0.0/16")
	// ServicePrefix is the service range handed to the API server;
	// kube-proxy on every node DNATs these addresses to endpoints.
	ServicePrefix = netip.MustParsePrefix("198.19.0.0/24")
	// FloatingIPs are the addresses the firewall allows, in backend order:
	// FloatingIPs[i] may reach Backends[i] and nothing else.
	FloatingIPs = []netip.Addr{
		netip.MustParseAddr("198.51.100.101"),
		netip.MustParseAddr("198.51.100.102"),
		netip.MustParseAddr("198.51.100.103"),
	}
)

// BackendPort is the TCP port every backend's echo server listens on.
const BackendPort = 80

// PodEchoPort is where the test suites' echo pods listen; on-prem hosts
// may connect in to it through the firewall.
const PodEchoPort = 8080

// Config says what cluster to build. The zero value is not useful; start
// from DefaultConfig.
type Config struct {
	// Workers is the number of worker nodes (at least 1).
	Workers int
	// Gateways is the number of gateway nodes, labelled GatewayLabel.
	Gateways int
	// Backends is the number of on-prem echo servers (1 to 3).
	Backends int
	// Dir holds everything the lab writes: per-node directories, logs,
	// certificates, the kubeconfig. It is removed on Close.
	Dir string
	// Bins says where the cached third-party binaries are.
	Bins Binaries
	// Labbox is the path of the static labbox binary that backends run
	// and that the test images pack. Empty means build it.
	Labbox string
	// Images are image tarballs imported into every node's containerd
	// before the kubelets start.
	Images []string
	// SandboxImage is the pod sandbox image as containerd will name it
	// after import.
	SandboxImage string
	// Primary, when set, is the primary CNI of every node (PrimaryPTP,
	// PrimaryBridge, PrimaryFlannel); empty is the default mix: bridge on
	// worker-2, ptp elsewhere.
	Primary string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// GatewayLabel is the label the lab puts on gateway nodes.
const GatewayLabel = "nsegress.io/gateway"

// DefaultDir is where the lab lives unless NSEGRESS_LAB_DIR says otherwise.
func DefaultDir() string {
	if d := os.Getenv("NSEGRESS_LAB_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), labName)
}

// slotEnv names the lab slot of a process. Labs of different slots run
// on the machine at once (a lab test of one's own beside a running make
// test); within a slot they take turns. A lab touches the
// machine through nothing but its slot's cgroup subtree, lock and
// folder: every host of it is a namespace of its own, so two slots'
// equal addresses and node names never meet.
const slotEnv = "NSEGRESS_LAB_SLOT"

// maxSlot bounds the slots, so that a typo cannot spread labs over the
// machine's cgroup hierarchies.
const maxSlot = 3

// labName is this process's lab's name: its cgroup subtree, lock and
// default folder. Slot 0, the default, is "nsegress-lab"; slot n
// "nsegress-lab-n". slotErr is why the slot was refused (Start fails
// with it).
var labName, slotErr = slotName(os.Getenv(slotEnv))

func slotName(v string) (string, error) {
	const base = "nsegress-lab"
	if v == "" || v == "0" {
		return base, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > maxSlot || strconv.Itoa(n) != v {
		return base, fmt.Errorf("%s=%q: want a slot number from 0 to %d", slotEnv, v, maxSlot)
	}
	return fmt.Sprintf("%s-%d", base, n), nil
}

// DefaultConfig is the seed topology: two workers, two gateways, three
// backends.
func DefaultConfig() Config {
	return Config{
		Workers:  2,
		Gateways: 2,
		Backends: 3,
		Dir:      DefaultDir(),
	}
}

func (c *Config) validate() error {
	switch {
	case c.Workers < 1 || c.Workers > 8:
		return fmt.Errorf("lab config: workers must be 1..8, got %d", c.Workers)
	case c.Gateways < 0 || c.Gateways > 4:
		return fmt.Errorf("lab config: gateways must be 0..4, got %d", c.Gateways)
	case c.Backends < 0 || c.Backends > len(FloatingIPs):
		return fmt.Errorf("lab config: backends must be 0..%d, got %d", len(FloatingIPs), c.Backends)
	case c.Dir == "" || !filepath.IsAbs(c.Dir):
		return fmt.Errorf("lab config: dir must be an absolute path, got %q", c.Dir)
	case c.Primary != "" && c.Primary != PrimaryPTP && c.Primary != PrimaryBridge && !IsFlannel(c.Primary) && c.Primary != PrimaryKubeRouter:
		return fmt.Errorf("lab config: primary %q is none of %s, %s, %s, %s, %s", c.Primary, PrimaryPTP, PrimaryBridge, PrimaryFlannel, PrimaryFlannelHostGW, PrimaryKubeRouter)
	}
	return nil
}

func (c *Config) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// nodePlan is one node's fixed facts, derived from its index.
type nodePlan struct {
	Name    string
	IP      netip.Addr
	PodCIDR netip.Prefix
	Gateway bool
	// Primary is the node's primary CNI plugin: PrimaryPTP,
	// PrimaryBridge or PrimaryFlannel.
	Primary string
}

// The lab's primary CNI plugins. By default worker-2 runs bridge, every
// other node ptp, so that the suite proves nsegress after both kinds of
// primary: one keys a pod by its own veth, the other by the bridge all
// pods share. Config.Primary gives every node one primary instead.
const (
	PrimaryPTP    = "ptp"
	PrimaryBridge = "bridge"
	// PrimaryFlannel is flannel with its VXLAN backend: flanneld on every
	// node (kube subnet manager, the Node's spec.podCIDR), its CNI plugin
	// delegating to bridge, and the pod ranges of other nodes routed
	// through the overlay device flannel.1.
	PrimaryFlannel = "flannel"
	// PrimaryFlannelHostGW is flannel with its host-gw backend: the same,
	// but other nodes' pod ranges are routed straight to their node over
	// the underlay.
	PrimaryFlannelHostGW = "flannel-host-gw"
	// PrimaryKubeRouter is kube-router's routing alone: each node's
	// kube-router announces its pod range to the other nodes over iBGP
	// and installs their routes; pods sit on the bridge kube-bridge.
	PrimaryKubeRouter = "kube-router"
)

// routesItself says whether a primary routes between its own nodes, so
// that the lab adds no static routes between two nodes that both run it.
func routesItself(primary string) bool { return IsFlannel(primary) || primary == PrimaryKubeRouter }

// IsFlannel says whether primary is one of flannel's backends.
func IsFlannel(primary string) bool {
	return primary == PrimaryFlannel || primary == PrimaryFlannelHostGW
}

// primaryOf is the primary CNI of the worker numbered i (from 1), or of a
// gateway when i is 0.
func (c *Config) primaryOf(i int) string {
	switch {
	case c.Primary != "":
		return c.Primary
	case i == 2:
		return PrimaryBridge
	}
	return PrimaryPTP
}

// plan lists the nodes: workers first, then gateways. Workers take
// underlay .11 upwards, gateways .21 upwards; node i (from 1) takes pod
// range 198.18.i.0/24.
func (c *Config) plan() []nodePlan {
	var nodes []nodePlan
	idx := 1
	for i := 1; i <= c.Workers; i++ {
		primary := c.primaryOf(i)
		nodes = append(nodes, nodePlan{
			Name:    fmt.Sprintf("worker-%d", i),
			IP:      netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}),
			PodCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(idx), 0}), 24),
			Primary: primary,
		})
		idx++
	}
	for i := 1; i <= c.Gateways; i++ {
		nodes = append(nodes, nodePlan{
			Name:    fmt.Sprintf("gw-%d", i),
			IP:      netip.AddrFrom4([4]byte{198, 51, 100, byte(20 + i)}),
			PodCIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(idx), 0}), 24),
			Gateway: true,
			Primary: c.primaryOf(0),
		})
		idx++
	}
	return nodes
}

// backendIP is backend i's (from 0) on-prem address: .11 upwards.
func backendIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{203, 0, 113, byte(11 + i)})
}
