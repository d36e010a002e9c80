// Command nsegress-agent is nsegress's node agent. For now it has the
// install and uninstall steps: put the plugin binary into the node's CNI
// bin dir and chain it in the primary's conflist, or take both out again.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nsegress/nsegress/agent/cniconf"
	"github.com/nsegress/nsegress/agent/install"
)

const usage = `usage: nsegress-agent install|uninstall [flags]

  install     copy the plugin into the CNI bin dir and chain it after the
              primary plugin in the primary's conflist (idempotent)
  uninstall   remove it from the conflist (restoring the primary's file
              byte for byte where nothing rewrote it) and delete the binary
`

// options are the node-specific paths, all overridable so that several
// simulated nodes can share one machine (SPEC §4).
type options struct {
	binDir, confDir, stateDir, plugin, kubeconfig, logFile string
}

func parse(args []string) (string, options, error) {
	var o options
	if len(args) < 1 {
		return "", o, errors.New(strings.TrimSpace(usage))
	}
	verb := args[0]
	fs := flag.NewFlagSet("nsegress-agent "+verb, flag.ContinueOnError)
	fs.StringVar(&o.binDir, "cni-bin-dir", "/opt/cni/bin", "the node's CNI plugin folder")
	fs.StringVar(&o.confDir, "cni-conf-dir", "/etc/cni/net.d", "the node's CNI configuration folder")
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/nsegress", "nsegress's folder on the node (install record, backups, snapshot)")
	fs.StringVar(&o.plugin, "plugin", "", "the plugin binary to install (default: nsegress beside this binary)")
	fs.StringVar(&o.kubeconfig, "plugin-kubeconfig", "", "kubeconfig path written into the plugin's entry (default: <state-dir>/kubeconfig)")
	fs.StringVar(&o.logFile, "plugin-log-file", "/var/log/nsegress/plugin.log", "log file written into the plugin's entry")
	if err := fs.Parse(args[1:]); err != nil {
		return "", o, err
	}
	if verb != "install" && verb != "uninstall" {
		return "", o, fmt.Errorf("unknown command %q; %s", verb, strings.TrimSpace(usage))
	}
	if o.plugin == "" {
		self, err := os.Executable()
		if err != nil {
			return "", o, fmt.Errorf("find the plugin binary: %w", err)
		}
		o.plugin = filepath.Join(filepath.Dir(self), install.PluginBinary)
	}
	if o.kubeconfig == "" {
		o.kubeconfig = filepath.Join(o.stateDir, "kubeconfig")
	}
	return verb, o, nil
}

func main() {
	verb, o, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "nsegress-agent:", err)
		os.Exit(2)
	}
	if err := run(verb, o); err != nil {
		fmt.Fprintln(os.Stderr, "nsegress-agent:", err)
		os.Exit(1)
	}
}

func run(verb string, o options) error {
	inst, err := cniconf.NewInstaller(o.confDir, filepath.Join(o.stateDir, "cni"))
	if err != nil {
		return err
	}
	if verb == "uninstall" {
		res, err := inst.Uninstall()
		if err != nil {
			return err
		}
		if err := install.RemovePlugin(o.binDir); err != nil {
			return err
		}
		fmt.Printf("uninstalled: %s (changed: %v)\n", res.Written, res.Changed)
		return nil
	}
	if err := os.MkdirAll(o.stateDir, 0o700); err != nil {
		return err
	}
	if _, err := install.CopyPlugin(o.plugin, o.binDir); err != nil {
		return err
	}
	res, err := inst.Install(cniconf.Entry{Kubeconfig: o.kubeconfig, StateDir: o.stateDir, LogFile: o.logFile})
	if err != nil {
		return err
	}
	fmt.Printf("installed: nsegress chained in %s (primary %s, changed: %v)\n", res.Written, res.Primary, res.Changed)
	return nil
}
