package controller

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// tPrev is when the IPs of a fixture last moved, before t0 (now).
var tPrev = metav1.Date(2025, 12, 31, 23, 0, 0, 0, time.UTC)

// fip is an assignment that last moved at tPrev; placedNow one that moves
// at t0.
func fip(active, standby string, epoch int64, why v1alpha1.MoveReason) v1alpha1.FloatingIPAssignment {
	t := tPrev
	return v1alpha1.FloatingIPAssignment{Active: active, Standby: standby, Epoch: epoch, LastMove: &t, Reason: why}
}

func placedNow(active, standby string, epoch int64, why v1alpha1.MoveReason) v1alpha1.FloatingIPAssignment {
	t := t0
	return v1alpha1.FloatingIPAssignment{Active: active, Standby: standby, Epoch: epoch, LastMove: &t, Reason: why}
}

// assigned is group onprem with these floating IPs and assignments as its
// status (floatingIPs naming the actives, as the controller writes them).
func assigned(ips []string, as map[string]v1alpha1.FloatingIPAssignment) v1alpha1.NetworkGatewayGroup {
	g := group(ips, nil)
	g.Status.Assignments = as
	for ip, a := range as {
		if a.Active != "" {
			if g.Status.FloatingIPs == nil {
				g.Status.FloatingIPs = map[string]string{}
			}
			g.Status.FloatingIPs[ip] = a.Active
		}
	}
	return g
}

// claiming is n with its agent's claims annotation.
func claiming(n corev1.Node, claims map[string]v1alpha1.Claim) corev1.Node {
	n.Annotations = map[string]string{v1alpha1.ClaimsAnnotation: v1alpha1.FormatClaims(claims)}
	return n
}

func claim(epoch int64) v1alpha1.Claim { return v1alpha1.Claim{Epoch: epoch} }

