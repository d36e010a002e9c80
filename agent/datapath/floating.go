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
)

// syncFloating adds the held floating IPs to the uplink as /32s and
// removes released ones, adding first: when an address moves between
// the held and the released ones of a plan change, the uplink holds the
// new before it loses the old. A released IP that is also held is never
// removed. It returns the IPs it added, in the order of hold.
func syncFloating(uplink netlink.Link, hold, release []netip.Addr) ([]netip.Addr, error) {
	addrs, err := AddrList(uplink, unix.AF_INET)
	if err != nil {
		return nil, err
	}
	have := map[netip.Addr]netlink.Addr{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			have[ip] = a
		}
	}
	var added []netip.Addr
	for _, ip := range hold {
		if _, ok := have[ip]; ok {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(32, 32)}}
		// EEXIST: the address appeared since the listing; it is held.
		if err := netlink.AddrAdd(uplink, a); err != nil && !errors.Is(err, syscall.EEXIST) {
			return nil, fmt.Errorf("%s: hold %s: %w", uplink.Attrs().Name, ip, err)
		}
		added = append(added, ip)
	}
	for _, ip := range release {
		if a, ok := have[ip]; ok && !slices.Contains(hold, ip) {
			// EADDRNOTAVAIL: the address is gone already.
			if err := netlink.AddrDel(uplink, &a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
				return nil, fmt.Errorf("%s: release %s: %w", uplink.Attrs().Name, ip, err)
			}
		}
	}
	return added, nil
}
