package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"sync/atomic"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
)

// PodNetNS is a network namespace for a pod that no kubelet runs (the
// libcni tier), held open by a process in the lab's cgroup.
type PodNetNS struct {
	l *Lab
	h *host
}

var podNetNSSeq atomic.Uint64

// NewPodNetNS creates an empty network namespace. It lives until Close or
// until the lab closes.
func (l *Lab) NewPodNetNS() (*PodNetNS, error) {
	name := "podns-" + strconv.FormatUint(podNetNSSeq.Add(1), 10)
	// All pod namespaces share one cgroup: thousands of groups in every
	// hierarchy would cost more than they tell.
	h, err := l.newHostIn(name, "podns", false, "")
	if err != nil {
		return nil, err
	}
	return &PodNetNS{l: l, h: h}, nil
}

// Path is the namespace's path for CNI_NETNS.
func (p *PodNetNS) Path() string { return p.h.NetNSPath() }

// Do runs f on a thread inside the namespace.
func (p *PodNetNS) Do(f func() error) error {
	return p.h.netns.Do(func(ns.NetNS) error { return f() })
}

// Close kills the holder; the namespace goes with it.
func (p *PodNetNS) Close() {
	p.h.close()
	p.h.holder.stop(0)
	p.l.mu.Lock()
	delete(p.l.hosts, p.h.name)
	p.l.mu.Unlock()
}

// Exec runs plugin binaries inside a node's network and mount namespaces,
// as the node's container runtime would. It implements libcni's
// invoke.Exec.
type Exec struct {
	version.PluginDecoder
	Node *Node
}

// FindInPath looks plugins up in the machine's view of the node's folders.
func (Exec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// ExecPlugin runs pluginPath with the CNI environment and stdin inside the
// node and decodes a CNI error from its stdout when it fails.
func (e Exec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	// As the node's runtime would: in the node's namespaces, and in the
	// lab's cgroup like every process of the lab.
	argv := e.Node.host.nsenterArgs([]string{pluginPath})
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		var cniErr types.Error
		if json.Unmarshal(stdout.Bytes(), &cniErr) == nil && cniErr.Code != 0 {
			return nil, &cniErr
		}
		return nil, fmt.Errorf("run %s on %s: %w: %s%s", pluginPath, e.Node.Name, err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}
