package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// The resources read (and, by the controller, whose status is written).
var (
	policiesGVR = v1alpha1.EgressNATPoliciesResource
	groupsGVR   = v1alpha1.NetworkGatewayGroupsResource
)

// reconciler turns the informers' caches into statuses: read everything,
// Assign, write what differs. It holds no state between runs, so a run can
// be repeated, or follow a crash or a leader change, and converge.
type reconciler struct {
	dyn      dynamic.Interface
	policies cache.GenericLister
	groups   cache.GenericLister
	nodes    corelisters.NodeLister
	// nss and pods feed the shadowing check; nil leaves it out.
	nss  corelisters.NamespaceLister
	pods corelisters.PodLister
	logf func(format string, args ...any)
	now  func() time.Time
	// highWater persists the tunnel-ID high-water mark; nil keeps it in
	// memory only (tests of other things).
	highWater *highWaterStore
	// client lists the Service ranges; nil leaves them out. They change
	// rarely: services keeps the last list, read at servicesAt.
	client     kubernetes.Interface
	services   []ClusterRange
	servicesAt time.Time
	// recentIDs are the tunnel IDs the last reconcile decided, by policy
	// UID, for the next one, whose cache may not show them yet.
	recentIDs map[types.UID]int32
	// events receives an Event on the group for every floating IP that
	// moves; nil sends none (tests of other things).
	events record.EventRecorder
	// badClaims is, by node, the claims annotation last logged as
	// unparsable, so that it is logged once, not at every reconcile.
	badClaims map[string]string
}

// serviceRangesAge is how long a reconcile uses the Service ranges read
// before: a reconcile runs at every watched change, the ranges almost
// never change.
const serviceRangesAge = 30 * time.Second

// snapshot is the caches' content, typed for Assign and unstructured for
// writing back.
type snapshot struct {
	in       Input
	policies map[string]*unstructured.Unstructured
	groups   map[types.NamespacedName]*unstructured.Unstructured
}

