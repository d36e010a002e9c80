package datapath

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nsegress/nsegress/nft"
)

var (
	testDst    = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	testEgress = netip.MustParseAddr("198.51.100.101")
	testGW     = netip.MustParseAddr("198.51.100.21")
)

// cmpAddrs compares netip values by value.
var cmpAddrs = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
var cmpPrefixes = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func TestATunnelsPolicyIsWhatNftImplements(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tunnel Tunnel
		want   nft.Policy
	}{
		{"local: the egress IP is kept",
			Tunnel{ID: 7, Mode: nft.ModeLocal, EgressIP: testEgress, Destinations: testDst},
			nft.Policy{ID: 7, Mode: nft.ModeLocal, EgressIP: testEgress, Destinations: testDst, Device: "nsg7"}},
		{"tunnel: no egress IP, whatever the tunnel says",
			Tunnel{ID: 7, Mode: nft.ModeTunnel, Gateway: testGW, EgressIP: testEgress, Destinations: testDst},
			nft.Policy{ID: 7, Mode: nft.ModeTunnel, Destinations: testDst, Device: "nsg7"}},
		{"drop", Tunnel{ID: 9, Mode: nft.ModeDrop, EgressIP: testEgress, Destinations: testDst},
			nft.Policy{ID: 9, Mode: nft.ModeDrop, Destinations: testDst, Device: "nsg9"}},
		{"pass without destinations", Tunnel{ID: 12, Mode: nft.ModePass},
			nft.Policy{ID: 12, Mode: nft.ModePass, Device: "nsg12"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.tunnel.Policy()
			if diff := cmp.Diff(tc.want, got, cmpAddrs, cmpPrefixes); diff != "" {
				t.Errorf("Policy() (-want +got):\n%s", diff)
			}
			// A plan Validate accepts gives policies nft accepts.
			p := Plan{Uplink: "eth0", NodeIP: testGW, Port: DefaultPort, Tunnels: []Tunnel{tc.tunnel}}
			if err := p.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			s := nft.State{Policies: []nft.Policy{got}, TunnelPort: DefaultPort, Uplink: "eth0", DevicePrefix: DevicePrefix}
			if err := s.Validate(); err != nil {
				t.Errorf("nft refuses the tunnel's policy: %v", err)
			}
		})
	}
}

func TestATunnelsPolicyOwnsItsDestinations(t *testing.T) {
	tn := Tunnel{ID: 1, Mode: nft.ModeLocal, EgressIP: testEgress, Destinations: slices.Clone(testDst)}
	p := tn.Policy()
	p.Destinations[0] = netip.MustParsePrefix("192.0.2.0/24")
	if tn.Destinations[0] != testDst[0] {
		t.Errorf("changing the policy's destinations changed the tunnel's: %v", tn.Destinations)
	}
}

func TestValidateNeedsTheEgressIPOfALocalTunnel(t *testing.T) {
	plan := func(tn Tunnel) Plan {
		return Plan{Uplink: "eth0", NodeIP: testGW, Port: DefaultPort, Tunnels: []Tunnel{tn}}
	}
	for _, tc := range []struct {
		name   string
		tunnel Tunnel
		want   string // "" when valid
	}{
		{"local with an egress IP", Tunnel{ID: 3, Mode: nft.ModeLocal, EgressIP: testEgress}, ""},
		{"local without an egress IP", Tunnel{ID: 3, Mode: nft.ModeLocal},
			"datapath plan: tunnel 3: mode local needs an egress IP"},
		{"local with an IPv6 egress IP", Tunnel{ID: 3, Mode: nft.ModeLocal, EgressIP: netip.MustParseAddr("2001:db8::1")},
			`datapath plan: tunnel 3: egress IP "2001:db8::1" is not an IPv4 address`},
		{"local with a 4in6 egress IP", Tunnel{ID: 3, Mode: nft.ModeLocal, EgressIP: netip.MustParseAddr("::ffff:198.51.100.101")},
			`datapath plan: tunnel 3: egress IP "::ffff:198.51.100.101" is not an IPv4 address`},
		// The other modes ignore the egress IP, and Policy drops it.
		{"tunnel without an egress IP", Tunnel{ID: 3, Mode: nft.ModeTunnel, Gateway: testGW}, ""},
		{"drop without an egress IP", Tunnel{ID: 3, Mode: nft.ModeDrop}, ""},
		{"pass with an IPv6 egress IP", Tunnel{ID: 3, Mode: nft.ModePass, EgressIP: netip.MustParseAddr("2001:db8::1")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := plan(tc.tunnel).Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Errorf("Validate = %v, want %q", err, tc.want)
			}
			// nft agrees about the policy the tunnel gives.
			s := nft.State{Policies: []nft.Policy{tc.tunnel.Policy()}, TunnelPort: DefaultPort, Uplink: "eth0", DevicePrefix: DevicePrefix}
			if nftErr := s.Validate(); (nftErr == nil) != (tc.want == "") {
				t.Errorf("nft.State.Validate = %v, but datapath's Validate = %v", nftErr, err)
			} else if nftErr != nil && !strings.Contains(nftErr.Error(), "policy 3") {
				t.Errorf("nft's error %q does not name the policy", nftErr)
			}
		})
	}
}
