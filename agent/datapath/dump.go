package datapath

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// dumpAttempts is how many times Dump runs a dump that the kernel keeps
// interrupting. An interruption means that the dumped table changed
// while it was read; on a node that is not changing its links or routes
// without pause, the next attempt succeeds.
const dumpAttempts = 5

// Dump runs dump, a netlink dump (a list of links, routes, rules,
// neighbours, addresses), and returns its result. When the kernel
// reports the dump interrupted by a concurrent change
// (netlink.ErrDumpInterrupted, whose partial result may be inconsistent),
// Dump runs it again at once, up to dumpAttempts times in all, and never
// returns a partial result. what names the dump in errors ("list
// links"): every error is "what: cause", and wraps the cause.
//
// Every netlink dump of nsegress goes through Dump (tools/verify.sh
// checks it): the package's own, the exported wrappers such as AddrList,
// and those of other packages and tests, for example on a *netlink.Handle
// of another namespace:
//
//	links, err := datapath.Dump("list links", h.LinkList)
func Dump[T any](what string, dump func() (T, error)) (T, error) {
	var zero T
	for range dumpAttempts {
		v, err := dump()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return zero, fmt.Errorf("%s: %w", what, err)
		}
	}
	return zero, fmt.Errorf("%s: interrupted by concurrent changes %d times in a row: %w", what, dumpAttempts, netlink.ErrDumpInterrupted)
}

// AddrList lists the addresses of link (of every link when link is nil)
// in family (netlink.FAMILY_V4, …), retried as Dump does.
func AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	what := "list addresses"
	if link != nil {
		what = fmt.Sprintf("%s: list addresses", link.Attrs().Name)
	}
	return Dump(what, func() ([]netlink.Addr, error) { return netlink.AddrList(link, family) })
}

// linkList lists the node's links.
func linkList() ([]netlink.Link, error) {
	return Dump("list links", netlink.LinkList)
}

// routeList lists the IPv4 routes that filter and mask select (see
// netlink.RouteListFiltered); what names them in errors.
func routeList(what string, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return Dump(what, func() ([]netlink.Route, error) { return netlink.RouteListFiltered(unix.AF_INET, filter, mask) })
}

// ruleList lists the IPv4 ip rules.
func ruleList() ([]netlink.Rule, error) {
	return Dump("list ip rules", func() ([]netlink.Rule, error) { return netlink.RuleList(unix.AF_INET) })
}

// neighList lists the neighbour entries of family on link (AF_BRIDGE:
// its FDB); what names them in errors.
func neighList(what string, link netlink.Link, family int) ([]netlink.Neigh, error) {
	return Dump(what, func() ([]netlink.Neigh, error) { return netlink.NeighList(link.Attrs().Index, family) })
}