// reconcile writes every status that Assign decides differently from what
// the object has. It tries every write and returns all failures joined.
func (r *reconciler) reconcile(ctx context.Context) error {
	snap, err := r.snapshot()
	if err != nil {
		return err
	}
	if r.highWater != nil {
		if snap.in.TunnelIDHighWater, err = r.highWater.load(ctx); err != nil {
			return err
		}
	}
	if r.client != nil && r.now().Sub(r.servicesAt) >= serviceRangesAge {
		// Without a fresh list the check of destinations against the
		// cluster's ranges uses the last one; assigning must go on.
		if services, err := serviceRanges(ctx, r.client); err != nil {
			r.logf("controller: %v", err)
		} else {
			r.services, r.servicesAt = services, r.now()
		}
	}
	snap.in.ServiceRanges = r.services
	snap.in.RecentTunnelIDs = r.recentIDs
	out := Assign(snap.in, metav1.NewTime(r.now()).Rfc3339Copy())
	r.recentIDs = make(map[types.UID]int32, len(snap.in.Policies))
	for _, p := range snap.in.Policies {
		if id := out.Policies[p.Name].TunnelID; id != 0 && p.UID != "" {
			r.recentIDs[p.UID] = id
		}
	}
	// The mark is stored before any status names a new ID: a controller
	// that dies in between must not let the next one hand it out again.
	if r.highWater != nil && out.TunnelIDHighWater > snap.in.TunnelIDHighWater {
		if err := r.highWater.store(ctx, out.TunnelIDHighWater); err != nil {
			return err
		}
	}

	var errs []error
	// Groups first: a node holds floating IPs by the group's status and
	// SNATs by the policy's, so a gateway must hold an egress IP before a
	// policy names it as its gateway.
	for _, g := range snap.in.Groups {
		key := types.NamespacedName{Namespace: g.Namespace, Name: g.Name}
		want := out.Groups[key]
		if equality.Semantic.DeepEqual(g.Status, want) {
			continue
		}
		written, err := r.writeGroup(ctx, snap.groups[key], want)
		if err != nil {
			errs = append(errs, fmt.Errorf("write status of NetworkGatewayGroup %s: %w", key, err))
			continue
		}
		if written {
			r.recordMoves(snap.groups[key], key.String(), &g.Status, &want)
		}
	}
	for _, p := range snap.in.Policies {
		want := out.Policies[p.Name]
		if equality.Semantic.DeepEqual(p.Status, want) {
			continue
		}
		if err := r.writePolicy(ctx, snap.policies[p.Name], want); err != nil {
			errs = append(errs, fmt.Errorf("write status of EgressNATPolicy %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// snapshot reads the caches. An object that does not convert to its Go
// type is left out and logged: one malformed object must not stop the
// controller for every other.
func (r *reconciler) snapshot() (*snapshot, error) {
	s := &snapshot{
		policies: map[string]*unstructured.Unstructured{},
		groups:   map[types.NamespacedName]*unstructured.Unstructured{},
	}
	objs, err := r.policies.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list EgressNATPolicies: %w", err)
	}
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		var p v1alpha1.EgressNATPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			r.logf("controller: skipping EgressNATPolicy %s: %v", u.GetName(), err)
			continue
		}
		s.in.Policies = append(s.in.Policies, p)
		s.policies[p.Name] = u
	}
	sort.Slice(s.in.Policies, func(i, j int) bool { return s.in.Policies[i].Name < s.in.Policies[j].Name })

	objs, err = r.groups.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list NetworkGatewayGroups: %w", err)
	}
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		var g v1alpha1.NetworkGatewayGroup
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &g); err != nil {
			r.logf("controller: skipping NetworkGatewayGroup %s/%s: %v", u.GetNamespace(), u.GetName(), err)
			continue
		}
		s.in.Groups = append(s.in.Groups, g)
		s.groups[types.NamespacedName{Namespace: g.Namespace, Name: g.Name}] = u
	}
	sort.Slice(s.in.Groups, func(i, j int) bool {
		a, b := &s.in.Groups[i], &s.in.Groups[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})

	nodes, err := r.nodes.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list Nodes: %w", err)
	}
	for _, n := range nodes {
		s.in.Nodes = append(s.in.Nodes, *n)
	}
	r.logBadClaims(s.in.Nodes)
	if r.nss != nil && r.pods != nil {
		nss, err := r.nss.List(labels.Everything())
		if err != nil {
			return nil, fmt.Errorf("list Namespaces: %w", err)
		}
		s.in.Namespaces = make(map[string]map[string]string, len(nss))
		for _, ns := range nss {
			s.in.Namespaces[ns.Name] = ns.Labels
		}
		pods, err := r.pods.List(labels.Everything())
		if err != nil {
			return nil, fmt.Errorf("list Pods: %w", err)
		}
		for _, p := range pods {
			s.in.Pods = append(s.in.Pods, Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels})
		}
	}
	return s, nil
}

// writePolicy writes a policy's status. On a conflict it re-reads the
// policy and sets only what the controller owns (egress IP, gateway node,
// tunnel ID, the Ready condition) over what it finds, so that a condition
// someone else wrote meanwhile survives.
func (r *reconciler) writePolicy(ctx context.Context, cached *unstructured.Unstructured, want v1alpha1.EgressNATPolicyStatus) error {
	written, err := r.writeStatus(ctx, policiesGVR, cached, func(u *unstructured.Unstructured) (bool, error) {
		var p v1alpha1.EgressNATPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			return false, err
		}
		merged := *p.Status.DeepCopy()
		merged.EgressIP, merged.GatewayNode, merged.TunnelID = want.EgressIP, want.GatewayNode, want.TunnelID
		if c := meta.FindStatusCondition(want.Conditions, v1alpha1.ConditionReady); c != nil {
			meta.SetStatusCondition(&merged.Conditions, *c)
		}
		if equality.Semantic.DeepEqual(p.Status, merged) {
			return false, nil
		}
		return true, setStatus(u, &merged)
	})
	if err == nil && written {
		r.logf("controller: %s", describePolicy(cached.GetName(), want))
	}
	return err
}

