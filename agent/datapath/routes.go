package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nsegress/nsegress/nft"
)

// syncRoutes gives the policy's table its route into the tunnel and, on
// the gateway, throw routes for the destinations and a route into the
// tunnel for each return node's pod ranges, by way of that node.
//
// The wanted routes are put in place first and the unwanted ones removed
// after, from a listing taken after the replace: the table never lacks a
// wanted route, and a route the replace rewrote in place is not listed
// twice. A route that is already as wanted is left alone (no event).
func syncRoutes(link netlink.Link, t Tunnel) error {
	want := []netlink.Route{{
		LinkIndex: link.Attrs().Index, Table: t.Table(), Dst: defaultRoute(), Type: unix.RTN_UNICAST,
		Gw: net.IP(Nexthop.AsSlice()), Flags: int(netlink.FLAG_ONLINK),
	}}
	if t.Mode == nft.ModeLocal {
		for _, d := range t.Destinations {
			want = append(want, netlink.Route{Table: t.Table(), Dst: prefixNet(d), Type: unix.RTN_THROW})
		}
		for _, r := range t.Returns {
			for _, p := range r.Ranges {
				want = append(want, netlink.Route{LinkIndex: link.Attrs().Index, Table: t.Table(), Dst: prefixNet(p.Masked()),
					Type: unix.RTN_UNICAST, Gw: net.IP(r.Node.AsSlice()), Flags: int(netlink.FLAG_ONLINK)})
			}
		}
	}
	for i := range want {
		if err := netlink.RouteReplace(&want[i]); err != nil {
			return fmt.Errorf("table %d: route %s: %w", t.Table(), want[i].Dst, err)
		}
	}
	have, err := tableRoutes(t.Table())
	if err != nil {
		return err
	}
	for _, r := range have {
		if !slices.ContainsFunc(want, func(w netlink.Route) bool { return sameRoute(r, w) }) {
			// ESRCH: the route is gone already.
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("table %d: remove %s: %w", t.Table(), r, err)
			}
		}
	}
	return nil
}

// sameRoute compares what nsegress sets; a listed route's type 0 and
// RTN_UNICAST are the same thing.
func sameRoute(a, b netlink.Route) bool {
	typ := func(t int) int {
		if t == 0 {
			return unix.RTN_UNICAST
		}
		return t
	}
	return a.Dst.String() == b.Dst.String() && typ(a.Type) == typ(b.Type) && a.Gw.Equal(b.Gw) && a.LinkIndex == b.LinkIndex
}

func defaultRoute() *net.IPNet { return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)} }

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}

// tableRoutes lists the IPv4 routes of one table.
func tableRoutes(table int) ([]netlink.Route, error) {
	rs, err := routeList(fmt.Sprintf("list table %d", table), &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	for i := range rs {
		if rs[i].Dst == nil {
			rs[i].Dst = defaultRoute()
		}
	}
	return rs, nil
}

// syncRule keeps "fwmark Mark(ID)/MarkMask lookup table" for tunnel and
// local modes and removes it otherwise; rules are nsegress's rules as
// listed before. The wanted rule is added, when missing, before any other
// rule to the table (a duplicate, a wrong mark) is removed, so that the
// table never stops being selected.
func syncRule(t Tunnel, rules []netlink.Rule) error {
	want := t.Mode == nft.ModeTunnel || t.Mode == nft.ModeLocal
	var keep *netlink.Rule
	if want {
		for i, r := range rules {
			if r.Table == t.Table() && r.Mark == nft.Mark(t.ID) && r.Mask != nil && *r.Mask == nft.MarkMask {
				keep = &rules[i]
				break
			}
		}
		if keep == nil {
			if err := addRule(t); err != nil {
				return err
			}
		}
	}
	for i, r := range rules {
		if r.Table != t.Table() || &rules[i] == keep {
			continue
		}
		// ENOENT: the rule is gone already.
		if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("remove rule to table %d: %w", t.Table(), err)
		}
	}
	return nil
}

// addRule adds the tunnel's rule: "fwmark Mark(ID)/MarkMask lookup
// table" at RulePriority.
func addRule(t Tunnel) error {
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority = RulePriority
	r.Mark = nft.Mark(t.ID)
	mask := nft.MarkMask
	r.Mask = &mask
	r.Table = t.Table()
	if err := netlink.RuleAdd(r); err != nil {
		return fmt.Errorf("rule fwmark %#x/%#x lookup %d: %w", r.Mark, mask, r.Table, err)
	}
	return nil
}

// syncReturnRule keeps "iif <device> lookup main" at ReturnRulePriority
// for tunnel and local modes and removes it otherwise; rules are
// nsegress's rules as listed before.
func syncReturnRule(t Tunnel, rules []netlink.Rule) error {
	want := t.Mode == nft.ModeTunnel || t.Mode == nft.ModeLocal
	found := false
	for _, r := range rules {
		if r.Priority != ReturnRulePriority || r.IifName != t.Device() {
			continue
		}
		if want && !found && r.Table == unix.RT_TABLE_MAIN && r.Mark == 0 {
			found = true
			continue
		}
		// ENOENT: the rule is gone already.
		if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("remove rule iif %s: %w", t.Device(), err)
		}
	}
	if !want || found {
		return nil
	}
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority = ReturnRulePriority
	r.IifName = t.Device()
	r.Table = unix.RT_TABLE_MAIN
	if err := netlink.RuleAdd(r); err != nil {
		return fmt.Errorf("rule iif %s lookup main: %w", t.Device(), err)
	}
	return nil
}

// ourRules lists the IPv4 rules at nsegress's priorities.
func ourRules() ([]netlink.Rule, error) {
	rules, err := ruleList()
	if err != nil {
		return nil, err
	}
	var out []netlink.Rule
	for _, r := range rules {
		if r.Priority == RulePriority || r.Priority == ReturnRulePriority {
			out = append(out, r)
		}
	}
	return out, nil
}

// ownedTable says whether a routing table is a policy's: TableBase + a
// tunnel ID of 1..nft.MaxPolicyID.
func ownedTable(t int) bool { return t > TableBase && t <= TableBase+nft.MaxPolicyID }
