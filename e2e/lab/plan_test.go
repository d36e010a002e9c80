package lab

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func TestPlanGivesEachNodeItsOwnAddressAndPodRange(t *testing.T) {
	cfg := DefaultConfig()
	nodes := cfg.plan()
	want := []struct{ name, ip, cidr string }{
		{"worker-1", "198.51.100.11", "198.18.1.0/24"},
		{"worker-2", "198.51.100.12", "198.18.2.0/24"},
		{"gw-1", "198.51.100.21", "198.18.3.0/24"},
		{"gw-2", "198.51.100.22", "198.18.4.0/24"},
	}
	if len(nodes) != len(want) {
		t.Fatalf("plan has %d nodes, want %d", len(nodes), len(want))
	}
	for i, w := range want {
		n := nodes[i]
		if n.Name != w.name || n.IP.String() != w.ip || n.PodCIDR.String() != w.cidr || n.Gateway != strings.HasPrefix(w.name, "gw") {
			t.Errorf("node %d = %+v, want %+v", i, n, w)
		}
		if !UnderlayPrefix.Contains(n.IP) || !PodPrefix.Contains(n.PodCIDR.Addr()) {
			t.Errorf("node %s is outside the lab's ranges", n.Name)
		}
	}
}

func TestPlanGivesEveryNodeTheConfiguredPrimary(t *testing.T) {
	cfg := DefaultConfig()
	var got []string
	for _, n := range cfg.plan() {
		got = append(got, n.Primary)
	}
	if want := []string{PrimaryPTP, PrimaryBridge, PrimaryPTP, PrimaryPTP}; !slices.Equal(got, want) {
		t.Errorf("default primaries = %v, want %v (bridge on worker-2)", got, want)
	}
	cfg.Primary = PrimaryFlannel
	for _, n := range cfg.plan() {
		if n.Primary != PrimaryFlannel {
			t.Errorf("node %s runs %s, want %s on every node", n.Name, n.Primary, PrimaryFlannel)
		}
	}
	cfg.Primary = "calico"
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), `primary "calico"`) {
		t.Errorf("validate of an unknown primary: %v", err)
	}
}

func TestPrimaryConflistIsAValidConflist(t *testing.T) {
	for primary, typ := range map[string]string{PrimaryFlannel: "flannel", PrimaryFlannelHostGW: "flannel", PrimaryKubeRouter: "bridge"} {
		list, err := libcni.ConfListFromBytes([]byte(PrimaryConflist(primary, netip.MustParsePrefix("198.18.7.0/24"))))
		if err != nil || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != typ {
			t.Errorf("%s conflist: %v, %+v", primary, err, list)
		}
	}
	for _, primary := range []string{PrimaryPTP, PrimaryBridge} {
		list, err := libcni.ConfListFromBytes([]byte(PrimaryConflist(primary, netip.MustParsePrefix("198.18.7.0/24"))))
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Plugins) != 1 || list.Plugins[0].Network.Type != primary {
			t.Errorf("plugins = %+v, want %s alone", list.Plugins, primary)
		}
		if !strings.Contains(string(list.Bytes), `"198.18.7.0/24"`) {
			t.Errorf("conflist does not hand out the node's range:\n%s", list.Bytes)
		}
	}
}

func TestFirewallRulesetAllowsOnlyEachBackendsEgressIP(t *testing.T) {
	rs := firewallRuleset([]Backend{
		{IP: backendIP(0), Port: 80, AllowedFrom: FloatingIPs[0]},
		{IP: backendIP(1), Port: 80, AllowedFrom: FloatingIPs[1]},
	})
	for _, want := range []string{
		"ip saddr 198.51.100.101 ip daddr 203.0.113.11 tcp dport 80 accept",
		"ip saddr 198.51.100.102 ip daddr 203.0.113.12 tcp dport 80 accept",
		"policy drop",
		"ip protocol icmp add @dropped { ip saddr } drop",
	} {
		if !strings.Contains(rs, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, rs)
		}
	}
	if strings.Contains(rs, "198.51.100.103") {
		t.Errorf("ruleset admits an egress IP with no backend:\n%s", rs)
	}
}

