package nodestate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
)

// PluginType is the plugin's binary name and its conflist "type". An entry
// of this type in a conflist is nsegress's.
const PluginType = "nsegress"

// Entry is nsegress's element of the primary's conflist "plugins" list:
// the agent's installer writes it, the plugin parses it. Everything
// node-specific the plugin needs comes from here, so that nothing is
// hard-wired to one host and several simulated nodes can share one
// machine (docs/design.md §4).
//
// Its JSON form (MarshalJSON) is deterministic: "type" first, then the
// fields in declaration order. Installing the same Entry twice must give
// the same bytes, or every reconcile of the agent would rewrite the
// conflist.
type Entry struct {
	// Kubeconfig is the path of the kubeconfig the plugin uses to look up
	// pods and policies.
	Kubeconfig string `json:"kubeconfig"`
	// StateDir is the node's state directory (State), shared with the
	// agent.
	StateDir string `json:"stateDir"`
	// LogFile is where the plugin logs; a CNI plugin's stderr goes to the
	// runtime's log, not to us.
	LogFile string `json:"logFile"`
}

// Validate reports the first field that the plugin could not use. Paths
// must be absolute: the plugin runs with the runtime's working directory,
// which is no place to resolve a relative path against.
func (e Entry) Validate() error {
	for _, f := range []struct{ name, val string }{
		{"kubeconfig", e.Kubeconfig},
		{"stateDir", e.StateDir},
		{"logFile", e.LogFile},
	} {
		if f.val == "" {
			return fmt.Errorf("nsegress entry: %s is empty", f.name)
		}
		if !filepath.IsAbs(f.val) {
			return fmt.Errorf("nsegress entry: %s %q is not an absolute path", f.name, f.val)
		}
	}
	return nil
}

// entryFields is Entry without its methods, so that embedding it does not
// promote Entry.MarshalJSON and recurse.
type entryFields Entry

// wireEntry fixes the key order of the entry's JSON: "type" first, as
// every conflist writes it, then Entry's fields.
type wireEntry struct {
	Type string `json:"type"`
	entryFields
}

// MarshalJSON gives the entry's compact JSON form, with "type":
// "nsegress" first. HTML escaping is off, so paths read as written.
func (e Entry) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(wireEntry{Type: PluginType, entryFields: entryFields(e)}); err != nil {
		return nil, fmt.Errorf("nsegress entry: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
