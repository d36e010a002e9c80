package plugin

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsegress/nsegress/e2e/privtest"
)

func resultWith(t *testing.T, hostSide ...string) types.Result {
	t.Helper()
	r := map[string]any{"cniVersion": "1.0.0", "interfaces": []map[string]string{{"name": "eth0", "sandbox": "/proc/1/ns/net"}}}
	for _, n := range hostSide {
		r["interfaces"] = append(r["interfaces"].([]map[string]string), map[string]string{"name": n})
	}
	b, _ := json.Marshal(r)
	res, err := current.NewResult(b)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestHostInterfaceMustBeThePrimarysOwn checks the key of a pod's
// element against the primary's result, in a throwaway namespace: a ptp
// veth, a bridge port, and a device that is neither.
func TestHostInterfaceMustBeThePrimarysOwn(t *testing.T) {
	privtest.Require(t)
	ns := privtest.NewNetNS(t)
	for _, cmd := range [][]string{
		{"ip", "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-a-peer"},
		{"ip", "link", "set", "veth-a", "up"},
		{"ip", "route", "add", "198.18.1.5/32", "dev", "veth-a"},
		{"ip", "link", "add", "cni0", "type", "bridge"},
		{"ip", "link", "add", "port-b", "type", "veth", "peer", "name", "port-b-peer"},
		{"ip", "link", "set", "port-b", "master", "cni0"},
		{"ip", "link", "set", "cni0", "up"},
		{"ip", "route", "add", "198.18.1.0/28", "dev", "cni0"},
		{"ip", "link", "add", "shared", "type", "veth", "peer", "name", "shared-peer"},
		{"ip", "link", "set", "shared", "up"},
		{"ip", "route", "add", "198.18.1.64/28", "dev", "shared"},
	} {
		if _, err := privtest.RunIn(ns, "", cmd...); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name, ip         string
		hostSide         []string
		wantIf, wantPort string
		ok               bool
	}{
		{"a ptp veth is the key", "198.18.1.5", []string{"veth-a"}, "veth-a", "", true},
		{"a bridge port's pod is keyed on the bridge and guarded on its port", "198.18.1.6", []string{"port-b"}, "cni0", "port-b", true},
		{"the bridge plugin lists the bridge first: the port is still found", "198.18.1.6", []string{"cni0", "port-b"}, "cni0", "port-b", true},
		{"a bridge without the pod's port among the host-side interfaces is refused", "198.18.1.6", []string{"cni0"}, "", "", false},
		{"a device that is not the primary's is refused", "198.18.1.66", []string{"veth-a"}, "", "", false},
		{"no host-side interface at all is refused", "198.18.1.5", nil, "", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got, port string
			res := resultWith(t, c.hostSide...) // outside Do: it may call t.Fatal
			err := privtest.Do(ns, func() error {
				var err error
				got, port, err = hostInterface(netip.MustParseAddr(c.ip), res)
				return err
			})
			if c.ok && (err != nil || got != c.wantIf || port != c.wantPort) {
				t.Errorf("got %q port %q, %v; want %q port %q", got, port, err, c.wantIf, c.wantPort)
			}
			if !c.ok && cniCode(t, err) != types.ErrTryAgainLater {
				t.Errorf("got %q, %v; want code 11", got, err)
			}
		})
	}
}
