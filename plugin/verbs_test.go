package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/nft"
	"github.com/nsegress/nsegress/nodestate"
)

// prevResult is what ptp + host-local hand over for a pod with one
// address.
const prevResult = `{
  "cniVersion": "%s",
  "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
  "ips": [{"address": "%s/24", "gateway": "198.18.1.1", "interface": 0}],
  "routes": [{"dst": "0.0.0.0/0"}]
}`

// fakeTable stands in for the node's nft table in these unit tests of the
// verbs' logic; the real table is tested in nft/ and in the lab.
type fakeTable struct {
	mu         sync.Mutex
	pods       map[nft.PodKey]uint16
	programmed map[uint16]bool
	// delErr, when set, is what DelPod fails with (a broken table).
	delErr error
	// guards are the bridge guards, address to port.
	guards map[netip.Addr]string
}

func (f *fakeTable) AddPod(k nft.PodKey, id uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.programmed[id] {
		return fmt.Errorf("policy %d: %w", id, nft.ErrPolicyNotProgrammed)
	}
	f.pods[k] = id
	return nil
}

func (f *fakeTable) DelPod(k nft.PodKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.delErr != nil {
		return f.delErr
	}
	delete(f.pods, k)
	return nil
}

func (f *fakeTable) GuardPort(ip netip.Addr, port string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.guards == nil {
		f.guards = map[netip.Addr]string{}
	}
	f.guards[ip] = port
	return nil
}

func (f *fakeTable) UnguardPort(ip netip.Addr, port string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if port == "" || f.guards[ip] == port {
		delete(f.guards, ip)
	}
	return nil
}

func (f *fakeTable) Pods() (map[nft.PodKey]uint16, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[nft.PodKey]uint16{}
	for k, v := range f.pods {
		out[k] = v
	}
	return out, nil
}

func (f *fakeTable) Close() error { return nil }

// fakeAPI serves the three reads ADD makes.
type fakeAPI struct {
	noCRDs     bool
	namespaces map[string]map[string]string
	pods       map[string]map[string]string // ns/name -> labels
	policies   []v1alpha1.EgressNATPolicy
	delay      time.Duration
	// requests counts what the API server was asked.
	requests atomic.Int64
}

func (a *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.requests.Add(1)
	select {
	case <-time.After(a.delay):
	case <-r.Context().Done():
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	var obj any
	switch {
	case r.URL.Path == "/apis/nsegress.io/v1alpha1/egressnatpolicies":
		if a.noCRDs {
			http.NotFound(w, r)
			return
		}
		obj = v1alpha1.EgressNATPolicyList{Items: a.policies}
	case len(parts) == 4 && parts[2] == "namespaces":
		l, ok := a.namespaces[parts[3]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		obj = corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: parts[3], Labels: l}}
	case len(parts) == 6 && parts[4] == "pods":
		l, ok := a.pods[parts[3]+"/"+parts[5]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		obj = corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: parts[3], Name: parts[5], Labels: l}}
	default:
		http.NotFound(w, r)
		return
	}
	_ = json.NewEncoder(w).Encode(obj)
}

// env is one simulated node: a state dir, a kubeconfig, a fake table and
// a plugin wired to them.
type env struct {
	t      *testing.T
	dir    string
	table  *fakeTable
	api    *fakeAPI
	server string
	plugin *Plugin
}

func policy(name string, age int, id int32, ns map[string]string, pod map[string]string) v1alpha1.EgressNATPolicy {
	p := v1alpha1.EgressNATPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1700000000+int64(age), 0))},
		Spec: v1alpha1.EgressNATPolicySpec{
			Sources:      []v1alpha1.EgressSource{{NamespaceSelector: metav1.LabelSelector{MatchLabels: ns}}},
			Action:       v1alpha1.ActionSNAT,
			Destinations: []v1alpha1.EgressDestination{{CIDR: "203.0.113.0/24"}},
			GatewayRef:   v1alpha1.GatewayRef{Name: "onprem", Namespace: "nsegress-system"},
		},
		Status: v1alpha1.EgressNATPolicyStatus{TunnelID: id},
	}
	if pod != nil {
		p.Spec.Sources[0].PodSelector = &metav1.LabelSelector{MatchLabels: pod}
	}
	return p
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(),
		table: &fakeTable{pods: map[nft.PodKey]uint16{}, programmed: map[uint16]bool{1: true, 2: true, 3: true}},
		api: &fakeAPI{
			namespaces: map[string]map[string]string{"purple": {"team": "purple"}, "plain": {}},
			pods: map[string]map[string]string{
				"purple/p1": {"egress": "onprem"}, "purple/other": {}, "plain/p1": {},
			},
			policies: []v1alpha1.EgressNATPolicy{policy("purple", 0, 1, map[string]string{"team": "purple"}, map[string]string{"egress": "onprem"})},
		}}
	srv := httptest.NewServer(e.api)
	t.Cleanup(srv.Close)
	e.server = srv.URL
	e.writeKubeconfig(srv.URL)
	e.plugin = &Plugin{
		OpenTable:     func() (PodTable, error) { return e.table, nil },
		HostInterface: func(ip netip.Addr, _ types.Result) (string, string, error) { return "veth-" + ip.String(), "", nil },
	}
	return e
}

