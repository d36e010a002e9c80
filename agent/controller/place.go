package controller

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// placement is one group's decided status, plus what policies of the group
// need to explain themselves.
type placement struct {
	group  *v1alpha1.NetworkGatewayGroup
	status v1alpha1.NetworkGatewayGroupStatus
	// floating is the set of the group's floating IPs.
	floating map[string]bool
	// selectorErr is why the group's nodeSelector matches nothing: it
	// does not parse.
	selectorErr error
	// conflicts says, for a floating IP no node may hold, why.
	conflicts map[string]string
}

// floatingConflicts finds the floating IPs that no node may hold, and
// why: one that is a node's own address (a gateway announcing it would
// take that node's traffic), and one listed by two groups (two nodes
// would announce it).
func floatingConflicts(groups []v1alpha1.NetworkGatewayGroup, nodes []corev1.Node) map[string]string {
	nodeOf := map[string]string{}
	for i := range nodes {
		for _, a := range nodes[i].Status.Addresses {
			if other, ok := nodeOf[a.Address]; !ok || nodes[i].Name < other {
				nodeOf[a.Address] = nodes[i].Name
			}
		}
	}
	groupsOf := map[string][]string{}
	for i := range groups {
		g := &groups[i]
		name := g.Namespace + "/" + g.Name
		for _, ip := range g.Spec.FloatingIPs {
			if !slices.Contains(groupsOf[ip], name) {
				groupsOf[ip] = append(groupsOf[ip], name)
			}
		}
	}
	out := map[string]string{}
	for ip, names := range groupsOf {
		switch n, ok := nodeOf[ip]; {
		case ok:
			out[ip] = fmt.Sprintf("%s is the address of node %s", ip, n)
		case len(names) > 1:
			slices.Sort(names)
			out[ip] = fmt.Sprintf("%s is a floating IP of more than one NetworkGatewayGroup (%s)", ip, strings.Join(names, ", "))
		}
	}
	return out
}

// place decides a group's status: which of its nodes are Up, and for each
// floating IP its active node, standby and epoch (see placer.actives and
// placer.standbys, and docs/design.md §3). A floating IP in conflicts is
// placed on no node. now stamps lastMove of the IPs that move, and only
// those.
func place(g *v1alpha1.NetworkGatewayGroup, nodes []corev1.Node, conflicts map[string]string, claims nodeClaims, now metav1.Time) *placement {
	p := &placement{group: g, floating: make(map[string]bool, len(g.Spec.FloatingIPs)), conflicts: conflicts}

	sel := labels.Everything() // nodeSelector absent: every node (the Anthos default)
	if g.Spec.NodeSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(g.Spec.NodeSelector)
		if err != nil {
			p.selectorErr = err
			s = labels.Nothing()
		}
		sel = s
	}

	pl := &placer{prev: &g.Status, sel: sel, byName: make(map[string]*corev1.Node, len(nodes)), claims: claims, now: now}
	for i := range nodes {
		n := &nodes[i]
		pl.byName[n.Name] = n
		if !sel.Matches(labels.Set(n.Labels)) {
			continue
		}
		if p.status.Nodes == nil {
			p.status.Nodes = map[string]v1alpha1.GatewayNodeState{}
		}
		if nodeUp(n) {
			p.status.Nodes[n.Name] = v1alpha1.GatewayNodeUp
			pl.up = append(pl.up, n.Name)
		} else {
			p.status.Nodes[n.Name] = v1alpha1.GatewayNodeDown
		}
	}
	sort.Strings(pl.up)

	// The spec's list is a set (the API server checks it), but a
	// duplicate must not count twice against its holder.
	var ips []string
	for _, ip := range g.Spec.FloatingIPs {
		if !p.floating[ip] {
			p.floating[ip] = true
			ips = append(ips, ip)
		}
	}
	assigned := pl.actives(ips, conflicts)
	pl.standbys(ips, assigned)

	for ip, a := range assigned {
		if p.status.Assignments == nil {
			p.status.Assignments = make(map[string]v1alpha1.FloatingIPAssignment, len(assigned))
		}
		p.status.Assignments[ip] = a
		if a.Active != "" {
			if p.status.FloatingIPs == nil {
				p.status.FloatingIPs = make(map[string]string, len(assigned))
			}
			p.status.FloatingIPs[ip] = a.Active
		}
	}
	return p
}

// nodeUp says whether a node may hold floating IPs: it is Ready, not
// cordoned (spec.unschedulable, which kubectl drain and cordon set: a
// node about to be drained for maintenance must not be the one holding
// the group's IPs) and not being deleted.
func nodeUp(n *corev1.Node) bool {
	if n.DeletionTimestamp != nil || n.Spec.Unschedulable {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// name is the group as a user types it: namespace/name.
func (p *placement) name() string {
	return p.group.Namespace + "/" + p.group.Name
}

// whyNoNodeUp explains, for a user, why no node of the group is Up.
func (p *placement) whyNoNodeUp() string {
	switch {
	case p.selectorErr != nil:
		return fmt.Sprintf("the nodeSelector of NetworkGatewayGroup %s is invalid (%v)", p.name(), p.selectorErr)
	case len(p.status.Nodes) == 0:
		return fmt.Sprintf("no node matches the nodeSelector of NetworkGatewayGroup %s", p.name())
	default:
		return fmt.Sprintf("all %d nodes of NetworkGatewayGroup %s are Down (not Ready, cordoned or being deleted)", len(p.status.Nodes), p.name())
	}
}
