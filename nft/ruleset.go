package nft

import (
	"cmp"
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Names of the objects in the table.
const (
	setSources        = "sources"
	setHeld           = "held"
	setReturns        = "returns"
	mapPods           = "pods"
	chainPrerouting   = "prerouting"
	chainForward      = "forward"
	chainPostNAT      = "postrouting_nat"
	chainPostrouting  = "postrouting"
	chainInput        = "input"
	chainOutput       = "output"
	policyChainPrefix = "pol_"
	dstSetPrefix      = "dst_"
)

// policyChain names the regular chain that policy id's pods jump to.
func policyChain(id uint16) string {
	return policyChainPrefix + strconv.Itoa(int(id))
}

// dstSet names the interval set of policy id's destinations.
func dstSet(id uint16) string {
	return dstSetPrefix + strconv.Itoa(int(id))
}

// parsePolicyChain returns the policy ID a chain name belongs to.
func parsePolicyChain(name string) (uint16, bool) {
	s, ok := strings.CutPrefix(name, policyChainPrefix)
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(s, 10, 16)
	if err != nil || validatePolicyID(uint16(id)) != nil || policyChain(uint16(id)) != name {
		return 0, false
	}
	return uint16(id), true
}

// chainSpec is one chain of the desired table with its rules.
type chainSpec struct {
	name  string
	hook  *nftables.ChainHook // nil for a regular chain
	prio  *nftables.ChainPriority
	ctype nftables.ChainType
	rules [][]expr.Any
}

// setSpec is one set or map of the desired table. Elements of a set
// whose content is owned by Apply are replaced as a whole; the pods map
// is diffed instead (see desired.pods).
type setSpec struct {
	set   nftables.Set
	elems []nftables.SetElement
}

// desired is the whole table a State asks for, as plain data.
type desired struct {
	sets   []setSpec // in creation order; excludes the pods map
	chains []chainSpec
	pods   map[PodKey]string // pod -> name of the chain its element jumps to
	guards map[netip.Addr]string
}

// Priorities of the base chains.
var (
	// prioAfterDNAT runs after conntrack (-200), so ct marks are
	// available, and after destination NAT (-100), so that a pod's packet
	// to a Service (kube-proxy's DNAT) is judged by the endpoint it goes
	// to: traffic to a destination reached through a ClusterIP or
	// NodePort is marked like traffic to its address (docs/design.md §5,
	// no bypass). It is still before routing, where the mark chooses the
	// policy's table.
	prioAfterDNAT = nftables.ChainPriorityRef(*nftables.ChainPriorityNATDest + 10)
	prioFilter    = nftables.ChainPriorityFilter
	// prioSNAT runs before the primary CNI's masquerade (srcnat), so the
	// source NAT nsegress binds is the one that counts (docs/design.md §7).
	prioSNAT = nftables.ChainPriorityRef(*nftables.ChainPriorityNATSource - 10)
	// prioAfterNAT clears the mark only after every NAT chain has seen it.
	prioAfterNAT = nftables.ChainPriorityRef(300)
)

// build computes the table for a validated State.
func build(s State) desired {
	pols := slices.Clone(s.Policies)
	slices.SortFunc(pols, func(a, b Policy) int { return cmp.Compare(a.ID, b.ID) })
	d := desired{pods: make(map[PodKey]string, len(s.Pods)), guards: s.Guards}
	d.sets = append(d.sets, setSpec{set: sourcesSet(), elems: sourceElems(s.TunnelPeers)})
	d.sets = append(d.sets, setSpec{set: heldSet(), elems: addrElems(s.HeldIPs)})
	d.sets = append(d.sets, setSpec{set: nftables.Set{Name: setReturns, KeyType: nftables.TypeIPAddr, Interval: true},
		elems: intervalElems(s.ReturnRanges)})
	for _, p := range pols {
		d.sets = append(d.sets, setSpec{set: destSet(p.ID), elems: intervalElems(p.Destinations)})
	}
	for _, p := range pols {
		d.chains = append(d.chains, chainSpec{name: policyChain(p.ID), rules: policyRules(s.marks(), p)})
	}
	d.chains = append(d.chains, baseChains(s, pols)...)
	for k, id := range s.Pods {
		d.pods[k] = policyChain(id)
	}
	return d
}

// baseChains returns the hooked chains for the sorted policies pols.
func baseChains(s State, pols []Policy) []chainSpec {
	return []chainSpec{
		{name: chainPrerouting, hook: nftables.ChainHookPrerouting, prio: prioAfterDNAT,
			ctype: nftables.ChainTypeFilter, rules: slices.Concat(handoverRules(s.PassOn, s.Released),
				preroutingRules(s.marks(), pols, s.DevicePrefix))},
		{name: chainForward, hook: nftables.ChainHookForward, prio: prioFilter,
			ctype: nftables.ChainTypeFilter, rules: forwardRules(s.marks(), pols, s.MSS, s.TunnelPort)},
		{name: chainPostNAT, hook: nftables.ChainHookPostrouting, prio: prioSNAT,
			ctype: nftables.ChainTypeNAT, rules: snatRules(s.marks(), pols)},
		{name: chainPostrouting, hook: nftables.ChainHookPostrouting, prio: prioAfterNAT,
			ctype: nftables.ChainTypeFilter, rules: [][]expr.Any{clearMarkRule(s.marks(), s.DevicePrefix)}},
		{name: chainInput, hook: nftables.ChainHookInput, prio: prioFilter,
			ctype: nftables.ChainTypeFilter, rules: [][]expr.Any{
				tunnelIfaceRule(s.TunnelPort, s.Uplink), tunnelInnerIPv4Rule(s.TunnelPort), tunnelSourceRule(s.TunnelPort),
				heldTCPRule()}},
		{name: chainOutput, hook: nftables.ChainHookOutput, prio: prioFilter,
			ctype: nftables.ChainTypeFilter, rules: [][]expr.Any{tunnelUnprivilegedRule(s.TunnelPort), heldUnprivilegedRule()}},
	}
}

// heldSet is the set of floating IPs the node holds.
func heldSet() nftables.Set {
	return nftables.Set{Name: setHeld, KeyType: nftables.TypeIPAddr}
}

// sourcesSet is the set of (outer source, inner source range) pairs
// allowed to arrive on the tunnel port: each node with its pods' range.
func sourcesSet() nftables.Set {
	return nftables.Set{Name: setSources, KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr),
		Concatenation: true, Interval: true}
}

