package node

import (
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/nsegress/nsegress/agent/datapath"
	"github.com/nsegress/nsegress/agent/ha"
	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/nft"
	"github.com/nsegress/nsegress/nodestate"
)

// facts is what the node holds and is, read from the node before
// planning, so that plan itself reads nothing.
type facts struct {
	// nodeName is this node's name.
	nodeName string
	// port is the VXLAN UDP port.
	port uint16
	// uplink and uplinkMTU describe the node's underlay interface.
	uplink    string
	uplinkMTU int
	// underlayRoutes are the main table's routes through the uplink with
	// a next hop: a node whose pod ranges are all routed to its own
	// address this way gets its replies over the underlay.
	underlayRoutes map[netip.Prefix]netip.Addr
	// records are the plugin's pod records.
	records []nodestate.PodRecord
	// held are the floating IPs the node has held since it was installed.
	held []netip.Addr
	// pods is the nft pods map as it is now.
	pods map[nft.PodKey]uint16
	// ifaces are the node's interfaces by name, nil when unknown: a
	// recorded pod whose informer has not seen it keeps its element while
	// its own interface exists.
	ifaces map[string]bool
	// now is when the plan is made.
	now time.Time
	// settings place the marks, tables and rules.
	settings datapath.Settings
	// ignorePodRanges: the nodes' spec.podCIDRs are not where their pods
	// are (Config.IgnorePodRanges).
	ignorePodRanges bool
	// holders say who holds each floating IP now: the API's assignment,
	// or a newer takeover the HA runtime heard of (package ha). An IP
	// absent here is placed by the groups' status alone.
	holders map[netip.Addr]ha.Holder
	// draining are the floating IPs this node let go moments ago: it
	// still forwards and SNATs their policies' tunnel traffic, without
	// holding the address, until every node has re-pointed
	// (ha.DrainFor).
	draining map[netip.Addr]bool
	// passOn are the floating IPs this node took over moments ago, each
	// with the address of the node it took it from (ha.Runtime.PassingOn).
	passOn map[netip.Addr]netip.Addr
}

// desired is the node's whole desired state.
type desired struct {
	// links are the tunnels, routes, rules and floating IPs.
	links datapath.Plan
	// nft is the node's nft table, pods map included.
	nft nft.State
	// records are the pod records to rewrite: those of pods the plan moves
	// into, out of or between policies, so that the plugin's CHECK and a
	// later DEL see what the node does.
	records []nodestate.PodRecord
	// held is what the list of held floating IPs must say: every IP held
	// before and every IP held now, so that uninstall releases them all.
	held []netip.Addr
}

// plan computes the node's desired state from the view and the facts. It
// is pure: no file, netlink or clock access; the same inputs give the same
// state.
func plan(v view, f facts) (desired, error) {
	nodeIP, err := v.nodeIP(f.nodeName)
	if err != nil {
		return desired{}, err
	}
	mtu := datapath.DeviceMTU(f.uplinkMTU)
	d := desired{
		links: datapath.Plan{Settings: f.settings, Uplink: f.uplink, NodeIP: nodeIP, Port: f.port},
		nft: nft.State{
			Marks:        f.settings.Marks,
			MSS:          datapath.MSS(mtu),
			TunnelPort:   f.port,
			Uplink:       f.uplink,
			DevicePrefix: datapath.DevicePrefix,
			TunnelPeers:  tunnelPeers(v, f.ignorePodRanges),
		},
	}
	var returns []datapath.Return
	if !f.ignorePodRanges {
		returns = returnNodes(v, f.nodeName, f.underlayRoutes)
		for _, r := range returns {
			d.nft.ReturnRanges = append(d.nft.ReturnRanges, r.Ranges...)
		}
	}
	// One plan per policy feeds both the links and the nft table.
	for i := range v.policies {
		p := &v.policies[i]
		id, ok := p.AssignedTunnelID()
		if !ok {
			continue
		}
		t := datapath.Tunnel{ID: id, Destinations: destinations(p), Generation: datapath.TunnelGeneration(string(p.UID))}
		t.Mode, t.Gateway = mode(v, p, f.nodeName, f.holders)
		if egress, err := netip.ParseAddr(p.Status.EgressIP); err == nil && f.draining[egress] && t.Mode != nft.ModeLocal {
			t.Mode, t.Gateway = nft.ModeLocal, netip.Addr{}
		}
		if t.Mode == nft.ModeLocal {
			t.EgressIP, _ = netip.ParseAddr(p.Status.EgressIP) // mode checked it parses
			t.Returns = returns
		}
		d.links.Tunnels = append(d.links.Tunnels, t)
		d.nft.Policies = append(d.nft.Policies, t.Policy())
	}
	allowReplies(d.nft.TunnelPeers, d.links.Tunnels, standbys(v, f.holders))
	d.links.FloatingIPs, d.links.ReleasedIPs = floatingIPs(v, f.nodeName, f.held, f.holders)
	d.nft.HeldIPs = d.links.FloatingIPs
	d.nft.PassOn, d.nft.Released = handover(f, d.nft.HeldIPs)
	d.held = slices.Concat(f.held, d.links.FloatingIPs)
	slices.SortFunc(d.held, netip.Addr.Compare)
	d.held = slices.Compact(d.held)
	d.nft.Pods = desiredPods(v, f.records, f.pods, d.nft.Policies, f.ifaces)
	d.nft.Guards = guards(f.records, d.nft.Pods)
	d.records = movedRecords(v, f.records, d.nft.Pods)
	return d, nil
}

