package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/e2e/cnitier"
	"github.com/nsegress/nsegress/e2e/lab"
)

// The model-based test's fixed names. Its pods run on a Node object of
// their own that no kubelet runs (modelNode), wired by the CNI tier on a
// real lab node, in a range no other pod uses.
const (
	modelInstallNS = "nsegress-model"
	modelNode      = "nsegress-model-node"
	modelStateDir  = "/var/lib/nsegress-model"
	modelTeamLabel = "nsegress-model-team"
	// modelMaxPods bounds the running pods: the range has six addresses,
	// so addresses are reused all the time.
	modelMaxPods = 5
)

var (
	modelNamespaces = []string{"model-a", "model-b", "model-c"}
	modelTeams      = []string{"red", "blue", "green"}
	modelPolicies   = []string{"model-p1", "model-p2"}
)

// TestTheNodeHoldsWhatTheModelSays runs random sequences of what happens
// to a node's pods (ADD, DEL twice as containerd does, CHECK, GC, address
// reuse), to its agent (SIGKILL at random points, also right after an
// API change, while it applies it, and a restart) and to the API (policy
// create, edit, delete; namespace relabelling), with the state disk
// filling up at times, against the real plugin binary and agent on a lab
// node. After every step the node's pods map must become exactly what a
// model says: an element for each running pod a policy selects, with that
// policy's tunnel ID, and nothing else. Pods no policy selects never fail
// ADD; selected pods either get their element or fail closed with code 11.
// A pod reports itself running after ADD, as a kubelet does: a pod whose
// record could not be written (the disk was full) has it rebuilt.
//
// NSEGRESS_MODEL_STEPS sets the number of steps (1000 by default; make
// soak runs more); NSEGRESS_MODEL_SEED replays a run.
func TestTheNodeHoldsWhatTheModelSays(t *testing.T) {
	c := cluster(t)
	steps := 1000
	if v := os.Getenv("NSEGRESS_MODEL_STEPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("NSEGRESS_MODEL_STEPS=%q: want a positive number", v)
		}
		steps = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("NSEGRESS_MODEL_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("NSEGRESS_MODEL_SEED=%q: want a number", v)
		}
		seed = n
	}
	t.Logf("model: seed %d, %d steps; replay with NSEGRESS_MODEL_SEED=%d", seed, steps, seed)
	r := newModelRig(t, c)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range steps {
		desc := r.step(rng)
		r.history = append(r.history, fmt.Sprintf("%d: %s", i, desc))
		r.compare(i)
	}
	t.Logf("model: %d steps; ADD of selected pods: %d programmed, %d failed closed; %d agent kills; %d disk-full spells",
		steps, r.addedSelected, r.failedSelected, r.kills, r.fulls)
	if r.addedSelected == 0 {
		t.Errorf("no selected pod was ever programmed: the run proves nothing")
	}
}

// modelPod is a pod the model runs.
type modelPod struct {
	pod    *cnitier.Pod
	ns     string
	ip     netip.Addr
	hostIf string
}

// modelRig is the node under test and the model of what it must hold.
type modelRig struct {
	t      *testing.T
	c      Cluster
	l      *lab.Lab
	node   *lab.Node
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	h      *cnitier.Harness
	agent  *lab.Process
	binary string // the agent binary, as the node sees it

	// The model.
	team     map[string]string // namespace -> team label ("": none)
	policies map[string]string // policy -> the team it selects
	running  map[string]*modelPod

	seq, agents                                 int
	history                                     []string
	addedSelected, failedSelected, kills, fulls int
}

