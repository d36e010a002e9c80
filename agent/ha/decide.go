package ha

import (
	"net/netip"
	"slices"
)

// Assignment is what the API says of one floating IP: the node the
// controller made active, its standby, and the epoch of that decision.
type Assignment struct {
	Active, Standby string
	Epoch           int64
}

// Group is one NetworkGatewayGroup as the HA runtime needs it.
type Group struct {
	// Members are the group's nodes the controller found Up, sorted: the
	// ones a majority is counted among.
	Members []string
	// Peers are every node of the group, Up or not (a cordoned node is
	// Down, yet hands its IPs over and must keep replicating), sorted;
	// empty means Members.
	Peers []string
	// IPs are the group's placed floating IPs.
	IPs map[netip.Addr]Assignment
}

// World is the API's side of the picture, refreshed by the node role at
// every reconcile.
type World struct {
	// Nodes are every node's underlay address: heartbeats and pushes go
	// there, and a message is believed only from its sender's address.
	Nodes  map[string]netip.Addr
	Groups []Group
}

// Holder is who holds a floating IP now, as this node knows it, and at
// which epoch. An empty Node means nobody may: this node is fenced off,
// or it saw another node announce the IP.
type Holder struct {
	Node  string
	Epoch int64
}

// claim is a node's statement that it holds an IP at an epoch, and who
// its standby is.
type claim struct {
	node    string
	epoch   int64
	standby string
}

// wins says whether c overrides a holder at epoch e: a strictly higher
// epoch. At equal epochs the API's word stands: only the standby the
// API names takes an IP over, and it always raises the epoch.
func (c claim) wins(e int64) bool { return c.epoch > e }

// effective computes every floating IP's holder from the API's
// assignments, the claims heard from other nodes (the highest per IP)
// and this node's own takeovers. barred are IPs this node must not hold
// now (fenced, or another node announced them).
func effective(self string, w World, heard map[netip.Addr]claim, own map[netip.Addr]int64, barred func(netip.Addr) bool) map[netip.Addr]Holder {
	out := map[netip.Addr]Holder{}
	for _, g := range w.Groups {
		for ip, a := range g.IPs {
			h := Holder{Node: a.Active, Epoch: a.Epoch}
			if c, ok := heard[ip]; ok && c.wins(h.Epoch) {
				h = Holder{Node: c.node, Epoch: c.epoch}
			}
			if e, ok := own[ip]; ok && (claim{node: self, epoch: e}).wins(h.Epoch) {
				h = Holder{Node: self, Epoch: e}
			}
			if h.Node == self && barred(ip) {
				h.Node = ""
			}
			out[ip] = h
		}
	}
	return out
}

// majority says whether this node, with the peers whose fresh heartbeats
// do not hear dead, is a majority of the group's members. Two members
// decide alone: the ARP probe for the IP is their witness.
func majority(self, dead string, members []string, hears map[string][]string) bool {
	if len(members) < 3 {
		return true
	}
	votes := 0
	for _, m := range members {
		switch {
		case m == dead:
		case m == self:
			votes++
		default:
			if h, ok := hears[m]; ok && !slices.Contains(h, dead) {
				votes++
			}
		}
	}
	return 2*votes > len(members)
}

// peersOf lists the groups' peers other than self in every group self
// belongs to: the nodes self heartbeats with and replicates to.
func (w World) peersOf(self string) []string {
	var out []string
	for _, g := range w.Groups {
		peers := g.peers()
		if !slices.Contains(peers, self) {
			continue
		}
		for _, m := range peers {
			if m != self && !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	slices.Sort(out)
	return out
}

// peers are the group's nodes, Up or not: Peers, or Members when the
// world names no Peers.
func (g Group) peers() []string {
	if len(g.Peers) == 0 {
		return g.Members
	}
	return g.Peers
}

// groupOf is the group of a floating IP.
func (w World) groupOf(ip netip.Addr) (Group, bool) {
	for _, g := range w.Groups {
		if _, ok := g.IPs[ip]; ok {
			return g, true
		}
	}
	return Group{}, false
}
