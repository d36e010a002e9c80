package node

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nsegress/nsegress/agent/datapath"
	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/nft"
	"github.com/nsegress/nsegress/nodestate"
)

// fakeKernel stands in for the node's nft table and links in these unit
// tests of the reconcile: it keeps the state the node role asked for,
// checked as the real kernel's would be (the real ones are tested in
// nft/, agent/datapath/ and in the lab).
type fakeKernel struct {
	mu sync.Mutex
	// table is the nft state applied last; nil when there is no table.
	table *nft.State
	// links is the links plan applied last; nil when there is none.
	links *datapath.Plan
	// addrs are the floating IPs on the uplink.
	addrs map[netip.Addr]bool
	// announced lists every gratuitous ARP sent.
	announced []netip.Addr
	// ifaces are the node's interfaces; nil: unknown (every recorded
	// pod's interface counts as present).
	ifaces map[string]bool
	// podIfs are the host interfaces the node routes pod addresses
	// through (PodInterface); an address absent is routed to none.
	podIfs map[netip.Addr]string
}

func newFakeKernel() *fakeKernel { return &fakeKernel{addrs: map[netip.Addr]bool{}} }

func (k *fakeKernel) kernel() Kernel {
	return Kernel{OpenNFT: func() (NFT, error) { return fakeNFT{k}, nil }, Links: fakeLinks{k}}
}

type fakeNFT struct{ k *fakeKernel }

func (f fakeNFT) Pods() (map[nft.PodKey]uint16, error) {
	f.k.mu.Lock()
	defer f.k.mu.Unlock()
	if f.k.table == nil {
		return map[nft.PodKey]uint16{}, nil
	}
	return maps.Clone(f.k.table.Pods), nil
}

func (f fakeNFT) Apply(s nft.State) error {
	if err := s.Validate(); err != nil {
		return err
	}
	f.k.mu.Lock()
	defer f.k.mu.Unlock()
	s.Pods = maps.Clone(s.Pods)
	s.Policies = slices.Clone(s.Policies)
	f.k.table = &s
	return nil
}

func (f fakeNFT) Delete() error {
	f.k.mu.Lock()
	defer f.k.mu.Unlock()
	f.k.table = nil
	return nil
}

func (f fakeNFT) Close() error { return nil }

// delPod is the plugin's DEL of one element.
func (k *fakeKernel) delPod(key nft.PodKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.table != nil {
		delete(k.table.Pods, key)
	}
}

type fakeLinks struct{ k *fakeKernel }

func (f fakeLinks) PodInterface(ip netip.Addr, _ string) (string, string, error) {
	f.k.mu.Lock()
	defer f.k.mu.Unlock()
	if hostIf, ok := f.k.podIfs[ip]; ok {
		return hostIf, "", nil
	}
	return "", "", fmt.Errorf("%s: %w", ip, datapath.ErrNotLocalPod)
}

func (f fakeLinks) Uplink(name string, _ netip.Addr) (string, int, error) {
	if name == "" {
		name = "eth0"
	}
	return name, 1500, nil
}

func (f fakeLinks) Apply(p datapath.Plan) ([]netip.Addr, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	f.k.mu.Lock()
	defer f.k.mu.Unlock()
	p.Tunnels = slices.Clone(p.Tunnels)
	f.k.links = &p
	var added []netip.Addr
	for _, ip := range p.FloatingIPs {
		if !f.k.addrs[ip] {
			f.k.addrs[ip] = true
			added = append(added, ip)
		}
	}
	for _, ip := range p.ReleasedIPs {
		if !slices.Contains(p.FloatingIPs, ip) {
			delete(f.k.addrs, ip)
		}
	}
	return added, nil
}

func (f fakeLinks) Announce(_ string, ip netip.Addr) error {
	f.k.mu.Lock()
	defer f.k.mu.Unlock()
	f.k.announced = append(f.k.announced, ip)
	return nil
}

func (f fakeLinks) Interfaces() (map[string]bool, error) {
	f.k.mu.Lock()
	defer f.k.mu.Unlock()
	return maps.Clone(f.k.ifaces), nil
}

// UnderlayRoutes: none, so every node's replies return through the
// tunnel (the plan's tests cover the underlay case).
func (f fakeLinks) UnderlayRoutes(string) (map[netip.Prefix]netip.Addr, error) { return nil, nil }

