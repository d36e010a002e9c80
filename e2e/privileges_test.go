package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

const (
	agentSA      = "system:serviceaccount:nsegress-system:nsegress-agent"
	controllerSA = "system:serviceaccount:nsegress-system:nsegress-controller"
	pluginSA     = "system:serviceaccount:nsegress-system:nsegress-plugin"
)

// TestEachIdentityHoldsOnlyItsPrivileges asks the API server, as each of
// nsegress's identities, what it may do (kubectl auth can-i), then uses an
// agent's own pod-bound token against Nodes, where admission narrows what
// RBAC cannot: root on one node, holding its agent's token, can change
// nothing on another node, cannot label its node into a gateway group,
// cannot write status or placement, and cannot lead the controller.
func TestEachIdentityHoldsOnlyItsPrivileges(t *testing.T) {
	c := cluster(t)
	ctx := context.Background()
	cs := clientset(t, c)
	loadAgentImage(t, c)
	installNsegress(t, c)
	t.Cleanup(func() { uninstallNsegress(t, c) })

	type ask struct {
		as, verb, resource, sub, ns string
		want                        bool
	}
	asks := []ask{
		// The agent: reads, its own DaemonSet, the key, the plugin's token.
		{agentSA, "list", "pods", "", "", true},
		{agentSA, "watch", "networkgatewaygroups.nsegress.io", "", "", true},
		{agentSA, "get", "secrets/nsegress-ha", "", "nsegress-system", true},
		{agentSA, "create", "serviceaccounts/nsegress-plugin", "token", "nsegress-system", true},
		{agentSA, "patch", "nodes", "", "", true}, // narrowed by admission, below
		{agentSA, "update", "networkgatewaygroups.nsegress.io", "status", "nsegress-system", false},
		{agentSA, "patch", "egressnatpolicies.nsegress.io", "status", "", false},
		{agentSA, "update", "egressnatpolicies.nsegress.io", "", "", false},
		{agentSA, "create", "leases.coordination.k8s.io", "", "nsegress-system", false},
		{agentSA, "update", "leases.coordination.k8s.io/nsegress-controller", "", "nsegress-system", false},
		{agentSA, "create", "secrets", "", "nsegress-system", false},
		{agentSA, "get", "secrets/other", "", "nsegress-system", false},
		{agentSA, "update", "configmaps/nsegress-controller", "", "nsegress-system", false},
		{agentSA, "create", "events", "", "nsegress-system", false},
		{agentSA, "patch", "nodes", "status", "", false},
		{agentSA, "delete", "nodes", "", "", false},
		{agentSA, "create", "serviceaccounts/nsegress-agent", "token", "nsegress-system", false},
		{agentSA, "create", "pods", "", "default", false},
		// The controller: status, placement, its Lease, the key; nothing
		// on nodes, no tokens.
		{controllerSA, "update", "networkgatewaygroups.nsegress.io", "status", "nsegress-system", true},
		{controllerSA, "create", "leases.coordination.k8s.io", "", "nsegress-system", true},
		{controllerSA, "create", "secrets", "", "nsegress-system", true},
		{controllerSA, "patch", "nodes", "", "", false},
		{controllerSA, "update", "networkgatewaygroups.nsegress.io", "", "nsegress-system", false},
		{controllerSA, "create", "serviceaccounts/nsegress-plugin", "token", "nsegress-system", false},
		{controllerSA, "get", "secrets/other", "", "nsegress-system", false},
		{controllerSA, "create", "leases.coordination.k8s.io", "", "kube-system", false},
		// The plugin: what ADD reads, one object at a time.
		{pluginSA, "get", "pods", "", "default", true},
		{pluginSA, "get", "namespaces", "", "", true},
		{pluginSA, "list", "egressnatpolicies.nsegress.io", "", "", true},
		{pluginSA, "list", "pods", "", "", false},
		{pluginSA, "watch", "pods", "", "", false},
		{pluginSA, "get", "nodes", "", "", false},
		{pluginSA, "get", "secrets/nsegress-ha", "", "nsegress-system", false},
		{pluginSA, "patch", "pods", "", "default", false},
		{pluginSA, "update", "egressnatpolicies.nsegress.io", "status", "", false},
	}
	for _, a := range asks {
		args := []string{"auth", "can-i", a.verb, a.resource, "--as=" + a.as}
		if a.sub != "" {
			args = append(args, "--subresource="+a.sub)
		}
		if a.ns != "" {
			args = append(args, "-n", a.ns)
		}
		out, err := kubectl(ctx, c, "", args...)
		// The answer is the last line (warnings come first).
		lines := strings.Split(strings.TrimSpace(out), "\n")
		got := strings.TrimSpace(lines[len(lines)-1])
		if got != "yes" && got != "no" {
			t.Fatalf("kubectl %s: %q, %v", strings.Join(args, " "), out, err)
		}
		if (got == "yes") != a.want {
			t.Errorf("%s can %s %s (subresource %q) in %q: %s; want %v", a.as, a.verb, a.resource, a.sub, a.ns, got, a.want)
		}
	}

	// Admission, with real tokens: the agent pod of a worker, its own
	// Node, and another node.
	nodes := c.Nodes()
	own, other := nodes[0].Name, nodes[1].Name
	pods, err := cs.CoreV1().Pods("nsegress-system").List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=nsegress-agent", FieldSelector: "spec.nodeName=" + own})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("the agent pod of %s: %v, %d pods", own, err, len(pods.Items))
	}
	agentPod := pods.Items[0]
	bound := asToken(t, c, mintToken(t, cs, "nsegress-agent", &agentPod))
	unbound := asToken(t, c, mintToken(t, cs, "nsegress-agent", nil))

	claim := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:""}}}`, v1alpha1.ClaimsAnnotation))
	t.Cleanup(func() {
		for _, n := range []string{own, other} {
			_, _ = kubectl(context.Background(), c, "", "annotate", "node", n, v1alpha1.ClaimsAnnotation+"-")
			// One at a time: kubectl removes none when one is absent.
			for _, taint := range []string{"nsegress.io/agent-not-ready-", "example.com/other-"} {
				_, _ = kubectl(context.Background(), c, "", "taint", "node", n, taint)
			}
		}
	})
	patch := func(who kubernetes.Interface, node string, body []byte) error {
		_, err := who.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, body, metav1.PatchOptions{})
		return err
	}
	denied := func(what string, err error, says string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: allowed; want denied", what)
		} else if !strings.Contains(err.Error(), says) {
			t.Errorf("%s: %v; want a denial saying %q", what, err, says)
		}
	}
	if err := patch(bound, own, claim); err != nil {
		t.Errorf("the agent records a takeover on its own Node: %v; want allowed", err)
	}
	denied("the agent records a takeover on another Node", patch(bound, other, claim), "only the Node its pod runs on")
	denied("an agent token bound to no pod records a takeover", patch(unbound, own, claim), "a token without a node claim")
	denied("the agent labels its Node into a gateway group",
		patch(bound, own, []byte(`{"metadata":{"labels":{"nsegress.io/gateway":"true"}}}`)), "labels")
	denied("the agent annotates its Node", patch(bound, own, []byte(`{"metadata":{"annotations":{"example.com/x":"y"}}}`)), "annotation")
	denied("the agent cordons its Node", patch(bound, own, []byte(`{"spec":{"unschedulable":true}}`)), "cordon")

	// Taints: only the configured startup taint may go, and none may come.
	for _, taint := range []string{"nsegress.io/agent-not-ready=:NoSchedule", "example.com/other=:NoSchedule"} {
		if out, err := kubectl(ctx, c, "", "taint", "node", own, taint); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	without := func(key string) []byte {
		var keep []corev1.Taint
		for _, tt := range nodeTaints(t, cs, own) {
			if tt.Key != key {
				keep = append(keep, tt)
			}
		}
		b, err := json.Marshal(map[string]any{"spec": map[string]any{"taints": keep}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	denied("the agent lifts a taint that is not its startup taint", patch(bound, own, without("example.com/other")), "startup taint")
	if err := patch(bound, own, without("nsegress.io/agent-not-ready")); err != nil {
		t.Errorf("the agent lifts its startup taint: %v; want allowed", err)
	}
	add, err := json.Marshal(map[string]any{"spec": map[string]any{"taints": append(nodeTaints(t, cs, own),
		corev1.Taint{Key: "nsegress.io/agent-not-ready", Effect: corev1.TaintEffectNoSchedule})}})
	if err != nil {
		t.Fatal(err)
	}
	denied("the agent taints its Node", patch(bound, own, add), "startup taint")

	// The plugin's token, as the agent wrote it on the node: bound to the
	// node (the API server binds a token only to a pod of its own
	// ServiceAccount, so not to the agent's pod).
	kc, err := c.ReadNodeFile(own, "/var/lib/nsegress/kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	pcfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	who, err := asToken(t, c, pcfg.BearerToken).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("who is the plugin: %v", err)
	}
	u := who.Status.UserInfo
	if u.Username != pluginSA || strings.Join(u.Extra["authentication.kubernetes.io/node-name"], ",") != own {
		t.Errorf("the plugin's token on %s is %s with %v; want %s bound to the node %s", own, u.Username, u.Extra, pluginSA, own)
	}
}

// mintToken requests a ten-minute token of a ServiceAccount of
// nsegress-system, bound to pod when it is not nil.
func mintToken(t *testing.T, cs kubernetes.Interface, sa string, pod *corev1.Pod) string {
	t.Helper()
	secs := int64((10 * time.Minute).Seconds())
	spec := authv1.TokenRequestSpec{ExpirationSeconds: &secs}
	if pod != nil {
		spec.BoundObjectRef = &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := cs.CoreV1().ServiceAccounts("nsegress-system").CreateToken(context.Background(), sa,
		&authv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("a token for %s: %v", sa, err)
	}
	return tr.Status.Token
}

// asToken is a client of the lab's API server that authenticates with
// token alone (no client certificate).
func asToken(t *testing.T, c Cluster, token string) kubernetes.Interface {
	t.Helper()
	admin, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: admin.Host, BearerToken: token,
		TLSClientConfig: rest.TLSClientConfig{CAData: admin.CAData, CAFile: admin.CAFile, ServerName: admin.ServerName}}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func nodeTaints(t *testing.T, cs kubernetes.Interface, node string) []corev1.Taint {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Spec.Taints
}
