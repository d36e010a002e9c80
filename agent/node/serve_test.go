package node

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/nft"
	"github.com/nsegress/nsegress/plugin"
)

// storeInformer is an informer never run: the test fills its store.
func storeInformer(obj runtime.Object) cache.SharedIndexInformer {
	return cache.NewSharedIndexInformer(&cache.ListWatch{}, obj, 0, cache.Indexers{})
}

func TestServeAnswersThePluginFromTheInformers(t *testing.T) {
	dir := t.TempDir()
	r := &Role{cfg: Config{StateDir: dir}, st: plugin.State{Dir: dir},
		policies: storeInformer(&unstructured.Unstructured{}), nss: storeInformer(&corev1.Namespace{}), pods: storeInformer(&corev1.Pod{})}
	_ = r.nss.GetStore().Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "purple", Labels: map[string]string{"team": "purple"}}})
	_ = r.pods.GetStore().Add(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "purple", Name: "p1", Labels: map[string]string{"egress": "onprem"}}})
	p := policy("purple", 7, selectingTeam("purple"))
	pol, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&p)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.policies.GetStore().Add(&unstructured.Unstructured{Object: pol})

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx) }()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(dir, "agent.sock"))
	}}}
	get := func(q string) (int, plugin.View) {
		t.Helper()
		var resp *http.Response
		var err error
		for i := 0; i < 100; i++ { // the socket appears when Serve listens
			if resp, err = hc.Get("http://agent" + plugin.AgentViewPath + "?" + q); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v plugin.View
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, v
	}
	if code, _ := get("namespace=purple&pod=p1"); code != http.StatusServiceUnavailable {
		t.Errorf("before the caches synced: %d, want 503", code)
	}
	r.synced.Store(true)
	code, v := get("namespace=purple&pod=p1")
	if code != http.StatusOK || v.NamespaceLabels["team"] != "purple" || v.PodLabels["egress"] != "onprem" ||
		len(v.Policies) != 1 || v.Policies[0].Status.TunnelID != 7 {
		t.Errorf("view = %d %+v", code, v)
	}
	if code, v := get("namespace=purple&pod=unseen"); code != http.StatusOK || v.PodLabels != nil {
		t.Errorf("a pod the informer has not seen: %d, pod labels %v; want none", code, v.PodLabels)
	}
	if code, _ := get("namespace=nope&pod=p1"); code != http.StatusNotFound {
		t.Errorf("an unknown namespace: %d, want 404", code)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestANewPodRecordKicksAReconcile(t *testing.T) {
	dir := t.TempDir()
	r := &Role{cfg: Config{StateDir: dir, Logf: t.Logf}, st: plugin.State{Dir: dir}, kick: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.watchRecords(ctx); err != nil {
		t.Fatal(err)
	}
	rec := plugin.PodRecord{ContainerID: "c1", IfName: "eth0", Namespace: "purple", Name: "p1",
		IP: netip.MustParseAddr("198.18.1.5"), HostIf: "veth1", Added: time.Now()}
	if err := r.st.Save(rec); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.kick:
	case <-time.After(2 * time.Second):
		t.Fatal("no reconcile asked for after the plugin wrote a pod record")
	}
}

func TestRecordsFollowTheMovesOfTheReconcile(t *testing.T) {
	dir := t.TempDir()
	r := &Role{cfg: Config{StateDir: dir, Logf: t.Logf}, st: plugin.State{Dir: dir}}
	in := plugin.PodRecord{ContainerID: "c1", IfName: "eth0", Namespace: "purple", Name: "p1",
		IP: netip.MustParseAddr("198.18.1.5"), HostIf: "veth1", Added: time.Now()}
	out := in
	out.ContainerID, out.IP, out.Policy, out.TunnelID = "c2", netip.MustParseAddr("198.18.1.6"), "purple", 7
	for _, rec := range []plugin.PodRecord{in, out} {
		if err := r.st.Save(rec); err != nil {
			t.Fatal(err)
		}
	}
	v := view{policies: []v1alpha1.EgressNATPolicy{policy("purple", 7)}}
	// The reconcile moved "in" into policy 7 and "out" out of it.
	r.updateRecords(v, []plugin.PodRecord{in, out}, map[nft.PodKey]uint16{{IP: in.IP, HostIf: "veth1"}: 7})
	for _, c := range []struct {
		id   string
		want uint16
		name string
	}{{"c1", 7, "purple"}, {"c2", 0, ""}} {
		got, owned, err := r.st.ForContainer(c.id, "eth0")
		if err != nil || !owned || got.TunnelID != c.want || got.Policy != c.name {
			t.Errorf("record of %s = %+v (owned %v, %v); want tunnel %d, policy %q", c.id, got, owned, err, c.want, c.name)
		}
	}
}