func (e *env) writeKubeconfig(server string) {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, server)
	if err := os.WriteFile(filepath.Join(e.dir, "kubeconfig"), []byte(kc), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) conf(version, podIP string, withPrev bool) []byte {
	c := map[string]any{"cniVersion": version, "name": "lab", "type": "nsegress",
		"kubeconfig": filepath.Join(e.dir, "kubeconfig"), "stateDir": filepath.Join(e.dir, "state"), "logFile": filepath.Join(e.dir, "plugin.log")}
	if withPrev {
		c["prevResult"] = json.RawMessage(fmt.Sprintf(prevResult, version, podIP))
	}
	b, _ := json.Marshal(c)
	return b
}

func args(container, ns, pod string, stdin []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: container, Netns: "/proc/1/ns/net", IfName: "eth0",
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + ns + ";K8S_POD_NAME=" + pod, StdinData: stdin}
}

func (e *env) add(container, ns, pod, ip string) (types.Result, error) {
	return e.addVersion("1.1.0", args(container, ns, pod, e.conf("1.1.0", ip, true)))
}

// addVersion runs ADD and parses what it printed as a result of
// cniVersion. (containernetworking's testutils capture the process's
// stdout, which tests running in parallel cannot share.)
func (e *env) addVersion(cniVersion string, a *skel.CmdArgs) (types.Result, error) {
	var out bytes.Buffer
	p := *e.plugin
	p.Stdout = &out
	if err := p.cmdAdd(a); err != nil {
		return nil, err
	}
	res, err := version.NewResult(cniVersion, out.Bytes())
	if err != nil {
		e.t.Fatalf("ADD printed %q: %v", out.String(), err)
	}
	return res, nil
}

func (e *env) del(container, ns, pod, ip string) error {
	return e.plugin.cmdDel(args(container, ns, pod, e.conf("1.1.0", ip, false)))
}

func key(ip string) nft.PodKey {
	return nft.PodKey{IP: netip.MustParseAddr(ip), HostIf: "veth-" + ip}
}

func cniCode(t *testing.T, err error) uint {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v (%T), want a CNI error", err, err)
	}
	return e.Code
}

func TestAddProgramsASelectedPodAndReturnsPrevResultUnchanged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	res, err := e.add("c1", "purple", "p1", "198.18.1.5")
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	got, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.IPs) != 1 || got.IPs[0].Address.String() != "198.18.1.5/24" || got.IPs[0].Gateway.String() != "198.18.1.1" || len(got.Interfaces) != 1 {
		t.Errorf("ADD changed the result: %+v", got)
	}
	if id := e.table.pods[key("198.18.1.5")]; id != 1 {
		t.Errorf("pod element = %d, want policy 1 (pods: %v)", id, e.table.pods)
	}
	recs, err := nodestate.State{Dir: filepath.Join(e.dir, "state")}.Records()
	if err != nil || len(recs) != 1 || recs[0].Policy != "purple" || recs[0].Name != "p1" {
		t.Errorf("records = %+v, %v", recs, err)
	}
}

func TestAddLeavesUnselectedPodsAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, p := range [][2]string{{"purple", "other"}, {"plain", "p1"}} {
		if _, err := e.add("c-"+p[1]+p[0], p[0], p[1], "198.18.1.9"); err != nil {
			t.Fatalf("ADD %s/%s: %v", p[0], p[1], err)
		}
	}
	if len(e.table.pods) != 0 {
		t.Errorf("unselected pods got elements: %v", e.table.pods)
	}
	// Not a Kubernetes pod at all: passed through.
	a := &skel.CmdArgs{ContainerID: "x", IfName: "eth0", StdinData: e.conf("1.0.0", "198.18.1.10", true)}
	if _, err := e.addVersion("1.1.0", a); err != nil {
		t.Errorf("ADD without K8S_POD_*: %v", err)
	}
}

func TestAddWithoutTheCRDsPassesPodsThrough(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.api.noCRDs = true // nsegress's CRDs not installed, or being removed
	if _, err := e.add("c1", "purple", "p1", "198.18.1.5"); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if len(e.table.pods) != 0 {
		t.Errorf("pods programmed without any policy: %v", e.table.pods)
	}
}

func TestTheOldestOfTwoSelectingPoliciesWins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.api.policies = append(e.api.policies,
		policy("a-newer", 10, 2, map[string]string{"team": "purple"}, nil),
		policy("z-older", -10, 3, map[string]string{"team": "purple"}, nil))
	if _, err := e.add("c1", "purple", "p1", "198.18.1.5"); err != nil {
		t.Fatal(err)
	}
	if id := e.table.pods[key("198.18.1.5")]; id != 3 {
		t.Errorf("pod went to policy %d, want 3 (z-older, created first)", id)
	}
}

