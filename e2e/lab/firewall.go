package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Backend is one on-prem echo server behind the firewall.
type Backend struct {
	// Name is the backend's lab host name ("backend-1" …).
	Name string
	// IP is its on-prem address.
	IP netip.Addr
	// Port is its HTTP port.
	Port int
	// AllowedFrom is the one source address the firewall lets through to
	// it.
	AllowedFrom netip.Addr
}

// URL is the echo server's address.
func (b Backend) URL() string { return fmt.Sprintf("http://%s:%d/", b.IP, b.Port) }

// firewallRuleset is the firewall's nftables program. It forwards only
// the allowed (source, backend) pairs, drops ICMP in every direction (so
// path-MTU discovery cannot rescue an oversized tunnel packet, as with many
// enterprise firewalls), and counts every dropped packet per source
// address in the dynamic set "dropped".
func firewallRuleset(backends []Backend) string {
	var allow strings.Builder
	for _, b := range backends {
		fmt.Fprintf(&allow, "\t\tip saddr %s ip daddr %s tcp dport %d accept\n", b.AllowedFrom, b.IP, b.Port)
	}
	// On-prem clients may connect in to the pods' echo port (a reply
	// that left with an egress IP would not match their connection).
	fmt.Fprintf(&allow, "\t\tip saddr %s ip daddr %s tcp dport %d accept\n", OnPremPrefix, PodPrefix, PodEchoPort)
	return fmt.Sprintf(`table ip lab-firewall {
	set dropped {
		type ipv4_addr
		size 65535
		flags dynamic
		counter
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ip protocol icmp add @dropped { ip saddr } drop
		ct state established,related accept
%s		add @dropped { ip saddr } drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
		ip protocol icmp drop
	}
	chain output {
		type filter hook output priority filter; policy accept;
		ip protocol icmp drop
	}
}
`, allow.String())
}

// startFirewall builds the firewall host, the on-prem segment and the
// backends.
func (l *Lab) startFirewall(ctx context.Context) error {
	fw, err := l.newHost("firewall", false, "")
	if err != nil {
		return err
	}
	if err := l.attach(fw, "eth0", underlayBridge, withBits(FirewallUnderlayIP, UnderlayPrefix)); err != nil {
		return err
	}
	if err := l.attach(fw, "eth1", onPremBridge, withBits(FirewallOnPremIP, OnPremPrefix)); err != nil {
		return err
	}
	if err := fw.sysctl(map[string]string{"net.ipv4.ip_forward": "1"}); err != nil {
		return err
	}
	for i := 0; i < l.cfg.Backends; i++ {
		b := Backend{Name: fmt.Sprintf("backend-%d", i+1), IP: backendIP(i), Port: BackendPort, AllowedFrom: FloatingIPs[i]}
		h, err := l.newHost(b.Name, false, "")
		if err != nil {
			return err
		}
		if err := l.attach(h, "eth0", onPremBridge, withBits(b.IP, OnPremPrefix)); err != nil {
			return err
		}
		if err := route(h, netip.MustParsePrefix("0.0.0.0/0"), FirewallOnPremIP); err != nil {
			return err
		}
		// -count-markers: the backend counts marked packets that reach it
		// (forged tunnel traffic must not), served on GET /markers.
		if _, err := l.startIn(h, "echo", []string{l.cfg.Labbox, "echo", "-listen", ":" + strconv.Itoa(b.Port), "-count-markers"}); err != nil {
			return err
		}
		l.backends = append(l.backends, b)
	}
	if _, err := l.run(ctx, fw, []byte(firewallRuleset(l.backends)), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("load firewall ruleset: %w", err)
	}
	return nil
}

// Backends lists the on-prem echo servers.
func (l *Lab) Backends() []Backend { return append([]Backend(nil), l.backends...) }

// FirewallDrops returns how many packets the firewall dropped, per source
// address.
func (l *Lab) FirewallDrops(ctx context.Context) (map[netip.Addr]uint64, error) {
	out, err := l.run(ctx, l.host("firewall"), nil, "nft", "-j", "list", "set", "ip", "lab-firewall", "dropped")
	if err != nil {
		return nil, err
	}
	return parseDropCounters(out)
}

// parseDropCounters reads `nft -j list set` output: elements of the form
// {"elem": {"val": "198.51.100.11", "counter": {"packets": 3, "bytes": 180}}}.
func parseDropCounters(js []byte) (map[netip.Addr]uint64, error) {
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []struct {
					Elem struct {
						Val     string `json:"val"`
						Counter struct {
							Packets uint64 `json:"packets"`
						} `json:"counter"`
					} `json:"elem"`
				} `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("parse firewall counters: %w", err)
	}
	out := map[netip.Addr]uint64{}
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, e := range o.Set.Elem {
			a, err := netip.ParseAddr(e.Elem.Val)
			if err != nil {
				return nil, fmt.Errorf("parse firewall counters: element %q: %w", e.Elem.Val, err)
			}
			out[a] += e.Elem.Counter.Packets
		}
	}
	return out, nil
}

// HostExec runs a short command on a lab host outside the cluster, in
// its network namespace: "firewall" (on the node network and on-prem) or
// a backend ("backend-1", …, on-prem). An argv[0] of "labbox" runs the
// lab's labbox binary.
func (l *Lab) HostExec(ctx context.Context, name string, argv ...string) ([]byte, error) {
	h := l.host(name)
	if h == nil || (name != "firewall" && !strings.HasPrefix(name, "backend-")) {
		return nil, fmt.Errorf("no host %q outside the cluster in the lab (firewall, backend-N)", name)
	}
	return l.run(ctx, h, nil, l.labboxArgv(argv)...)
}

// labboxArgv is argv with an argv[0] of "labbox" replaced by the path of
// the lab's labbox binary.
func (l *Lab) labboxArgv(argv []string) []string {
	if len(argv) > 0 && argv[0] == "labbox" {
		return append([]string{l.cfg.Labbox}, argv[1:]...)
	}
	return argv
}

// FirewallAllow opens a hole in the firewall for src to the backend, for
// benchmarks that compare the egress path with the node's normal path.
// Tests never call it: the firewall's allowlist is what they check.
func (l *Lab) FirewallAllow(ctx context.Context, src netip.Addr, b Backend) error {
	_, err := l.run(ctx, l.host("firewall"), nil, "nft", "insert", "rule", "ip", "lab-firewall", "forward",
		"ip", "saddr", src.String(), "ip", "daddr", b.IP.String(), "tcp", "dport", strconv.Itoa(b.Port), "accept")
	return err
}