func TestAssignFailover(t *testing.T) {
	notReady := func(name string) corev1.Node { return nodeWith(name, nil, corev1.ConditionFalse) }
	ready := func(name string) corev1.Node { return readyNode(name, nil) }
	tests := []struct {
		name  string
		group v1alpha1.NetworkGatewayGroup
		nodes []corev1.Node
		want  map[string]v1alpha1.FloatingIPAssignment
	}{
		{
			name:  "a first placement names a standby and starts at epoch 1",
			group: group([]string{ip1, ip2}, nil),
			nodes: []corev1.Node{ready("gw-1"), ready("gw-2")},
			want: map[string]v1alpha1.FloatingIPAssignment{
				ip1: placedNow("gw-1", "gw-2", 1, v1alpha1.MovePlaced),
				ip2: placedNow("gw-2", "gw-1", 1, v1alpha1.MovePlaced),
			},
		},
		{
			name:  "a group with one Up node has no standby",
			group: group([]string{ip1}, nil),
			nodes: []corev1.Node{ready("gw-1"), notReady("gw-2")},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-1", "", 1, v1alpha1.MovePlaced)},
		},
		{
			name:  "a status of the first release counts as epoch 0 and its Up holder keeps the IP without a move",
			group: group([]string{ip1}, map[string]string{ip1: "gw-1"}),
			nodes: []corev1.Node{ready("gw-1"), ready("gw-2")},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: {Active: "gw-1", Standby: "gw-2"}},
		},
		{
			name:  "a holder of the first release that is Down loses the IP at epoch 1",
			group: group([]string{ip1}, map[string]string{ip1: "gw-1"}),
			nodes: []corev1.Node{notReady("gw-1"), ready("gw-2")},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-2", "", 1, v1alpha1.MoveNodeDown)},
		},
		{
			name:  "an Up active keeps the IP, its standby, epoch and last move",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-2", "gw-1", 4, v1alpha1.MovePeerDead)}),
			nodes: []corev1.Node{ready("gw-1"), ready("gw-2"), ready("gw-3")},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-2", "gw-1", 4, v1alpha1.MovePeerDead)},
		},
		{
			name: "a not-Ready active's IP moves to its standby, not the least-loaded node, at the next epoch with reason NodeDown",
			group: assigned([]string{ip1, ip2}, map[string]v1alpha1.FloatingIPAssignment{
				ip1: fip("gw-1", "gw-3", 2, v1alpha1.MovePlaced),
				ip2: fip("gw-3", "gw-2", 1, v1alpha1.MovePlaced),
			}),
			nodes: []corev1.Node{notReady("gw-1"), ready("gw-2"), ready("gw-3")},
			want: map[string]v1alpha1.FloatingIPAssignment{
				ip1: placedNow("gw-3", "gw-2", 3, v1alpha1.MoveNodeDown),
				ip2: fip("gw-3", "gw-2", 1, v1alpha1.MovePlaced),
			},
		},
		{
			name:  "a cordoned active's IP moves with reason Drained",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 1, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{cordoned(ready("gw-1")), ready("gw-2")},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-2", "", 2, v1alpha1.MoveDrained)},
		},
		{
			name:  "an active being deleted loses the IP with reason NodeDeleted",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 1, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{deleting(ready("gw-1")), ready("gw-2")},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-2", "", 2, v1alpha1.MoveNodeDeleted)},
		},
		{
			name:  "an active gone from the cluster loses the IP with reason NodeDeleted",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 1, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{ready("gw-2"), ready("gw-3")},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-2", "gw-3", 2, v1alpha1.MoveNodeDeleted)},
		},
		{
			name: "an active that no longer matches the nodeSelector loses the IP with reason NotInGroup",
			group: withSelector(assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{
				ip1: fip("gw-1", "gw-2", 1, v1alpha1.MovePlaced),
			}), gwSelector),
			nodes: []corev1.Node{readyNode("gw-1", nil), readyNode("gw-2", gwLabels)},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-2", "", 2, v1alpha1.MoveNotInGroup)},
		},
		{
			name: "when the standby is Down too the IP goes to the least-loaded Up node",
			group: assigned([]string{ip1, ip2}, map[string]v1alpha1.FloatingIPAssignment{
				ip1: fip("gw-1", "gw-2", 1, v1alpha1.MovePlaced),
				ip2: fip("gw-3", "gw-4", 1, v1alpha1.MovePlaced),
			}),
			nodes: []corev1.Node{notReady("gw-1"), notReady("gw-2"), ready("gw-3"), ready("gw-4")},
			want: map[string]v1alpha1.FloatingIPAssignment{
				ip1: placedNow("gw-4", "gw-3", 2, v1alpha1.MoveNodeDown),
				ip2: fip("gw-3", "gw-4", 1, v1alpha1.MovePlaced),
			},
		},
		{
			name:  "an Up standby's claim above the IP's epoch is adopted as PeerDead, even though the active is Ready",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{ready("gw-1"), claiming(ready("gw-2"), map[string]v1alpha1.Claim{ip1: claim(4)})},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-2", "gw-1", 4, v1alpha1.MovePeerDead)},
		},
		{
			name:  "an adopted claim keeps the reason it gives",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{ready("gw-1"), claiming(ready("gw-2"), map[string]v1alpha1.Claim{
				ip1: {Epoch: 7, Reason: v1alpha1.MovePartitionHealed},
			})},
			want: map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-2", "gw-1", 7, v1alpha1.MovePartitionHealed)},
		},
		{
			name:  "the active's own claim above the epoch is adopted: it stays, with the claim's epoch",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{claiming(ready("gw-1"), map[string]v1alpha1.Claim{ip1: {Epoch: 5, Reason: v1alpha1.MovePartitionHealed}}), ready("gw-2")},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-1", "gw-2", 5, v1alpha1.MovePartitionHealed)},
		},
		{
			name:  "a claim below the IP's epoch changes nothing",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePeerDead)}),
			nodes: []corev1.Node{ready("gw-1"), claiming(ready("gw-2"), map[string]v1alpha1.Claim{ip1: claim(2)})},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePeerDead)},
		},
		{
			name:  "a claim at the IP's epoch is not adopted, and the kept active's epoch rises above it",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePeerDead)}),
			nodes: []corev1.Node{ready("gw-1"), claiming(ready("gw-2"), map[string]v1alpha1.Claim{ip1: claim(3)})},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 4, v1alpha1.MovePeerDead)},
		},
		{
			name:  "of several claims the highest epoch wins",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{
				notReady("gw-1"),
				claiming(ready("gw-2"), map[string]v1alpha1.Claim{ip1: claim(5)}),
				claiming(ready("gw-3"), map[string]v1alpha1.Claim{ip1: claim(6)}),
			},
			want: map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-3", "gw-2", 6, v1alpha1.MovePeerDead)},
		},
		{
			name:  "claims at the same epoch are won by the smallest node name, at an epoch above the loser's",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-3", 3, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{
				notReady("gw-1"),
				claiming(ready("gw-3"), map[string]v1alpha1.Claim{ip1: claim(5)}),
				claiming(ready("gw-2"), map[string]v1alpha1.Claim{ip1: claim(5)}),
			},
			want: map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-2", "gw-3", 6, v1alpha1.MovePeerDead)},
		},
		{
			name:  "a claim by a Down node is not adopted, and the kept active's epoch rises above it",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{
				ready("gw-1"), ready("gw-2"),
				claiming(cordoned(ready("gw-3")), map[string]v1alpha1.Claim{ip1: claim(7)}),
			},
			want: map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 8, v1alpha1.MovePlaced)},
		},
		{
			name: "a claim by a node outside the group is not adopted",
			group: withSelector(assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{
				ip1: fip("gw-1", "", 3, v1alpha1.MovePlaced),
			}), gwSelector),
			nodes: []corev1.Node{
				readyNode("gw-1", gwLabels),
				claiming(readyNode("worker", nil), map[string]v1alpha1.Claim{ip1: claim(9)}),
			},
			want: map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "", 10, v1alpha1.MovePlaced)},
		},
		{
			name:  "a Down active's own claim raises the epoch of its move",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{
				claiming(notReady("gw-1"), map[string]v1alpha1.Claim{ip1: claim(5)}),
				ready("gw-2"),
			},
			want: map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-2", "", 6, v1alpha1.MoveNodeDown)},
		},
		{
			name:  "a claims annotation that does not parse is ignored",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{ready("gw-1"), func() corev1.Node {
				n := ready("gw-2")
				n.Annotations = map[string]string{v1alpha1.ClaimsAnnotation: `{"` + ip1 + `":{"epoch":9},"gw-1":{"epoch":9}}`}
				return n
			}()},
			want: map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePlaced)},
		},
		{
			name:  "with no Up node the IP is taken from its active: no active, no standby, the next epoch and the reason",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{notReady("gw-1"), cordoned(ready("gw-2"))},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("", "", 4, v1alpha1.MoveNodeDown)},
		},
		{
			name:  "an IP without an active keeps its entry and epoch while no node is Up",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("", "", 4, v1alpha1.MoveNodeDown)}),
			nodes: []corev1.Node{notReady("gw-1")},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: fip("", "", 4, v1alpha1.MoveNodeDown)},
		},
		{
			name:  "an IP without an active is Placed again at the next epoch once a node is Up",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("", "", 4, v1alpha1.MoveNodeDown)}),
			nodes: []corev1.Node{notReady("gw-1"), ready("gw-2")},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("gw-2", "", 5, v1alpha1.MovePlaced)},
		},
		{
			name:  "an IP never placed gets no entry while no node is Up",
			group: group([]string{ip1}, nil),
			nodes: []corev1.Node{notReady("gw-1")},
			want:  nil,
		},
		{
			name:  "with no node at all an IP is taken from its active as NodeDeleted",
			group: group([]string{ip1}, map[string]string{ip1: "gw-1"}),
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("", "", 1, v1alpha1.MoveNodeDeleted)},
		},
		{
			name: "standbys are kept, then go to the node with the fewest standby roles, then the fewest actives, then by name",
			group: assigned([]string{ip1, ip2, ip3}, map[string]v1alpha1.FloatingIPAssignment{
				ip1: fip("gw-1", "gw-3", 1, v1alpha1.MovePlaced),
				ip2: fip("gw-2", "", 1, v1alpha1.MovePlaced),
				ip3: fip("gw-2", "", 1, v1alpha1.MovePlaced),
			}),
			nodes: []corev1.Node{ready("gw-1"), ready("gw-2"), ready("gw-3")},
			want: map[string]v1alpha1.FloatingIPAssignment{
				ip1: fip("gw-1", "gw-3", 1, v1alpha1.MovePlaced),
				ip2: fip("gw-2", "gw-1", 1, v1alpha1.MovePlaced),
				ip3: fip("gw-2", "gw-3", 1, v1alpha1.MovePlaced),
			},
		},
		{
			name:  "a standby that is Down is replaced without moving the IP",
			group: assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 2, v1alpha1.MovePlaced)}),
			nodes: []corev1.Node{ready("gw-1"), notReady("gw-2"), ready("gw-3")},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-3", 2, v1alpha1.MovePlaced)},
		},
		{
			name: "an IP removed from the spec leaves the assignments",
			group: assigned([]string{ip2}, map[string]v1alpha1.FloatingIPAssignment{
				ip1: fip("gw-1", "", 2, v1alpha1.MovePlaced),
				ip2: fip("gw-1", "", 1, v1alpha1.MovePlaced),
			}),
			nodes: []corev1.Node{ready("gw-1")},
			want:  map[string]v1alpha1.FloatingIPAssignment{ip2: fip("gw-1", "", 1, v1alpha1.MovePlaced)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Assign(Input{Groups: []v1alpha1.NetworkGatewayGroup{tt.group}, Nodes: tt.nodes}, t0)
			got := out.Groups[onprem]
			if diff := cmp.Diff(tt.want, got.Assignments); diff != "" {
				t.Errorf("assignments (-want +got):\n%s", diff)
			}
			// floatingIPs names the actives, for clients of the first
			// release, and leaves out an IP without one.
			for ip, a := range got.Assignments {
				if got.FloatingIPs[ip] != a.Active {
					t.Errorf("floatingIPs[%s] = %q, want the active %q", ip, got.FloatingIPs[ip], a.Active)
				}
			}
			for ip := range got.FloatingIPs {
				if _, ok := got.Assignments[ip]; !ok {
					t.Errorf("floatingIPs has %s, assignments do not", ip)
				}
			}
		})
	}
}