func TestAddWithTheAPIServerDown(t *testing.T) {
	t.Parallel()
	t.Run("falls back to the agent's snapshot", func(t *testing.T) {
		e := newEnv(t)
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		ln.Close() // nothing listens there now
		e.writeKubeconfig("http://" + ln.Addr().String())
		st := nodestate.State{Dir: filepath.Join(e.dir, "state")}
		if err := st.WriteSnapshot(nodestate.Snapshot{Namespaces: e.api.namespaces, Pods: e.api.pods, Policies: e.api.policies}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := e.add("c1", "purple", "p1", "198.18.1.5"); err != nil {
			t.Fatalf("ADD from the snapshot: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("ADD took %s, more than 2 s", d)
		}
		if e.table.pods[key("198.18.1.5")] != 1 {
			t.Errorf("pod not programmed from the snapshot: %v", e.table.pods)
		}
	})
	t.Run("answers code 11 within 2 s when there is no snapshot", func(t *testing.T) {
		e := newEnv(t)
		e.api.delay = 5 * time.Second // accepts, never answers in time
		start := time.Now()
		_, err := e.add("c1", "purple", "p1", "198.18.1.5")
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("ADD took %s, more than 2 s", d)
		}
		if code := cniCode(t, err); code != types.ErrTryAgainLater {
			t.Errorf("code = %d, want 11", code)
		}
	})
	t.Run("a snapshot without the pod decides when pod labels do not matter", func(t *testing.T) {
		e := newEnv(t)
		e.writeKubeconfig("http://127.0.0.1:1")
		st := nodestate.State{Dir: filepath.Join(e.dir, "state")}
		pols := []v1alpha1.EgressNATPolicy{policy("purple", 0, 1, map[string]string{"team": "purple"}, nil)}
		if err := st.WriteSnapshot(nodestate.Snapshot{Namespaces: e.api.namespaces, Policies: pols}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.add("c1", "purple", "new", "198.18.1.6"); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		// With a podSelector the pod's labels decide: try again later.
		pols[0] = policy("purple", 0, 1, map[string]string{"team": "purple"}, map[string]string{"egress": "onprem"})
		if err := st.WriteSnapshot(nodestate.Snapshot{Namespaces: e.api.namespaces, Policies: pols}); err != nil {
			t.Fatal(err)
		}
		_, err := e.add("c2", "purple", "new2", "198.18.1.7")
		if code := cniCode(t, err); code != types.ErrTryAgainLater {
			t.Errorf("code = %d, want 11", code)
		}
	})
}

func TestAPolicyWithoutTunnelIDFailsClosedOrOpen(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.api.policies[0].Status.TunnelID = 0
	_, err := e.add("c1", "purple", "p1", "198.18.1.5")
	if code := cniCode(t, err); code != types.ErrTryAgainLater {
		t.Errorf("failMode Closed: code = %d, want 11", code)
	}
	e.api.policies[0].Spec.FailMode = v1alpha1.FailModeOpen
	if _, err := e.add("c1", "purple", "p1", "198.18.1.5"); err != nil {
		t.Errorf("failMode Open: %v", err)
	}
	if len(e.table.pods) != 0 {
		t.Errorf("pod programmed into an unassigned policy: %v", e.table.pods)
	}
	// A policy not yet programmed on this node: try again later too.
	e.api.policies[0].Status.TunnelID = 9
	e.api.policies[0].Spec.FailMode = v1alpha1.FailModeClosed
	_, err = e.add("c2", "purple", "p1", "198.18.1.5")
	if code := cniCode(t, err); code != types.ErrTryAgainLater {
		t.Errorf("unprogrammed policy: code = %d, want 11", code)
	}
}

func TestDelIsIdempotentAndSparesANewOwnerOfTheAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := e.add("old", "purple", "p1", "198.18.1.5"); err != nil {
		t.Fatal(err)
	}
	if err := e.del("old", "purple", "p1", "198.18.1.5"); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if len(e.table.pods) != 0 {
		t.Errorf("DEL left %v", e.table.pods)
	}
	// A new pod gets the address with the same host interface (a bridge
	// primary): containerd's late second DEL for the old container must
	// leave it alone.
	if _, err := e.add("new", "purple", "p1", "198.18.1.5"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := e.del("old", "purple", "p1", "198.18.1.5"); err != nil {
			t.Fatalf("late DEL: %v", err)
		}
	}
	if e.table.pods[key("198.18.1.5")] != 1 {
		t.Errorf("a late DEL of the old container removed the new pod's element")
	}
	if err := e.del("never-added", "purple", "p1", "198.18.1.5"); err != nil {
		t.Errorf("DEL of an unknown container: %v", err)
	}
}

func TestCheckAndGC(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i, c := range []string{"c1", "c2"} {
		if _, err := e.add(c, "purple", "p1", fmt.Sprintf("198.18.1.%d", 5+i)); err != nil {
			t.Fatal(err)
		}
	}
	check := func(c, ip string) error {
		a := args(c, "purple", "p1", e.conf("1.1.0", ip, true))
		return e.plugin.cmdCheck(a)
	}
	if err := check("c1", "198.18.1.5"); err != nil {
		t.Errorf("CHECK after ADD: %v", err)
	}
	delete(e.table.pods, key("198.18.1.5"))
	if err := check("c1", "198.18.1.5"); err == nil {
		t.Errorf("CHECK passed with the pod's element gone")
	}
	gc := map[string]any{"cniVersion": "1.1.0", "name": "lab", "type": "nsegress",
		"kubeconfig": filepath.Join(e.dir, "kubeconfig"), "stateDir": filepath.Join(e.dir, "state"), "logFile": filepath.Join(e.dir, "plugin.log"),
		"cni.dev/valid-attachments": []map[string]string{{"containerID": "c1", "ifname": "eth0"}}}
	b, _ := json.Marshal(gc)
	if err := e.plugin.cmdGC(&skel.CmdArgs{StdinData: b}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if _, ok := e.table.pods[key("198.18.1.6")]; ok {
		t.Errorf("GC left the element of c2, which the runtime no longer lists")
	}
	recs, _ := nodestate.State{Dir: filepath.Join(e.dir, "state")}.Records()
	if len(recs) != 1 || recs[0].ContainerID != "c1" {
		t.Errorf("records after GC = %+v, want c1's only", recs)
	}
}

func TestVerbsRejectBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	noPrev := e.conf("1.0.0", "", false)
	cases := []struct {
		name  string
		verb  func(*skel.CmdArgs) error
		stdin []byte
		code  uint
		say   string
	}{
		{"ADD without prevResult is an error, as for portmap", e.plugin.cmdAdd, noPrev, types.ErrInvalidNetworkConfig, "chained"},
		{"CHECK without prevResult is an error", e.plugin.cmdCheck, noPrev, types.ErrInvalidNetworkConfig, "prevResult"},
		{"malformed JSON is a decoding failure", e.plugin.cmdAdd, []byte(`{"cniVersion": `), types.ErrDecodingFailure, "parse"},
		{"an unknown spec version is refused", e.plugin.cmdDel, []byte(`{"cniVersion":"9.9.9","name":"lab","type":"nsegress"}`), types.ErrIncompatibleCNIVersion, "9.9.9"},
		{"a missing stateDir is named", e.plugin.cmdDel, []byte(`{"cniVersion":"1.0.0","name":"lab","type":"nsegress","kubeconfig":"/k","logFile":"/l"}`), types.ErrInvalidNetworkConfig, "stateDir"},
		{"a relative kubeconfig is named", e.plugin.cmdAdd, []byte(`{"cniVersion":"1.0.0","name":"lab","type":"nsegress","kubeconfig":"k","stateDir":"/s","logFile":"/l"}`), types.ErrInvalidNetworkConfig, "kubeconfig"},
		{"a prevResult that is not a result is a decoding failure", e.plugin.cmdAdd,
			[]byte(`{"cniVersion":"1.0.0","name":"lab","type":"nsegress","kubeconfig":"/k","stateDir":"/s","logFile":"/l","prevResult":{"ips":"nope"}}`), types.ErrDecodingFailure, "prevResult"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.verb(args("c1", "purple", "p1", c.stdin))
			var cniErr *types.Error
			if !errors.As(err, &cniErr) {
				t.Fatalf("got %v (%T), want a *types.Error", err, err)
			}
			if cniErr.Code != c.code {
				t.Errorf("code = %d, want %d (%s)", cniErr.Code, c.code, cniErr.Msg)
			}
			if !strings.Contains(cniErr.Msg+cniErr.Details, c.say) {
				t.Errorf("message %q does not mention %q", cniErr.Msg+" "+cniErr.Details, c.say)
			}
		})
	}
}

