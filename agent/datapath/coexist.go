package datapath

import (
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nsegress/nsegress/nft"
)

// kubeProxyMarks are the mark bits kube-proxy's iptables mode uses
// (KUBE-MARK-MASQ 0x4000, KUBE-MARK-DROP 0x8000): nsegress's bits must
// not include them whatever the node shows.
const kubeProxyMarks = 0x0000c000

// CheckNode checks the settings and the VXLAN port against what the node
// already uses, before the agent programs anything: another ip rule at
// nsegress's priorities, in its tables or matching its mark bits, a route
// of another owner in its tables, or another VXLAN device on its port.
// The error names each conflict and the setting that avoids it.
func CheckNode(s Settings, port uint16) error {
	if err := s.Validate(); err != nil {
		return err
	}
	rules, err := ruleList()
	if err != nil {
		return err
	}
	links, err := linkList()
	if err != nil {
		return err
	}
	routes, err := routeList("list routes", &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return err
	}
	if c := conflicts(s, port, rules, links, routes); len(c) > 0 {
		return fmt.Errorf("nsegress's settings collide with what the node uses:\n  %s", strings.Join(c, "\n  "))
	}
	return nil
}

// conflicts lists, one line each, what of the node's rules, links and
// routes collides with settings s and the VXLAN port.
func conflicts(s Settings, port uint16, rules []netlink.Rule, links []netlink.Link, routes []netlink.Route) []string {
	s = s.withDefaults()
	mask := s.Marks.Mask()
	var out []string
	if mask&kubeProxyMarks != 0 {
		out = append(out, fmt.Sprintf("mark bits %#08x include kube-proxy's 0x4000/0x8000: set mark-bits", mask))
	}
	devices := map[int]string{}
	for _, l := range links {
		devices[l.Attrs().Index] = l.Attrs().Name
		vx, ok := l.(*netlink.Vxlan)
		if ok && vx.Port == int(port) && !strings.HasPrefix(l.Attrs().Name, DevicePrefix) {
			out = append(out, fmt.Sprintf("VXLAN device %s uses UDP port %d: set vxlan-port", l.Attrs().Name, port))
		}
	}
	for _, r := range rules {
		if isOurRule(s, r) {
			continue
		}
		desc := fmt.Sprintf("ip rule %d (table %d, fwmark %#x/%#x, iif %q)", r.Priority, r.Table, r.Mark, markMask(r), r.IifName)
		switch {
		case r.Priority == s.RulePriority || r.Priority == s.returnPriority():
			out = append(out, fmt.Sprintf("%s sits at nsegress's rule priority %d/%d: set rule-priority", desc, s.RulePriority, s.returnPriority()))
		case s.ownsTable(r.Table):
			out = append(out, fmt.Sprintf("%s looks up a table of nsegress's range %d..%d: set table-base", desc, s.TableBase+1, s.TableBase+nft.MaxPolicyID))
		case r.Mark != 0 && markMask(r)&mask != 0:
			out = append(out, fmt.Sprintf("%s matches nsegress's mark bits %#08x: set mark-bits", desc, mask))
		}
	}
	seen := map[int]bool{}
	for _, r := range routes {
		if !s.ownsTable(r.Table) || seen[r.Table] {
			continue
		}
		name := devices[r.LinkIndex]
		if r.LinkIndex == 0 || strings.HasPrefix(name, DevicePrefix) {
			continue // nsegress's own: throw routes, routes into nsg<ID>
		}
		seen[r.Table] = true
		out = append(out, fmt.Sprintf("routing table %d, in nsegress's range, routes %s via %s: set table-base", r.Table, r.Dst, name))
	}
	return out
}

// isOurRule tells nsegress's own rules, as Apply makes them, from others.
func isOurRule(s Settings, r netlink.Rule) bool {
	switch r.Priority {
	case s.RulePriority:
		return s.ownsTable(r.Table) && r.Mask != nil && *r.Mask == s.Marks.Mask()
	case s.returnPriority():
		return strings.HasPrefix(r.IifName, DevicePrefix) && r.Table == unix.RT_TABLE_MAIN
	}
	return false
}

// markMask is the mask a rule's fwmark is compared under (all bits when
// the rule names none).
func markMask(r netlink.Rule) uint32 {
	if r.Mask == nil {
		return ^uint32(0)
	}
	return *r.Mask
}
