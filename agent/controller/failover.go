package controller

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// The controller's half of gateway high availability (docs/design.md §3):
// the gateways of a group move a floating IP among themselves within a
// second when its active dies, each recording what it took in a claim on
// its own Node; the controller names each IP's standby, adopts the
// claims, and itself moves the IPs of nodes that are drained, deleted or
// leave the group. The epoch orders all of these moves.

// nodeClaims are the floating IPs that nodes took over on their own, as
// their agents record them in v1alpha1.ClaimsAnnotation: floating IP →
// node name → claim.
type nodeClaims map[string]map[string]v1alpha1.Claim

// claimsOf reads every node's claims. A node whose annotation does not
// parse claims nothing (reconcile logs it, see logBadClaims): one agent's
// bad annotation must not stop placement for every group.
func claimsOf(nodes []corev1.Node) nodeClaims {
	out := nodeClaims{}
	for i := range nodes {
		n := &nodes[i]
		c, err := v1alpha1.ParseClaims(n.Annotations[v1alpha1.ClaimsAnnotation])
		if err != nil {
			continue
		}
		for ip, claim := range c {
			if out[ip] == nil {
				out[ip] = map[string]v1alpha1.Claim{}
			}
			out[ip][n.Name] = claim
		}
	}
	return out
}

// highest is the highest epoch of the IP's claims by nodes other than
// except (0: none).
func (c nodeClaims) highest(ip, except string) int64 {
	var e int64
	for n, claim := range c[ip] {
		if n != except {
			e = max(e, claim.Epoch)
		}
	}
	return e
}

// previous is the IP's assignment in a group's status. A status written by
// the first release has only floatingIPs; its holder counts as the active
// at epoch 0, so that any claim or move supersedes it.
func previous(st *v1alpha1.NetworkGatewayGroupStatus, ip string) (v1alpha1.FloatingIPAssignment, bool) {
	if a, ok := st.Assignments[ip]; ok {
		return a, true
	}
	if n := st.FloatingIPs[ip]; n != "" {
		return v1alpha1.FloatingIPAssignment{Active: n}, true
	}
	return v1alpha1.FloatingIPAssignment{}, false
}

// placer decides one group's assignments.
type placer struct {
	prev   *v1alpha1.NetworkGatewayGroupStatus
	sel    labels.Selector
	byName map[string]*corev1.Node
	// up are the group's Up nodes, sorted.
	up     []string
	claims nodeClaims
	now    metav1.Time
	// load counts the IPs each node is active for.
	load map[string]int
}

func (pl *placer) isUp(name string) bool {
	if n := pl.byName[name]; n != nil {
		return pl.sel.Matches(labels.Set(n.Labels)) && nodeUp(n)
	}
	return false
}

// whyOut is why a node that was active may hold the IP no longer.
func (pl *placer) whyOut(name string) v1alpha1.MoveReason {
	n := pl.byName[name]
	switch {
	case n == nil || n.DeletionTimestamp != nil:
		return v1alpha1.MoveNodeDeleted
	case !pl.sel.Matches(labels.Set(n.Labels)):
		return v1alpha1.MoveNotInGroup
	case n.Spec.Unschedulable:
		return v1alpha1.MoveDrained
	default:
		return v1alpha1.MoveNodeDown
	}
}

// move records a move of a to node to ("": none), at epoch, for why.
func (pl *placer) move(a *v1alpha1.FloatingIPAssignment, to string, epoch int64, why v1alpha1.MoveReason) {
	a.Active, a.Epoch, a.Reason = to, epoch, why
	t := pl.now
	a.LastMove = &t
	if to != "" {
		pl.load[to]++
	}
}

// moveAway moves a, whose active is out or absent, to node to ("": none):
// at an epoch above its own and every claim's, for the reason its active
// is out (Placed when it had none).
func (pl *placer) moveAway(ip string, a *v1alpha1.FloatingIPAssignment, to string) {
	why := v1alpha1.MovePlaced
	if a.Active != "" {
		why = pl.whyOut(a.Active)
	}
	pl.move(a, to, max(a.Epoch, pl.claims.highest(ip, ""))+1, why)
}