func newModelRig(t *testing.T, c Cluster) *modelRig {
	t.Helper()
	ctx := context.Background()
	l := c.(labCluster).lab
	node := l.Nodes()[0]
	cs := clientset(t, c)
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &modelRig{t: t, c: c, l: l, node: node, cs: cs, dyn: dyn,
		team: map[string]string{}, policies: map[string]string{}, running: map[string]*modelPod{}}

	// The CRDs (nsegress itself is not installed: this node's agent is
	// the test's own).
	if out, err := kubectl(ctx, c, "", "apply", "-k", "../install/crds"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = kubectl(context.Background(), c, "", "delete", "-k", "../install/crds", "--wait=true") })
	if out, err := kubectl(ctx, c, "", "wait", "--for=condition=Established", "crd/egressnatpolicies.nsegress.io", "crd/networkgatewaygroups.nsegress.io"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	// Binaries: the plugin in the node's CNI bin folder, the agent beside
	// it in a folder of the test's own, where the agent also installs the
	// plugin (its own conflist folder stays empty: the test chains it).
	installPlugin(t, node)
	r.binary = "/opt/nsegress-model/nsegress-agent"
	host, err := node.HostPath(r.binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(filepath.Dir(host), "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", host, "github.com/nsegress/nsegress/cmd/nsegress-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, out)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(host)) })

	// The state disk: a small tmpfs in the node's mount namespace, which
	// the disk-full steps fill.
	if out, err := c.NodeExec(ctx, node.Name, "sh", "-c",
		"mkdir -p "+modelStateDir+" /var/log/nsegress-model && mount -t tmpfs -o size=2m,mode=0700 nsegress-model "+modelStateDir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = c.NodeExec(context.Background(), node.Name, "umount", "-l", modelStateDir) })

	// The API side: the install namespace (the controller's Lease), the
	// pods' namespaces, and a Node object for the pods that no kubelet
	// runs, with the lab node's address.
	testNamespace(t, cs, modelInstallNS, nil)
	for _, ns := range modelNamespaces {
		testNamespace(t, cs, ns, nil)
		r.team[ns] = ""
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: modelNode},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: node.IP.String()}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Nodes().Delete(context.Background(), modelNode, metav1.DeleteOptions{}) })
	t.Cleanup(func() {
		for _, p := range modelPolicies {
			_ = dyn.Resource(v1alpha1.EgressNATPoliciesResource).Delete(context.Background(), p, metav1.DeleteOptions{})
		}
	})

	conflist := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "nsegress-model", "plugins": [
  {"type": "ptp", "ipMasq": false, "ipam": {"type": "host-local", "dataDir": "/var/lib/nsegress-model-ipam",
    "ranges": [[{"subnet": "198.19.200.0/28", "rangeStart": "198.19.200.2", "rangeEnd": "198.19.200.7"}]]}},
  {"type": "nsegress", "kubeconfig": %q, "stateDir": %q, "logFile": "/var/log/nsegress-model/plugin.log"}]}`,
		l.NodeKubeconfig(), modelStateDir)
	r.h, err = cnitier.New(l, node, []byte(conflist))
	if err != nil {
		t.Fatal(err)
	}
	r.h.NodeName = modelNode
	t.Cleanup(func() {
		for _, p := range r.running {
			_ = r.h.Del(context.Background(), p.pod)
			_ = r.h.Remove(context.Background(), p.pod)
		}
	})

	controller, err := l.StartOnNode(node.Name, "model-controller", r.binary, "controller",
		"-kubeconfig", l.NodeKubeconfig(), "-namespace", modelInstallNS, "-pod-name", "model-controller", "-health-addr", "127.0.0.1:9820")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { controller.Stop(5 * time.Second) })
	r.startAgent()
	t.Cleanup(func() {
		// SIGTERM with no DaemonSet: the agent uninstalls its datapath.
		r.agent.Stop(20 * time.Second)
		if t.Failed() {
			t.Logf("the model agent's last words:\n%s", r.agent.Tail(40))
		}
	})
	r.compare(-1)
	return r
}

// startAgent starts the agent of the model's node.
func (r *modelRig) startAgent() {
	r.t.Helper()
	r.agents++
	a, err := r.l.StartOnNode(r.node.Name, fmt.Sprintf("model-agent-%d", r.agents), r.binary, "run",
		"-kubeconfig", r.l.NodeKubeconfig(), "-node-name", modelNode, "-namespace", modelInstallNS,
		"-daemonset", "nsegress-model-agent", "-state-dir", modelStateDir,
		"-cni-bin-dir", "/opt/nsegress-model/bin", "-cni-conf-dir", "/opt/nsegress-model/net.d",
		"-plugin", lab.CNIBinDir+"/nsegress", "-plugin-log-file", "/var/log/nsegress-model/plugin.log",
		"-health-addr", "127.0.0.1:9819", "-ha-port", "8490", "-resync", "5s")
	if err != nil {
		r.t.Fatal(err)
	}
	r.agent = a
}

// selecting is the policy that selects pods of namespace ns in the model.
func (r *modelRig) selecting(ns string) string {
	team := r.team[ns]
	if team == "" {
		return ""
	}
	for p, t := range r.policies {
		if t == team {
			return p
		}
	}
	return ""
}

// step does one random thing and says what.
func (r *modelRig) step(rng *rand.Rand) string {
	switch n := rng.IntN(100); {
	case n < 30:
		return r.add(rng)
	case n < 50:
		return r.del(rng)
	case n < 58:
		return r.check(rng)
	case n < 63:
		return r.gc()
	case n < 75:
		return r.relabel(rng)
	case n < 87:
		return r.policy(rng)
	case n < 95:
		return r.kill(rng)
	default:
		return r.diskFull(rng)
	}
}

func (r *modelRig) add(rng *rand.Rand) string {
	ctx := context.Background()
	if len(r.running) >= modelMaxPods {
		return r.del(rng)
	}
	r.seq++
	ns := modelNamespaces[rng.IntN(len(modelNamespaces))]
	name := fmt.Sprintf("m-%d", r.seq)
	pod, err := r.h.NewPod(ctx, ns, name, map[string]string{"app": "model"})
	if err != nil {
		r.t.Fatal(err)
	}
	selected := r.selecting(ns)
	res, err := r.h.Add(ctx, pod)
	if err != nil {
		var cniErr *types.Error
		if selected == "" {
			r.fail("ADD of %s/%s, which no policy selects, failed: %v", ns, name, err)
		}
		if !errors.As(err, &cniErr) || cniErr.Code != 11 {
			r.fail("ADD of %s/%s (policy %s) failed, but not closed with code 11: %v", ns, name, selected, err)
		}
		r.failedSelected++
		// The runtime tears a failed sandbox down.
		if err := r.h.Del(ctx, pod); err != nil {
			r.fail("DEL after a failed ADD of %s/%s: %v", ns, name, err)
		}
		if err := r.h.Remove(ctx, pod); err != nil {
			r.t.Fatal(err)
		}
		return fmt.Sprintf("ADD %s/%s (policy %s): failed closed: %v", ns, name, selected, err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		r.t.Fatal(err)
	}
	mp := &modelPod{pod: pod, ns: ns}
	for _, ip := range cur.IPs {
		mp.ip = netip.MustParseAddr(ip.Address.IP.String())
	}
	for _, i := range cur.Interfaces {
		if i.Sandbox == "" {
			mp.hostIf = i.Name
		}
	}
	r.running[name] = mp
	// As the kubelet reports a started pod: running, with its address.
	obj, err := r.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	obj.Status.Phase = corev1.PodRunning
	obj.Status.PodIP = mp.ip.String()
	obj.Status.PodIPs = []corev1.PodIP{{IP: mp.ip.String()}}
	if _, err := r.cs.CoreV1().Pods(ns).UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
		r.t.Fatal(err)
	}
	if selected != "" {
		r.addedSelected++
	}
	return fmt.Sprintf("ADD %s/%s (policy %q): %s on %s", ns, name, selected, mp.ip, mp.hostIf)
}

// pickPod is a random running pod, nil when none runs.
func (r *modelRig) pickPod(rng *rand.Rand) (string, *modelPod) {
	if len(r.running) == 0 {
		return "", nil
	}
	names := slices.Sorted(maps.Keys(r.running))
	n := names[rng.IntN(len(names))]
	return n, r.running[n]
}

func (r *modelRig) del(rng *rand.Rand) string {
	ctx := context.Background()
	name, p := r.pickPod(rng)
	if p == nil {
		return "DEL: no pod"
	}
	// containerd calls DEL twice: when the sandbox stops and when it is
	// removed.
	for i := range 2 {
		if err := r.h.Del(ctx, p.pod); err != nil {
			r.fail("DEL #%d of %s/%s: %v", i+1, p.ns, name, err)
		}
	}
	if err := r.h.Remove(ctx, p.pod); err != nil {
		r.t.Fatal(err)
	}
	delete(r.running, name)
	return fmt.Sprintf("DEL twice %s/%s (%s)", p.ns, name, p.ip)
}

func (r *modelRig) check(rng *rand.Rand) string {
	name, p := r.pickPod(rng)
	if p == nil {
		return "CHECK: no pod"
	}
	if err := r.h.Check(context.Background(), p.pod); err != nil {
		r.fail("CHECK of %s/%s: %v", p.ns, name, err)
	}
	return fmt.Sprintf("CHECK %s/%s", p.ns, name)
}

func (r *modelRig) gc() string {
	var valid []*cnitier.Pod
	for _, p := range r.running {
		valid = append(valid, p.pod)
	}
	if err := r.h.GC(context.Background(), valid...); err != nil {
		r.fail("GC with %d valid pods: %v", len(valid), err)
	}
	return fmt.Sprintf("GC keeping %d pods", len(valid))
}

func (r *modelRig) relabel(rng *rand.Rand) string {
	ns := modelNamespaces[rng.IntN(len(modelNamespaces))]
	team := append([]string{""}, modelTeams...)[rng.IntN(len(modelTeams)+1)]
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, modelTeamLabel, team)
	if team == "" {
		patch = fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, modelTeamLabel)
	}
	if _, err := r.cs.CoreV1().Namespaces().Patch(context.Background(), ns, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
		r.t.Fatal(err)
	}
	r.team[ns] = team
	return fmt.Sprintf("relabel namespace %s team=%q", ns, team)
}

func (r *modelRig) policy(rng *rand.Rand) string {
	ctx := context.Background()
	name := modelPolicies[rng.IntN(len(modelPolicies))]
	res := r.dyn.Resource(v1alpha1.EgressNATPoliciesResource)
	// A team no other policy selects: the model has no shadowing.
	var free []string
	for _, t := range modelTeams {
		used := false
		for p, pt := range r.policies {
			used = used || (p != name && pt == t)
		}
		if !used {
			free = append(free, t)
		}
	}
	team := free[rng.IntN(len(free))]
	if _, exists := r.policies[name]; exists {
		if rng.IntN(2) == 0 {
			if err := res.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				r.t.Fatal(err)
			}
			delete(r.policies, name)
			return "delete policy " + name
		}
		u, err := res.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			r.t.Fatal(err)
		}
		if err := unstructured.SetNestedSlice(u.Object, modelSources(team), "spec", "sources"); err != nil {
			r.t.Fatal(err)
		}
		if _, err := res.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
			r.t.Fatal(err)
		}
		r.policies[name] = team
		return fmt.Sprintf("edit policy %s to select team %s", name, team)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "nsegress.io/v1alpha1", "kind": "EgressNATPolicy",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"sources":      modelSources(team),
			"action":       "SNAT",
			"destinations": []any{map[string]any{"cidr": "203.0.113.0/24"}},
			"gatewayRef":   map[string]any{"name": "model", "namespace": modelInstallNS},
		},
	}}
	if _, err := res.Create(ctx, u, metav1.CreateOptions{}); err != nil {
		r.t.Fatal(err)
	}
	r.policies[name] = team
	return fmt.Sprintf("create policy %s selecting team %s", name, team)
}

// modelSources selects the namespaces of a team.
func modelSources(team string) []any {
	return []any{map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{modelTeamLabel: team}}}}
}

// selectedTeam is the team a policy object selects.
func selectedTeam(u unstructured.Unstructured) string {
	sources, _, _ := unstructured.NestedSlice(u.Object, "spec", "sources")
	if len(sources) != 1 {
		return ""
	}
	src, _ := sources[0].(map[string]any)
	team, _, _ := unstructured.NestedString(src, "namespaceSelector", "matchLabels", modelTeamLabel)
	return team
}

// kill SIGKILLs the agent, at times right after an API change so that it
// dies while it applies it, lets the plugin work without it for a few
// steps, and starts it again.
func (r *modelRig) kill(rng *rand.Rand) string {
	r.kills++
	var what []string
	if rng.IntN(2) == 0 {
		if rng.IntN(2) == 0 {
			what = append(what, r.relabel(rng))
		} else {
			what = append(what, r.policy(rng))
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
	}
	r.agent.Kill()
	what = append(what, "agent killed")
	for range rng.IntN(3) {
		// Without the agent: the plugin asks the API server.
		if rng.IntN(2) == 0 {
			what = append(what, r.add(rng))
		} else {
			what = append(what, r.del(rng))
		}
	}
	r.startAgent()
	return strings.Join(append(what, "agent restarted"), "; ")
}

// diskFull fills the state disk, runs a few plugin verbs, and frees it.
func (r *modelRig) diskFull(rng *rand.Rand) string {
	ctx := context.Background()
	r.fulls++
	if out, err := r.c.NodeExec(ctx, r.node.Name, "sh", "-c", "dd if=/dev/zero of="+modelStateDir+"/filler bs=64k 2>/dev/null; true"); err != nil {
		r.t.Fatalf("%v\n%s", err, out)
	}
	what := []string{"state disk full"}
	for range 1 + rng.IntN(3) {
		if rng.IntN(2) == 0 {
			what = append(what, r.add(rng))
		} else {
			what = append(what, r.del(rng))
		}
	}
	r.compare(-1)
	if out, err := r.c.NodeExec(ctx, r.node.Name, "rm", "-f", modelStateDir+"/filler"); err != nil {
		r.t.Fatalf("%v\n%s", err, out)
	}
	return strings.Join(append(what, "state disk freed"), "; ")
}

// fail stops the test with the step history.
func (r *modelRig) fail(format string, args ...any) {
	r.t.Helper()
	n := max(0, len(r.history)-15)
	r.t.Fatalf("%s\nlast steps:\n%s", fmt.Sprintf(format, args...), strings.Join(r.history[n:], "\n"))
}

// want is the pods map the node must hold: each running pod a policy
// selects, with the tunnel ID the controller gave the policy. Policies
// without one yet select nothing on the node; ok is false while the
// controller has not caught up with the model.
func (r *modelRig) want() (map[string]int64, bool) {
	ids := map[string]int64{}
	list, err := r.dyn.Resource(v1alpha1.EgressNATPoliciesResource).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return nil, false
	}
	for _, u := range list.Items {
		if _, ours := r.policies[u.GetName()]; !ours {
			continue
		}
		id, _, _ := unstructured.NestedInt64(u.Object, "status", "tunnelID")
		if id == 0 || selectedTeam(u) != r.policies[u.GetName()] {
			return nil, false
		}
		ids[u.GetName()] = id
	}
	if len(ids) != len(r.policies) {
		return nil, false
	}
	out := map[string]int64{}
	for _, p := range r.running {
		if pol := r.selecting(p.ns); pol != "" {
			out[p.ip.String()+" "+p.hostIf] = ids[pol]
		}
	}
	return out, true
}

// have is the node's pods map, "ip hostIf" -> tunnel ID (the policy's
// chain is pol_<tunnel ID>), for the model's addresses.
func (r *modelRig) have() (map[string]int64, error) {
	elems, err := podElements(context.Background(), r.c, r.node.Name)
	if err != nil {
		if strings.Contains(err.Error(), "No such file or directory") {
			return map[string]int64{}, nil // no table yet
		}
		return nil, err
	}
	out := map[string]int64{}
	for _, e := range elems {
		var kv []json.RawMessage
		var key struct {
			Concat []string `json:"concat"`
		}
		var verdict struct {
			Jump struct {
				Target string `json:"target"`
			} `json:"jump"`
		}
		if json.Unmarshal([]byte(e), &kv) != nil || len(kv) != 2 || json.Unmarshal(kv[0], &key) != nil ||
			len(key.Concat) != 2 || json.Unmarshal(kv[1], &verdict) != nil {
			return nil, fmt.Errorf("pods map element %s: not (address . interface) : jump pol_<ID>", e)
		}
		id, err := strconv.ParseInt(strings.TrimPrefix(verdict.Jump.Target, "pol_"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("pods map element %s: not (address . interface) : jump pol_<ID>", e)
		}
		if strings.HasPrefix(key.Concat[0], "198.19.200.") {
			out[key.Concat[0]+" "+key.Concat[1]] = id
		}
	}
	return out, nil
}

// compare waits until the node holds what the model says, or fails.
func (r *modelRig) compare(step int) {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var want, have map[string]int64
	var ok bool
	var err error
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		want, ok = r.want()
		have, err = r.have()
		if ok && err == nil && fmt.Sprint(want) == fmt.Sprint(have) {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(wait)
	}
	r.fail("after step %d the node's pods map is %v (%v); the model wants %v (controller caught up: %v)\nagent:\n%s",
		step, have, err, want, ok, r.agent.Tail(20))
}
