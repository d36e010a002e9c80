// Command nsegress-agent is nsegress's node agent. `run` is the DaemonSet's
// process: it installs the plugin, keeps it chained in the primary's
// conflist and its kubeconfig fresh, and uninstalls when the DaemonSet is
// deleted. `install` and `uninstall` do the same steps once, by hand.
// `controller` is the controller Deployment's process: the one writer of
// status and floating-IP placement, under its own ServiceAccount.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nsegress/nsegress/agent/cniconf"
	"github.com/nsegress/nsegress/agent/datapath"
	"github.com/nsegress/nsegress/agent/ha"
	"github.com/nsegress/nsegress/agent/install"
	"github.com/nsegress/nsegress/nft"
	"github.com/nsegress/nsegress/nodestate"
)

const usage = `usage: nsegress-agent run|controller|install|uninstall [flags]

  run         keep nsegress installed on this node (the DaemonSet's command)
  controller  assign tunnel IDs and floating IPs, write status (the
              controller Deployment's command; one replica leads)
  install     copy the plugin into the CNI bin dir and chain it after the
              primary plugin in the primary's conflist (idempotent)
  uninstall   remove it from the conflist (restoring the primary's file
              byte for byte where nothing rewrote it) and delete the binary`

// faultEnv turns on fault injection; only tests set it.
const faultEnv = "NSEGRESS_FAULT"

// options are the node-specific settings, all overridable so that several
// simulated nodes can share one machine (docs/design.md §4).
type options struct {
	binDir, confDir, stateDir, plugin, kubeconfig, logFile string

	// run only
	apiKubeconfig, nodeName, namespace, daemonSet, pluginServiceAccount string
	podName                                                             string
	caFile, healthAddr, startupTaint                                    string
	resync                                                              time.Duration
	uplink                                                              string
	vxlanPort, haPort                                                   uint16
	haKeySecret                                                         string
	ignorePodRanges                                                     bool
	settings                                                            datapath.Settings
}

// Values of -pod-ranges.
const (
	podRangesNode   = "node"
	podRangesIgnore = "ignore"
)

