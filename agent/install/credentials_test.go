package install

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"
)

func TestCredentialsWriteAPrivateKubeconfigWithThePluginsToken(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	client := fake.NewSimpleClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1", UID: "6f1c"}})
	var asked string
	var bound *authv1.BoundObjectReference
	tokens := 0
	client.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ca := a.(k8stesting.CreateActionImpl)
		if a.GetSubresource() != "token" {
			return false, nil, nil
		}
		asked = a.GetNamespace() + "/" + ca.Name
		bound = ca.Object.(*authv1.TokenRequest).Spec.BoundObjectRef
		tokens++
		return true, &authv1.TokenRequest{Status: authv1.TokenRequestStatus{
			Token:               "token-" + string(rune('0'+tokens)),
			ExpirationTimestamp: metav1.NewTime(time.Now().Add(time.Hour)),
		}}, nil
	})
	c := &Credentials{Client: client, Namespace: "nsegress-system", ServiceAccount: "nsegress-plugin",
		Server: "https://198.51.100.2:6443", CAFile: ca, Path: filepath.Join(dir, "kubeconfig"), Lifetime: time.Hour,
		BoundNode: "worker-1"}
	renew, err := c.Write(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if asked != "nsegress-system/nsegress-plugin" {
		t.Errorf("token requested for %q, want the plugin's ServiceAccount", asked)
	}
	if bound == nil || bound.Kind != "Node" || bound.Name != "worker-1" || bound.UID != "6f1c" {
		t.Errorf("the token is bound to %+v; want the agent's Node", bound)
	}
	if d := time.Until(renew); d < 40*time.Minute || d > 50*time.Minute {
		t.Errorf("renew in %s, want at 80%% of an hour", d)
	}
	fi, err := os.Stat(c.Path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig: %v, mode %v; want 0600", err, fi.Mode())
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Path)
	if err != nil {
		t.Fatalf("the kubeconfig does not load: %v", err)
	}
	if cfg.Host != c.Server || cfg.BearerToken != "token-1" || !strings.Contains(string(cfg.CAData), "BEGIN CERTIFICATE") {
		t.Errorf("kubeconfig = host %q token %q ca %q", cfg.Host, cfg.BearerToken, cfg.CAData)
	}
	// A renewal rewrites it with the new token.
	if _, err := c.Write(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cfg, _ := clientcmd.BuildConfigFromFlags("", c.Path); cfg == nil || cfg.BearerToken != "token-2" {
		t.Errorf("after renewal the kubeconfig holds %v, want token-2", cfg)
	}
}
