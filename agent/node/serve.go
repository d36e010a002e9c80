package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/nsegress/nsegress/nodestate"
)

// Serve answers the plugin's lookups on the state directory's unix
// socket (nodestate.State.AgentSocket) from the role's informers, until ctx
// ends. It answers 503 until the caches have synced, 404 for a namespace
// it does not know, and no pod labels for a pod its informer has not seen
// yet: the plugin then asks the API server itself.
func (r *Role) Serve(ctx context.Context) error {
	path := r.st.AgentSocket()
	if err := os.MkdirAll(r.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("agent socket: %w", err)
	}
	// A socket left by an earlier agent; if it cannot go, Listen says why.
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("agent socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(nodestate.AgentViewPath, r.serveView)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 2 * time.Second}
	go func() {
		<-ctx.Done()
		// Close ends Serve below, which reports what went wrong.
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("agent socket: %w", err)
	}
	// Best effort: a socket left behind is removed by the next agent.
	_ = os.Remove(path)
	return nil
}

func (r *Role) serveView(w http.ResponseWriter, req *http.Request) {
	if !r.synced.Load() {
		http.Error(w, "the agent's caches have not synced yet", http.StatusServiceUnavailable)
		return
	}
	namespace, pod := req.URL.Query().Get("namespace"), req.URL.Query().Get("pod")
	v, ok, err := r.lookup(namespace, pod)
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	case !ok:
		http.Error(w, "namespace "+namespace+" not known to the agent", http.StatusNotFound)
	default:
		w.Header().Set("Content-Type", "application/json")
		// An error here is the plugin hanging up; it has moved on.
		_ = json.NewEncoder(w).Encode(v)
	}
}

// lookup builds the plugin's view of one pod from the informers.
func (r *Role) lookup(namespace, pod string) (nodestate.View, bool, error) {
	o, ok, err := r.nss.GetStore().GetByKey(namespace)
	if err != nil || !ok {
		return nodestate.View{}, false, err
	}
	v := nodestate.View{NamespaceLabels: nodestate.KnownLabels(o.(*corev1.Namespace).Labels)}
	if o, ok, err := r.pods.GetStore().GetByKey(namespace + "/" + pod); err == nil && ok {
		v.PodLabels = nodestate.KnownLabels(o.(*corev1.Pod).Labels)
	}
	if v.Policies, err = r.listPolicies(); err != nil {
		return nodestate.View{}, false, err
	}
	return v, true, nil
}