func TestParseDropCountersReadsNftJSON(t *testing.T) {
	js := `{"nftables": [{"metainfo": {"version": "1.0.6"}},
	  {"set": {"family": "ip", "name": "dropped", "table": "lab-firewall", "type": "ipv4_addr",
	    "elem": [{"elem": {"val": "198.51.100.11", "counter": {"packets": 3, "bytes": 180}}},
	             {"elem": {"val": "198.51.100.12", "counter": {"packets": 1, "bytes": 60}}}]}}]}`
	got, err := parseDropCounters([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	if got[netip.MustParseAddr("198.51.100.11")] != 3 || got[netip.MustParseAddr("198.51.100.12")] != 1 || len(got) != 2 {
		t.Errorf("counters = %v", got)
	}
	if _, err := parseDropCounters([]byte(`{"nftables": [{"set": {"elem": [{"elem": {"val": "nope"}}]}}]}`)); err == nil {
		t.Error("a bad address parsed")
	}
}

func TestHostPathMapsOnlyPerNodeFolders(t *testing.T) {
	n := &Node{Name: "w", Dir: "/lab/nodes/w"}
	for in, want := range map[string]string{
		"/opt/cni/bin/x":       "/lab/nodes/w/opt/cni/bin/x",
		"/var/lib/cni":         "/lab/nodes/w/var-lib/cni",
		"/run/containerd/sock": "/lab/nodes/w/run/containerd/sock",
	} {
		got, err := n.HostPath(in)
		if err != nil || got != want {
			t.Errorf("HostPath(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"/etc/passwd", "/optional", "/var/lib2/x"} {
		if _, err := n.HostPath(in); err == nil {
			t.Errorf("HostPath(%s) succeeded; it is not a per-node folder", in)
		}
	}
}

func TestMachineSnapshotSeesOnlyNewPaths(t *testing.T) {
	dir := t.TempDir()
	old, fresh, never := filepath.Join(dir, "old"), filepath.Join(dir, "fresh"), filepath.Join(dir, "never")
	if err := os.Mkdir(old, 0o755); err != nil {
		t.Fatal(err)
	}
	s := snapshotPaths([]string{old, fresh, never})
	if err := os.MkdirAll(filepath.Join(fresh, "kubelet-plugins"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := s.Appeared(); !slices.Equal(got, []string{fresh}) {
		t.Errorf("Appeared = %v, want [%s]", got, fresh)
	}
	if got := s.Existing(); !slices.Equal(got, []string{old}) {
		t.Errorf("Existing = %v, want [%s]", got, old)
	}
}

func TestMachinePathsCoverTheDefaultsTheLabMoves(t *testing.T) {
	got := MachinePaths()
	for _, p := range []string{"/usr/libexec/kubernetes", "/var/lib/kubelet", "/etc/kubernetes", "/root/.kube",
		"/etc/cni", "/opt/cni", "/var/lib/cni"} {
		if !slices.Contains(got, p) {
			t.Errorf("MachinePaths lacks %s", p)
		}
	}
}

func TestSlotNames(t *testing.T) {
	for v, want := range map[string]string{"": "nsegress-lab", "0": "nsegress-lab", "1": "nsegress-lab-1", "3": "nsegress-lab-3"} {
		if got, err := slotName(v); err != nil || got != want {
			t.Errorf("slot %q: %q, %v; want %q", v, got, err, want)
		}
	}
	for _, v := range []string{"4", "-1", "01", "x", "1 ", "../x"} {
		if _, err := slotName(v); err == nil || !strings.Contains(err.Error(), slotEnv) {
			t.Errorf("slot %q: %v; want an error naming %s", v, err, slotEnv)
		}
	}
}

// A start removes a killed lab's folder of its own slot only: another
// slot's lab may be running in it, and a folder without the marker is
// not a lab's at all.
func TestOnlyThisSlotsLabFolderIsRemoved(t *testing.T) {
	folder := func(marker *string) string {
		d := filepath.Join(t.TempDir(), "lab")
		if err := os.MkdirAll(filepath.Join(d, "logs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if marker != nil {
			if err := os.WriteFile(filepath.Join(d, markerFile), []byte(*marker), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	mine, before, other := labName, "", "nsegress-lab-3"
	if labName == other {
		other = "nsegress-lab-2"
	}
	if labName != "nsegress-lab" {
		before = "nsegress-lab" // an empty marker is slot 0's; here another slot's
	}
	for _, c := range []struct {
		name    string
		marker  *string
		removed bool
		err     string
	}{
		{"this slot's", &mine, true, ""},
		{"another slot's", &other, false, "is the folder of lab " + other},
		{"not a lab's", nil, false, "is not a lab folder"},
	} {
		d := folder(c.marker)
		err := removeLabFolder(d)
		_, statErr := os.Stat(d)
		if gone := os.IsNotExist(statErr); gone != c.removed || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: removed %t, %v; want removed %t, an error containing %q", c.name, gone, err, c.removed, c.err)
		}
	}
	d := folder(&before)
	err := removeLabFolder(d)
	if _, statErr := os.Stat(d); (labName == "nsegress-lab") != os.IsNotExist(statErr) || (labName == "nsegress-lab") != (err == nil) {
		t.Errorf("a marker from before slots (slot 0's), in %s: %v", labName, err)
	}
	if err := removeLabFolder(filepath.Join(t.TempDir(), "absent")); err != nil {
		t.Errorf("an absent folder: %v", err)
	}
}
