package cniconf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nsegress/nsegress/plugin"
)

// PluginType is the "type" of nsegress's entry in a conflist (SPEC §4). An
// entry of this type is ours: Patch replaces it and Unpatch removes it.
const PluginType = plugin.PluginType

// Entry is nsegress's element of the primary's "plugins" list. The plugin
// reads everything node-specific from it (SPEC §4), so that several
// simulated nodes can share one machine with nothing hard-wired to a host.
//
// Its JSON form is deterministic (fields in declaration order, "type"
// first, maps with sorted keys): installing the same Entry twice must give
// the same bytes, or every reconcile of the agent would rewrite the file.
type Entry struct {
	// Settings are the fields the plugin reads (kubeconfig, stateDir,
	// logFile): one type, shared with the plugin's own parser.
	plugin.Settings
	// Tunnel holds the plugin's tunnel parameters as the plugin package
	// defines them; it must marshal to a JSON object. Nil leaves it out.
	Tunnel any `json:"tunnel,omitempty"`
}

// entryFields is Entry without its methods, so that embedding it does not
// promote Entry.MarshalJSON and recurse.
type entryFields Entry

// wireEntry fixes the key order of the entry's JSON: "type" first, as every
// conflist writes it, then Entry's fields.
type wireEntry struct {
	Type string `json:"type"`
	entryFields
}

// Validate reports the first field that the plugin could not use. Paths
// must be absolute: the plugin runs with the runtime's working directory,
// which is no place to resolve a relative path against.
func (e Entry) Validate() error {
	if err := e.Settings.Validate(); err != nil {
		return fmt.Errorf("nsegress entry: %w", err)
	}
	if e.Tunnel != nil {
		b, err := json.Marshal(e.Tunnel)
		if err != nil {
			return fmt.Errorf("nsegress entry: tunnel: %w", err)
		}
		if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
			return fmt.Errorf("nsegress entry: tunnel is not a JSON object: %s", t)
		}
	}
	return nil
}

// MarshalJSON gives the entry's compact JSON form, with "type": "nsegress".
func (e Entry) MarshalJSON() ([]byte, error) {
	return e.encode("", "", "")
}

// encode marshals the entry for a place in a file: indented with prefix and
// unit when unit is not empty (compact otherwise), with nl as line ending.
// HTML escaping is off, so paths read as written.
func (e Entry) encode(prefix, unit, nl string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if unit != "" {
		enc.SetIndent(prefix, unit)
	}
	if err := enc.Encode(wireEntry{Type: PluginType, entryFields: entryFields(e)}); err != nil {
		return nil, fmt.Errorf("nsegress entry: %w", err)
	}
	out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if nl != "" && nl != "\n" {
		// JSON strings cannot hold a raw newline, so every '\n' here is
		// one the encoder put between tokens.
		out = []byte(strings.ReplaceAll(string(out), "\n", nl))
	}
	return out, nil
}
