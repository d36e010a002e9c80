// Package plugin implements the nsegress CNI plugin's verbs. The plugin is
// chained after a cluster's primary CNI; see SPEC §2.
package plugin

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// PluginType is the plugin's binary name and its conflist "type".
const PluginType = "nsegress"

// SupportedVersions are the CNI spec versions the plugin speaks: SPEC §4's
// 0.4.0, 1.0.0 and 1.1.0, and 0.3.0/0.3.1 because Calico, flannel, kindnet
// and Cilium still write "cniVersion": "0.3.1" in the conflists nsegress
// chains into, and libcni hands that version to every plugin of the list;
// refusing it would fail every pod's ADD on those clusters.
var SupportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// Settings are the node-specific fields of the plugin's conflist entry,
// written by the agent's installer (agent/cniconf.Entry embeds this type)
// and read here: nothing is hard-wired to one host (SPEC §4).
type Settings struct {
	// Kubeconfig is the path of the kubeconfig the plugin uses to look up
	// pods and policies.
	Kubeconfig string `json:"kubeconfig"`
	// StateDir is the plugin's directory for per-node state: the pod
	// records it shares with the agent and the agent's last known
	// snapshot that ADD falls back to (SPEC §5).
	StateDir string `json:"stateDir"`
	// LogFile is where the plugin logs; a CNI plugin's stderr goes to the
	// runtime's log, not to us.
	LogFile string `json:"logFile"`
}

// Validate reports the first field that the plugin could not use. Paths
// must be absolute: the plugin runs with the runtime's working directory,
// which is no place to resolve a relative path against.
func (s Settings) Validate() error {
	for _, f := range []struct{ name, val string }{
		{"kubeconfig", s.Kubeconfig},
		{"stateDir", s.StateDir},
		{"logFile", s.LogFile},
	} {
		if f.val == "" {
			return fmt.Errorf("%s is empty", f.name)
		}
		if !filepath.IsAbs(f.val) {
			return fmt.Errorf("%s %q is not an absolute path", f.name, f.val)
		}
	}
	return nil
}

// Config is the plugin's conflist entry, parsed and checked once.
type Config struct {
	types.PluginConf
	Settings
}

// ParseConfig parses and validates the plugin's stdin. Errors carry the
// CNI code a runtime expects for bad configuration.
func ParseConfig(stdin []byte) (*Config, error) {
	conf := &Config{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "nsegress: parse network configuration", err.Error())
	}
	if !supported(conf.CNIVersion) {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion,
			fmt.Sprintf("nsegress: cniVersion %q is not supported", conf.CNIVersion),
			fmt.Sprintf("supported versions: %v", SupportedVersions))
	}
	if err := conf.Settings.Validate(); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "nsegress: invalid network configuration", err.Error())
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "nsegress: parse prevResult", err.Error())
	}
	return conf, nil
}

func supported(v string) bool {
	for _, s := range SupportedVersions {
		if v == s {
			return true
		}
	}
	return false
}