func (f fakeLinks) Remove(_ datapath.Settings, _ string, floating []netip.Addr) error {
	f.k.mu.Lock()
	defer f.k.mu.Unlock()
	f.k.links = nil
	for _, ip := range floating {
		delete(f.k.addrs, ip)
	}
	return nil
}

// kernelState is what a node holds, in a form cmp can compare: the
// policies and pods of the table, the tunnels and the floating IPs.
type kernelState struct {
	Policies []nft.Policy
	Pods     map[nft.PodKey]uint16
	Tunnels  []datapath.Tunnel
	Addrs    []netip.Addr
}

func (k *fakeKernel) state() kernelState {
	k.mu.Lock()
	defer k.mu.Unlock()
	var s kernelState
	if k.table != nil {
		s.Policies, s.Pods = k.table.Policies, k.table.Pods
	}
	if k.links != nil {
		s.Tunnels = k.links.Tunnels
	}
	s.Addrs = slices.SortedFunc(maps.Keys(k.addrs), netip.Addr.Compare)
	return s
}

// world is a small cluster as the API shows it to thisNode, plus the pods
// the plugin recorded on thisNode. Its fields are set independently, so
// that the events below commute: applied in any order, they end in the
// same world.
type world struct {
	policies map[string]v1alpha1.EgressNATPolicy // by name
	nss      map[string]map[string]string
	pods     map[string]worldPod // "ns/name"
	gwNodes  map[string]bool     // gateway nodes the API knows
	holder   map[string]string   // floating IP -> node
}

type worldPod struct {
	ip       string
	labels   map[string]string
	recorded bool // the plugin's ADD wrote its record
	known    bool // the agent's pod informer has seen it
}

func newWorld() *world {
	return &world{policies: map[string]v1alpha1.EgressNATPolicy{}, nss: map[string]map[string]string{},
		pods: map[string]worldPod{}, gwNodes: map[string]bool{}, holder: map[string]string{}}
}

var floating = []string{"198.51.100.101", "198.51.100.102", "198.51.100.103"}

func (w *world) view() view {
	v := view{nodes: map[string]*corev1.Node{
		thisNode: k8sNode(thisNode, string(corev1.NodeInternalIP), "10.0.0.11"),
	}, nss: map[string]map[string]string{}, pods: map[string]map[string]string{}}
	if w.gwNodes["gw-1"] {
		v.nodes["gw-1"] = k8sNode("gw-1", string(corev1.NodeInternalIP), "10.0.0.21")
	}
	for _, p := range w.policies {
		v.policies = append(v.policies, p)
	}
	v1alpha1.SortByAge(v.policies)
	v.groups = []v1alpha1.NetworkGatewayGroup{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "nsegress-system", Name: "onprem"},
		Spec:       v1alpha1.NetworkGatewayGroupSpec{FloatingIPs: floating},
		Status:     v1alpha1.NetworkGatewayGroupStatus{FloatingIPs: maps.Clone(w.holder)},
	}}
	maps.Copy(v.nss, w.nss)
	for k, p := range w.pods {
		if p.known {
			v.pods[k] = p.labels
		}
	}
	return v
}

// record is the plugin's record of a pod of the world.
func (w *world) record(key string) nodestate.PodRecord {
	p := w.pods[key]
	ns, name, _ := cut(key)
	return nodestate.PodRecord{ContainerID: "c-" + name, IfName: "eth0", Namespace: ns, Name: name,
		IP: netip.MustParseAddr(p.ip), HostIf: "veth-" + name, Added: testNow}
}

func cut(key string) (ns, name string, ok bool) {
	for i := range key {
		if key[i] == '/' {
			return key[:i], key[i+1:], true
		}
	}
	return "", key, false
}

// testNow is the tests' clock.
var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// testNode is one node's reconciler on a fake kernel and a state dir of
// its own.
type testNode struct {
	t *testing.T
	r *reconciler
	k *fakeKernel
}

func newTestNode(t *testing.T) *testNode {
	k := newFakeKernel()
	r := newReconciler(Config{NodeName: thisNode, StateDir: t.TempDir(), Port: datapath.DefaultPort, Kernel: k.kernel(), Logf: t.Logf})
	r.now = func() time.Time { return testNow }
	return &testNode{t: t, r: &r, k: k}
}

