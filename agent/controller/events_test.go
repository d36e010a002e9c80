package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/e2e/privtest"
)

// eventsOf lists the Events in the install namespace as "type reason:
// message" lines, sorted, and checks that each is about group onprem.
func eventsOf(t *testing.T, client *kubefake.Clientset) []string {
	t.Helper()
	list, err := client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if o := e.InvolvedObject; o.Kind != "NetworkGatewayGroup" || o.Namespace != ns || o.Name != "onprem" ||
			o.APIVersion != v1alpha1.SchemeGroupVersion.String() {
			t.Errorf("Event %q is about %+v, want the group %s/onprem", e.Message, o, ns)
		}
		if e.Source.Component != eventComponent {
			t.Errorf("Event %q comes from %+v, want component %s", e.Message, e.Source, eventComponent)
		}
		out = append(out, fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Message))
	}
	slices.Sort(out)
	return out
}

// TestReconcileRecordsAnEventForEveryMove: each floating IP whose active
// changes gets one Event on its group, through a real broadcaster into a
// fake API server; a reconcile that moves nothing records none.
func TestReconcileRecordsAnEventForEveryMove(t *testing.T) {
	g := assigned([]string{ip1, ip2, ip3}, map[string]v1alpha1.FloatingIPAssignment{
		ip1: fip("gw-1", "gw-2", 2, v1alpha1.MovePlaced),
		ip2: fip("gw-2", "gw-1", 1, v1alpha1.MovePlaced),
	})
	f := newFixture(t, nil, []v1alpha1.NetworkGatewayGroup{g},
		[]corev1.Node{nodeWith("gw-1", nil, corev1.ConditionFalse), readyNode("gw-2", nil)})
	client := kubefake.NewClientset()
	b, rec := newEventRecorder(client, "gw-9")
	defer b.Shutdown()
	f.r.events = rec

	if err := f.r.reconcile(context.Background()); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	want := []string{
		"Normal Placed: floating IP " + ip3 + " moved from no node to gw-2 (epoch 1): placed on an Up node of the group",
		"Warning NodeDown: floating IP " + ip1 + " moved from gw-1 to gw-2 (epoch 3): gw-1 is not Ready",
	}
	privtest.Eventually(t, 10*time.Second, "the Events of the moves", func() (bool, error) {
		got := eventsOf(t, client)
		return slices.Equal(got, want), fmt.Errorf("events %q, want %q", got, want)
	})
	for _, w := range want {
		if _, msg, _ := strings.Cut(w, ": "); !strings.Contains(f.logs.String(), "NetworkGatewayGroup nsegress-system/onprem: "+msg) {
			t.Errorf("log lacks the move %q:\n%s", msg, f.logs)
		}
	}

	// The cache catches up; nothing moves, nothing is recorded.
	f.sync()
	if err := f.r.reconcile(context.Background()); err != nil {
		t.Fatalf("second reconcile: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // the broadcaster is asynchronous
	if got := eventsOf(t, client); !slices.Equal(got, want) {
		t.Errorf("after a reconcile that moved nothing, events = %q, want still %q", got, want)
	}
}

// TestReconcileRecordsNoEventWhenTheWriteFails: a move is announced only
// once the status that makes it has been written.
func TestReconcileRecordsNoEventWhenTheWriteFails(t *testing.T) {
	f := newFixture(t, nil, []v1alpha1.NetworkGatewayGroup{group([]string{ip1}, nil)}, usualNodes)
	rec := record.NewFakeRecorder(10)
	f.r.events = rec
	f.dyn.PrependReactor("update", "networkgatewaygroups", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewInternalError(errors.New("etcd is down"))
	})
	if err := f.r.reconcile(context.Background()); err == nil {
		t.Fatal("reconcile succeeded; want the write's error")
	}
	if n := len(rec.Events); n != 0 {
		t.Errorf("%d events after a failed write (first: %q); want none", n, <-rec.Events)
	}
}

func TestMoveEventsSayWhatMovedWhereAndWhy(t *testing.T) {
	tests := []struct {
		name     string
		m        move
		wantType string
		want     string
	}{
		{"a first placement is Normal", move{ip1, "", "gw-1", 1, v1alpha1.MovePlaced}, corev1.EventTypeNormal,
			"floating IP " + ip1 + " moved from no node to gw-1 (epoch 1): placed on an Up node of the group"},
		{"a takeover by the standby is a Warning", move{ip1, "gw-1", "gw-2", 4, v1alpha1.MovePeerDead}, corev1.EventTypeWarning,
			"floating IP " + ip1 + " moved from gw-1 to gw-2 (epoch 4): gw-2 took it over: gw-1 stopped answering heartbeats and ARP"},
		{"a node not Ready is a Warning", move{ip1, "gw-1", "gw-2", 3, v1alpha1.MoveNodeDown}, corev1.EventTypeWarning,
			"floating IP " + ip1 + " moved from gw-1 to gw-2 (epoch 3): gw-1 is not Ready"},
		{"a drain is Normal", move{ip1, "gw-1", "gw-2", 3, v1alpha1.MoveDrained}, corev1.EventTypeNormal,
			"floating IP " + ip1 + " moved from gw-1 to gw-2 (epoch 3): gw-1 is cordoned"},
		{"a deleted node is a Warning", move{ip1, "gw-1", "gw-2", 3, v1alpha1.MoveNodeDeleted}, corev1.EventTypeWarning,
			"floating IP " + ip1 + " moved from gw-1 to gw-2 (epoch 3): gw-1 is being deleted or is gone"},
		{"a node leaving the group is Normal", move{ip1, "gw-1", "gw-2", 3, v1alpha1.MoveNotInGroup}, corev1.EventTypeNormal,
			"floating IP " + ip1 + " moved from gw-1 to gw-2 (epoch 3): gw-1 no longer matches the group's nodeSelector"},
		{"a claim on a healed partition is Normal", move{ip1, "gw-1", "gw-2", 3, v1alpha1.MovePartitionHealed}, corev1.EventTypeNormal,
			"floating IP " + ip1 + " moved from gw-1 to gw-2 (epoch 3): gw-2 claimed it when a network partition healed"},
		{"a move to no node is a Warning, whatever the reason", move{ip1, "gw-1", "", 3, v1alpha1.MoveDrained}, corev1.EventTypeWarning,
			"floating IP " + ip1 + " moved from gw-1 to no node (epoch 3): gw-1 is cordoned, and no node of the group is Up"},
		{"a conflict is a Warning and says why", move{ip1, "gw-1", "", 3, v1alpha1.MoveConflict}, corev1.EventTypeWarning,
			"floating IP " + ip1 + " moved from gw-1 to no node (epoch 3): the IP is a node's own address or a floating IP of another group"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.m.eventType(); got != tt.wantType {
				t.Errorf("type = %s, want %s", got, tt.wantType)
			}
			if got := tt.m.message(); got != tt.want {
				t.Errorf("message = %q\nwant      %q", got, tt.want)
			}
		})
	}
}

