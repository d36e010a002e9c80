package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/nsegress/nsegress/e2e/privtest"
	"github.com/nsegress/nsegress/nodestate"
)

// storeInformer is an informer never run: the test fills its store.
func storeInformer(obj runtime.Object) cache.SharedIndexInformer {
	return cache.NewSharedIndexInformer(&cache.ListWatch{}, obj, 0, cache.Indexers{})
}

func TestServeAnswersThePluginFromTheInformers(t *testing.T) {
	dir := t.TempDir()
	r := &Role{reconciler: newReconciler(Config{StateDir: dir}),
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
	get := func(q string) (int, nodestate.View) {
		t.Helper()
		var resp *http.Response
		// Retried: the socket appears when Serve listens.
		privtest.Eventually(t, time.Second, "the agent's socket to answer", func() (bool, error) {
			var err error
			resp, err = hc.Get("http://agent" + nodestate.AgentViewPath + "?" + q)
			return err == nil, err
		})
		defer resp.Body.Close()
		var v nodestate.View
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
	r := &Role{reconciler: newReconciler(Config{StateDir: dir, Logf: t.Logf}), kick: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.watchRecords(ctx); err != nil {
		t.Fatal(err)
	}
	rec := nodestate.PodRecord{ContainerID: "c1", IfName: "eth0", Namespace: "purple", Name: "p1",
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

// TestAPolicyThatDoesNotDecodeIsLeftOut: one malformed object must not
// stop the node role or the plugin's lookups; the others are decoded.
func TestAPolicyThatDoesNotDecodeIsLeftOut(t *testing.T) {
	var logged []string
	r := &Role{reconciler: newReconciler(Config{Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }}),
		policies: storeInformer(&unstructured.Unstructured{})}
	good := policy("purple", 7, selectingTeam("purple"))
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&good)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.policies.GetStore().Add(&unstructured.Unstructured{Object: u})
	_ = r.policies.GetStore().Add(&unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "nsegress.io/v1alpha1", "kind": "EgressNATPolicy",
		"metadata": map[string]any{"name": "broken"},
		"spec":     map[string]any{"destinations": "not a list"},
	}})
	got, err := r.listPolicies()
	if err != nil || len(got) != 1 || got[0].Name != "purple" {
		t.Errorf("listPolicies = %v, %v; want only purple", got, err)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "broken") {
		t.Errorf("logged %q, want the broken policy named", logged)
	}
}