// sync makes the node's records what the world says, as the plugin's ADD
// and DEL do, and reconciles.
func (n *testNode) sync(w *world) {
	n.t.Helper()
	have, err := n.r.st.Records()
	if err != nil {
		n.t.Fatal(err)
	}
	for _, rec := range have {
		key := rec.Namespace + "/" + rec.Name
		if p, ok := w.pods[key]; !ok || !p.recorded {
			// DEL: the element, then the record.
			n.k.delPod(nft.PodKey{IP: rec.IP, HostIf: rec.HostIf})
			if err := n.r.st.Forget(rec.ContainerID, rec.IfName, rec, true); err != nil {
				n.t.Fatal(err)
			}
		}
	}
	for key, p := range w.pods {
		if !p.recorded || slices.ContainsFunc(have, func(r nodestate.PodRecord) bool { return r.Namespace+"/"+r.Name == key }) {
			continue
		}
		if err := n.r.st.Save(w.record(key)); err != nil {
			n.t.Fatal(err)
		}
	}
	if err := n.r.reconcile(w.view()); err != nil {
		n.t.Fatalf("reconcile: %v", err)
	}
}

// check asserts what a node must hold in any world, whatever led to it:
// every recorded pod whose policy is known is steered by exactly the
// policy that selects it, no element exists for anything else, every
// record says what the node does, and the floating IPs are the ones the
// group gives the node.
func (n *testNode) check(w *world, step string) {
	n.t.Helper()
	s := n.k.state()
	want := map[nft.PodKey]uint16{}
	for key, p := range w.pods {
		if !p.recorded || !p.known {
			continue
		}
		ns, _, _ := cut(key)
		if pol := w.governing(ns, p.labels); pol != nil {
			want[nft.PodKey{IP: netip.MustParseAddr(p.ip), HostIf: "veth-" + key[len(ns)+1:]}] = uint16(pol.Status.TunnelID)
		}
	}
	if diff := cmp.Diff(want, s.Pods, cmpAddrs, cmp.Comparer(func(a, b map[nft.PodKey]uint16) bool {
		return len(a) == len(b) && maps.Equal(a, b)
	})); diff != "" {
		n.t.Errorf("%s: pods map (-want +got):\n%s", step, diff)
	}
	recs, err := n.r.st.Records()
	if err != nil {
		n.t.Fatal(err)
	}
	for _, rec := range recs {
		if got := s.Pods[nft.PodKey{IP: rec.IP, HostIf: rec.HostIf}]; got != rec.TunnelID {
			n.t.Errorf("%s: record of %s/%s says tunnel %d, the node steers it with %d", step, rec.Namespace, rec.Name, rec.TunnelID, got)
		}
	}
	var wantAddrs []netip.Addr
	for ip, node := range w.holder {
		if node == thisNode {
			wantAddrs = append(wantAddrs, netip.MustParseAddr(ip))
		}
	}
	slices.SortFunc(wantAddrs, netip.Addr.Compare)
	if !slices.Equal(s.Addrs, wantAddrs) {
		n.t.Errorf("%s: floating IPs on the uplink = %v, want %v", step, s.Addrs, wantAddrs)
	}
}

// governing is the policy that must steer a pod of namespace ns with the
// given labels: the model's own rule (each test policy selects one team,
// optionally only pods labelled app=web; none overlap).
func (w *world) governing(ns string, podLabels map[string]string) *v1alpha1.EgressNATPolicy {
	team, ok := w.nss[ns]["team"]
	if !ok {
		return nil
	}
	for _, p := range w.policies {
		if p.Spec.Sources[0].NamespaceSelector.MatchLabels["team"] != team {
			continue
		}
		if sel := p.Spec.Sources[0].PodSelector; sel != nil && podLabels["app"] != sel.MatchLabels["app"] {
			continue
		}
		return &p
	}
	return nil
}

// event changes one independent field of the world.
type event struct {
	name  string
	apply func(w *world)
}

