package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nsegress/nsegress/nft"
)

// Apply makes the node's links, routes, rules and floating addresses what
// p says, and removes nsegress's objects that p does not name. It returns
// the floating IPs it newly added, which the caller announces.
func Apply(p Plan) (added []netip.Addr, err error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	p.Settings = p.Settings.withDefaults()
	uplink, err := netlink.LinkByName(p.Uplink)
	if err != nil {
		return nil, fmt.Errorf("uplink %s: %w", p.Uplink, err)
	}
	// The rules at nsegress's priorities, listed once: each tunnel's rules
	// and the stale ones are told apart by their table or input device.
	rules, err := ourRules(p.Settings)
	if err != nil {
		return nil, err
	}
	keep := map[uint16]bool{}
	for _, t := range p.Tunnels {
		keep[t.ID] = true
		if err := ensureTunnel(p, uplink, t, rules); err != nil {
			return nil, fmt.Errorf("policy tunnel %d: %w", t.ID, err)
		}
	}
	if err := removeStale(p.Settings, keep, rules); err != nil {
		return nil, err
	}
	return syncFloating(uplink, p.FloatingIPs, p.ReleasedIPs)
}

// ensureTunnel creates or corrects one policy's device, table and rule.
func ensureTunnel(p Plan, uplink netlink.Link, t Tunnel, rules []netlink.Rule) error {
	link, err := ensureDevice(p, uplink, t)
	if err != nil {
		return err
	}
	if err := setSrcValidMark(link.Attrs().Index); err != nil {
		return err
	}
	if err := syncRoutes(p.Settings, link, t); err != nil {
		return err
	}
	switch t.Mode {
	case nft.ModeTunnel:
		err = pointAtGateway(link, t.Gateway)
	case nft.ModeLocal:
		err = pointAtNodes(link, t.Returns)
	default:
		err = forgetGateway(link)
	}
	if err != nil {
		return err
	}
	if err := syncRule(p.Settings, t, rules); err != nil {
		return err
	}
	return syncReturnRule(p.Settings, t, rules)
}

// removeStale deletes the devices, rules and tables of policies the node
// no longer has: all but the tunnel IDs in keep.
func removeStale(s Settings, keep map[uint16]bool, rules []netlink.Rule) error {
	devices := map[string]bool{}
	for id := range keep {
		devices[DeviceName(id)] = true
	}
	links, err := linkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		name := l.Attrs().Name
		if _, ok := l.(*netlink.Vxlan); ok && strings.HasPrefix(name, DevicePrefix) && !devices[name] {
			if err := netlink.LinkDel(l); err != nil {
				return fmt.Errorf("remove %s: %w", name, err)
			}
		}
	}
	keepTable := func(t int) bool { return s.ownsTable(t) && keep[uint16(t-s.TableBase)] }
	for _, r := range rules {
		if r.Priority == s.returnPriority() {
			// Only nsegress's own return rules: another component's
			// rule at this priority is not ours to remove.
			if isOurRule(s, r) && !devices[r.IifName] {
				// ENOENT: the rule is gone already.
				if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, syscall.ENOENT) {
					return fmt.Errorf("remove rule iif %s: %w", r.IifName, err)
				}
			}
			continue
		}
		if s.ownsTable(r.Table) && !keepTable(r.Table) {
			// ENOENT: the rule is gone already, which is what we want.
			if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("remove rule to table %d: %w", r.Table, err)
			}
		}
	}
	all, err := routeList("list routes", &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return err
	}
	for _, r := range all {
		if s.ownsTable(r.Table) && !keepTable(r.Table) {
			// ESRCH: the route is gone already (with its device).
			if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("remove route in table %d: %w", r.Table, err)
			}
		}
	}
	return nil
}

// Remove deletes every nsegress device, rule and policy route (as the
// settings place them), and the given floating IPs from the uplink (from
// any link when uplink is empty): the agent's uninstall.
func Remove(s Settings, uplink string, floating []netip.Addr) error {
	s = s.withDefaults()
	rules, err := ourRules(s)
	if err != nil {
		return err
	}
	errs := []error{removeStale(s, nil, rules)}
	links, err := linkList()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, l := range links {
		if uplink == "" || l.Attrs().Name == uplink {
			// Remove only releases: the added addresses are always none.
			_, err := syncFloating(l, nil, floating)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