// tunnelPeers are every node with an IPv4 InternalIP, sorted, each with
// its IPv4 pod ranges (spec.podCIDRs): the nodes allowed to send to this
// node's tunnel port and the inner sources each may send. A node without
// a range, or every node when any is set, may send any inner source.
func tunnelPeers(v view, ignoreRanges bool) []nft.TunnelPeer {
	var peers []nft.TunnelPeer
	for _, n := range v.nodes {
		ip, err := internalIP(n)
		if err != nil {
			continue
		}
		p := nft.TunnelPeer{Addr: ip}
		if !ignoreRanges {
			p.Sources = podRanges(n)
		}
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b nft.TunnelPeer) int { return a.Addr.Compare(b.Addr) })
	return peers
}

// returnNodes are the nodes other than self with an IPv4 InternalIP and
// IPv4 pod ranges, sorted: a gateway returns replies to their pods
// through the tunnel. A node is left out when the main table routes each
// of its ranges over the underlay to its own address (ptp with
// kindnet-style routes, flannel host-gw, kube-router): replies then
// arrive on its uplink, where a strict reverse-path check accepts them,
// without the tunnel's cost. Any other route (an overlay device, the
// default route, none) keeps the return, which works on any primary.
func returnNodes(v view, self string, underlay map[netip.Prefix]netip.Addr) []datapath.Return {
	var out []datapath.Return
	for _, n := range v.nodes {
		if n.Name == self {
			continue
		}
		ip, err := internalIP(n)
		if err != nil {
			continue
		}
		r := podRanges(n)
		direct := len(r) > 0
		for _, p := range r {
			direct = direct && underlay[p] == ip
		}
		if len(r) > 0 && !direct {
			out = append(out, datapath.Return{Node: ip, Ranges: r})
		}
	}
	slices.SortFunc(out, func(a, b datapath.Return) int { return a.Node.Compare(b.Node) })
	return out
}

// podRanges are a node's IPv4 spec.podCIDRs, masked.
func podRanges(n *corev1.Node) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range n.Spec.PodCIDRs {
		if r, err := netip.ParsePrefix(c); err == nil && r.Addr().Is4() {
			out = append(out, r.Masked())
		}
	}
	return out
}

// allowReplies lets each gateway that this node tunnels a policy's
// traffic to send, as inner sources, the policy's destinations: the
// replies it returns through the tunnel. So may the standby of the
// gateway (standby maps a gateway's address to its standby's): when it
// takes the IP over, the replies of flows it inherited arrive before
// this node has re-pointed its tunnel. A peer with no ranges may send
// any source already.
func allowReplies(peers []nft.TunnelPeer, tunnels []datapath.Tunnel, standby map[netip.Addr]netip.Addr) {
	for _, t := range tunnels {
		if t.Mode != nft.ModeTunnel {
			continue
		}
		for i := range peers {
			if (peers[i].Addr == t.Gateway || peers[i].Addr == standby[t.Gateway]) && len(peers[i].Sources) > 0 {
				peers[i].Sources = append(peers[i].Sources, t.Destinations...)
			}
		}
	}
}

