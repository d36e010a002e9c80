package nft

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
)

func TestMark(t *testing.T) {
	tests := []struct {
		bits MarkBits
		id   uint16
		want uint32
	}{
		{DefaultMarkBits, 1, 0x00010000},
		{DefaultMarkBits, 7, 0x00070000},
		{DefaultMarkBits, MaxPolicyID, 0x0fff0000},
		{0x00000fff, 7, 0x00000007},
		{0x00000fff, MaxPolicyID, 0x00000fff},
		{0xfff00000, MaxPolicyID, 0xfff00000},
	}
	for _, tt := range tests {
		if err := tt.bits.Validate(); err != nil {
			t.Fatal(err)
		}
		got := tt.bits.Mark(tt.id)
		if got != tt.want {
			t.Errorf("%#08x.Mark(%d) = %#08x, want %#08x", uint32(tt.bits), tt.id, got, tt.want)
		}
		if got&^tt.bits.Mask() != 0 {
			t.Errorf("%#08x.Mark(%d) = %#08x has bits outside the mask", uint32(tt.bits), tt.id, got)
		}
	}
	// Masks whose 12 bits would run off the top (0xff000000 would give
	// policies 1 and 2049 one mark) are refused too.
	for _, bad := range []MarkBits{0, 0x0ff00000, 0x1fff0000, 0x0f0f0f00, 0x00003ffe, 0xff000000, 0xffe00000, 0x80000000} {
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "12 contiguous bits") {
			t.Errorf("%#08x.Validate() = %v, want an error", uint32(bad), err)
		}
	}
}

// validState returns a State that passes Validate; cases change one field.
func validState() State {
	return State{
		Policies: []Policy{
			{ID: 7, Mode: ModeTunnel, Device: "nsg7", Destinations: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
			{ID: 9, Mode: ModeLocal, Device: "nsg9", EgressIP: netip.MustParseAddr("192.0.2.9")},
			{ID: 3, Mode: ModeDrop},
			{ID: 4, Mode: ModePass},
		},
		Pods:         map[PodKey]uint16{pod("198.18.1.5", "veth1a2b"): 7},
		MSS:          1410,
		TunnelPort:   4789,
		Uplink:       "eth0",
		TunnelPeers:  []TunnelPeer{{Addr: netip.MustParseAddr("10.0.0.1"), Sources: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}},
		DevicePrefix: "nsg",
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		change  func(s *State)
		wantErr string // "" means valid
	}{
		{"a valid state passes", func(*State) {}, ""},
		{"an empty state with node fields passes", func(s *State) { s.Policies, s.Pods = nil, nil }, ""},
		{"MSS 0 disables clamping", func(s *State) { s.MSS = 0 }, ""},
		{"host bits in a destination are ignored", func(s *State) {
			s.Policies[0].Destinations = []netip.Prefix{netip.MustParsePrefix("203.0.113.9/24")}
		}, ""},
		{"policy ID 0 is refused", func(s *State) { s.Policies[0].ID = 0; s.Pods = nil }, "policy ID 0 is out of range"},
		{"policy ID 4096 is refused", func(s *State) { s.Policies[0].ID = 4096; s.Pods = nil }, "policy ID 4096 is out of range"},
		{"a duplicated ID is refused", func(s *State) { s.Policies[1].ID = 7 }, "policy 7: duplicated ID"},
		{"an IPv6 destination is refused", func(s *State) {
			s.Policies[0].Destinations = []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}
		}, "policy 7: destination 2001:db8::/32 is not IPv4"},
		{"an invalid destination is refused", func(s *State) {
			s.Policies[0].Destinations = []netip.Prefix{{}}
		}, "policy 7: destination invalid Prefix is not IPv4"},
		{"mode local without egress IP is refused", func(s *State) { s.Policies[1].EgressIP = netip.Addr{} }, "policy 9: mode local needs an EgressIP"},
		{"an IPv6 egress IP is refused", func(s *State) {
			s.Policies[1].EgressIP = netip.MustParseAddr("2001:db8::1")
		}, "policy 9: egress IP 2001:db8::1 is not IPv4"},
		{"an unknown mode is refused", func(s *State) { s.Policies[2].Mode = 9 }, "policy 3: unknown mode 9"},
		{"mode tunnel without device is refused", func(s *State) { s.Policies[0].Device = "" }, "policy 7: mode tunnel needs a Device"},
		{"a device without the prefix is refused", func(s *State) { s.Policies[0].Device = "vx7" }, `policy 7: device "vx7" does not start with the device prefix "nsg"`},
		{"a device equal to the prefix is refused", func(s *State) { s.Policies[0].Device = "nsg" }, `does not start with the device prefix`},
		{"a too long device is refused", func(s *State) { s.Policies[0].Device = "nsg0123456789abc" }, "longer than 15 bytes"},
		{"a shared device is refused", func(s *State) { s.Policies[1].Device = "nsg7" }, `policy 9: device "nsg7" is also the device of policy 7`},
		{"a pod of an unknown policy is refused", func(s *State) { s.Pods[pod("198.18.1.6", "veth2")] = 8 }, "policy 8 is not in Policies"},
		{"an IPv6 pod is refused", func(s *State) { s.Pods[pod("2001:db8::5", "veth2")] = 7 }, "address is not IPv4"},
		{"a pod without interface is refused", func(s *State) { s.Pods[pod("198.18.1.6", "")] = 7 }, "HostIf is empty"},
		{"a pod on a tunnel device is refused", func(s *State) { s.Pods[pod("198.18.1.6", "nsg7")] = 7 }, "starts with the tunnel device prefix"},
		{"an empty device prefix is refused", func(s *State) { s.DevicePrefix = "" }, "DevicePrefix is empty"},
		{"a wildcard device prefix is refused", func(s *State) { s.DevicePrefix = "nsg*" }, "contains NUL or '*'"},
		{"tunnel port 0 is refused", func(s *State) { s.TunnelPort = 0 }, "TunnelPort is 0"},
		{"a tiny MSS is refused", func(s *State) { s.MSS = 100 }, "MSS 100 is below 536"},
		{"an IPv6 tunnel peer is refused", func(s *State) {
			s.TunnelPeers = append(s.TunnelPeers, TunnelPeer{Addr: netip.MustParseAddr("2001:db8::1")})
		}, "tunnel peer 2001:db8::1 is not IPv4"},
		{"an IPv6 source range of a tunnel peer is refused", func(s *State) {
			s.TunnelPeers[0].Sources = append(s.TunnelPeers[0].Sources, netip.MustParsePrefix("fd00::/64"))
		}, "tunnel peer 10.0.0.1: source range fd00::/64 is not an IPv4 prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validState()
			tt.change(&s)
			err := s.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Validate() = nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Validate() = %q, want it to contain %q", err, tt.wantErr)
			case err != nil && !strings.HasPrefix(err.Error(), "nft: "):
				t.Fatalf("Validate() = %q, want the nft: prefix", err)
			}
		})
	}
}

