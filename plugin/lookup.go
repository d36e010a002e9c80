package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/nodestate"
)

// LookupBudget bounds the API lookups of one ADD. With the agent's
// AgentBudget before it, the state lock's LockWait after it and the
// snapshot fallback, ADD answers within 2 s (docs/design.md §5) even when
// neither the agent nor the API server answers at all.
const LookupBudget = 1000 * time.Millisecond

// lookupAPI reads the namespace, the pod and the policies from the API
// server within ctx. It uses client-go's REST transport
// (TLS, credentials from the kubeconfig) with plain GETs decoded into the
// API types: the plugin starts for every pod and must not pay for a full
// clientset's initialisation.
func lookupAPI(ctx context.Context, kubeconfig, namespace, pod string) (nodestate.View, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nodestate.View{}, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nodestate.View{}, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	defer hc.CloseIdleConnections()
	get := func(path string, into any) error { return getJSON(ctx, hc, cfg.Host, path, into) }

	var (
		ns       corev1.Namespace
		p        corev1.Pod
		policies v1alpha1.EgressNATPolicyList
		errs     [3]error
		wg       sync.WaitGroup
	)
	// The namespace first: its answer opens the one TLS connection that
	// the two other reads then share (HTTP/2), instead of three
	// handshakes racing for the CPU.
	errs[0] = get("/api/v1/namespaces/"+url.PathEscape(namespace), &ns)
	if errs[0] != nil {
		return nodestate.View{}, errs[0]
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		errs[1] = get("/api/v1/namespaces/"+url.PathEscape(namespace)+"/pods/"+url.PathEscape(pod), &p)
	}()
	go func() {
		defer wg.Done()
		errs[2] = get("/apis/"+v1alpha1.SchemeGroupVersion.String()+"/egressnatpolicies", &policies)
	}()
	wg.Wait()
	switch {
	case errors.Is(errs[2], errNotFound):
		// The CRDs are not installed (or being removed with nsegress):
		// no policy can select the pod.
		policies.Items = nil
	case errs[2] != nil:
		return nodestate.View{}, errs[2]
	}
	v := nodestate.View{NamespaceLabels: nodestate.KnownLabels(ns.Labels), Policies: policies.Items, Source: "API server"}
	switch {
	case errs[1] == nil:
		v.PodLabels = nodestate.KnownLabels(p.Labels)
	case errors.Is(errs[1], errNotFound):
		// The pod is being deleted while its sandbox starts: decide
		// without its labels where that is possible.
	default:
		return nodestate.View{}, errs[1]
	}
	return v, nil
}

var errNotFound = errors.New("not found")

func getJSON(ctx context.Context, hc *http.Client, host, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, host+path, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("GET %s: %w", path, errNotFound)
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, truncate(body, 300))
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("GET %s: decode: %w", path, err)
	}
	return nil
}

// lookupSnapshot builds the view from the agent's snapshot.
func lookupSnapshot(st nodestate.State, namespace, pod string) (nodestate.View, bool, error) {
	snap, ok, err := st.ReadSnapshot()
	if err != nil || !ok {
		return nodestate.View{}, false, err
	}
	nsLabels, ok := snap.Namespaces[namespace]
	if !ok {
		return nodestate.View{}, false, nil
	}
	v := nodestate.View{NamespaceLabels: nodestate.KnownLabels(nsLabels), Policies: snap.Policies,
		Source: "snapshot of " + snap.Written.UTC().Format(time.RFC3339)}
	if l, ok := snap.Pods[namespace+"/"+pod]; ok {
		v.PodLabels = nodestate.KnownLabels(l)
	}
	return v, true, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
