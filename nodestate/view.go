package nodestate

import (
	"path/filepath"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// AgentViewPath is the agent's HTTP endpoint, on its unix socket, for
// ADD's lookups: GET with the query parameters "namespace" and "pod".
// The agent answers 200 with a View, 503 until its caches have synced and
// 404 for a namespace it does not know.
const AgentViewPath = "/v1/view"

// AgentSocket is where the node's agent answers ADD's lookups.
func (s State) AgentSocket() string { return filepath.Join(s.Dir, socketName) }

// View is what ADD decides with: the namespace's and the pod's labels and
// the policies. It is the agent socket's answer, and what the plugin
// builds from the API server or the snapshot.
type View struct {
	NamespaceLabels map[string]string `json:"namespaceLabels"`
	// PodLabels nil means the pod's labels are unknown (the source has
	// not seen the pod yet); a pod known to have no labels has an empty
	// map (KnownLabels).
	PodLabels map[string]string          `json:"podLabels"`
	Policies  []v1alpha1.EgressNATPolicy `json:"policies"`
	// Source says where the view came from, for the log.
	Source string `json:"-"`
}

// KnownLabels returns m, or an empty map for nil: the labels of an object
// that is known and has none, which a View must tell apart from unknown
// labels (nil).
func KnownLabels(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