func TestIntervalElems(t *testing.T) {
	type el struct {
		addr string
		end  bool
	}
	tests := []struct {
		name     string
		prefixes []string
		want     []el
	}{
		{"no prefix gives no element", nil, nil},
		{"one prefix starts with an end at 0.0.0.0", []string{"10.0.0.0/8"},
			[]el{{"0.0.0.0", true}, {"10.0.0.0", false}, {"11.0.0.0", true}}},
		{"a range at 0.0.0.0 has no leading end", []string{"0.0.0.0/8"},
			[]el{{"0.0.0.0", false}, {"1.0.0.0", true}}},
		{"the whole space has no end at all", []string{"0.0.0.0/0"},
			[]el{{"0.0.0.0", false}}},
		{"a range reaching the top has no end", []string{"255.0.0.0/8"},
			[]el{{"0.0.0.0", true}, {"255.0.0.0", false}}},
		{"overlapping and adjacent prefixes merge", []string{"10.0.1.0/24", "10.0.0.0/16", "10.1.0.0/16", "192.0.2.7/32"},
			[]el{{"0.0.0.0", true}, {"10.0.0.0", false}, {"10.2.0.0", true}, {"192.0.2.7", false}, {"192.0.2.8", true}}},
		{"host bits are masked", []string{"10.9.9.9/8"},
			[]el{{"0.0.0.0", true}, {"10.0.0.0", false}, {"11.0.0.0", true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ps []netip.Prefix
			for _, p := range tt.prefixes {
				ps = append(ps, netip.MustParsePrefix(p))
			}
			var got []el
			for _, e := range intervalElems(ps) {
				got = append(got, el{netip.AddrFrom4([4]byte(e.Key)).String(), e.IntervalEnd})
			}
			if len(got) != len(tt.want) {
				t.Fatalf("elements = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("elements = %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestPodKeyRoundTrip(t *testing.T) {
	for _, k := range []PodKey{pod("198.18.1.5", "veth1a2b"), pod("10.0.0.1", "cali0123456789a"), pod("0.0.0.0", "b")} {
		b := podKeyBytes(k)
		if len(b) != int(nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIFName).Bytes) {
			t.Fatalf("key of %s is %d bytes", k, len(b))
		}
		got, ok := parsePodKey(b)
		if !ok || got != k {
			t.Fatalf("parsePodKey(podKeyBytes(%s)) = %s, %v", k, got, ok)
		}
	}
	if !bytes.Equal(podKeyBytes(pod("1.2.3.4", "x"))[:6], []byte{1, 2, 3, 4, 'x', 0}) {
		t.Fatal("key is not address then NUL-padded name")
	}
}

func TestParsePolicyChain(t *testing.T) {
	tests := []struct {
		name   string
		want   uint16
		wantOK bool
	}{
		{"pol_7", 7, true},
		{"pol_4095", 4095, true},
		{"pol_0", 0, false},
		{"pol_4096", 0, false},
		{"pol_07", 0, false},
		{"pol_", 0, false},
		{"prerouting", 0, false},
	}
	for _, tt := range tests {
		got, ok := parsePolicyChain(tt.name)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parsePolicyChain(%q) = %d, %v; want %d, %v", tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestBuildOrdersPoliciesAndNamesObjects(t *testing.T) {
	s := validState()
	d := build(s)
	var sets, chains []string
	for _, ss := range d.sets {
		sets = append(sets, ss.set.Name)
	}
	for _, cs := range d.chains {
		chains = append(chains, cs.name)
	}
	if got, want := strings.Join(sets, ","), "sources,held,returns,dst_3,dst_4,dst_7,dst_9"; got != want {
		t.Errorf("sets = %s, want %s", got, want)
	}
	if got, want := strings.Join(chains, ","), "pol_3,pol_4,pol_7,pol_9,prerouting,forward,postrouting_nat,postrouting,input,output"; got != want {
		t.Errorf("chains = %s, want %s", got, want)
	}
	if got := d.pods[pod("198.18.1.5", "veth1a2b")]; got != "pol_7" {
		t.Errorf("pod jumps to %q, want pol_7", got)
	}
}

func TestSortElements(t *testing.T) {
	in := "\tset s {\n\t\telements = { b, a,\n\t\t\t     c }\n\t}\n"
	want := "\tset s {\n\t\telements = {\n\t\t\ta,\n\t\t\tb,\n\t\t\tc,\n\t\t}\n\t}\n"
	if got := sortElements(in); got != want {
		t.Fatalf("sortElements:\n%q\nwant\n%q", got, want)
	}
}

// TestSourceElemsMergePeersOfOneAddress: two Node objects with one
// address (a replaced node whose old object lingers) give the same set in
// any order: their ranges merged, or any source when one has none.
func TestSourceElemsMergePeersOfOneAddress(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.1")
	r1, r2 := netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("10.244.7.0/24")
	render := func(peers []TunnelPeer) string {
		var out []string
		for _, e := range sourceElems(peers) {
			out = append(out, fmt.Sprintf("%x-%x", e.Key, e.KeyEnd))
		}
		return strings.Join(out, " ")
	}
	one, other := render([]TunnelPeer{{Addr: a, Sources: []netip.Prefix{r1}}, {Addr: a, Sources: []netip.Prefix{r2}}}),
		render([]TunnelPeer{{Addr: a, Sources: []netip.Prefix{r2}}, {Addr: a, Sources: []netip.Prefix{r1}}})
	if one != other || strings.Count(one, " ") != 1 {
		t.Errorf("merged ranges depend on order or lost one: %q vs %q", one, other)
	}
	anyOne := render([]TunnelPeer{{Addr: a, Sources: []netip.Prefix{r1}}, {Addr: a}})
	if want := "0a00000100000000-0a000001ffffffff"; anyOne != want {
		t.Errorf("a peer without ranges beside one with: %q, want any source %q", anyOne, want)
	}
}