// writeGroup writes a group's status, all of which the controller owns. It
// reports whether it wrote.
func (r *reconciler) writeGroup(ctx context.Context, cached *unstructured.Unstructured, want v1alpha1.NetworkGatewayGroupStatus) (bool, error) {
	written, err := r.writeStatus(ctx, groupsGVR, cached, func(u *unstructured.Unstructured) (bool, error) {
		var g v1alpha1.NetworkGatewayGroup
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &g); err != nil {
			return false, err
		}
		if equality.Semantic.DeepEqual(g.Status, want) {
			return false, nil
		}
		return true, setStatus(u, &want)
	})
	if err == nil && written {
		r.logf("controller: %s", describeGroup(cached.GetNamespace()+"/"+cached.GetName(), want))
	}
	return written, err
}

// writeStatus updates the status subresource of the object cached, first
// from the cache, then, after a conflict, from a fresh read. set puts the
// wanted status into the object and says whether it changed anything. It
// reports whether it wrote; an object deleted meanwhile is no error.
func (r *reconciler) writeStatus(ctx context.Context, gvr schema.GroupVersionResource, cached *unstructured.Unstructured,
	set func(*unstructured.Unstructured) (bool, error)) (bool, error) {
	client := r.dyn.Resource(gvr).Namespace(cached.GetNamespace())
	written, fresh := false, false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u := cached.DeepCopy()
		if fresh {
			got, err := client.Get(ctx, cached.GetName(), metav1.GetOptions{})
			if err != nil {
				return err
			}
			u = got
		}
		fresh = true
		changed, err := set(u)
		if err != nil || !changed {
			return err
		}
		if _, err := client.UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			return err
		}
		written = true
		return nil
	})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return written, err
}

// setStatus replaces the object's status with status.
func setStatus(u *unstructured.Unstructured, status any) error {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(status)
	if err != nil {
		return err
	}
	u.Object["status"] = m
	return nil
}

// describePolicy is the log line of a policy's new status.
func describePolicy(name string, st v1alpha1.EgressNATPolicyStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "EgressNATPolicy %s: egress IP %s, gateway node %s, tunnel ID %d", name, orNone(st.EgressIP), orNone(st.GatewayNode), st.TunnelID)
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); c != nil {
		fmt.Fprintf(&b, ", Ready=%s %s: %s", c.Status, c.Reason, c.Message)
	}
	return b.String()
}

// describeGroup is the log line of a group's new status.
func describeGroup(name string, st v1alpha1.NetworkGatewayGroupStatus) string {
	var ips, nodes []string
	for ip, n := range st.FloatingIPs {
		ips = append(ips, ip+"@"+n)
	}
	for n, s := range st.Nodes {
		nodes = append(nodes, n+"="+string(s))
	}
	sort.Strings(ips)
	sort.Strings(nodes)
	return fmt.Sprintf("NetworkGatewayGroup %s: floating IPs [%s], nodes [%s]", name, strings.Join(ips, " "), strings.Join(nodes, " "))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// logBadClaims logs the nodes whose claims annotation does not parse, each
// value once; Assign ignores such an annotation.
func (r *reconciler) logBadClaims(nodes []corev1.Node) {
	seen := make(map[string]bool, len(nodes))
	for i := range nodes {
		n := &nodes[i]
		v := n.Annotations[v1alpha1.ClaimsAnnotation]
		if _, err := v1alpha1.ParseClaims(v); err != nil {
			seen[n.Name] = true
			if logged, ok := r.badClaims[n.Name]; !ok || logged != v {
				r.logf("controller: ignoring the floating-IP claims of node %s: %v", n.Name, err)
				if r.badClaims == nil {
					r.badClaims = map[string]string{}
				}
				r.badClaims[n.Name] = v
			}
		}
	}
	for n := range r.badClaims {
		if !seen[n] {
			delete(r.badClaims, n)
		}
	}
}

// nodeChanged says whether a node update can change any decision: its
// labels (nodeSelector), its readiness, cordon or deletion, or its
// floating-IP claims. Nodes update their status often (heartbeats,
// images); those updates are ignored, except the informer's periodic
// resync, which carries an unchanged resourceVersion.
func nodeChanged(old, cur *corev1.Node) bool {
	if old.ResourceVersion == cur.ResourceVersion {
		return true
	}
	return nodeUp(old) != nodeUp(cur) || !labels.Equals(old.Labels, cur.Labels) ||
		old.Annotations[v1alpha1.ClaimsAnnotation] != cur.Annotations[v1alpha1.ClaimsAnnotation]
}
