package plugin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"time"
)

// AgentBudget bounds ADD's question to the node's agent; the API server
// gets LookupBudget after it.
const AgentBudget = 250 * time.Millisecond

// agentSocketName is the agent's socket in the state directory.
const agentSocketName = "agent.sock"

// AgentViewPath is the agent's endpoint for ADD's lookups.
const AgentViewPath = "/v1/view"

// AgentSocket is where the node's agent answers ADD's lookups.
func (s State) AgentSocket() string { return filepath.Join(s.Dir, agentSocketName) }

// lookupAgent asks the node's agent for the view: its client-go informers
// already hold the namespaces, the node's pods and the policies, so ADD
// needs no TLS handshake and no request of its own to the API server.
// The agent answers only once its caches have synced, and with no pod
// labels when its informer has not seen the pod yet.
func lookupAgent(ctx context.Context, st State, namespace, pod string) (View, error) {
	ctx, cancel := context.WithTimeout(ctx, AgentBudget)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", st.AgentSocket())
		},
	}}
	defer hc.CloseIdleConnections()
	q := url.Values{"namespace": {namespace}, "pod": {pod}}
	var v View
	if err := getJSON(ctx, hc, "http://agent", AgentViewPath+"?"+q.Encode(), &v); err != nil {
		return View{}, fmt.Errorf("agent: %w", err)
	}
	v.Source = "agent"
	return v, nil
}