// events are changes that commute: each sets its own field.
func events() []event {
	setPod := func(key string, f func(*worldPod)) func(*world) {
		return func(w *world) {
			p := w.pods[key]
			f(&p)
			w.pods[key] = p
		}
	}
	return []event{
		{"create policy purple (tunnel 1, gateway gw-1)", func(w *world) {
			w.policies["purple"] = policy("purple", 1, gateway("gw-1", floating[0]))
		}},
		{"create policy darkblue (tunnel 2, gateway this node)", func(w *world) {
			w.policies["darkblue"] = policy("darkblue", 2, gateway(thisNode, floating[1]))
		}},
		{"create policy web (tunnel 3, failMode Open, app=web pods of team green)", func(w *world) {
			w.policies["web"] = policy("web", 3, selectingTeam("green"), withPodSelector("app", "web"), failOpen)
		}},
		{"gw-1 joins", func(w *world) { w.gwNodes["gw-1"] = true }},
		{"the group gives this node .102", func(w *world) { w.holder[floating[1]] = thisNode }},
		{"the group gives gw-1 .101", func(w *world) { w.holder[floating[0]] = "gw-1" }},
		{"label ns-a team=purple", func(w *world) { w.nss["ns-a"] = map[string]string{"team": "purple"} }},
		{"label ns-b team=darkblue", func(w *world) { w.nss["ns-b"] = map[string]string{"team": "darkblue"} }},
		{"label ns-c team=green", func(w *world) { w.nss["ns-c"] = map[string]string{"team": "green"} }},
		{"ADD ns-a/p1", setPod("ns-a/p1", func(p *worldPod) { p.ip, p.recorded = "198.18.1.2", true })},
		{"informer sees ns-a/p1", setPod("ns-a/p1", func(p *worldPod) { p.known = true })},
		{"ADD ns-b/p2", setPod("ns-b/p2", func(p *worldPod) { p.ip, p.recorded = "198.18.1.3", true })},
		{"informer sees ns-b/p2", setPod("ns-b/p2", func(p *worldPod) { p.known = true })},
		{"ADD ns-c/web", setPod("ns-c/web", func(p *worldPod) { p.ip, p.recorded = "198.18.1.4", true })},
		{"informer sees ns-c/web", setPod("ns-c/web", func(p *worldPod) { p.known = true })},
		{"label ns-c/web app=web", setPod("ns-c/web", func(p *worldPod) { p.labels = map[string]string{"app": "web"} })},
		{"ADD ns-c/db", setPod("ns-c/db", func(p *worldPod) { p.ip, p.recorded = "198.18.1.5", true })},
		{"informer sees ns-c/db", setPod("ns-c/db", func(p *worldPod) { p.known = true })},
	}
}

// fullWorld is the world after every event.
func fullWorld() *world {
	w := newWorld()
	for _, e := range events() {
		e.apply(w)
	}
	return w
}

// TestReconcileEndsInTheSameStateWhateverTheOrderOfEvents applies the
// events one by one, reconciling after each, in their listed order and
// then in random orders: after every step the node holds what that world
// needs, and at the end what a node that saw only the final world holds.
func TestReconcileEndsInTheSameStateWhateverTheOrderOfEvents(t *testing.T) {
	evs := events()
	final := fullWorld()
	fresh := newTestNode(t)
	fresh.sync(final)
	fresh.check(final, "a node that saw only the final world")
	want := fresh.k.state()

	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	orders := [][]int{}
	for i := range 30 {
		order := make([]int, len(evs))
		for j := range order {
			order[j] = j
		}
		if i > 0 {
			rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		}
		orders = append(orders, order)
	}
	for i, order := range orders {
		n := newTestNode(t)
		w := newWorld()
		for step, j := range order {
			evs[j].apply(w)
			n.sync(w)
			n.check(w, fmt.Sprintf("order %d, step %d (%s)", i, step, evs[j].name))
		}
		if diff := cmp.Diff(want, n.k.state(), cmpAddrs); diff != "" {
			t.Fatalf("order %d (%v) ends elsewhere than the final world alone (-want +got):\n%s", i, order, diff)
		}
		if t.Failed() {
			t.Fatalf("order %d: %v", i, order)
		}
	}
}

