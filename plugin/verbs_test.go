package plugin

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// prevResult is what ptp + host-local hand over for a pod with one
// address.
const prevResult = `{
  "cniVersion": "%s",
  "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
  "ips": [{"address": "198.18.1.5/24", "gateway": "198.18.1.1", "interface": 0}],
  "routes": [{"dst": "0.0.0.0/0"}]
}`

func conf(version string, withPrev bool) []byte {
	c := `{"cniVersion": "` + version + `", "name": "lab", "type": "nsegress"`
	if withPrev {
		c += `, "prevResult": ` + strings.ReplaceAll(prevResult, "%s", version)
	}
	return []byte(c + "}")
}

func args(stdin []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: "c1", Netns: "/proc/1/ns/net", IfName: "eth0",
		Args: "K8S_POD_NAMESPACE=purple;K8S_POD_NAME=p1", StdinData: stdin}
}

func TestAddReturnsPrevResultUnchanged(t *testing.T) {
	for _, v := range []string{"1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			res, _, err := testutils.CmdAddWithArgs(args(conf(v, true)), func() error { return cmdAdd(args(conf(v, true))) })
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			got, err := current.NewResultFromResult(res)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.IPs) != 1 || got.IPs[0].Address.String() != "198.18.1.5/24" || got.IPs[0].Gateway.String() != "198.18.1.1" {
				t.Errorf("ADD changed the result: %+v", got.IPs)
			}
			if len(got.Interfaces) != 1 || got.Interfaces[0].Name != "eth0" {
				t.Errorf("ADD changed the interfaces: %+v", got.Interfaces)
			}
		})
	}
}

func TestAddPassesThroughOlderSpecResults(t *testing.T) {
	// 0.3.1 is what Calico, flannel and kindnet conflists still say.
	for _, v := range []string{"0.3.1", "0.4.0"} {
		a := args(conf(v, true))
		out, _, err := testutils.CmdAddWithArgs(a, func() error { return cmdAdd(a) })
		if err != nil {
			t.Fatalf("ADD %s: %v", v, err)
		}
		if out.Version() != v {
			t.Errorf("result version = %s, want %s", out.Version(), v)
		}
	}
}

func TestVerbsRejectBadInput(t *testing.T) {
	cases := []struct {
		name  string
		verb  func(*skel.CmdArgs) error
		stdin []byte
		code  uint
		say   string
	}{
		{"ADD without prevResult is an error, as for portmap", cmdAdd, conf("1.0.0", false), types.ErrInvalidNetworkConfig, "chained"},
		{"CHECK without prevResult is an error", cmdCheck, conf("1.0.0", false), types.ErrInvalidNetworkConfig, "prevResult"},
		{"malformed JSON is a decoding failure", cmdAdd, []byte(`{"cniVersion": `), types.ErrDecodingFailure, "parse"},
		{"an unknown spec version is refused", cmdDel, conf("9.9.9", false), types.ErrIncompatibleCNIVersion, "9.9.9"},
		{"a prevResult that is not a result is a decoding failure", cmdAdd,
			[]byte(`{"cniVersion":"1.0.0","name":"lab","type":"nsegress","prevResult":{"ips":"nope"}}`), types.ErrDecodingFailure, "prevResult"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.verb(args(c.stdin))
			var cniErr *types.Error
			if !errors.As(err, &cniErr) {
				t.Fatalf("got %v (%T), want a *types.Error", err, err)
			}
			if cniErr.Code != c.code {
				t.Errorf("code = %d, want %d (%s)", cniErr.Code, c.code, cniErr.Msg)
			}
			if !strings.Contains(cniErr.Msg+cniErr.Details, c.say) {
				t.Errorf("message %q does not mention %q", cniErr.Msg, c.say)
			}
		})
	}
}

func TestDelGCAndStatusSucceedForAnyContainer(t *testing.T) {
	gc := map[string]any{"cniVersion": "1.1.0", "name": "lab", "type": "nsegress",
		"cni.dev/valid-attachments": []map[string]string{{"containerID": "c2", "ifname": "eth0"}}}
	gcConf, _ := json.Marshal(gc)
	for name, call := range map[string]func() error{
		"DEL of an unknown container":     func() error { return cmdDel(args(conf("1.0.0", false))) },
		"DEL twice":                       func() error { _ = cmdDel(args(conf("1.1.0", true))); return cmdDel(args(conf("1.1.0", true))) },
		"GC with a valid-attachment list": func() error { return cmdGC(args(gcConf)) },
		"STATUS":                          func() error { return cmdStatus(args(conf("1.1.0", false))) },
		"CHECK after ADD":                 func() error { return cmdCheck(args(conf("1.0.0", true))) },
	} {
		if err := call(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