// handover is, of the floating IPs that moved moments ago, those this
// node took over that it passes stateless TCP on for, to the address of
// the node it took each from, and those it let go and still drains.
func handover(f facts, held []netip.Addr) (map[netip.Addr]netip.Addr, []netip.Addr) {
	var passOn map[netip.Addr]netip.Addr
	for ip, to := range f.passOn {
		if !slices.Contains(held, ip) || !to.Is4() || to == ip {
			continue
		}
		if passOn == nil {
			passOn = map[netip.Addr]netip.Addr{}
		}
		passOn[ip] = to
	}
	var released []netip.Addr
	for ip := range f.draining {
		if !slices.Contains(held, ip) && ip.Is4() {
			released = append(released, ip)
		}
	}
	slices.SortFunc(released, netip.Addr.Compare)
	return passOn, released
}

// standbys maps the address of each floating IP's holder to that of the
// IP's standby, where both are known.
func standbys(v view, holders map[netip.Addr]ha.Holder) map[netip.Addr]netip.Addr {
	out := map[netip.Addr]netip.Addr{}
	for _, g := range v.groups {
		for s, a := range g.Status.Assignments {
			ip, err := netip.ParseAddr(s)
			if err != nil || a.Standby == "" {
				continue
			}
			holder := a.Active
			if h, ok := holders[ip]; ok {
				holder = h.Node
			}
			from, err1 := v.nodeIP(holder)
			to, err2 := v.nodeIP(a.Standby)
			if err1 == nil && err2 == nil && from != to {
				out[from] = to
			}
		}
	}
	return out
}

// mode decides how the node called self handles a policy's traffic, and
// for ModeTunnel the gateway's underlay address.
func mode(v view, p *v1alpha1.EgressNATPolicy, self string, holders map[netip.Addr]ha.Holder) (nft.Mode, netip.Addr) {
	fail := nft.ModeDrop
	if p.Spec.FailMode == v1alpha1.FailModeOpen {
		fail = nft.ModePass
	}
	gw := p.Status.GatewayNode
	egress, err := netip.ParseAddr(p.Status.EgressIP)
	if err != nil {
		return fail, netip.Addr{}
	}
	if h, ok := holders[egress]; ok {
		gw = h.Node // a takeover the API has not caught up with, or a fence
	}
	if gw == "" {
		return fail, netip.Addr{}
	}
	if gw == self {
		return nft.ModeLocal, netip.Addr{}
	}
	ip, err := v.nodeIP(gw)
	if err != nil {
		return fail, netip.Addr{}
	}
	return nft.ModeTunnel, ip
}

// destinations are a policy's IPv4 destinations, masked.
func destinations(p *v1alpha1.EgressNATPolicy) []netip.Prefix {
	var out []netip.Prefix
	for _, d := range p.Spec.Destinations {
		if pf, err := netip.ParsePrefix(d.CIDR); err == nil && pf.Addr().Is4() {
			out = append(out, pf.Masked())
		}
	}
	return out
}

// floatingIPs are the floating IPs the groups give the node called self,
// and those it must not hold: every other floating IP of any group, and
// whatever it held before and no group gives it now (also when the group
// no longer lists the IP). A node's own address is neither held nor
// released, whatever a group says: holding it would take that node's
// traffic, and releasing it would take this node's address away.
func floatingIPs(v view, self string, heldBefore []netip.Addr, holders map[netip.Addr]ha.Holder) (hold, release []netip.Addr) {
	nodeAddr := map[netip.Addr]bool{}
	for _, n := range v.nodes {
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				nodeAddr[ip] = true
			}
		}
	}
	for _, ip := range heldBefore {
		if !nodeAddr[ip] {
			release = append(release, ip)
		}
	}
	for _, g := range v.groups {
		for _, s := range g.Spec.FloatingIPs {
			ip, err := netip.ParseAddr(s)
			if err != nil || nodeAddr[ip] {
				continue // the CRD's validation and the controller keep these out
			}
			holder := g.Status.FloatingIPs[s]
			if h, ok := holders[ip]; ok {
				holder = h.Node
			}
			if holder == self {
				hold = append(hold, ip)
			} else {
				release = append(release, ip)
			}
		}
	}
	return hold, release
}

