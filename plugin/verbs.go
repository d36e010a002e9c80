package plugin

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// Funcs are the plugin's verbs for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus}
}

// cmdAdd passes the primary plugin's result through unchanged. nsegress is
// chained only: like portmap, it has nothing to build on without a
// prevResult.
func cmdAdd(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig,
			"nsegress: no prevResult: nsegress must be chained after a primary CNI plugin in a conflist", "")
	}
	return types.PrintResult(conf.PrevResult, conf.CNIVersion)
}

// cmdDel succeeds for any container, known or not, as the spec requires
// of DEL.
func cmdDel(args *skel.CmdArgs) error {
	_, err := ParseConfig(args.StdinData)
	return err
}

// cmdCheck verifies that the runtime handed over the result of ADD.
func cmdCheck(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "nsegress: CHECK without prevResult", "")
	}
	return nil
}

// cmdGC has no per-attachment state to collect yet.
func cmdGC(args *skel.CmdArgs) error {
	_, err := ParseConfig(args.StdinData)
	return err
}

// cmdStatus reports the plugin ready whenever its configuration parses.
func cmdStatus(args *skel.CmdArgs) error {
	_, err := ParseConfig(args.StdinData)
	return err
}