// TestAFloatingIPThatBecomesAConflictIsTakenFromItsActive: a placed IP
// that turns out to be a node's own address is taken from its active as a
// move with reason Conflict, keeping its epoch growing.
func TestAFloatingIPThatBecomesAConflictIsTakenFromItsActive(t *testing.T) {
	gw2 := readyNode("gw-2", nil)
	gw2.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip1}}
	g := assigned([]string{ip1}, map[string]v1alpha1.FloatingIPAssignment{ip1: fip("gw-1", "gw-2", 3, v1alpha1.MovePlaced)})
	in := Input{Groups: []v1alpha1.NetworkGatewayGroup{g}, Nodes: []corev1.Node{readyNode("gw-1", nil), gw2}}
	out := Assign(in, t0)
	want := map[string]v1alpha1.FloatingIPAssignment{ip1: placedNow("", "", 4, v1alpha1.MoveConflict)}
	if diff := cmp.Diff(want, out.Groups[onprem].Assignments); diff != "" {
		t.Errorf("assignments (-want +got):\n%s", diff)
	}
	if got := out.Groups[onprem].FloatingIPs; len(got) != 0 {
		t.Errorf("floatingIPs = %v, want none", got)
	}

	in.Groups[0].Status = out.Groups[onprem]
	if diff := cmp.Diff(out, Assign(in, metav1.NewTime(t0.Add(time.Hour)))); diff != "" {
		t.Errorf("a second run changed the result (-first +second):\n%s", diff)
	}
}

