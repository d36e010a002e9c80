package install

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nsegress/nsegress/agent/cniconf"
	"github.com/nsegress/nsegress/e2e/privtest"
	"github.com/nsegress/nsegress/nodestate"
)

const primaryConflist = `{
  "cniVersion": "1.0.0",
  "name": "lab",
  "plugins": [
    {"type": "ptp", "ipMasq": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.1.0/24"}]]}}
  ]
}
`

type node struct {
	bin, conf, state, plugin string
	k                        *Keeper
}

func newTestNode(t *testing.T) *node {
	t.Helper()
	root := t.TempDir()
	n := &node{bin: filepath.Join(root, "bin"), conf: filepath.Join(root, "net.d"), state: filepath.Join(root, "state"),
		plugin: filepath.Join(root, "nsegress")}
	for _, d := range []string{n.bin, n.conf, n.state} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(n.plugin, []byte("plugin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.conf, "10-lab.conflist"), []byte(primaryConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	conf, err := cniconf.NewInstaller(n.conf, filepath.Join(n.state, "cni"))
	if err != nil {
		t.Fatal(err)
	}
	n.k = &Keeper{BinDir: n.bin, PluginSrc: n.plugin, Conf: conf, Resync: time.Hour, Logf: t.Logf,
		Entry: nodestate.Entry{Kubeconfig: filepath.Join(n.state, "kubeconfig"), StateDir: n.state, LogFile: filepath.Join(n.state, "plugin.log")}}
	return n
}

func (n *node) conflist(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.conf, "10-lab.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeeperPutsTheEntryBackAfterEveryRewrite is the primary CNI that
// rewrites its conflist at start-up (Calico, kindnet), fifty times in a
// row: each time the entry is back well within a second.
func TestKeeperPutsTheEntryBackAfterEveryRewrite(t *testing.T) {
	n := newTestNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ready := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := n.k.Run(ctx, func() { close(ready) }); err != nil {
			t.Error(err)
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("the Keeper never became ready")
	}
	if !cniconf.Chained(n.conflist(t)) {
		t.Fatalf("ready, but not chained:\n%s", n.conflist(t))
	}
	if !n.k.Alive() {
		t.Error("a keeper that just reconciled reports itself not alive")
	}
	if b, err := os.ReadFile(filepath.Join(n.bin, PluginBinary)); err != nil || string(b) != "plugin" {
		t.Fatalf("plugin binary not installed: %v", err)
	}
	for i := 0; i < 50; i++ {
		// The primary writes its own file again, without our entry.
		if err := os.WriteFile(filepath.Join(n.conf, "10-lab.conflist"), []byte(primaryConflist), 0o644); err != nil {
			t.Fatal(err)
		}
		privtest.Eventually(t, time.Second, fmt.Sprintf("nsegress back in the conflist after rewrite %d", i), func() (bool, error) {
			return cniconf.Chained(n.conflist(t)), nil
		})
	}
	cancel()
	wg.Wait()
	if err := n.k.Uninstall(); err != nil {
		t.Fatal(err)
	}
	if got := n.conflist(t); string(got) != primaryConflist {
		t.Errorf("after uninstall the primary's file differs:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(n.bin, PluginBinary)); !os.IsNotExist(err) {
		t.Errorf("plugin binary left after uninstall (err=%v)", err)
	}
}

func TestKeeperIsNotReadyWhileCiliumHoldsTheConfDir(t *testing.T) {
	n := newTestNode(t)
	n.k.reconcile(context.Background(), true)
	if ok, err := n.k.Ready(); !ok {
		t.Fatal(err)
	}
	// Cilium's exclusive mode writes its own config and renames every
	// other one.
	if err := os.WriteFile(filepath.Join(n.conf, "05-cilium.conflist"),
		[]byte(`{"cniVersion":"0.3.1","name":"cilium","plugins":[{"type":"cilium-cni"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(n.conf, "10-lab.conflist"), filepath.Join(n.conf, "10-lab.conflist.cilium_bak")); err != nil {
		t.Fatal(err)
	}
	n.k.reconcile(context.Background(), true)
	ok, err := n.k.Ready()
	if ok || !cniconf.IsForeignRename(err) {
		t.Fatalf("Ready = %v, %v; want not ready with a foreign-rename error", ok, err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte("cni.exclusive=false")) {
		t.Errorf("error does not name the Cilium setting to change: %v", err)
	}
}