// TestReconcileMovesRunningPodsBetweenPolicies relabels a namespace and a
// pod while their pods run: the elements and records follow, with no ADD.
func TestReconcileMovesRunningPodsBetweenPolicies(t *testing.T) {
	n := newTestNode(t)
	w := fullWorld()
	n.sync(w)
	steps := []struct {
		name   string
		change func(*world)
	}{
		{"ns-a moves from purple to darkblue", func(w *world) { w.nss["ns-a"]["team"] = "darkblue" }},
		{"ns-c/web loses its app=web label", func(w *world) { w.pods["ns-c/web"] = worldPod{ip: "198.18.1.4", recorded: true, known: true} }},
		{"ns-c/db gains app=web", func(w *world) {
			w.pods["ns-c/db"] = worldPod{ip: "198.18.1.5", recorded: true, known: true, labels: map[string]string{"app": "web"}}
		}},
		{"policy darkblue is deleted", func(w *world) { delete(w.policies, "darkblue") }},
		{"ns-a moves back to purple", func(w *world) { w.nss["ns-a"]["team"] = "purple" }},
	}
	for _, s := range steps {
		s.change(w)
		n.sync(w)
		n.check(w, s.name)
	}
	rec, owned, err := n.r.st.ForContainer("c-p1", "eth0")
	if err != nil || !owned || rec.Policy != "purple" || rec.TunnelID != 1 {
		t.Errorf("record of ns-a/p1 = %+v (owned %v, %v); want policy purple, tunnel 1", rec, owned, err)
	}
}

// TestReconcileKeepsWhatADDProgrammedUntilTheInformerSeesThePod checks
// the grace of a pod the agent's informer has not seen: its element stays
// while it is young and goes once its DEL must have been lost.
func TestReconcileKeepsWhatADDProgrammedUntilTheInformerSeesThePod(t *testing.T) {
	n := newTestNode(t)
	w := fullWorld()
	n.sync(w)
	// ADD of a new purple pod: the plugin programmed it; the informer
	// has not seen it yet.
	w.pods["ns-a/new"] = worldPod{ip: "198.18.1.9", recorded: true}
	rec := w.record("ns-a/new")
	if err := n.r.st.Save(rec); err != nil {
		t.Fatal(err)
	}
	n.k.mu.Lock()
	n.k.table.Pods[nft.PodKey{IP: rec.IP, HostIf: rec.HostIf}] = 1
	n.k.mu.Unlock()
	key := nft.PodKey{IP: rec.IP, HostIf: rec.HostIf}
	n.sync(w)
	if n.k.state().Pods[key] != 1 {
		t.Errorf("a pod ADD programmed lost its element before the informer saw it")
	}
	// However long the informer does not see it (a broken watch), the
	// element stays while the pod's interface exists...
	n.k.mu.Lock()
	n.k.ifaces = map[string]bool{"eth0": true, rec.HostIf: true}
	n.k.mu.Unlock()
	n.r.now = func() time.Time { return testNow.Add(24 * time.Hour) }
	n.sync(w)
	if n.k.state().Pods[key] != 1 {
		t.Errorf("a pod whose interface exists lost its element because the informer has not seen it for a day")
	}
	// ...and goes with it (the DEL was lost: the runtime tore the pod's
	// namespace down without calling nsegress).
	n.k.mu.Lock()
	delete(n.k.ifaces, rec.HostIf)
	n.k.mu.Unlock()
	n.sync(w)
	if _, ok := n.k.state().Pods[key]; ok {
		t.Errorf("a pod whose interface is gone keeps its element")
	}
}

// TestUninstallRemovesEverythingTheRoleMade reconciles a gateway node and
// uninstalls it: no table, no links, no floating IP, no state left, also
// for an IP the node held once and no longer holds.
func TestUninstallRemovesEverythingTheRoleMade(t *testing.T) {
	n := newTestNode(t)
	w := fullWorld()
	w.holder[floating[2]] = thisNode
	n.sync(w)
	if got := n.k.state().Addrs; len(got) != 2 {
		t.Fatalf("floating IPs before uninstall = %v, want two", got)
	}
	if len(n.k.announced) < 2 {
		t.Errorf("floating IPs added without a gratuitous ARP: %v", n.k.announced)
	}
	// The group moves .103 away, and the node's address list is lost
	// between the reconcile and uninstall: the held list still has it.
	w.holder[floating[2]] = "gw-1"
	n.sync(w)
	n.k.mu.Lock()
	n.k.addrs[netip.MustParseAddr(floating[2])] = true // as if the release had failed
	n.k.mu.Unlock()

	if err := Uninstall(n.r.cfg.StateDir, "", datapath.Settings{}, n.k.kernel()); err != nil {
		t.Fatal(err)
	}
	s := n.k.state()
	if n.k.table != nil || n.k.links != nil || len(s.Addrs) != 0 {
		t.Errorf("after uninstall: table %v, links %v, floating IPs %v", n.k.table, n.k.links, s.Addrs)
	}
	left, err := os.ReadDir(n.r.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("after uninstall the state dir holds %v", left)
	}
}

