package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/nsegress/nsegress/agent/datapath"
	"github.com/nsegress/nsegress/e2e/cnitier"
	"github.com/nsegress/nsegress/e2e/lab"
)

// chainNsegress returns conflist with an nsegress entry appended, as the
// installer writes it, with an admin kubeconfig that works from the node
// and state and log folders of the tier's own on the node.
func chainNsegress(t testing.TB, l *lab.Lab, conflist []byte) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(conflist, &doc); err != nil {
		t.Fatal(err)
	}
	doc["plugins"] = append(doc["plugins"].([]any), map[string]any{"type": "nsegress",
		"kubeconfig": l.NodeKubeconfig(), "stateDir": "/var/lib/nsegress-cni-tier", "logFile": "/var/log/nsegress-cni-tier/plugin.log"})
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// installPlugin builds bin/nsegress into the node's CNI bin folder.
func installPlugin(t testing.TB, n *lab.Node) {
	t.Helper()
	dst, err := n.HostPath(lab.CNIBinDir + "/nsegress")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", dst, "github.com/nsegress/nsegress/cmd/nsegress")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build nsegress: %v\n%s", err, out)
	}
	t.Cleanup(func() { os.Remove(dst) })
}

// TestCNITierRunsANodesConflist drives the lighter tier: the node's own
// conflist through libcni, with and without nsegress chained, for a pod
// whose object is in the API server.
func TestCNITierRunsANodesConflist(t *testing.T) {
	c := cluster(t)
	l := c.(labCluster).lab
	node := l.Nodes()[0]
	installPlugin(t, node)
	cs := clientset(t, c)
	ctx := context.Background()
	testNamespace(t, cs, "cni-tier", map[string]string{"team": "purple"})

	confPath, err := node.HostPath(lab.CNIConfDir + "/10-lab.conflist")
	if err != nil {
		t.Fatal(err)
	}
	primary, err := os.ReadFile(confPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, pod string
		conflist  []byte
	}{
		{"the primary alone", "primary-alone", nil},
		{"the primary with nsegress chained", "primary-nsegress", chainNsegress(t, l, primary)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := cnitier.New(l, node, tc.conflist)
			if err != nil {
				t.Fatal(err)
			}
			pod, err := h.NewPod(ctx, "cni-tier", tc.pod, map[string]string{"app": "x"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = h.Remove(context.Background(), pod) })

			res, err := h.Add(ctx, pod)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			r, err := current.NewResultFromResult(res)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.IPs) != 1 {
				t.Fatalf("ADD gave %d addresses, want 1: %v", len(r.IPs), r)
			}
			ip := r.IPs[0].Address.IP
			if !node.PodCIDR.Contains(mustAddr(t, ip.String())) {
				t.Errorf("pod address %s is outside %s", ip, node.PodCIDR)
			}
			var have bool
			err = pod.NetNS.Do(func() error {
				addrs, err := datapath.AddrList(nil, netlink.FAMILY_V4)
				for _, a := range addrs {
					have = have || a.IP.Equal(ip)
				}
				return err
			})
			if err != nil || !have {
				t.Errorf("the pod's namespace does not hold %s (err=%v)", ip, err)
			}
			if err := h.Check(ctx, pod); err != nil {
				t.Errorf("CHECK after ADD: %v", err)
			}
			if err := h.Del(ctx, pod); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if err := h.Del(ctx, pod); err != nil {
				t.Errorf("second DEL: %v", err)
			}
			lease, _ := node.HostPath("/var/lib/cni/networks/lab/" + ip.String())
			if _, err := os.Stat(lease); !os.IsNotExist(err) {
				t.Errorf("host-local still holds %s after DEL (stat err=%v)", ip, err)
			}
		})
	}
}

func mustAddr(t interface{ Fatal(...any) }, s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
