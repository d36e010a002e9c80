// Package e2e holds the end-to-end suite. It talks to a cluster only
// through Cluster, so the same tests can run on the embedded lab and,
// where Docker and kind exist, on kind.
package e2e

import (
	"context"
	"net/netip"

	"github.com/nsegress/nsegress/e2e/lab"
)

// NodeInfo is what the suite knows of a node without asking the API.
type NodeInfo struct {
	Name    string
	IP      netip.Addr
	PodCIDR netip.Prefix
	Gateway bool
	// Primary is the node's primary CNI plugin (lab.PrimaryPTP,
	// lab.PrimaryBridge).
	Primary string
}

// Cluster is what the suite needs of a cluster besides its API server.
type Cluster interface {
	// Kubeconfig is the path of an admin kubeconfig.
	Kubeconfig() string
	// Kubectl is the kubectl binary to run.
	Kubectl() string
	// Env is the environment for tools run against the cluster.
	Env() []string
	// Nodes lists the nodes, workers first.
	Nodes() []NodeInfo
	// LoadImage makes an image tarball available on every node.
	LoadImage(ctx context.Context, tarball string) error
	// Backends lists the on-prem echo servers behind the firewall.
	Backends() []lab.Backend
	// FirewallDrops counts the firewall's dropped packets per source.
	FirewallDrops(ctx context.Context) (map[netip.Addr]uint64, error)
	// ReadNodeFile reads a file on a node's own filesystem.
	ReadNodeFile(node, path string) ([]byte, error)
	// NodeExec runs a command (nft, ip) on a node, in its network
	// namespace, and returns its combined output.
	NodeExec(ctx context.Context, node string, argv ...string) (string, error)
	// HostExec runs a command on a host outside the cluster: "firewall"
	// (on the node network and on-prem) or a backend's name; an argv[0]
	// of "labbox" runs the labbox tool there.
	HostExec(ctx context.Context, host string, argv ...string) (string, error)
	// RecreateOverlay restarts a node's overlay primary (flannel) the way
	// an upgrade does: its daemon stops, its device goes and comes back.
	RecreateOverlay(ctx context.Context, node string) error
	// SetUnderlay pulls a node's underlay cable out (up false) or plugs
	// it back in.
	SetUnderlay(node string, up bool) error
	// FreezeNode stops or resumes every process of a node; frozen with
	// its cable pulled, it is a dead machine to the rest of the cluster.
	FreezeNode(node string, frozen bool) error
	// UplinkAddrs are the addresses on a node's underlay interface, read
	// from outside the node.
	UplinkAddrs(node string) ([]string, error)
	// SetAPIServer takes the API server down (killed) or brings it back
	// and waits until it serves.
	SetAPIServer(ctx context.Context, up bool) error
	// PodExec runs a command (argv[0] "labbox": the labbox tool) in the
	// network namespace of the pod of node that holds podIP, without the
	// API server (kubectl exec needs it).
	PodExec(ctx context.Context, node string, podIP netip.Addr, argv ...string) (string, error)
	// KillOnNode kills (SIGKILL) every process of a node whose command
	// line begins with cmdline and says how many it killed.
	KillOnNode(node string, cmdline ...string) (int, error)
	// RejoinNode brings a node whose Node object was deleted back: its
	// kubelet registers it again; it returns once the node is Ready.
	RejoinNode(ctx context.Context, node string) error
}

// labCluster adapts the embedded lab to Cluster.
type labCluster struct {
	lab     *lab.Lab
	kubectl string
}

var _ Cluster = labCluster{}

func (c labCluster) Kubeconfig() string { return c.lab.Kubeconfig() }
func (c labCluster) Kubectl() string    { return c.kubectl }

func (c labCluster) Env() []string {
	return []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + c.lab.Dir() + "/home", "KUBECONFIG=" + c.Kubeconfig()}
}

func (c labCluster) Nodes() []NodeInfo {
	var out []NodeInfo
	for _, n := range c.lab.Nodes() {
		out = append(out, NodeInfo{Name: n.Name, IP: n.IP, PodCIDR: n.PodCIDR, Gateway: n.Gateway, Primary: n.Primary})
	}
	return out
}

func (c labCluster) LoadImage(ctx context.Context, tarball string) error {
	return c.lab.LoadImage(ctx, tarball)
}

func (c labCluster) Backends() []lab.Backend { return c.lab.Backends() }

func (c labCluster) FirewallDrops(ctx context.Context) (map[netip.Addr]uint64, error) {
	return c.lab.FirewallDrops(ctx)
}

func (c labCluster) ReadNodeFile(node, path string) ([]byte, error) {
	return c.lab.ReadNodeFile(node, path)
}

func (c labCluster) NodeExec(ctx context.Context, node string, argv ...string) (string, error) {
	out, err := c.lab.NodeExec(ctx, node, argv...)
	return string(out), err
}

func (c labCluster) HostExec(ctx context.Context, host string, argv ...string) (string, error) {
	out, err := c.lab.HostExec(ctx, host, argv...)
	return string(out), err
}

func (c labCluster) RecreateOverlay(ctx context.Context, node string) error {
	return c.lab.RecreateOverlay(ctx, node)
}

func (c labCluster) SetUnderlay(node string, up bool) error { return c.lab.SetUnderlay(node, up) }

func (c labCluster) FreezeNode(node string, frozen bool) error {
	return c.lab.FreezeNode(node, frozen)
}

func (c labCluster) UplinkAddrs(node string) ([]string, error) { return c.lab.UplinkAddrs(node) }

func (c labCluster) SetAPIServer(ctx context.Context, up bool) error {
	return c.lab.SetAPIServer(ctx, up)
}

func (c labCluster) KillOnNode(node string, cmdline ...string) (int, error) {
	return c.lab.KillOnNode(node, cmdline...)
}

func (c labCluster) RejoinNode(ctx context.Context, node string) error {
	return c.lab.RejoinNode(ctx, node)
}

func (c labCluster) PodExec(ctx context.Context, node string, podIP netip.Addr, argv ...string) (string, error) {
	out, err := c.lab.PodExec(ctx, node, podIP, argv...)
	return string(out), err
}

// nodeIP is a node's underlay address, or the zero Addr.
func nodeIP(c Cluster, name string) netip.Addr {
	for _, n := range c.Nodes() {
		if n.Name == name {
			return n.IP
		}
	}
	return netip.Addr{}
}