// TestARecordThatCannotBeKeyedDoesNotStopTheNode: ADD recorded a pod no
// policy selected without its host interface (its route lookup failed);
// once a policy selects it, that record must not make every reconcile of
// the node fail: the other pods are programmed.
func TestARecordThatCannotBeKeyedDoesNotStopTheNode(t *testing.T) {
	good := newTestNode(t)
	good.sync(fullWorld())
	want := good.k.state()

	n := newTestNode(t)
	w := fullWorld()
	n.sync(w)
	// The bad record appears: ADD of a purple pod, unrecorded in the
	// world so that sync leaves the file alone.
	w.pods["ns-a/nohostif"] = worldPod{ip: "198.18.1.20", known: true}
	bad := w.record("ns-a/nohostif")
	bad.HostIf = ""
	if err := n.r.st.Save(bad); err != nil {
		t.Fatal(err)
	}
	if err := n.r.reconcile(w.view()); err != nil {
		t.Fatalf("reconcile with a record without host interface: %v", err)
	}
	if diff := cmp.Diff(want, n.k.state(), cmpAddrs); diff != "" {
		t.Errorf("the other pods are not programmed as without the bad record (-want +got):\n%s", diff)
	}
}

// TestALostRecordIsRebuiltFromTheAPI wipes the node's pod records (a state
// disk lost or restored from an old copy) under running pods: the
// reconcile rebuilds each from the API's address and the route to it, so
// no running pod loses its element, and the pod's DEL still finds its
// record. A running pod whose interface cannot be found gets no record
// and no element, and does not stop the node; a rebuilt record goes once
// its pod and its interface are gone.
func TestALostRecordIsRebuiltFromTheAPI(t *testing.T) {
	n := newTestNode(t)
	w := fullWorld()
	n.sync(w)
	want := n.k.state()
	running := func() view {
		v := w.view()
		v.running = map[string]netip.Addr{}
		for key, p := range w.pods {
			if p.known {
				v.running[key] = netip.MustParseAddr(p.ip)
			}
		}
		return v
	}
	n.k.mu.Lock()
	n.k.podIfs = map[netip.Addr]string{}
	n.k.ifaces = map[string]bool{}
	for key, p := range w.pods {
		_, name, _ := cut(key)
		n.k.podIfs[netip.MustParseAddr(p.ip)] = "veth-" + name
		n.k.ifaces["veth-"+name] = true
	}
	n.k.mu.Unlock()
	if err := os.RemoveAll(n.r.st.PodsDir()); err != nil {
		t.Fatal(err)
	}
	if err := n.r.reconcile(running()); err != nil {
		t.Fatalf("reconcile without records: %v", err)
	}
	if diff := cmp.Diff(want, n.k.state(), cmpAddrs); diff != "" {
		t.Errorf("running pods lost their elements with their records (-want +got):\n%s", diff)
	}
	recs, err := n.r.st.Records()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(w.pods) {
		t.Fatalf("rebuilt %d records, want %d: %+v", len(recs), len(w.pods), recs)
	}
	for _, rec := range recs {
		if !rec.Rebuilt || rec.ContainerID != "c-"+rec.Name || rec.HostIf != "veth-"+rec.Name {
			t.Errorf("rebuilt record %+v: want Rebuilt, the container c-%s of its index, host interface veth-%[2]s", rec, rec.Name)
		}
		if _, owned, err := n.r.st.ForContainer(rec.ContainerID, rec.IfName); err != nil || !owned {
			t.Errorf("the DEL of %s/%s would not find its rebuilt record: owned %v, %v", rec.Namespace, rec.Name, owned, err)
		}
	}

	// A purple pod whose interface the node cannot find: nothing for it,
	// everything else as before.
	w.pods["ns-a/lost"] = worldPod{ip: "198.18.1.30", known: true}
	if err := n.r.reconcile(running()); err != nil {
		t.Fatalf("reconcile with a pod whose interface is unknown: %v", err)
	}
	if diff := cmp.Diff(want, n.k.state(), cmpAddrs); diff != "" {
		t.Errorf("a pod without interface changed the node (-want +got):\n%s", diff)
	}
	delete(w.pods, "ns-a/lost")

	// ns-a/p1 goes: gone from the API, its veth gone with its namespace.
	delete(w.pods, "ns-a/p1")
	n.k.mu.Lock()
	delete(n.k.ifaces, "veth-p1")
	delete(n.k.podIfs, netip.MustParseAddr("198.18.1.2"))
	n.k.mu.Unlock()
	if err := n.r.reconcile(running()); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.k.state().Pods[nft.PodKey{IP: netip.MustParseAddr("198.18.1.2"), HostIf: "veth-p1"}]; ok {
		t.Errorf("a gone pod keeps its element")
	}
	recs, err = n.r.st.Records()
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(recs, func(r nodestate.PodRecord) bool { return r.Name == "p1" }) {
		t.Errorf("the rebuilt record of a gone pod stays")
	}

	// ns-b/p2 goes from the API, and before its interface goes a new pod
	// runs with its address: the new pod's record replaces the rebuilt
	// one.
	p2 := w.pods["ns-b/p2"]
	delete(w.pods, "ns-b/p2")
	w.pods["ns-b/p9"] = worldPod{ip: p2.ip, known: true}
	n.k.mu.Lock()
	n.k.podIfs[netip.MustParseAddr(p2.ip)] = "veth-p2"
	n.k.mu.Unlock()
	if err := n.r.reconcile(running()); err != nil {
		t.Fatal(err)
	}
	recs, err = n.r.st.Records()
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(recs, func(r nodestate.PodRecord) bool { return r.Name == "p2" }) ||
		!slices.ContainsFunc(recs, func(r nodestate.PodRecord) bool { return r.Name == "p9" }) {
		t.Errorf("a gone pod's rebuilt record keeps its address from the pod running with it now: %+v", recs)
	}
}

