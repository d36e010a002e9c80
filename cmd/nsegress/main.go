// Command nsegress is the nsegress CNI plugin, chained after a cluster's
// primary CNI.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/nsegress/nsegress/plugin"
)

func main() {
	skel.PluginMainFuncs(plugin.New().Funcs(), version.PluginSupports(plugin.SupportedVersions...), "nsegress: per-namespace egress IPs")
}
