package controller

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// TestADeletedPolicysTunnelIDIsNotHandedOutAgain is the sequence that
// borrowed an egress IP: the newest policy is deleted and another created
// at once. Counting up from the highest ID in use gave the new policy the
// deleted one's ID, which nodes that had not seen the deletion still
// steered the old policy's pods with. With the high-water mark it gets a
// fresh ID.
func TestADeletedPolicysTunnelIDIsNotHandedOutAgain(t *testing.T) {
	a, b := policy("a", 0), policy("b", 1)
	out := Assign(Input{Groups: usualGroups, Nodes: usualNodes, Policies: []v1alpha1.EgressNATPolicy{a, b}}, t0)
	if out.Policies["a"].TunnelID != 1 || out.Policies["b"].TunnelID != 2 || out.TunnelIDHighWater != 2 {
		t.Fatalf("first IDs: a %d, b %d, high-water %d; want 1, 2, 2", out.Policies["a"].TunnelID, out.Policies["b"].TunnelID, out.TunnelIDHighWater)
	}
	a.Status = out.Policies["a"]
	c := policy("c", 2)
	// b is gone; c is new.
	without := Assign(Input{Groups: usualGroups, Nodes: usualNodes, Policies: []v1alpha1.EgressNATPolicy{a, c}}, t0)
	if without.Policies["c"].TunnelID != 2 {
		t.Logf("without the mark c gets %d (the old behaviour handed out 2)", without.Policies["c"].TunnelID)
	}
	with := Assign(Input{Groups: usualGroups, Nodes: usualNodes, Policies: []v1alpha1.EgressNATPolicy{a, c}, TunnelIDHighWater: out.TunnelIDHighWater}, t0)
	if got := with.Policies["c"].TunnelID; got != 3 || with.TunnelIDHighWater != 3 {
		t.Errorf("c got tunnel ID %d (high-water %d), want 3: b's ID 2 must not come back", got, with.TunnelIDHighWater)
	}
}

// TestTheHighWaterMarkWrapsWhenTheRangeIsExhausted: past the last ID the
// smallest free one is handed out, and the mark stays at the top.
func TestTheHighWaterMarkWrapsWhenTheRangeIsExhausted(t *testing.T) {
	out := Assign(Input{Groups: usualGroups, Nodes: usualNodes, Policies: []v1alpha1.EgressNATPolicy{policy("a", 0, tunnel(7)), policy("new", 1)},
		TunnelIDHighWater: maxTunnelID}, t0)
	if got := out.Policies["new"].TunnelID; got != 1 || out.TunnelIDHighWater != maxTunnelID {
		t.Errorf("new policy got %d (high-water %d), want 1 (%d)", got, out.TunnelIDHighWater, maxTunnelID)
	}
}

