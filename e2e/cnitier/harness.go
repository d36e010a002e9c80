// Package cnitier is the lab's lighter tier: it runs a node's conflist
// through libcni directly, without a kubelet, against pods whose objects
// exist in the lab's API server so that selectors and lookups are real.
// Plugin-level tests and benchmarks use it; end-to-end tests never do.
package cnitier

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nsegress/nsegress/e2e/lab"
)

// unscheduled is a scheduler nobody runs: the harness's Pod objects exist
// for their labels and namespace, and no kubelet must ever start them.
const unscheduled = "nsegress-cni-tier"

// Harness runs one conflist on one lab node.
type Harness struct {
	lab    *lab.Lab
	node   *lab.Node
	cni    *libcni.CNIConfig
	list   *libcni.NetworkConfigList
	client kubernetes.Interface
	// NodeName, when set, binds the harness's Pod objects to a node that
	// no kubelet runs (one the test created), so that an agent watching
	// that node's pods sees them; they tolerate the taints of a node
	// without a kubelet, so they are never evicted.
	NodeName string
}

// New prepares a harness for node. conflist nil means the node's own
// primary conflist, exactly as its container runtime reads it.
func New(l *lab.Lab, node *lab.Node, conflist []byte) (*Harness, error) {
	if conflist == nil {
		p, err := node.HostPath(lab.CNIConfDir + "/10-lab.conflist")
		if err != nil {
			return nil, err
		}
		if conflist, err = os.ReadFile(p); err != nil {
			return nil, fmt.Errorf("read %s's conflist: %w", node.Name, err)
		}
	}
	list, err := libcni.ConfListFromBytes(conflist)
	if err != nil {
		return nil, fmt.Errorf("parse conflist for %s: %w", node.Name, err)
	}
	binDir, err := node.HostPath(lab.CNIBinDir)
	if err != nil {
		return nil, err
	}
	// A cache of its own, so the harness never reads the results the
	// node's containerd cached for its kubelet's pods.
	cacheDir := filepath.Join(node.Dir, "var-lib", "cni-tier-cache")
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir}, cacheDir, &lab.Exec{Node: node})
	return &Harness{lab: l, node: node, cni: cni, list: list, client: l.Client()}, nil
}

// Pod is a pod that the harness, not a kubelet, wires up.
type Pod struct {
	Namespace, Name, UID, ContainerID string
	NetNS                             *lab.PodNetNS
}

// NewPod creates the Pod object (never scheduled) and an empty network
// namespace for it.
func (h *Harness) NewPod(ctx context.Context, namespace, name string, labels map[string]string) (*Pod, error) {
	obj, err := h.client.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec:       h.podSpec(),
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod object %s/%s: %w", namespace, name, err)
	}
	netns, err := h.lab.NewPodNetNS()
	if err != nil {
		_ = h.client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{})
		return nil, err
	}
	return &Pod{Namespace: namespace, Name: name, UID: string(obj.UID),
		ContainerID: "cnitier-" + string(obj.UID), NetNS: netns}, nil
}

func (h *Harness) podSpec() corev1.PodSpec {
	spec := corev1.PodSpec{
		SchedulerName: unscheduled,
		Containers:    []corev1.Container{{Name: "c", Image: lab.LabboxImage}},
	}
	if h.NodeName != "" {
		spec.NodeName = h.NodeName
		spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	}
	return spec
}

// runtimeConf is what a container runtime passes for the pod, including
// the CNI_ARGS the kubelet's runtimes set.
func (h *Harness) runtimeConf(p *Pod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.ContainerID,
		NetNS:       p.NetNS.Path(),
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.Namespace},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID},
			{"K8S_POD_UID", p.UID},
		},
	}
}

// Add runs ADD of the whole conflist.
func (h *Harness) Add(ctx context.Context, p *Pod) (types.Result, error) {
	return h.cni.AddNetworkList(ctx, h.list, h.runtimeConf(p))
}

// Check runs CHECK of the whole conflist.
func (h *Harness) Check(ctx context.Context, p *Pod) error {
	return h.cni.CheckNetworkList(ctx, h.list, h.runtimeConf(p))
}

// Del runs DEL of the whole conflist.
func (h *Harness) Del(ctx context.Context, p *Pod) error {
	return h.cni.DelNetworkList(ctx, h.list, h.runtimeConf(p))
}

// GC runs GC with the given pods as the valid attachments.
func (h *Harness) GC(ctx context.Context, valid ...*Pod) error {
	args := &libcni.GCArgs{}
	for _, p := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: p.ContainerID, IfName: "eth0"})
	}
	return h.cni.GCNetworkList(ctx, h.list, args)
}

// Remove deletes the pod's namespace and object.
func (h *Harness) Remove(ctx context.Context, p *Pod) error {
	p.NetNS.Close()
	// At once: no kubelet confirms the termination of the harness's pods.
	now := int64(0)
	err := h.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &now})
	if err != nil {
		return fmt.Errorf("delete pod object %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}