// actives decides the active node of each floating IP (ips, in spec
// order, without duplicates):
//
//   - A claim by an Up node of the group with an epoch above the IP's is
//     adopted: the claimant becomes active at the claim's epoch, for the
//     claim's reason (PeerDead when it gives none). Among several, the
//     highest epoch wins, then the smallest node name.
//   - Else an Up active keeps the IP, its epoch and lastMove.
//   - Else the IP moves, to its standby if that is Up, else to the Up node
//     active for the fewest IPs (ties by name), at an epoch above its own
//     and every claim's, for the reason its active is out.
//   - With no Up node, an IP that had an active moves the same way to no
//     node (active ""); one that had none keeps its entry as it is, and
//     one never placed gets none.
//   - A floating IP in conflicts is placed on no node: taking it from its
//     active is a move with reason Conflict.
//
// In every case the epoch ends above every claim of a node other than the
// active. A node that sees a higher epoch for an IP it holds drops it, so
// a claim the controller does not adopt (a Down claimant's, or one that
// lost to another at the same epoch) must not outrank the active it
// decided; an IP with no active outranks them all.
func (pl *placer) actives(ips []string, conflicts map[string]string) map[string]v1alpha1.FloatingIPAssignment {
	assigned := make(map[string]v1alpha1.FloatingIPAssignment, len(ips))
	pl.load = make(map[string]int, len(pl.up))

	// First the IPs that are kept or claimed, then the moves, so that a
	// move counts every kept IP against its holder.
	var moving []string
	for _, ip := range ips {
		a, had := previous(pl.prev, ip)
		switch n, c, adopt := adoptable(pl.claims[ip], a.Epoch, pl.isUp); {
		case conflicts[ip] != "":
			if !had {
				continue
			}
			if a.Active != "" {
				pl.move(&a, "", max(a.Epoch, pl.claims.highest(ip, ""))+1, v1alpha1.MoveConflict)
			}
		case adopt:
			why := c.Reason
			if why == "" {
				why = v1alpha1.MovePeerDead
			}
			pl.move(&a, n, c.Epoch, why)
		case pl.isUp(a.Active):
			pl.load[a.Active]++
		default:
			moving = append(moving, ip)
			continue
		}
		assigned[ip] = a
	}

	// Moves to an Up standby go first: their target is fixed, and the
	// others then see its load.
	var rest []string
	for _, ip := range moving {
		a, had := previous(pl.prev, ip)
		switch {
		case len(pl.up) == 0 && a.Active != "":
			pl.moveAway(ip, &a, "")
		case len(pl.up) == 0 && !had:
			continue // never placed: no entry to keep
		case len(pl.up) == 0:
			// No active before, none now: nothing moves.
		case pl.isUp(a.Standby):
			pl.moveAway(ip, &a, a.Standby)
		default:
			rest = append(rest, ip)
			continue
		}
		assigned[ip] = a
	}
	for _, ip := range rest {
		a, _ := previous(pl.prev, ip)
		least := pl.up[0]
		for _, n := range pl.up[1:] {
			if pl.load[n] < pl.load[least] {
				least = n
			}
		}
		pl.moveAway(ip, &a, least)
		assigned[ip] = a
	}

	for ip, a := range assigned {
		if other := pl.claims.highest(ip, a.Active); other > 0 && a.Epoch <= other {
			a.Epoch = other + 1
			assigned[ip] = a
		}
	}
	return assigned
}

// adoptable picks, among an IP's claims, the one the controller adopts:
// by a node that is Up in the group, with an epoch above the IP's; the
// highest epoch wins, then the smallest node name.
func adoptable(claims map[string]v1alpha1.Claim, epoch int64, isUp func(string) bool) (string, v1alpha1.Claim, bool) {
	var (
		best  string
		found v1alpha1.Claim
	)
	for n, c := range claims {
		if c.Epoch <= epoch || !isUp(n) {
			continue
		}
		if best == "" || c.Epoch > found.Epoch || c.Epoch == found.Epoch && n < best {
			best, found = n, c
		}
	}
	return best, found, best != ""
}

// standbys names the standby of each assigned IP (ips in spec order). A
// standby that is Up and not the active is kept; the others go to the Up
// node other than the active with the fewest standby roles in the group,
// then the fewest actives, then the smallest name; kept ones count first,
// so that new ones spread around them. An IP with no other Up node, or
// no active, has no standby.
func (pl *placer) standbys(ips []string, assigned map[string]v1alpha1.FloatingIPAssignment) {
	roles := make(map[string]int, len(pl.up))
	var need []string
	for _, ip := range ips {
		a, ok := assigned[ip]
		switch {
		case !ok:
		case a.Active == "":
			a.Standby = ""
			assigned[ip] = a
		case a.Standby != a.Active && pl.isUp(a.Standby):
			roles[a.Standby]++
		default:
			need = append(need, ip)
		}
	}
	for _, ip := range need {
		a := assigned[ip]
		a.Standby = ""
		for _, n := range pl.up {
			if n == a.Active {
				continue
			}
			if a.Standby == "" || roles[n] < roles[a.Standby] ||
				roles[n] == roles[a.Standby] && pl.load[n] < pl.load[a.Standby] {
				a.Standby = n
			}
		}
		if a.Standby != "" {
			roles[a.Standby]++
		}
		assigned[ip] = a
	}
}
