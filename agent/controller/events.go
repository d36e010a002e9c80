package controller

import (
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// eventComponent is the source of the controller's Events, as kubectl
// describe shows it ("From").
const eventComponent = "nsegress-controller"

// newEventRecorder sends Events through client (core/v1 Events, which the
// agent's ClusterRole may create and patch; the broadcaster patches a
// repeated Event's count rather than create another). identity is this
// agent's node, shown as the Events' host. Stop the returned broadcaster
// when leading ends.
func newEventRecorder(client kubernetes.Interface, identity string) (record.EventBroadcaster, record.EventRecorder) {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	// The groups are unstructured objects that carry their apiVersion and
	// kind, so the recorder needs no scheme to refer to them.
	return b, b.NewRecorder(runtime.NewScheme(), corev1.EventSource{Component: eventComponent, Host: identity})
}

// move is one floating IP changing its active node.
type move struct {
	ip, from, to string
	epoch        int64
	reason       v1alpha1.MoveReason
}

// moves lists, in IP order, the floating IPs whose active node is not
// the same in cur as in old. An IP that left the spec is no move.
func moves(old, cur *v1alpha1.NetworkGatewayGroupStatus) []move {
	var out []move
	for _, ip := range slices.Sorted(maps.Keys(cur.Assignments)) {
		a := cur.Assignments[ip]
		before, _ := previous(old, ip)
		if before.Active != a.Active {
			out = append(out, move{ip: ip, from: before.Active, to: a.Active, epoch: a.Epoch, reason: a.Reason})
		}
	}
	return out
}

// eventType is Warning for a move forced by a failure, and for one that
// leaves the IP on no node (its policies' traffic stops or leaves
// unSNATed, by their failMode); Normal for the rest.
func (m move) eventType() string {
	switch {
	case m.to == "",
		m.reason == v1alpha1.MovePeerDead, m.reason == v1alpha1.MoveNodeDown, m.reason == v1alpha1.MoveNodeDeleted:
		return corev1.EventTypeWarning
	}
	return corev1.EventTypeNormal
}

// message says what moved where, and why, for kubectl describe.
func (m move) message() string {
	from, to := m.from, m.to
	if from == "" {
		from = "no node"
	}
	if to == "" {
		to = "no node"
	}
	var why string
	switch m.reason {
	case v1alpha1.MovePlaced:
		why = "placed on an Up node of the group"
	case v1alpha1.MovePeerDead:
		why = fmt.Sprintf("%s took it over: %s stopped answering heartbeats and ARP", to, from)
	case v1alpha1.MoveNodeDown:
		why = from + " is not Ready"
	case v1alpha1.MoveDrained:
		why = from + " is cordoned"
	case v1alpha1.MoveNodeDeleted:
		why = from + " is being deleted or is gone"
	case v1alpha1.MoveNotInGroup:
		why = from + " no longer matches the group's nodeSelector"
	case v1alpha1.MoveConflict:
		why = "the IP is a node's own address or a floating IP of another group"
	case v1alpha1.MovePartitionHealed:
		why = to + " claimed it when a network partition healed"
	case v1alpha1.MoveManual:
		why = "moved by an operator"
	default:
		why = string(m.reason)
	}
	if m.to == "" && m.reason != v1alpha1.MoveConflict {
		why += ", and no node of the group is Up"
	}
	return fmt.Sprintf("floating IP %s moved from %s to %s (epoch %d): %s", m.ip, from, to, m.epoch, why)
}

// recordMoves emits an Event on the group for every floating IP whose
// active node differs between old (the status read) and cur (the status
// written), and logs it.
func (r *reconciler) recordMoves(group runtime.Object, name string, old, cur *v1alpha1.NetworkGatewayGroupStatus) {
	for _, m := range moves(old, cur) {
		r.logf("controller: NetworkGatewayGroup %s: %s", name, m.message())
		if r.events != nil {
			r.events.Event(group, m.eventType(), string(m.reason), m.message())
		}
	}
}