func TestAddPassesThroughOlderSpecResults(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
		a := args("c-"+v, "plain", "p1", e.conf(v, "198.18.1.7", true))
		out, err := e.addVersion(v, a)
		if err != nil {
			t.Fatalf("ADD %s: %v", v, err)
		}
		if out.Version() != v {
			t.Errorf("result version = %s, want %s", out.Version(), v)
		}
	}
	if err := e.plugin.cmdStatus(args("c", "plain", "p1", e.conf("1.1.0", "", false))); err != nil {
		t.Errorf("STATUS: %v", err)
	}
}

func TestAddAnswersCode11WhenTheStateLockStaysBusy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	unlock, err := nodestate.State{Dir: filepath.Join(e.dir, "state")}.Lock()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	start := time.Now()
	_, err = e.add("c1", "purple", "p1", "198.18.1.5")
	if code := cniCode(t, err); code != types.ErrTryAgainLater {
		t.Errorf("code = %d, want 11", code)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ADD waited %s for the lock", d)
	}
}

func TestAnUnselectedPodClearsAStaleElementUnderItsKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// An earlier pod with this address and interface, whose DEL was lost.
	e.table.pods[key("198.18.1.9")] = 1
	if _, err := e.add("c1", "plain", "p1", "198.18.1.9"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.table.pods[key("198.18.1.9")]; ok {
		t.Errorf("the stale element still steers the new, unselected pod")
	}
}

// fakeAgent serves views on the state directory's agent socket.
func (e *env) fakeAgent(t *testing.T, view func(ns, pod string) (int, nodestate.View)) {
	t.Helper()
	st := nodestate.State{Dir: filepath.Join(e.dir, "state")}
	if err := os.MkdirAll(st.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", st.AgentSocket())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, v := view(r.URL.Query().Get("namespace"), r.URL.Query().Get("pod"))
		if code != http.StatusOK {
			http.Error(w, "no", code)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

func TestAddAsksTheAgentFirst(t *testing.T) {
	t.Parallel()
	t.Run("the agent's answer is enough: no API request", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.fakeAgent(t, func(ns, pod string) (int, nodestate.View) {
			return http.StatusOK, nodestate.View{NamespaceLabels: map[string]string{"team": "purple"},
				PodLabels: map[string]string{"egress": "onprem"}, Policies: e.api.policies}
		})
		if _, err := e.add("c1", "purple", "p1", "198.18.1.5"); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		if e.table.pods[key("198.18.1.5")] != 1 {
			t.Errorf("pod not programmed from the agent's view: %v", e.table.pods)
		}
		if n := e.api.requests.Load(); n != 0 {
			t.Errorf("ADD made %d API requests; the agent's view was enough", n)
		}
	})
	t.Run("a pod the agent has not seen goes to the API server", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.fakeAgent(t, func(ns, pod string) (int, nodestate.View) {
			// purple's policy has a podSelector: without the pod's labels
			// the agent's view cannot decide.
			return http.StatusOK, nodestate.View{NamespaceLabels: map[string]string{"team": "purple"}, Policies: e.api.policies}
		})
		if _, err := e.add("c1", "purple", "p1", "198.18.1.5"); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		if e.table.pods[key("198.18.1.5")] != 1 {
			t.Errorf("pod not programmed from the API server: %v", e.table.pods)
		}
	})
	t.Run("an agent not synced yet goes to the API server", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.fakeAgent(t, func(string, string) (int, nodestate.View) { return http.StatusServiceUnavailable, nodestate.View{} })
		if _, err := e.add("c1", "purple", "p1", "198.18.1.5"); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		if e.table.pods[key("198.18.1.5")] != 1 {
			t.Errorf("pod not programmed: %v", e.table.pods)
		}
	})
}