// TestADeletedOwnNodeStillLetsItsFloatingIPsGo: a Node deleted while its
// machine runs on (kubectl delete node) has its floating IPs moved by the
// controller; the node plans with the last copy of its Node and releases
// them, instead of failing every reconcile with them on its uplink.
func TestADeletedOwnNodeStillLetsItsFloatingIPsGo(t *testing.T) {
	n := newTestNode(t)
	w := fullWorld()
	w.holder[floating[2]] = thisNode
	n.sync(w)
	ip := netip.MustParseAddr(floating[2])
	if !slices.Contains(n.k.state().Addrs, ip) {
		t.Fatalf("before: %s not held", ip)
	}
	w.holder[floating[2]] = "gw-1"
	v := w.view()
	delete(v.nodes, thisNode)
	if err := n.r.reconcile(v); err != nil {
		t.Fatalf("reconcile without the node's own Node: %v", err)
	}
	if slices.Contains(n.k.state().Addrs, ip) {
		t.Errorf("after the controller moved %s away from the deleted node, it still holds it", ip)
	}
	n.check(w, "after the node's own Node was deleted")
}

// TestADeletedGatewayNodeStaysATunnelTargetForAWhile: the Node of the
// gateway a policy tunnels to is deleted (its machine runs on): the
// worker keeps tunnelling to it for goneNodeFor, until the IPs have moved,
// instead of dropping the policy's traffic at once, and forgets it after.
func TestADeletedGatewayNodeStaysATunnelTargetForAWhile(t *testing.T) {
	n := newTestNode(t)
	w := fullWorld()
	n.sync(w)
	mode := func() nft.Mode {
		for _, p := range n.k.state().Policies {
			if p.ID == 1 {
				return p.Mode
			}
		}
		t.Fatalf("policy purple (1) not programmed")
		return 0
	}
	if m := mode(); m != nft.ModeTunnel {
		t.Fatalf("before: purple in mode %s; want tunnel to gw-1", m)
	}
	w.gwNodes["gw-1"] = false
	n.sync(w)
	if m := mode(); m != nft.ModeTunnel {
		t.Errorf("right after gw-1's Node was deleted, purple is in mode %s; want still tunnel to gw-1", m)
	}
	// The HA runtime's world keeps it too: a floating IP taken from it is
	// passed on to its address (ha.Runtime.PassingOn).
	if ip := n.r.withGoneNodes(w.view()).haWorld().Nodes["gw-1"]; ip != netip.MustParseAddr("10.0.0.21") {
		t.Errorf("right after gw-1's Node was deleted, the HA world has it at %v; want 10.0.0.21", ip)
	}
	n.r.now = func() time.Time { return testNow.Add(goneNodeFor) }
	n.sync(w)
	if m := mode(); m == nft.ModeTunnel {
		t.Errorf("goneNodeFor after gw-1's Node was deleted, purple still tunnels to it")
	}
}