// uintFromEnv parses the environment variable name (decimal, or 0x hex)
// as an unsigned number of at most bitSize bits, def when it is unset.
func uintFromEnv(name string, def uint64, bitSize int) (uint64, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 0, bitSize)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a number of at most %d bits", name, v, bitSize)
	}
	return n, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func parse(args []string) (string, options, error) {
	var o options
	if len(args) < 1 {
		return "", o, errors.New(usage)
	}
	verb := args[0]
	if verb != "run" && verb != "controller" && verb != "install" && verb != "uninstall" {
		return "", o, fmt.Errorf("unknown command %q; %s", verb, usage)
	}
	fs := flag.NewFlagSet("nsegress-agent "+verb, flag.ContinueOnError)
	fs.StringVar(&o.binDir, "cni-bin-dir", envOr("NSEGRESS_CNI_BIN_DIR", "/opt/cni/bin"), "the node's CNI plugin folder")
	fs.StringVar(&o.confDir, "cni-conf-dir", envOr("NSEGRESS_CNI_CONF_DIR", "/etc/cni/net.d"), "the node's CNI configuration folder")
	fs.StringVar(&o.stateDir, "state-dir", envOr("NSEGRESS_STATE_DIR", "/var/lib/nsegress"), "nsegress's folder on the node (install record, backups, kubeconfig)")
	fs.StringVar(&o.plugin, "plugin", "", "the plugin binary to install (default: nsegress beside this binary)")
	fs.StringVar(&o.kubeconfig, "plugin-kubeconfig", "", "the plugin's kubeconfig, written by run (default: <state-dir>/kubeconfig)")
	fs.StringVar(&o.logFile, "plugin-log-file", envOr("NSEGRESS_PLUGIN_LOG_FILE", "/var/log/nsegress/plugin.log"), "the plugin's log file")
	fs.StringVar(&o.apiKubeconfig, "kubeconfig", "", "the agent's own kubeconfig (default: in-cluster)")
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name")
	fs.StringVar(&o.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the namespace nsegress is installed in")
	fs.StringVar(&o.podName, "pod-name", os.Getenv("POD_NAME"), "the controller's identity in its Lease: its pod's name")
	fs.StringVar(&o.daemonSet, "daemonset", "nsegress-agent", "the agent's DaemonSet; its deletion means uninstall")
	fs.StringVar(&o.pluginServiceAccount, "plugin-service-account", "nsegress-plugin", "the ServiceAccount whose token the plugin uses")
	fs.StringVar(&o.caFile, "ca-file", serviceAccountCA, "the cluster CA written into the plugin's kubeconfig")
	defHealth := "127.0.0.1:9809"
	if verb == "controller" {
		defHealth = "127.0.0.1:9810"
	}
	fs.StringVar(&o.healthAddr, "health-addr", envOr("NSEGRESS_HEALTH_ADDR", defHealth), "where /healthz (and the agent's /readyz) are served")
	fs.StringVar(&o.startupTaint, "startup-taint", os.Getenv("NSEGRESS_STARTUP_TAINT"), "a node taint key to remove once nsegress is chained (empty: none)")
	fs.DurationVar(&o.resync, "resync", 30*time.Second, "how often to re-check the installation without a file event")
	fs.StringVar(&o.uplink, "uplink", os.Getenv("NSEGRESS_UPLINK"), "the underlay interface (default: the one holding the node's InternalIP)")
	defPort := uint64(datapath.DefaultPort)
	if v := os.Getenv("NSEGRESS_VXLAN_PORT"); v != "" {
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil || p == 0 {
			return "", o, fmt.Errorf("NSEGRESS_VXLAN_PORT=%q is not a UDP port", v)
		}
		defPort = p
	}
	port := fs.Uint("vxlan-port", uint(defPort), "the VXLAN UDP port of the policy tunnels (avoid 4789 and 8472, used by Calico, flannel and Cilium)")
	haPort, err := uintFromEnv("NSEGRESS_HA_PORT", ha.DefaultPort, 16)
	if err != nil {
		return "", o, err
	}
	fs.Func("ha-port", fmt.Sprintf("the UDP port of the gateways' heartbeats and pushes to every node, and the TCP port of connection-state replication between gateways (default %d)", haPort),
		func(v string) error { haPort, err = strconv.ParseUint(v, 10, 16); return err })
	fs.StringVar(&o.haKeySecret, "ha-key-secret", "nsegress-ha", "the Secret in the install namespace that holds the key authenticating HA messages (the controller creates it)")
	marks, err := uintFromEnv("NSEGRESS_MARK_BITS", uint64(nft.DefaultMarkBits), 32)
	if err != nil {
		return "", o, err
	}
	tableBase, err := uintFromEnv("NSEGRESS_TABLE_BASE", datapath.DefaultTableBase, 31)
	if err != nil {
		return "", o, err
	}
	rulePriority, err := uintFromEnv("NSEGRESS_RULE_PRIORITY", datapath.DefaultRulePriority, 15)
	if err != nil {
		return "", o, err
	}
	fs.Func("mark-bits", fmt.Sprintf("the 12 contiguous packet and conntrack mark bits nsegress owns (default %#08x; with Calico, 0x00000fff)", marks),
		func(v string) error { marks, err = strconv.ParseUint(v, 0, 32); return err })
	fs.Func("table-base", fmt.Sprintf("policy routing tables are table-base+1 .. table-base+4095 (default %d)", tableBase),
		func(v string) error { tableBase, err = strconv.ParseUint(v, 0, 31); return err })
	fs.Func("rule-priority", fmt.Sprintf("preference of the fwmark ip rules; the return rules take one less (default %d)", rulePriority),
		func(v string) error { rulePriority, err = strconv.ParseUint(v, 0, 15); return err })
	ranges := fs.String("pod-ranges", envOr("NSEGRESS_POD_RANGES", podRangesNode),
		`"node": each node's pods are in its Node's spec.podCIDRs (tunnel source check, replies through the tunnel); "ignore": the IPAM ignores them`)
	if err := fs.Parse(args[1:]); err != nil {
		return "", o, err
	}
	o.settings = datapath.Settings{Marks: nft.MarkBits(marks), TableBase: int(tableBase), RulePriority: int(rulePriority)}
	if err := o.settings.Validate(); err != nil {
		return "", o, err
	}
	switch *ranges {
	case podRangesNode:
	case podRangesIgnore:
		o.ignorePodRanges = true
	default:
		return "", o, fmt.Errorf("-pod-ranges %q: want %q or %q", *ranges, podRangesNode, podRangesIgnore)
	}
	if *port == 0 || *port > 65535 {
		return "", o, fmt.Errorf("-vxlan-port %d is not a UDP port", *port)
	}
	o.vxlanPort = uint16(*port)
	if haPort == 0 || uint16(haPort) == o.vxlanPort {
		return "", o, fmt.Errorf("-ha-port %d: want a port other than 0 and the VXLAN port", haPort)
	}
	o.haPort = uint16(haPort)
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
	switch verb {
	case "run":
		err = runAgent(o)
	case "controller":
		err = runController(o)
	case "install":
		err = installOnce(o)
	case "uninstall":
		err = uninstallOnce(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nsegress-agent:", err)
		os.Exit(1)
	}
}

// newKeeper prepares the node's folders and the installer.
func newKeeper(o options, logf func(string, ...any)) (*install.Keeper, error) {
	for _, d := range []string{o.stateDir, o.confDir, filepath.Dir(o.logFile)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	conf, err := cniconf.NewInstaller(o.confDir, filepath.Join(o.stateDir, "cni"))
	if err != nil {
		return nil, err
	}
	if os.Getenv(faultEnv) == "kill-before-rename" {
		// Fault injection for the lab: die like a SIGKILLed agent at the
		// worst moment, with a complete temporary conflist not yet renamed.
		conf.SetBeforeRename(func(tmp string) error {
			if filepath.Dir(tmp) == conf.ConfDir {
				// As PID 1 of its container the agent cannot SIGKILL
				// itself; os.Exit runs no deferred cleanup either, so
				// the files are left exactly as a kill would leave them.
				logf("%s: dying before renaming %s", faultEnv, tmp)
				os.Exit(137)
			}
			return nil
		})
	}
	return &install.Keeper{
		BinDir: o.binDir, PluginSrc: o.plugin, Conf: conf,
		Entry:  nodestate.Entry{Kubeconfig: o.kubeconfig, StateDir: o.stateDir, LogFile: o.logFile},
		Resync: o.resync, Logf: logf,
	}, nil
}

func installOnce(o options) error {
	k, err := newKeeper(o, log.Printf)
	if err != nil {
		return err
	}
	if err := k.InstallOnce(); err != nil {
		return err
	}
	fmt.Println("installed: nsegress chained after the primary plugin")
	return nil
}

func uninstallOnce(o options) error {
	k, err := newKeeper(o, log.Printf)
	if err != nil {
		return err
	}
	if err := uninstall(k, o); err != nil {
		return err
	}
	fmt.Println("uninstalled")
	return nil
}
