package plugin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/nsegress/nsegress/nodestate"
)

// AgentBudget bounds ADD's question to the node's agent; the API server
// gets LookupBudget after it.
const AgentBudget = 250 * time.Millisecond

// lookupAgent asks the node's agent for the view: its client-go informers
// already hold the namespaces, the node's pods and the policies, so ADD
// needs no TLS handshake and no request of its own to the API server.
// The agent answers only once its caches have synced, and with no pod
// labels when its informer has not seen the pod yet.
func lookupAgent(ctx context.Context, st nodestate.State, namespace, pod string) (nodestate.View, error) {
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
	var v nodestate.View
	if err := getJSON(ctx, hc, "http://agent", nodestate.AgentViewPath+"?"+q.Encode(), &v); err != nil {
		return nodestate.View{}, fmt.Errorf("agent: %w", err)
	}
	v.Source = "agent"
	return v, nil
}
