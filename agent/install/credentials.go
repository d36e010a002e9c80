package install

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nsegress/nsegress/nodestate"
)

// Credentials writes the kubeconfig the plugin uses on the node. The
// plugin runs on the host, outside the agent's pod, so it cannot read the
// pod's projected token; the agent asks the API server for a token of the
// plugin's own ServiceAccount (TokenRequest), whose RBAC allows only the
// reads ADD needs, and writes it with the cluster's CA into Path, mode
// 0600, renewing it well before it expires.
type Credentials struct {
	Client kubernetes.Interface
	// Namespace and ServiceAccount name the plugin's ServiceAccount.
	Namespace, ServiceAccount string
	// Server is the API server's URL as the node reaches it.
	Server string
	// CAFile is the cluster CA the agent trusts (its own ServiceAccount
	// mount).
	CAFile string
	// Path is where the kubeconfig goes; the plugin's conflist entry
	// names it.
	Path string
	// Lifetime is the token lifetime asked for (the API server may cap
	// it).
	Lifetime time.Duration
	// BoundNode, when set, binds the token to that Node: the API server
	// rejects it once the Node object is gone, and it carries the node's
	// name (the user's extra authentication.kubernetes.io/node-name).
	// (A token cannot be bound to the agent's pod: the API server binds a
	// ServiceAccount's token only to pods running as that ServiceAccount.)
	BoundNode string
}

// Write requests a fresh token and writes the kubeconfig atomically. It
// returns when the token should be renewed: at 80% of its lifetime.
func (c *Credentials) Write(ctx context.Context) (time.Time, error) {
	ca, err := os.ReadFile(c.CAFile)
	if err != nil {
		return time.Time{}, fmt.Errorf("plugin kubeconfig: read CA: %w", err)
	}
	secs := int64(c.Lifetime / time.Second)
	spec := authv1.TokenRequestSpec{ExpirationSeconds: &secs}
	if c.BoundNode != "" {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, c.BoundNode, metav1.GetOptions{})
		if err != nil {
			return time.Time{}, fmt.Errorf("plugin kubeconfig: the node to bind the token to: %w", err)
		}
		spec.BoundObjectRef = &authv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: n.Name, UID: n.UID}
	}
	tr, err := c.Client.CoreV1().ServiceAccounts(c.Namespace).CreateToken(ctx, c.ServiceAccount,
		&authv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return time.Time{}, fmt.Errorf("plugin kubeconfig: request a token for %s/%s: %w", c.Namespace, c.ServiceAccount, err)
	}
	if err := nodestate.WriteFile(c.Path, kubeconfigBytes(c.Server, ca, tr.Status.Token), 0o600, nodestate.Durable, nil); err != nil {
		return time.Time{}, fmt.Errorf("plugin kubeconfig: write %s: %w", c.Path, err)
	}
	now := time.Now()
	life := tr.Status.ExpirationTimestamp.Sub(now)
	if life <= 0 {
		life = c.Lifetime
	}
	return now.Add(life * 8 / 10), nil
}

func kubeconfigBytes(server string, ca []byte, token string) []byte {
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: nsegress-plugin
  user:
    token: %s
contexts:
- name: nsegress
  context: {cluster: cluster, user: nsegress-plugin}
current-context: nsegress
`, server, base64.StdEncoding.EncodeToString(ca), token))
}
