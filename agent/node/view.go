package node

import (
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/nsegress/nsegress/agent/ha"
	"github.com/nsegress/nsegress/api/v1alpha1"
)

// view is the informers' content, typed: everything the node's desired
// state is computed from that comes from the API.
type view struct {
	// policies are oldest first (v1alpha1.SortByAge).
	policies []v1alpha1.EgressNATPolicy
	groups   []v1alpha1.NetworkGatewayGroup
	nodes    map[string]*corev1.Node
	nss      map[string]map[string]string
	// pods maps "namespace/name" of the node's pods to their labels.
	pods map[string]map[string]string
	// running maps "namespace/name" of the node's running pods (phase
	// Running, not being deleted, in their own network namespace) to their
	// IPv4 address: a running pod whose record was lost has its record
	// rebuilt (reconciler.rebuild).
	running map[string]netip.Addr
}

func (r *Role) view() (view, error) {
	v := view{nodes: map[string]*corev1.Node{}, nss: map[string]map[string]string{}, pods: map[string]map[string]string{},
		running: map[string]netip.Addr{}}
	var err error
	if v.policies, err = r.listPolicies(); err != nil {
		return v, err
	}
	v1alpha1.SortByAge(v.policies)
	for _, o := range r.groups.GetStore().List() {
		var g v1alpha1.NetworkGatewayGroup
		if err := fromUnstructured(o, &g); err != nil {
			return v, err
		}
		v.groups = append(v.groups, g)
	}
	for _, o := range r.nodes.GetStore().List() {
		n := o.(*corev1.Node)
		v.nodes[n.Name] = n
	}
	for _, o := range r.nss.GetStore().List() {
		ns := o.(*corev1.Namespace)
		v.nss[ns.Name] = ns.Labels
	}
	for _, o := range r.pods.GetStore().List() {
		p := o.(*corev1.Pod)
		v.pods[p.Namespace+"/"+p.Name] = p.Labels
		if ip, ok := runningIPv4(p); ok {
			v.running[p.Namespace+"/"+p.Name] = ip
		}
	}
	return v, nil
}

// runningIPv4 is a pod's IPv4 address when the pod runs in a network
// namespace of its own (not the node's) and is not being deleted: its ADD
// is long done, and its sandbox still stands.
func runningIPv4(p *corev1.Pod) (netip.Addr, bool) {
	if p.Spec.HostNetwork || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return netip.Addr{}, false
	}
	for _, a := range p.Status.PodIPs {
		if ip, err := netip.ParseAddr(a.IP); err == nil && ip.Is4() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// listPolicies is the policy informer's content, typed: the node's own
// view and the plugin's socket decode policies here alone. A policy that
// does not decode is logged and left out: one bad object must not stop
// the node from programming every other policy (the API server's schema
// keeps such objects rare; the controller reports them too). A policy the
// controller rejected (v1alpha1.Rejected) is left out as well: it selects
// nothing.
func (r *Role) listPolicies() ([]v1alpha1.EgressNATPolicy, error) {
	var out []v1alpha1.EgressNATPolicy
	for _, o := range r.policies.GetStore().List() {
		var p v1alpha1.EgressNATPolicy
		if err := fromUnstructured(o, &p); err != nil {
			r.cfg.Logf("node: skipping a policy: %v", err)
			continue
		}
		if p.Rejected() {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

func fromUnstructured(o any, into any) error {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return fmt.Errorf("unexpected object %T", o)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		return fmt.Errorf("decode %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}

// nodeIP is the underlay address of the node called name.
func (v view) nodeIP(name string) (netip.Addr, error) {
	n, ok := v.nodes[name]
	if !ok {
		return netip.Addr{}, fmt.Errorf("node %s not found in the API", name)
	}
	return internalIP(n)
}

// internalIP is a node's IPv4 InternalIP.
func internalIP(n *corev1.Node) (netip.Addr, error) {
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("node %s has no IPv4 InternalIP", n.Name)
}

// haWorld is the view as the HA runtime needs it: every node's address,
// and per group its Up members and its floating IPs' assignments (from a
// controller of the first release, which wrote only floatingIPs, at epoch
// zero and without a standby).
func (v view) haWorld() ha.World {
	w := ha.World{Nodes: map[string]netip.Addr{}}
	for name, n := range v.nodes {
		if ip, err := internalIP(n); err == nil {
			w.Nodes[name] = ip
		}
	}
	for _, g := range v.groups {
		hg := ha.Group{IPs: map[netip.Addr]ha.Assignment{}}
		for name, st := range g.Status.Nodes {
			hg.Peers = append(hg.Peers, name)
			if st == v1alpha1.GatewayNodeUp {
				hg.Members = append(hg.Members, name)
			}
		}
		slices.Sort(hg.Members)
		slices.Sort(hg.Peers)
		for s, node := range g.Status.FloatingIPs {
			if ip, err := netip.ParseAddr(s); err == nil {
				hg.IPs[ip] = ha.Assignment{Active: node}
			}
		}
		for s, a := range g.Status.Assignments {
			if ip, err := netip.ParseAddr(s); err == nil {
				hg.IPs[ip] = ha.Assignment{Active: a.Active, Standby: a.Standby, Epoch: a.Epoch}
			}
		}
		w.Groups = append(w.Groups, hg)
	}
	return w
}
