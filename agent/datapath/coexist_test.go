package datapath

import (
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func mask32(m uint32) *uint32 { return &m }

// TestConflictsNameWhatCollidesAndTheSettingThatAvoidsIt: the node's own
// objects (nsegress's rules, routes and devices) never count; another
// component's rule at nsegress's priorities, in its tables or on its mark
// bits, its route in nsegress's tables and its VXLAN device on the port
// each give one line naming the setting to change.
func TestConflictsNameWhatCollidesAndTheSettingThatAvoidsIt(t *testing.T) {
	s := Settings{}.withDefaults()
	ours := []netlink.Rule{
		{Priority: DefaultRulePriority, Table: DefaultTableBase + 7, Mark: s.Marks.Mark(7), Mask: mask32(s.Marks.Mask())},
		{Priority: DefaultRulePriority - 1, Table: unix.RT_TABLE_MAIN, IifName: "nsg7"},
	}
	links := []netlink.Link{
		&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "nsg7", Index: 7}, Port: DefaultPort},
		&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1", Index: 3}, Port: 8472},
		&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "eth0", Index: 2}},
	}
	_, dst, _ := net.ParseCIDR("198.18.1.0/24")
	routes := []netlink.Route{
		{Table: DefaultTableBase + 7, LinkIndex: 7, Dst: dst},
		{Table: DefaultTableBase + 7, Type: unix.RTN_THROW, Dst: dst},
		{Table: unix.RT_TABLE_MAIN, LinkIndex: 2, Dst: dst},
	}
	if c := conflicts(s, DefaultPort, ours, links, routes); len(c) != 0 {
		t.Fatalf("nsegress's own objects conflict: %q", c)
	}

	for _, tc := range []struct {
		name   string
		s      Settings
		port   uint16
		rules  []netlink.Rule
		routes []netlink.Route
		want   string
	}{
		{name: "Calico-like marks on an ip rule", rules: []netlink.Rule{{Priority: 100, Table: 200, Mark: 0x00100000, Mask: mask32(0xffff0000)}},
			want: "matches nsegress's mark bits 0x0fff0000: set mark-bits"},
		{name: "a rule at nsegress's priority", rules: []netlink.Rule{{Priority: DefaultRulePriority, Table: 100}},
			want: "sits at nsegress's rule priority 1900/1899: set rule-priority"},
		{name: "a rule into nsegress's tables", rules: []netlink.Rule{{Priority: 500, Table: DefaultTableBase + 9}},
			want: "looks up a table of nsegress's range 20001..24095: set table-base"},
		{name: "a route of another owner in nsegress's tables", routes: []netlink.Route{{Table: DefaultTableBase + 9, LinkIndex: 2, Dst: dst}},
			want: "routing table 20009, in nsegress's range, routes 198.18.1.0/24 via eth0: set table-base"},
		{name: "another VXLAN device on the port", port: 8472, want: "VXLAN device flannel.1 uses UDP port 8472: set vxlan-port"},
		{name: "mark bits on kube-proxy's", s: Settings{Marks: 0x0000fff0}, want: "include kube-proxy's 0x4000/0x8000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := tc.port
			if port == 0 {
				port = DefaultPort
			}
			base := ours
			if tc.s != (Settings{}) {
				base = nil // the rules of other settings are not ours
			}
			c := conflicts(tc.s, port, append(base, tc.rules...), links, append(routes, tc.routes...))
			if len(c) != 1 || !strings.Contains(c[0], tc.want) {
				t.Errorf("conflicts = %q, want one mentioning %q", c, tc.want)
			}
		})
	}

	// Moved out of the way, the same objects no longer collide.
	moved := Settings{Marks: 0x00000fff, TableBase: 30000, RulePriority: 1500}
	others := []netlink.Rule{{Priority: 100, Table: 200, Mark: 0x00100000, Mask: mask32(0xffff0000)},
		{Priority: DefaultRulePriority, Table: 100}, {Priority: 500, Table: DefaultTableBase + 9}}
	if c := conflicts(moved, DefaultPort, others, links, routes); len(c) != 0 {
		t.Errorf("with %+v: conflicts %q", moved, c)
	}
}

func TestSettingsValidate(t *testing.T) {
	for _, tc := range []struct {
		s    Settings
		want string
	}{
		{Settings{}, ""},
		{Settings{Marks: 0x00000fff, TableBase: 30000, RulePriority: 1500}, ""},
		{Settings{Marks: 0x00ff0000}, "not 12 contiguous bits"},
		{Settings{TableBase: 100}, "table base 100"},
		{Settings{RulePriority: 1}, "rule priority 1"},
		{Settings{RulePriority: 32766}, "rule priority 32766"},
	} {
		err := tc.s.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v.Validate() = %v, want %q", tc.s, err, tc.want)
		}
	}
}
