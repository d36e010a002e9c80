package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// listKinds tells the fake dynamic client the list kinds of the CRDs.
var listKinds = map[schema.GroupVersionResource]string{
	policiesGVR: "EgressNATPolicyList",
	groupsGVR:   "NetworkGatewayGroupList",
}

func unstructuredOf(t *testing.T, obj any) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

// fixture is a reconciler over a fake API server whose caches are filled
// from the fake on demand, as informers would.
type fixture struct {
	t    *testing.T
	dyn  *dynamicfake.FakeDynamicClient
	r    *reconciler
	pIdx cache.Indexer
	gIdx cache.Indexer
	logs *logBuffer
}

type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuffer) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func newFixture(t *testing.T, policies []v1alpha1.EgressNATPolicy, groups []v1alpha1.NetworkGatewayGroup, nodes []corev1.Node) *fixture {
	t.Helper()
	var objs []runtime.Object
	for i := range policies {
		objs = append(objs, unstructuredOf(t, &policies[i]))
	}
	for i := range groups {
		objs = append(objs, unstructuredOf(t, &groups[i]))
	}
	f := &fixture{
		t:    t,
		dyn:  dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, objs...),
		pIdx: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		gIdx: cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}),
		logs: &logBuffer{},
	}
	nIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for i := range nodes {
		if err := nIdx.Add(&nodes[i]); err != nil {
			t.Fatal(err)
		}
	}
	f.r = &reconciler{
		dyn:      f.dyn,
		policies: cache.NewGenericLister(f.pIdx, policiesGVR.GroupResource()),
		groups:   cache.NewGenericLister(f.gIdx, groupsGVR.GroupResource()),
		nodes:    corelisters.NewNodeLister(nIdx),
		logf:     f.logs.logf,
		now:      t0.Time.Local,
	}
	f.sync()
	return f
}

// sync refills the caches from the fake API server.
func (f *fixture) sync() {
	f.t.Helper()
	for gvr, idx := range map[schema.GroupVersionResource]cache.Indexer{policiesGVR: f.pIdx, groupsGVR: f.gIdx} {
		list, err := f.dyn.Resource(gvr).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			f.t.Fatal(err)
		}
		var items []any
		for i := range list.Items {
			items = append(items, &list.Items[i])
		}
		if err := idx.Replace(items, list.GetResourceVersion()); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) policy(name string) v1alpha1.EgressNATPolicy {
	f.t.Helper()
	u, err := f.dyn.Resource(policiesGVR).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	var p v1alpha1.EgressNATPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fixture) group(namespace, name string) v1alpha1.NetworkGatewayGroup {
	f.t.Helper()
	u, err := f.dyn.Resource(groupsGVR).Namespace(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	var g v1alpha1.NetworkGatewayGroup
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &g); err != nil {
		f.t.Fatal(err)
	}
	return g
}

// writes are the status updates the fake API server received.
func (f *fixture) writes() []string {
	var w []string
	for _, a := range f.dyn.Actions() {
		if u, ok := a.(k8stesting.UpdateAction); ok {
			obj := u.GetObject().(*unstructured.Unstructured)
			w = append(w, fmt.Sprintf("%s/%s %s", u.GetResource().Resource, u.GetSubresource(), obj.GetName()))
		}
	}
	return w
}

func readyOf(p v1alpha1.EgressNATPolicy) *metav1.Condition {
	return meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
}

