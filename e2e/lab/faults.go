package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/nsegress/nsegress/agent/datapath"
)

// SetUnderlay plugs a node's underlay cable in (up) or pulls it out: its
// switch port goes down, so the node neither sends nor receives on the
// node network, while its own interface, addresses and processes stay as
// they are (a partition, as a failed switch port or cable makes it).
func (l *Lab) SetUnderlay(node string, up bool) error {
	h := l.host(node)
	if h == nil {
		return fmt.Errorf("no host %s", node)
	}
	l.mu.Lock()
	port := h.ports[underlayBridge]
	l.mu.Unlock()
	sw := l.host("switch")
	link, err := sw.nl.LinkByName(port)
	if err != nil {
		return fmt.Errorf("%s's switch port %q: %w", node, port, err)
	}
	if up {
		err = sw.nl.LinkSetUp(link)
	} else {
		err = sw.nl.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("set %s's switch port %s up=%v: %w", node, port, up, err)
	}
	return nil
}

// FreezeNode stops (frozen) or resumes every process of a node: its
// daemons (containerd, the kubelet, kube-proxy, the primary's), every
// pod's, and the nsegress agent's, through the cgroup freezer. With its
// underlay pulled too, a frozen node is a dead machine to everyone else:
// it sends nothing and answers nothing but what its kernel answers on its
// own (ARP, forwarding), which a pulled cable also stops. Unlike a kill
// it can come back as it was, so that one cluster serves several tests.
// Nothing may run inside a frozen node (NodeExec would hang).
func (l *Lab) FreezeNode(node string, frozen bool) error {
	if l.host(node) == nil {
		return fmt.Errorf("no host %s", node)
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	state := "THAWED"
	if frozen {
		state = "FROZEN"
	}
	var found bool
	for _, m := range mounts {
		f := filepath.Join(m, cgroupName, node, "freezer.state")
		if _, err := os.Stat(f); err != nil {
			continue
		}
		found = true
		if err := os.WriteFile(f, []byte(state), 0o644); err != nil {
			return fmt.Errorf("%s: write %s: %w", node, f, err)
		}
		// FREEZING while tasks are still being stopped; wait for the end.
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(b)) == state {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: %s still %s after 10s", node, f, strings.TrimSpace(string(b)))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !found {
		return errors.New("no cgroup v1 freezer hierarchy: cannot freeze a node")
	}
	return nil
}

// UplinkAddrs are the IPv4 addresses on a node's underlay interface,
// read from outside the node (so it works while the node is frozen).
func (l *Lab) UplinkAddrs(node string) ([]string, error) {
	h := l.host(node)
	if h == nil {
		return nil, fmt.Errorf("no host %s", node)
	}
	link, err := h.nl.LinkByName("eth0")
	if err != nil {
		return nil, err
	}
	addrs, err := datapath.Dump("addresses of "+node, func() ([]netlink.Addr, error) { return h.nl.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.IPNet.String())
	}
	return out, nil
}

// SetAPIServer takes the API server down (up false: the process is
// killed, as a crash or a failed control-plane machine does, and every
// client's connection breaks) or starts it again with the same command
// line and waits until it serves. etcd, the controller manager and the
// scheduler keep running; they, the kubelets and the agents see the
// outage as a cluster does.
func (l *Lab) SetAPIServer(ctx context.Context, up bool) error {
	l.mu.Lock()
	api := l.apiServer
	l.mu.Unlock()
	if api == nil {
		return errors.New("the lab has no API server")
	}
	if !up {
		if api.exited() {
			return nil
		}
		_ = api.cmd.Process.Kill()
		<-api.done
		return nil
	}
	if !api.exited() {
		return nil
	}
	api, err := l.startIn(l.host("control-plane"), "kube-apiserver", l.apiArgv)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.apiServer = api
	l.mu.Unlock()
	return l.waitAPIReady(ctx, api)
}

// PodExec runs a short command in the network namespace of the pod of a
// node that holds podIP, found on the node itself (the netns files the
// container runtime keeps under /run/netns), so that it works while the
// API server is down; kubectl exec goes through the API server. An
// argv[0] of "labbox" runs the lab's labbox binary.
func (l *Lab) PodExec(ctx context.Context, node string, podIP netip.Addr, argv ...string) ([]byte, error) {
	find := `for n in $(ls /run/netns); do
	if ip -n "$n" -4 -o addr show | grep -qF " inet $1/"; then echo "$n"; fi
done`
	out, err := l.NodeExec(ctx, node, "sh", "-c", find, "find", podIP.String())
	if err != nil {
		return out, err
	}
	names := strings.Fields(string(out))
	if len(names) != 1 {
		return nil, fmt.Errorf("%s: %d network namespaces hold %s (%q), want one", node, len(names), podIP, names)
	}
	return l.NodeExec(ctx, node, append([]string{"nsenter", "--net=/run/netns/" + names[0], "--"}, l.labboxArgv(argv)...)...)
}

// RejoinNode brings back a node whose Node object was deleted, as an
// operator does after kubectl delete node: its kubelet restarts and
// registers the Node again (with its labels), the lab publishes its pod
// range again, and RejoinNode waits until the node is Ready. The node's
// containers run on throughout; the kubelet ends those whose pods the
// cluster deleted meanwhile.
func (l *Lab) RejoinNode(ctx context.Context, name string) error {
	for _, n := range l.nodes {
		if n.Name != name {
			continue
		}
		n.kubelet.stop(10 * time.Second)
		if err := l.startKubelet(n); err != nil {
			return err
		}
		if err := l.waitNodeReady(ctx, n, 90*time.Second); err != nil {
			return err
		}
		return l.publishPodCIDR(ctx, n)
	}
	return fmt.Errorf("no node %q in the lab", name)
}

// KillOnNode kills every process of a node (its daemons' and its pods')
// whose command line begins with cmdline, with SIGKILL, as the kernel's
// OOM killer does, and returns how many it killed.
func (l *Lab) KillOnNode(node string, cmdline ...string) (int, error) {
	if l.host(node) == nil {
		return 0, fmt.Errorf("no host %s", node)
	}
	pids, err := cgroupPIDsBelow(node)
	if err != nil {
		return 0, err
	}
	killed := 0
	for pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue // gone meanwhile
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) < len(cmdline) || !slices.Equal(args[:len(cmdline)], cmdline) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			killed++
		}
	}
	return killed, nil
}