// TestUnrelatedPodsNeverFailBecauseOfNsegress: a pod no policy selects
// starts whatever state the node's nsegress files and table are in; a pod
// a policy selects fails with the cause instead of starting unprogrammed.
func TestUnrelatedPodsNeverFailBecauseOfNsegress(t *testing.T) {
	t.Parallel()
	stateDir := func(e *env) string { return filepath.Join(e.dir, "state") }
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T, e *env) (cleanup func())
	}{
		{"the state lock stays busy", func(t *testing.T, e *env) func() {
			unlock, err := nodestate.State{Dir: stateDir(e)}.Lock()
			if err != nil {
				t.Fatal(err)
			}
			return unlock
		}},
		{"the state directory cannot be created (a full or read-only disk)", func(t *testing.T, e *env) func() {
			if err := os.WriteFile(stateDir(e), []byte("not a directory"), 0o600); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}},
		{"no record can be written", func(t *testing.T, e *env) func() {
			if err := os.MkdirAll(stateDir(e), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(stateDir(e), "pods"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}},
		{"the nft table refuses changes", func(t *testing.T, e *env) func() {
			e.table.delErr = errors.New("netlink: operation not permitted")
			e.table.programmed = map[uint16]bool{}
			return func() {}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			defer tc.breakIt(t, e)()
			if _, err := e.add("c1", "plain", "p1", "198.18.1.9"); err != nil {
				t.Errorf("a pod no policy selects failed: %v", err)
			}
			_, err := e.add("c2", "purple", "p1", "198.18.1.10")
			if err == nil {
				t.Fatalf("a selected pod started although nsegress could not program it")
			}
			if code := cniCode(t, err); code != types.ErrTryAgainLater {
				t.Errorf("selected pod: code %d (%v), want 11 naming the cause", code, err)
			}
		})
	}
}

// TestASelectedPodOnABridgeIsGuardedOnItsPort: on a bridge the element's
// key is the bridge, so ADD guards the pod's address on its own port
// before the element exists, and DEL removes the guard after it; a pod no
// policy selects clears a stale guard of its address.
func TestASelectedPodOnABridgeIsGuardedOnItsPort(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.plugin.HostInterface = func(ip netip.Addr, _ types.Result) (string, string, error) {
		return "cni0", "veth-" + ip.String(), nil
	}
	ip := netip.MustParseAddr("198.18.1.5")
	if _, err := e.add("c1", "purple", "p1", ip.String()); err != nil {
		t.Fatal(err)
	}
	if e.table.guards[ip] != "veth-198.18.1.5" || e.table.pods[nft.PodKey{IP: ip, HostIf: "cni0"}] != 1 {
		t.Fatalf("guards %v, pods %v; want the pod guarded on its port and keyed on the bridge", e.table.guards, e.table.pods)
	}
	if err := e.del("c1", "purple", "p1", ip.String()); err != nil {
		t.Fatal(err)
	}
	if len(e.table.guards) != 0 || len(e.table.pods) != 0 {
		t.Errorf("after DEL: guards %v, pods %v", e.table.guards, e.table.pods)
	}
	e.table.guards = map[netip.Addr]string{ip: "veth-gone"} // a DEL that never came
	if _, err := e.add("c2", "plain", "p1", ip.String()); err != nil {
		t.Fatal(err)
	}
	if len(e.table.guards) != 0 {
		t.Errorf("a stale guard still binds the unselected pod's address: %v", e.table.guards)
	}
}