// TestAssignWithClaimsIsIdempotentAndOrderFree walks random clusters with
// claims, cordons, deletions and earlier assignments, and checks what must
// always hold: the result does not depend on the order of the input, a
// second run on the result changes nothing (claims still present), no
// epoch goes backwards, every epoch is above every claim of a node other
// than the active, and actives and standbys are distinct Up nodes.
func TestAssignWithClaimsIsIdempotentAndOrderFree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := range 500 {
		in := randomFailoverInput(rng)
		out := Assign(in, t0)

		shuffled := in
		shuffled.Policies = append([]v1alpha1.EgressNATPolicy(nil), in.Policies...)
		rng.Shuffle(len(shuffled.Policies), func(i, j int) {
			shuffled.Policies[i], shuffled.Policies[j] = shuffled.Policies[j], shuffled.Policies[i]
		})
		shuffled.Groups = append([]v1alpha1.NetworkGatewayGroup(nil), in.Groups...)
		shuffled.Nodes = append([]corev1.Node(nil), in.Nodes...)
		rng.Shuffle(len(shuffled.Groups), func(i, j int) { shuffled.Groups[i], shuffled.Groups[j] = shuffled.Groups[j], shuffled.Groups[i] })
		rng.Shuffle(len(shuffled.Nodes), func(i, j int) { shuffled.Nodes[i], shuffled.Nodes[j] = shuffled.Nodes[j], shuffled.Nodes[i] })
		if diff := cmp.Diff(out, Assign(shuffled, t0)); diff != "" {
			t.Fatalf("iter %d: the order of the input changed the output (-sorted +shuffled):\n%s", iter, diff)
		}

		claims := claimsOf(in.Nodes)
		for _, g := range in.Groups {
			key := types.NamespacedName{Namespace: g.Namespace, Name: g.Name}
			st := out.Groups[key]
			for ip, a := range st.Assignments {
				if before, ok := previous(&g.Status, ip); ok && a.Epoch < before.Epoch {
					t.Fatalf("iter %d: %s %s: epoch went back from %d to %d", iter, key, ip, before.Epoch, a.Epoch)
				}
				if other := claims.highest(ip, a.Active); other > 0 && other >= a.Epoch {
					t.Fatalf("iter %d: %s %s: epoch %d is not above a claim at %d of a node other than %q", iter, key, ip, a.Epoch, other, a.Active)
				}
				if a.Active != "" && st.Nodes[a.Active] != up {
					t.Fatalf("iter %d: %s %s: active %s is %s", iter, key, ip, a.Active, st.Nodes[a.Active])
				}
				if a.Standby != "" && (a.Standby == a.Active || st.Nodes[a.Standby] != up) {
					t.Fatalf("iter %d: %s %s: standby %s (active %s) is %s", iter, key, ip, a.Standby, a.Active, st.Nodes[a.Standby])
				}
				if st.FloatingIPs[ip] != a.Active {
					t.Fatalf("iter %d: %s %s: floatingIPs says %q, the assignment %q", iter, key, ip, st.FloatingIPs[ip], a.Active)
				}
			}
		}

		again := in
		again.Policies = append([]v1alpha1.EgressNATPolicy(nil), in.Policies...)
		for i := range again.Policies {
			again.Policies[i].Status = out.Policies[again.Policies[i].Name]
		}
		again.Groups = append([]v1alpha1.NetworkGatewayGroup(nil), in.Groups...)
		for i := range again.Groups {
			g := &again.Groups[i]
			g.Status = out.Groups[types.NamespacedName{Namespace: g.Namespace, Name: g.Name}]
		}
		if diff := cmp.Diff(out, Assign(again, metav1.NewTime(t0.Add(time.Hour)))); diff != "" {
			t.Fatalf("iter %d: a second run changed the result (-first +second):\n%s", iter, diff)
		}
	}
}