// sourceElems are the elements of the sources set: one per peer and
// merged source range, the whole address space for a peer without one.
// Peers of one address (a replaced node whose old Node object lingers)
// are merged, so that the set does not depend on their order.
func sourceElems(peers []TunnelPeer) []nftables.SetElement {
	ranges := map[netip.Addr][]netip.Prefix{}
	anySource := map[netip.Addr]bool{}
	for _, p := range peers {
		ranges[p.Addr] = append(ranges[p.Addr], p.Sources...)
		anySource[p.Addr] = anySource[p.Addr] || len(p.Sources) == 0
	}
	addrs := slices.Collect(maps.Keys(ranges))
	slices.SortFunc(addrs, netip.Addr.Compare)
	var elems []nftables.SetElement
	for _, a := range addrs {
		rs := mergeRanges(ranges[a])
		if anySource[a] {
			rs = []addrRange{{0, ^uint32(0)}}
		}
		node := a.AsSlice()
		for _, r := range rs {
			elems = append(elems, nftables.SetElement{
				Key:    slices.Concat(node, be32(r.start)),
				KeyEnd: slices.Concat(node, be32(r.end)),
			})
		}
	}
	return elems
}

// destSet is policy id's destination set.
func destSet(id uint16) nftables.Set {
	return nftables.Set{Name: dstSet(id), KeyType: nftables.TypeIPAddr, Interval: true}
}

// podsMap is the verdict map from (pod address, host interface) to a jump
// into the pod's policy chain.
func podsMap() nftables.Set {
	return nftables.Set{
		Name:          mapPods,
		KeyType:       nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIFName),
		DataType:      nftables.TypeVerdict,
		IsMap:         true,
		Concatenation: true,
	}
}

// addrElems returns the elements of a plain address set, without
// duplicates.
func addrElems(addrs []netip.Addr) []nftables.SetElement {
	sorted := slices.Clone(addrs)
	slices.SortFunc(sorted, netip.Addr.Compare)
	sorted = slices.Compact(sorted)
	elems := make([]nftables.SetElement, 0, len(sorted))
	for _, a := range sorted {
		elems = append(elems, nftables.SetElement{Key: a.AsSlice()})
	}
	return elems
}

// addrRange is the address range [start, end]; both ends included.
type addrRange struct{ start, end uint32 }

// mergeRanges returns the prefixes as sorted ranges with overlapping and
// adjacent ones merged: the kernel's interval sets refuse overlaps.
func mergeRanges(prefixes []netip.Prefix) []addrRange {
	rs := make([]addrRange, 0, len(prefixes))
	for _, p := range prefixes {
		p = p.Masked()
		start := binary.BigEndian.Uint32(p.Addr().AsSlice())
		size := uint64(1) << (32 - p.Bits())
		rs = append(rs, addrRange{start, uint32(uint64(start) + size - 1)})
	}
	slices.SortFunc(rs, func(a, b addrRange) int { return cmp.Compare(a.start, b.start) })
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 && uint64(r.start) <= uint64(out[n-1].end)+1 {
			out[n-1].end = max(out[n-1].end, r.end)
			continue
		}
		out = append(out, r)
	}
	return out
}

// intervalElems encodes prefixes the way nft does for an interval set: a
// leading interval end at 0.0.0.0 unless a range starts there, then for
// each range its start and, unless it reaches 255.255.255.255, the
// address after its end flagged as interval end.
func intervalElems(prefixes []netip.Prefix) []nftables.SetElement {
	rs := mergeRanges(prefixes)
	var elems []nftables.SetElement
	if len(rs) > 0 && rs[0].start != 0 {
		elems = append(elems, nftables.SetElement{Key: be32(0), IntervalEnd: true})
	}
	for _, r := range rs {
		elems = append(elems, nftables.SetElement{Key: be32(r.start)})
		if r.end != ^uint32(0) {
			elems = append(elems, nftables.SetElement{Key: be32(r.end + 1), IntervalEnd: true})
		}
	}
	return elems
}

// podKeyBytes encodes k as the pods map key: 4 address bytes, then the
// interface name padded with NULs to IFNAMSIZ.
func podKeyBytes(k PodKey) []byte {
	b := make([]byte, 4+ifNameSize)
	copy(b, k.IP.AsSlice())
	copy(b[4:], k.HostIf)
	return b
}

// parsePodKey decodes a pods map key.
func parsePodKey(b []byte) (PodKey, bool) {
	if len(b) != 4+ifNameSize {
		return PodKey{}, false
	}
	name, _, _ := strings.Cut(string(b[4:]), "\x00")
	return PodKey{IP: netip.AddrFrom4([4]byte(b[:4])), HostIf: name}, true
}

// podElement is the pods map element that sends k to chain.
func podElement(k PodKey, chain string) nftables.SetElement {
	return nftables.SetElement{
		Key:         podKeyBytes(k),
		VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain},
	}
}

// podKeyElement is the key-only element used to delete k.
func podKeyElement(k PodKey) nftables.SetElement {
	return nftables.SetElement{Key: podKeyBytes(k)}
}
