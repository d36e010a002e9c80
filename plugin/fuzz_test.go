package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/nodestate"
)

// FuzzParseConfig: the runtime's stdin (network configuration and
// prevResult) is outside input. Whatever it holds, ParseConfig answers
// with a config it validated or a CNI error, never a panic.
func FuzzParseConfig(f *testing.F) {
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		f.Add([]byte(fmt.Sprintf(`{"cniVersion":%q,"name":"lab","type":"nsegress","kubeconfig":"/k","stateDir":"/s","logFile":"/l","prevResult":`+prevResult+`}`,
			v, v, "198.18.1.5")))
	}
	f.Add([]byte(`{"cniVersion":"1.1.0","name":"lab","type":"nsegress","prevResult":{"ips":[{"address":"not-an-ip"}]}}`))
	f.Add([]byte(`{"cniVersion":"1.1.0","prevResult":null}`))
	f.Add([]byte(`{"cniVersion": `))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, stdin []byte) {
		conf, err := ParseConfig(stdin)
		if err != nil {
			var cniErr *types.Error
			if !errors.As(err, &cniErr) || cniErr.Code == 0 {
				t.Fatalf("ParseConfig error %v is not a CNI error with a code", err)
			}
			return
		}
		if !slices.Contains(SupportedVersions, conf.CNIVersion) {
			t.Fatalf("accepted cniVersion %q", conf.CNIVersion)
		}
		if err := conf.Entry.Validate(); err != nil {
			t.Fatalf("accepted an invalid entry: %v", err)
		}
	})
}

// FuzzAgentAnswer: what comes back on the agent socket is outside input
// to the plugin (another process wrote it). Whatever it is, the lookup
// returns a view or an error, and the view goes through policy selection
// without a panic.
func FuzzAgentAnswer(f *testing.F) {
	f.Add([]byte(`{"namespaceLabels":{"team":"purple"},"podLabels":{},"policies":[{"metadata":{"name":"p","uid":"u"},"spec":{"sources":[{"namespaceSelector":{"matchLabels":{"team":"purple"}}}],"action":"SNAT","destinations":[{"cidr":"203.0.113.0/24"}]},"status":{"tunnelID":3}}]}`))
	f.Add([]byte(`{"policies":[{"spec":{"sources":[{"namespaceSelector":{"matchExpressions":[{"key":"a","operator":"Bogus"}]}}]}}]}`))
	f.Add([]byte(`{"namespaceLabels":null,"podLabels":null,"policies":null}`))
	f.Add([]byte(`not json`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, answer []byte) {
		st := nodestate.State{Dir: t.TempDir()}
		ln, err := net.Listen("unix", st.AgentSocket())
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(answer)
		})}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		v, err := lookupAgent(context.Background(), st, "purple", "client")
		if err != nil {
			return
		}
		_, _ = v1alpha1.SelectPolicy(v.Policies, v.NamespaceLabels, v.PodLabels)
	})
}