// TestReconcilePersistsTheHighWaterMarkBeforeAnyStatus: the mark is in the
// ConfigMap before a status names the new ID, and a later reconcile (a new
// controller) reads it back.
func TestReconcilePersistsTheHighWaterMarkBeforeAnyStatus(t *testing.T) {
	f := newFixture(t, []v1alpha1.EgressNATPolicy{policy("a", 0), policy("b", 1)}, usualGroups, usualNodes)
	client := k8sfake.NewClientset()
	f.r.highWater = &highWaterStore{client: client, namespace: ns}
	// A status written before the mark would be seen here without it.
	f.dyn.PrependReactor("update", "egressnatpolicies", func(a k8stesting.Action) (bool, runtime.Object, error) {
		obj := a.(k8stesting.UpdateAction).GetObject().(*unstructured.Unstructured)
		id, _, _ := unstructured.NestedInt64(obj.Object, "status", "tunnelID")
		mark, err := f.r.highWater.read(context.Background()) // the ConfigMap itself
		if err != nil || int64(mark) < id {
			t.Errorf("policy %s's status names tunnel ID %d before the high-water mark (%d, %v) covers it", obj.GetName(), id, mark, err)
		}
		return false, nil, nil
	})
	if err := f.r.reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, err := f.r.highWater.read(context.Background()); err != nil || got != 2 {
		t.Fatalf("stored mark = %d, %v; want 2", got, err)
	}
	// b is deleted and c created; a new controller reads the mark.
	if err := f.dyn.Resource(policiesGVR).Delete(context.Background(), "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c := policy("c", 2)
	if _, err := f.dyn.Resource(policiesGVR).Create(context.Background(), unstructuredOf(t, &c), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.sync()
	f.dyn.ClearActions()
	// A new term of leadership: a fresh store reads the ConfigMap.
	f.r.highWater = &highWaterStore{client: client, namespace: ns}
	if err := f.r.reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.policy("c").Status.TunnelID; got != 3 {
		t.Errorf("c got tunnel ID %d after b's deletion, want 3", got)
	}
}

// TestTheHighWaterStoreRefusesGarbage: a mark that is not a number is an
// error naming the ConfigMap, never a silent 0 that would reuse IDs.
func TestTheHighWaterStoreRefusesGarbage(t *testing.T) {
	client := k8sfake.NewClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: StateConfigMap, Namespace: ns},
		Data: map[string]string{highWaterKey: "many"}})
	s := highWaterStore{client: client, namespace: ns}
	if _, err := s.load(context.Background()); err == nil {
		t.Error("a garbage mark loads without an error")
	}
	if err := s.store(context.Background(), 9); err != nil {
		t.Fatal(err)
	}
	if got, err := s.load(context.Background()); err != nil || got != 9 {
		t.Errorf("after store(9): %d, %v", got, err)
	}
	fresh := highWaterStore{client: client, namespace: ns}
	if got, err := fresh.load(context.Background()); err != nil || got != 9 {
		t.Errorf("a new store loads %d, %v; want the stored 9", got, err)
	}
}

// TestAPolicyKeepsTheIDItWasJustGiven: the status written with a new ID
// reaches the controller's cache a moment later; a reconcile in between
// must not count past the high-water mark and give the policy another ID
// (the nodes would re-steer its pods to a new tunnel for nothing).
func TestAPolicyKeepsTheIDItWasJustGiven(t *testing.T) {
	p := policy("a", 0) // its status does not show the ID yet
	in := Input{Groups: usualGroups, Nodes: usualNodes, Policies: []v1alpha1.EgressNATPolicy{p}, TunnelIDHighWater: 1}
	if got := Assign(in, t0).Policies["a"].TunnelID; got != 2 {
		t.Fatalf("without what was handed out the policy gets %d, want 2 (the test's premise)", got)
	}
	in.RecentTunnelIDs = map[types.UID]int32{p.UID: 1}
	if got := Assign(in, t0).Policies["a"].TunnelID; got != 1 {
		t.Errorf("the policy got %d, want the ID it was just given (1)", got)
	}
}

// TestReconcileReadsTheMarkAndTheServiceRangesOnce: a reconcile runs at
// every watched change; the mark (the controller is its only writer) and
// the Service ranges (they almost never change) are not read again each
// time.
func TestReconcileReadsTheMarkAndTheServiceRangesOnce(t *testing.T) {
	f := newFixture(t, []v1alpha1.EgressNATPolicy{policy("a", 0)}, usualGroups, usualNodes)
	client := k8sfake.NewClientset()
	f.r.highWater = &highWaterStore{client: client, namespace: ns}
	f.r.client = client
	for range 3 {
		if err := f.r.reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	reads := map[string]int{}
	for _, a := range client.Actions() {
		if a.GetVerb() == "get" || a.GetVerb() == "list" {
			reads[a.GetResource().Resource]++
		}
	}
	// The ConfigMap: one load, and one read by the one store of ID 1.
	if reads["configmaps"] > 2 || reads["servicecidrs"] != 1 {
		t.Errorf("three reconciles read %v; want the ConfigMap at most twice and the ServiceCIDRs once", reads)
	}
}
