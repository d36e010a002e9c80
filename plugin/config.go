// Package plugin implements the nsegress CNI plugin's verbs. The plugin is
// chained after a cluster's primary CNI (docs/design.md §2); what it
// shares with the node's agent lives in package nodestate.
package plugin

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/nsegress/nsegress/nodestate"
)

// SupportedVersions are the CNI spec versions the plugin speaks: 0.4.0,
// 1.0.0 and 1.1.0, and 0.3.0/0.3.1 because Calico, flannel, kindnet and
// Cilium still write "cniVersion": "0.3.1" in the conflists nsegress
// chains into, and libcni hands that version to every plugin of the list;
// refusing it would fail every pod's ADD on those clusters.
var SupportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// Config is the plugin's conflist entry, parsed and checked once: the
// runtime's part (name, cniVersion, prevResult, GC's valid attachments)
// and nsegress's own fields, which the agent's installer wrote.
type Config struct {
	types.PluginConf
	// Entry is nsegress's part of the entry: the same type the installer
	// writes.
	Entry nodestate.Entry
}

// ParseConfig parses and validates the plugin's stdin. Errors carry the
// CNI code a runtime expects for bad configuration.
func ParseConfig(stdin []byte) (*Config, error) {
	conf := &Config{}
	if err := json.Unmarshal(stdin, &conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "nsegress: parse network configuration", err.Error())
	}
	if err := json.Unmarshal(stdin, &conf.Entry); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "nsegress: parse network configuration", err.Error())
	}
	if !slices.Contains(SupportedVersions, conf.CNIVersion) {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion,
			fmt.Sprintf("nsegress: cniVersion %q is not supported", conf.CNIVersion),
			fmt.Sprintf("supported versions: %v", SupportedVersions))
	}
	if err := conf.Entry.Validate(); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "nsegress: invalid network configuration", err.Error())
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "nsegress: parse prevResult", err.Error())
	}
	return conf, nil
}