func TestReconcileWritesStatusesThenNothing(t *testing.T) {
	f := newFixture(t,
		[]v1alpha1.EgressNATPolicy{policy("purple", 0, pin(ip2)), policy("green", 1)},
		[]v1alpha1.NetworkGatewayGroup{withSelector(group([]string{ip1, ip2, ip3}, nil), gwSelector)},
		[]corev1.Node{readyNode("gw-1", gwLabels), readyNode("gw-2", gwLabels), readyNode("worker", nil)},
	)
	ctx := context.Background()
	if err := f.r.reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}

	purple, green := f.policy("purple"), f.policy("green")
	if s := purple.Status; s.EgressIP != ip2 || s.GatewayNode != "gw-2" || s.TunnelID != 1 || readyOf(purple).Status != metav1.ConditionTrue {
		t.Errorf("purple's status = %+v", s)
	}
	if s := green.Status; s.EgressIP != ip1 || s.GatewayNode != "gw-1" || s.TunnelID != 2 || readyOf(green).Status != metav1.ConditionTrue {
		t.Errorf("green's status = %+v", s)
	}
	g := f.group(ns, "onprem")
	if want := map[string]string{ip1: "gw-1", ip2: "gw-2", ip3: "gw-1"}; fmt.Sprint(g.Status.FloatingIPs) != fmt.Sprint(want) {
		t.Errorf("group floatingIPs = %v, want %v", g.Status.FloatingIPs, want)
	}
	if want := "map[gw-1:Up gw-2:Up]"; fmt.Sprint(g.Status.Nodes) != want {
		t.Errorf("group nodes = %v, want %s", g.Status.Nodes, want)
	}
	if g.Spec.NodeSelector == nil || len(g.Spec.FloatingIPs) != 3 {
		t.Errorf("writing the status changed the spec: %+v", g.Spec)
	}
	// Groups first: a gateway holds an egress IP before a policy names it.
	wantWrites := "[networkgatewaygroups/status onprem egressnatpolicies/status green egressnatpolicies/status purple]"
	if got := fmt.Sprint(f.writes()); got != wantWrites {
		t.Errorf("writes = %s, want %s", got, wantWrites)
	}
	for _, w := range []string{
		"EgressNATPolicy purple: egress IP " + ip2 + ", gateway node gw-2, tunnel ID 1, Ready=True EgressReady",
		"NetworkGatewayGroup nsegress-system/onprem: floating IPs [" + ip1 + "@gw-1 " + ip2 + "@gw-2 " + ip3 + "@gw-1], nodes [gw-1=Up gw-2=Up]",
	} {
		if !strings.Contains(f.logs.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, f.logs)
		}
	}

	// The caches catch up; a second run finds nothing to do, although
	// the clock moved.
	f.sync()
	f.dyn.ClearActions()
	f.r.now = func() time.Time { return t0.Add(time.Hour) }
	if err := f.r.reconcile(ctx); err != nil {
		t.Fatalf("second reconcile: %v", err)
	}
	if w := f.writes(); len(w) != 0 {
		t.Errorf("second reconcile wrote %v; want nothing", w)
	}
}

func TestReconcileFollowsANodeGoingDown(t *testing.T) {
	g := group([]string{ip1, ip2}, map[string]string{ip1: "gw-1", ip2: "gw-2"})
	f := newFixture(t,
		[]v1alpha1.EgressNATPolicy{policy("purple", 0, has(ip1), tunnel(5))},
		[]v1alpha1.NetworkGatewayGroup{g},
		[]corev1.Node{nodeWith("gw-1", nil, corev1.ConditionFalse), readyNode("gw-2", nil)},
	)
	if err := f.r.reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := f.policy("purple").Status; s.EgressIP != ip1 || s.GatewayNode != "gw-2" || s.TunnelID != 5 {
		t.Errorf("purple's status = %+v; want %s on gw-2, tunnel 5", s, ip1)
	}
	if got := f.group(ns, "onprem").Status.FloatingIPs; got[ip1] != "gw-2" || got[ip2] != "gw-2" {
		t.Errorf("floatingIPs = %v; want both on gw-2", got)
	}
}

func TestReconcileConflictRereadsAndKeepsOthersConditions(t *testing.T) {
	f := newFixture(t,
		[]v1alpha1.EgressNATPolicy{policy("purple", 0)},
		usualGroups, usualNodes,
	)
	// Someone else adds a condition just before our first write, which
	// then conflicts.
	programmed := metav1.Condition{Type: "Programmed", Status: metav1.ConditionTrue, LastTransitionTime: t0, Reason: "AllNodes", Message: "on 2 nodes"}
	conflicted := false
	f.dyn.PrependReactor("update", "egressnatpolicies", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if conflicted {
			return false, nil, nil
		}
		conflicted = true
		// The tracker, not the client: the fake holds its lock while a
		// reactor runs.
		obj, err := f.dyn.Tracker().Get(policiesGVR, "", "purple")
		if err != nil {
			t.Errorf("tracker get: %v", err)
			return true, nil, err
		}
		var stored v1alpha1.EgressNATPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.(*unstructured.Unstructured).Object, &stored); err != nil {
			t.Errorf("convert: %v", err)
		}
		stored.Status.Conditions = append(stored.Status.Conditions, programmed)
		if err := f.dyn.Tracker().Update(policiesGVR, unstructuredOf(t, &stored), ""); err != nil {
			t.Errorf("tracker update: %v", err)
		}
		return true, nil, apierrors.NewConflict(policiesGVR.GroupResource(), "purple", errors.New("the object has been modified"))
	})

	if err := f.r.reconcile(context.Background()); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if !conflicted {
		t.Fatal("the first write never reached the reactor")
	}
	p := f.policy("purple")
	if p.Status.EgressIP != ip1 || p.Status.TunnelID != 1 || readyOf(p) == nil {
		t.Errorf("status after the retry = %+v", p.Status)
	}
	if meta.FindStatusCondition(p.Status.Conditions, "Programmed") == nil {
		t.Errorf("the retry dropped a condition written meanwhile: %+v", p.Status.Conditions)
	}
}

