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
func syncRoutes(s Settings, link netlink.Link, t Tunnel) error {
	table := s.table(t.ID)
	want := []netlink.Route{{
		LinkIndex: link.Attrs().Index, Table: table, Dst: defaultRoute(), Type: unix.RTN_UNICAST,
		Gw: net.IP(Nexthop.AsSlice()), Flags: int(netlink.FLAG_ONLINK),
	}}
	if t.Mode == nft.ModeLocal {
		for _, d := range t.Destinations {
			want = append(want, netlink.Route{Table: table, Dst: prefixNet(d), Type: unix.RTN_THROW})
		}
		for _, r := range t.Returns {
			for _, p := range r.Ranges {
				want = append(want, netlink.Route{LinkIndex: link.Attrs().Index, Table: table, Dst: prefixNet(p.Masked()),
					Type: unix.RTN_UNICAST, Gw: net.IP(r.Node.AsSlice()), Flags: int(netlink.FLAG_ONLINK)})
			}
		}
	}
	for i := range want {
		if err := netlink.RouteReplace(&want[i]); err != nil {
			return fmt.Errorf("table %d: route %s: %w", table, want[i].Dst, err)
		}
	}
	have, err := tableRoutes(table)
	if err != nil {
		return err
	}
	for _, r := range have {
		if !slices.ContainsFunc(want, func(w netlink.Route) bool { return sameRoute(r, w) }) {
			// ESRCH: the route is gone already.
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("table %d: remove %s: %w", table, r, err)
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

// syncRule keeps "fwmark Mark(ID)/mask lookup table" for tunnel and
// local modes and removes it otherwise; rules are nsegress's rules as
// listed before. The wanted rule is added, when missing, before any other
// rule to the table (a duplicate, a wrong mark) is removed, so that the
// table never stops being selected.
func syncRule(s Settings, t Tunnel, rules []netlink.Rule) error {
	table := s.table(t.ID)
	want := t.Mode == nft.ModeTunnel || t.Mode == nft.ModeLocal
	var keep *netlink.Rule
	if want {
		for i, r := range rules {
			if r.Table == table && r.Mark == s.Marks.Mark(t.ID) && r.Mask != nil && *r.Mask == s.Marks.Mask() {
				keep = &rules[i]
				break
			}
		}
		if keep == nil {
			if err := addRule(s, t); err != nil {
				return err
			}
		}
	}
	for i, r := range rules {
		if r.Table != table || &rules[i] == keep {
			continue
		}
		// ENOENT: the rule is gone already.
		if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("remove rule to table %d: %w", table, err)
		}
	}
	return nil
}

// addRule adds the tunnel's rule: "fwmark Mark(ID)/mask lookup table" at
// the rule priority.
func addRule(s Settings, t Tunnel) error {
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority = s.RulePriority
	r.Mark = s.Marks.Mark(t.ID)
	mask := s.Marks.Mask()
	r.Mask = &mask
	r.Table = s.table(t.ID)
	if err := netlink.RuleAdd(r); err != nil {
		return fmt.Errorf("rule fwmark %#x/%#x lookup %d: %w", r.Mark, mask, r.Table, err)
	}
	return nil
}

// syncReturnRule keeps "iif <device> lookup main" at the return rules'
// priority in tunnel mode, where replies come back out of the tunnel, and
// removes it otherwise; rules are nsegress's rules as listed before. The
// gateway (local mode) has none: tunnel traffic there must be forwarded
// by the policy's table, which forwards only the policy's destinations
// (throw routes to main) and nothing else.
func syncReturnRule(s Settings, t Tunnel, rules []netlink.Rule) error {
	want := t.Mode == nft.ModeTunnel
	found := false
	for _, r := range rules {
		if r.Priority != s.returnPriority() || r.IifName != t.Device() {
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
	r.Priority = s.returnPriority()
	r.IifName = t.Device()
	r.Table = unix.RT_TABLE_MAIN
	if err := netlink.RuleAdd(r); err != nil {
		return fmt.Errorf("rule iif %s lookup main: %w", t.Device(), err)
	}
	return nil
}

// ourRules lists the IPv4 rules at nsegress's priorities.
func ourRules(s Settings) ([]netlink.Rule, error) {
	rules, err := ruleList()
	if err != nil {
		return nil, err
	}
	var out []netlink.Rule
	for _, r := range rules {
		if r.Priority == s.RulePriority || r.Priority == s.returnPriority() {
			out = append(out, r)
		}
	}
	return out, nil
}