// desiredPods is the pods map the node should have: each recorded pod on
// the policy that governs it now.
func desiredPods(v view, recs []nodestate.PodRecord, current map[nft.PodKey]uint16, policies []nft.Policy, ifaces map[string]bool) map[nft.PodKey]uint16 {
	ids := map[uint16]bool{}
	for _, p := range policies {
		ids[p.ID] = true
	}
	pods := map[nft.PodKey]uint16{}
	for _, rec := range recs {
		k := nft.PodKey{IP: rec.IP, HostIf: rec.HostIf}
		if k.Validate(datapath.DevicePrefix) != nil {
			// A record ADD wrote for a pod no policy selected, whose
			// host interface it could not find: it cannot be keyed, and
			// must not keep every other pod of the node from being
			// programmed. The pod joins a policy when it restarts.
			continue
		}
		id, ok := podPolicy(v, rec)
		if !ok {
			// Labels not seen (a new pod, or a watch that is broken,
			// however long): keep what ADD programmed while the pod's
			// own interface exists. A pod whose DEL was lost (a node
			// crash, a runtime that forgot it) has lost its interface
			// with its network namespace.
			if cur, has := current[k]; has && ids[cur] && podInterfaceExists(rec, ifaces) {
				pods[k] = cur
			}
			continue
		}
		if id != 0 && ids[id] {
			pods[k] = id
		}
	}
	return pods
}

// podInterfaceExists says whether a recorded pod's own interface is still
// on the node: its bridge port when it sits on a bridge (the bridge itself
// outlives its pods), else its host interface. Unknown interfaces (nil)
// count as present.
func podInterfaceExists(rec nodestate.PodRecord, ifaces map[string]bool) bool {
	if ifaces == nil {
		return true
	}
	if rec.Port != "" {
		return ifaces[rec.Port]
	}
	return ifaces[rec.HostIf]
}

// podPolicy is the tunnel ID of the policy that governs a recorded pod
// now (0 for none); ok is false when the pod's labels are not known yet.
func podPolicy(v view, rec nodestate.PodRecord) (id uint16, ok bool) {
	labels, ok := v.pods[rec.Namespace+"/"+rec.Name]
	if !ok {
		return 0, false
	}
	nsLabels, ok := v.nss[rec.Namespace]
	if !ok {
		return 0, false
	}
	p, err := v1alpha1.SelectPolicy(v.policies, nsLabels, nodestate.KnownLabels(labels))
	if err != nil || p == nil {
		// With the pod's labels known SelectPolicy cannot need them: an
		// error here means no policy can be decided, which is none.
		return 0, true
	}
	id, _ = p.AssignedTunnelID() // 0 when none is assigned yet
	return id, true
}

// guards are the bridge ports of the steered pods on bridges: their
// addresses may enter the bridge only there.
func guards(recs []nodestate.PodRecord, pods map[nft.PodKey]uint16) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for _, rec := range recs {
		if rec.Port != "" && pods[nft.PodKey{IP: rec.IP, HostIf: rec.HostIf}] != 0 {
			out[rec.IP] = rec.Port
		}
	}
	return out
}

// movedRecords are the records whose policy differs from what the pods
// map gives them, rewritten to match it.
func movedRecords(v view, recs []nodestate.PodRecord, pods map[nft.PodKey]uint16) []nodestate.PodRecord {
	names := map[uint16]string{}
	for i := range v.policies {
		if id, ok := v.policies[i].AssignedTunnelID(); ok {
			names[id] = v.policies[i].Name
		}
	}
	var out []nodestate.PodRecord
	for _, rec := range recs {
		id := pods[nft.PodKey{IP: rec.IP, HostIf: rec.HostIf}]
		if id == rec.TunnelID {
			continue
		}
		rec.TunnelID, rec.Policy = id, names[id]
		out = append(out, rec)
	}
	return out
}