func TestMovesCompareActivesIncludingTheFirstReleasesStatus(t *testing.T) {
	old := v1alpha1.NetworkGatewayGroupStatus{
		FloatingIPs: map[string]string{ip1: "gw-1", ip2: "gw-2", ip4: "gw-1"},
		Assignments: map[string]v1alpha1.FloatingIPAssignment{ip2: fip("gw-2", "gw-1", 2, v1alpha1.MovePlaced)},
	}
	cur := v1alpha1.NetworkGatewayGroupStatus{Assignments: map[string]v1alpha1.FloatingIPAssignment{
		ip1: placedNow("gw-1", "gw-2", 0, ""),                // the first release's holder, kept
		ip2: fip("gw-2", "gw-3", 5, v1alpha1.MovePlaced),     // a new standby and epoch, same active
		ip3: placedNow("gw-3", "", 1, v1alpha1.MovePlaced),   // new
		ip4: placedNow("gw-2", "", 1, v1alpha1.MoveNodeDown), // moved from the first release's holder
	}}
	got := moves(&old, &cur)
	want := []move{{ip3, "", "gw-3", 1, v1alpha1.MovePlaced}, {ip4, "gw-1", "gw-2", 1, v1alpha1.MoveNodeDown}}
	if !slices.Equal(got, want) {
		t.Errorf("moves = %+v, want %+v", got, want)
	}
}

func TestReconcileLogsAnUnparsableClaimsAnnotationOnce(t *testing.T) {
	bad := readyNode("gw-2", nil)
	bad.Annotations = map[string]string{v1alpha1.ClaimsAnnotation: "{not json"}
	f := newFixture(t, nil, []v1alpha1.NetworkGatewayGroup{group([]string{ip1}, nil)}, []corev1.Node{readyNode("gw-1", nil), bad})
	for range 3 {
		if err := f.r.reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(f.logs.String(), "ignoring the floating-IP claims of node gw-2"); n != 1 {
		t.Errorf("the bad annotation was logged %d times, want once:\n%s", n, f.logs)
	}
}