func TestReconcileWriteFailures(t *testing.T) {
	t.Run("an object deleted meanwhile is no error", func(t *testing.T) {
		f := newFixture(t, []v1alpha1.EgressNATPolicy{policy("purple", 0)}, usualGroups, usualNodes)
		f.dyn.PrependReactor("update", "egressnatpolicies", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewNotFound(policiesGVR.GroupResource(), "purple")
		})
		if err := f.r.reconcile(context.Background()); err != nil {
			t.Errorf("reconcile: %v", err)
		}
	})
	t.Run("a failed write is reported and the others are still written", func(t *testing.T) {
		f := newFixture(t, []v1alpha1.EgressNATPolicy{policy("purple", 0)}, []v1alpha1.NetworkGatewayGroup{group([]string{ip1}, nil)}, usualNodes)
		f.dyn.PrependReactor("update", "networkgatewaygroups", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewInternalError(errors.New("etcd is down"))
		})
		err := f.r.reconcile(context.Background())
		if err == nil || !strings.Contains(err.Error(), "NetworkGatewayGroup nsegress-system/onprem") {
			t.Errorf("reconcile error = %v; want one naming the group", err)
		}
		if s := f.policy("purple").Status; s.EgressIP != ip1 {
			t.Errorf("purple's status = %+v; want it written despite the group's failure", s)
		}
	})
}

func TestReconcileSkipsMalformedObjects(t *testing.T) {
	f := newFixture(t, []v1alpha1.EgressNATPolicy{policy("purple", 0)}, usualGroups, usualNodes)
	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "EgressNATPolicy",
		"metadata": map[string]any{"name": "bad"},
		"status":   map[string]any{"tunnelID": "seven"},
	}}
	if err := f.pIdx.Add(bad); err != nil {
		t.Fatal(err)
	}
	if err := f.r.reconcile(context.Background()); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if s := f.policy("purple").Status; s.EgressIP != ip1 {
		t.Errorf("purple's status = %+v", s)
	}
	if !strings.Contains(f.logs.String(), "skipping EgressNATPolicy bad") {
		t.Errorf("log does not mention the malformed policy:\n%s", f.logs)
	}
}

func TestNodeChanged(t *testing.T) {
	base := readyNode("gw-1", gwLabels)
	base.ResourceVersion = "1"
	with := func(f func(*corev1.Node)) *corev1.Node {
		n := base.DeepCopy()
		n.ResourceVersion = "2"
		f(n)
		return n
	}
	tests := []struct {
		name string
		cur  *corev1.Node
		want bool
	}{
		{"a resync (same resourceVersion) counts", base.DeepCopy(), true},
		{"a heartbeat does not count", with(func(n *corev1.Node) { n.Status.Images = []corev1.ContainerImage{{Names: []string{"x"}}} }), false},
		{"a label change counts", with(func(n *corev1.Node) { n.Labels = nil }), true},
		{"readiness counts", with(func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionUnknown }), true},
		{"deletion counts", with(func(n *corev1.Node) { ts := t0; n.DeletionTimestamp = &ts }), true},
		{"a cordon counts", with(func(n *corev1.Node) { n.Spec.Unschedulable = true }), true},
		{"a floating-IP claim counts", with(func(n *corev1.Node) {
			n.Annotations = map[string]string{v1alpha1.ClaimsAnnotation: `{"` + ip1 + `":{"epoch":2}}`}
		}), true},
		{"another annotation does not count", with(func(n *corev1.Node) {
			n.Annotations = map[string]string{"example.com/note": "x"}
		}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nodeChanged(&base, tt.cur); got != tt.want {
				t.Errorf("nodeChanged = %v, want %v", got, tt.want)
			}
		})
	}
}