// randomFailoverInput is randomInput's cluster, with some nodes cordoned
// or being deleted, random claims on the nodes and random earlier
// assignments, some of the first release's form.
func randomFailoverInput(rng *rand.Rand) Input {
	in := randomInput(rng)
	pool := []string{ip1, ip2, ip3, ip4, "198.51.100.15", "198.51.100.16"}
	reasons := []v1alpha1.MoveReason{"", v1alpha1.MovePeerDead, v1alpha1.MovePartitionHealed}
	for i := range in.Nodes {
		n := &in.Nodes[i]
		switch rng.IntN(6) {
		case 0:
			*n = cordoned(*n)
		case 1:
			*n = deleting(*n)
		}
		if rng.IntN(2) == 0 {
			claims := map[string]v1alpha1.Claim{}
			for range 1 + rng.IntN(3) {
				claims[pool[rng.IntN(len(pool))]] = v1alpha1.Claim{Epoch: 1 + rng.Int64N(6), Reason: reasons[rng.IntN(len(reasons))]}
			}
			*n = claiming(*n, claims)
		}
	}
	for i := range in.Groups {
		g := &in.Groups[i]
		for _, ip := range g.Spec.FloatingIPs {
			if rng.IntN(2) == 0 {
				continue // only the first release's floatingIPs, if any
			}
			if g.Status.Assignments == nil {
				g.Status.Assignments = map[string]v1alpha1.FloatingIPAssignment{}
			}
			a := fip(fmt.Sprintf("n%d", rng.IntN(6)), fmt.Sprintf("n%d", rng.IntN(6)), rng.Int64N(6), v1alpha1.MovePlaced)
			if rng.IntN(5) == 0 {
				a.Active, a.Standby = "", ""
			}
			g.Status.Assignments[ip] = a
			delete(g.Status.FloatingIPs, ip)
			if a.Active != "" {
				g.Status.FloatingIPs[ip] = a.Active
			}
		}
	}
	return in
}
