// Package plugin implements the nsegress CNI plugin's verbs. The plugin is
// chained after a cluster's primary CNI; see SPEC §2.
package plugin

import (
	"encoding/json"
	"fmt"

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

// Config is the plugin's conflist entry, parsed and checked once.
type Config struct {
	types.PluginConf
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
