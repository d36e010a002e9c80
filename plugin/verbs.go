package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/nsegress/nsegress/api/v1alpha1"
	"github.com/nsegress/nsegress/nft"
	"github.com/nsegress/nsegress/nodestate"
)

// Plugin is the nsegress CNI plugin. Its verbs are methods, and what they
// reach outside the process besides the state directory and the API (the
// node's nft table, the node's routes) are fields, so that each test gives
// its own plugin its own fakes and tests run in parallel.
type Plugin struct {
	// OpenTable opens the nft table the plugin programs pods into.
	OpenTable func() (PodTable, error)
	// HostInterface finds the node-side interface of a pod's address in
	// the primary's result, and its bridge port when that interface is a
	// bridge (hostInterface).
	HostInterface func(ip netip.Addr, prev types.Result) (hostIf, port string, err error)
	// Stdout receives ADD's result, as the CNI spec asks.
	Stdout io.Writer
}

// New returns the plugin as it runs on a node: the node's own nft table
// and routes.
func New() *Plugin {
	return &Plugin{
		OpenTable:     func() (PodTable, error) { return nft.Open() },
		HostInterface: hostInterface,
		Stdout:        os.Stdout,
	}
}

// printResult writes the primary's result, unchanged but in the version
// the runtime asked for, to Stdout.
func (p *Plugin) printResult(res types.Result, cniVersion string) error {
	r, err := res.GetAsVersion(cniVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "nsegress: convert prevResult to "+cniVersion, err.Error())
	}
	if err := r.PrintTo(p.Stdout); err != nil {
		return fmt.Errorf("nsegress: print the result: %w", err)
	}
	return nil
}

// Funcs are the plugin's verbs for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.cmdAdd, Del: p.cmdDel, Check: p.cmdCheck, GC: p.cmdGC, Status: p.cmdStatus}
}

// PodTable is the part of the nft table the plugin uses.
type PodTable interface {
	AddPod(k nft.PodKey, id uint16) error
	DelPod(k nft.PodKey) error
	GuardPort(ip netip.Addr, port string) error
	UnguardPort(ip netip.Addr, port string) error
	Pods() (map[nft.PodKey]uint16, error)
	Close() error
}

// k8sArgs are the CNI_ARGS the kubelet's runtime passes.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive // the runtime's names
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive
}

// cmdAdd programs a pod that a policy selects, from its first packet, and
// returns the primary's result unchanged. A pod no policy selects gets a
// record (so that a later policy can take it in) and nothing else.
func (p *Plugin) cmdAdd(args *skel.CmdArgs) error {
	start := time.Now()
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig,
			"nsegress: no prevResult: nsegress must be chained after a primary CNI plugin in a conflist", "")
	}
	log := logger(conf)
	namespace, pod, err := podOf(args)
	if err != nil {
		return err
	}
	if namespace == "" || pod == "" {
		log.Info("ADD: not a Kubernetes pod, passing through", "container", args.ContainerID)
		return p.printResult(conf.PrevResult, conf.CNIVersion)
	}
	ip, err := podIPv4(conf.PrevResult)
	if err != nil {
		return err
	}
	if !ip.IsValid() {
		log.Info("ADD: the primary gave no IPv4 address, passing through", "pod", namespace+"/"+pod)
		return p.printResult(conf.PrevResult, conf.CNIVersion)
	}
	st := nodestate.State{Dir: conf.Entry.StateDir}
	lookupStart := time.Now()
	policy, view, err := decide(st, conf.Entry.Kubeconfig, namespace, pod, log)
	if err != nil {
		return err
	}
	lookup := time.Since(lookupStart)
	hostIf, port, err := p.HostInterface(ip, conf.PrevResult)
	if err != nil && policy != nil {
		return err
	}
	if err != nil {
		// A pod no policy selects starts whatever the route says; its
		// record names the route's device for a later policy, which the
		// agent then programs only if the device is right.
		log.Warn("ADD: host interface not confirmed", "pod", namespace+"/"+pod, "error", err)
	}
	rec := nodestate.PodRecord{ContainerID: args.ContainerID, IfName: args.IfName, Namespace: namespace, Name: pod,
		IP: ip, HostIf: hostIf, Port: port, Added: time.Now()}
	if policy != nil {
		rec.Policy = policy.Name
		rec.TunnelID, _ = policy.AssignedTunnelID() // settle checked it is assigned
	}
	programStart := time.Now()
	if policy == nil {
		p.recordUnselected(st, rec, log)
	} else if err := p.program(st, rec); err != nil {
		return err
	}
	log.Info("ADD", "pod", namespace+"/"+pod, "ip", ip, "hostIf", hostIf, "policy", rec.Policy,
		"tunnelID", rec.TunnelID, "from", view.Source, "lookup", lookup.Round(time.Microsecond),
		"program", time.Since(programStart).Round(time.Microsecond), "took", time.Since(start).Round(time.Microsecond))
	return p.printResult(conf.PrevResult, conf.CNIVersion)
}

// decide finds the policy that governs the pod: from the node's agent
// (its informers; AgentBudget), else from the API server (LookupBudget),
// else from the agent's snapshot, else CNI code 11 so that the runtime
// retries. An answer that needs the pod's labels where its source does
// not know them yet goes on to the next source. A policy that selects the
// pod but has no tunnel ID yet is an error too when it fails closed:
// starting the pod unprogrammed would let its first packets leave with
// the node's IP.
func decide(st nodestate.State, kubeconfig, namespace, pod string, log *slog.Logger) (*v1alpha1.EgressNATPolicy, nodestate.View, error) {
	view, agentErr := lookupAgent(context.Background(), st, namespace, pod)
	if agentErr == nil {
		if policy, err := v1alpha1.SelectPolicy(view.Policies, view.NamespaceLabels, view.PodLabels); err == nil {
			return settle(policy, view, namespace, pod, log)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), LookupBudget)
	defer cancel()
	view, apiErr := lookupAPI(ctx, kubeconfig, namespace, pod)
	if apiErr != nil {
		var ok bool
		var snapErr error
		view, ok, snapErr = lookupSnapshot(st, namespace, pod)
		if !ok {
			why := "no snapshot of the agent's"
			if snapErr != nil {
				why = snapErr.Error()
			}
			return nil, nodestate.View{}, types.NewError(types.ErrTryAgainLater,
				fmt.Sprintf("nsegress: cannot tell whether a policy selects pod %s/%s: the agent did not answer (%v), the API server did not answer (%v) and %s", namespace, pod, agentErr, apiErr, why), "")
		}
		log.Warn("ADD: agent and API lookups failed, using the snapshot", "pod", namespace+"/"+pod, "agent", agentErr, "error", apiErr)
	}
	policy, err := v1alpha1.SelectPolicy(view.Policies, view.NamespaceLabels, view.PodLabels)
	if err != nil {
		return nil, nodestate.View{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("nsegress: pod %s/%s: %v (from the %s)", namespace, pod, err, view.Source), "")
	}
	return settle(policy, view, namespace, pod, log)
}

// settle checks that the chosen policy can be programmed.
func settle(policy *v1alpha1.EgressNATPolicy, view nodestate.View, namespace, pod string, log *slog.Logger) (*v1alpha1.EgressNATPolicy, nodestate.View, error) {
	if policy == nil {
		return nil, view, nil
	}
	if _, assigned := policy.AssignedTunnelID(); !assigned {
		if policy.Spec.FailMode == v1alpha1.FailModeOpen {
			log.Warn("ADD: the policy has no tunnel ID yet and fails open: pod not programmed", "pod", namespace+"/"+pod, "policy", policy.Name)
			return nil, view, nil
		}
		return nil, nodestate.View{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("nsegress: policy %s selects pod %s/%s but has no tunnel ID yet (the elected nsegress agent assigns it); failMode Closed: not starting the pod unprogrammed", policy.Name, namespace, pod), "")
	}
	return policy, view, nil
}

// recordUnselected records a pod no policy selects, so that a policy
// created later can take it in, and clears an element an earlier pod with
// its address and interface left when its DEL was lost. None of it may
// fail the pod: a pod no policy selects starts as it would without
// nsegress (docs/design.md §5), also on a full or read-only state disk,
// a busy lock or a broken nft table. What could not be done is logged;
// the agent's next reconcile removes an element that no record explains.
func (p *Plugin) recordUnselected(st nodestate.State, rec nodestate.PodRecord, log *slog.Logger) {
	pod := rec.Namespace + "/" + rec.Name
	unlock, err := st.Lock()
	if err != nil {
		log.Warn("ADD: pod not recorded (a policy created later reaches it only once it restarts)", "pod", pod, "error", err)
		return
	}
	defer unlock()
	if err := st.Save(rec); err != nil {
		log.Warn("ADD: pod not recorded (a policy created later reaches it only once it restarts)", "pod", pod, "error", err)
	}
	t, err := p.OpenTable()
	if err != nil {
		return // no table, no stale element
	}
	defer t.Close()
	if err := t.DelPod(nft.PodKey{IP: rec.IP, HostIf: rec.HostIf}); err != nil {
		log.Warn("ADD: could not clear a stale element under the pod's key; the agent's reconcile removes it", "pod", pod, "error", err)
	}
	// Nor may a stale guard keep a pod on a bridge from sending with its
	// address (guards act on bridges only: a ptp pod pays nothing).
	if rec.Port != "" {
		if err := t.UnguardPort(rec.IP, ""); err != nil {
			log.Warn("ADD: could not clear a stale guard of the pod's address; the agent's reconcile removes it", "pod", pod, "error", err)
		}
	}
}

// program records a pod a policy selects and adds its element to the
// pods map, under the node's state lock. Any failure fails the pod, with
// the cause: it must not start unprogrammed.
func (p *Plugin) program(st nodestate.State, rec nodestate.PodRecord) error {
	// Every failure fails the pod closed with code 11 ("try again later"),
	// naming the cause: the runtime retries, and the pod never starts
	// unprogrammed.
	closed := func(msg string, cause error) error {
		return types.NewError(types.ErrTryAgainLater, "nsegress: "+msg+": "+cause.Error()+"; the pod is selected by policy "+rec.Policy+" and must not start unprogrammed", "")
	}
	unlock, err := st.Lock()
	if err != nil {
		return closed("lock the node's state", err)
	}
	defer unlock()
	if err := st.Save(rec); err != nil {
		return closed("record the pod", err)
	}
	t, err := p.OpenTable()
	if err != nil {
		return closed("open nftables", err)
	}
	defer t.Close()
	if rec.Port != "" {
		// Guarded first: the element never exists while a neighbour on
		// the bridge could borrow it by forging the pod's address.
		err = t.GuardPort(rec.IP, rec.Port)
		if errors.Is(err, nft.ErrPolicyNotProgrammed) {
			return types.NewError(types.ErrTryAgainLater,
				"nsegress: the bridge guard of this node is not programmed yet; the agent programs it", err.Error())
		}
		if err != nil {
			return closed("guard the pod's bridge port", err)
		}
	}
	err = t.AddPod(nft.PodKey{IP: rec.IP, HostIf: rec.HostIf}, rec.TunnelID)
	if errors.Is(err, nft.ErrPolicyNotProgrammed) {
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("nsegress: policy %s (tunnel ID %d) is not programmed on this node yet; the agent programs it", rec.Policy, rec.TunnelID), err.Error())
	}
	if err != nil {
		return closed("program the pod", err)
	}
	return nil
}

// cmdDel removes what ADD added for this container, unless a newer pod
// owns the address now (containerd's second DEL comes after the address
// may have been reused). DEL of an unknown container succeeds.
func (p *Plugin) cmdDel(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	st := nodestate.State{Dir: conf.Entry.StateDir}
	unlock, err := st.Lock()
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, "nsegress: "+err.Error(), "")
	}
	defer unlock()
	rec, owned, err := st.ForContainer(args.ContainerID, args.IfName)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "nsegress: "+err.Error(), "")
	}
	if owned {
		if err := p.delElement(rec); err != nil {
			return err
		}
		logger(conf).Info("DEL", "pod", rec.Namespace+"/"+rec.Name, "ip", rec.IP, "hostIf", rec.HostIf)
	}
	if err := st.Forget(args.ContainerID, args.IfName, rec, owned); err != nil {
		return types.NewError(types.ErrIOFailure, "nsegress: "+err.Error(), "")
	}
	return nil
}

// delElement removes a record's element. It does so even when the record
// says no policy selected the pod: the agent may have moved it into one
// since.
func (p *Plugin) delElement(rec nodestate.PodRecord) error {
	t, err := p.OpenTable()
	if err != nil {
		return types.NewError(types.ErrInternal, "nsegress: open nftables: "+err.Error(), "")
	}
	defer t.Close()
	if err := t.DelPod(nft.PodKey{IP: rec.IP, HostIf: rec.HostIf}); err != nil {
		return types.NewError(types.ErrInternal, "nsegress: remove pod: "+err.Error(), "")
	}
	if rec.Port != "" {
		// After the element: the guard never goes while the element is
		// there.
		if err := t.UnguardPort(rec.IP, rec.Port); err != nil {
			return types.NewError(types.ErrInternal, "nsegress: remove the pod's bridge guard: "+err.Error(), "")
		}
	}
	return nil
}

// cmdCheck verifies that a pod ADD programmed still has its element.
func (p *Plugin) cmdCheck(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "nsegress: CHECK without prevResult", "")
	}
	st := nodestate.State{Dir: conf.Entry.StateDir}
	rec, owned, err := st.ForContainer(args.ContainerID, args.IfName)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "nsegress: "+err.Error(), "")
	}
	if !owned || rec.TunnelID == 0 {
		return nil
	}
	t, err := p.OpenTable()
	if err != nil {
		return types.NewError(types.ErrInternal, "nsegress: open nftables: "+err.Error(), "")
	}
	defer t.Close()
	pods, err := t.Pods()
	if err != nil {
		return types.NewError(types.ErrInternal, "nsegress: list pods: "+err.Error(), "")
	}
	if _, ok := pods[nft.PodKey{IP: rec.IP, HostIf: rec.HostIf}]; !ok {
		return types.NewError(types.ErrInternal,
			fmt.Sprintf("nsegress: pod %s/%s (%s on %s) has no element in the nsegress pods map", rec.Namespace, rec.Name, rec.IP, rec.HostIf), "")
	}
	return nil
}

// cmdGC forgets every container the runtime no longer lists.
func (p *Plugin) cmdGC(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	valid := map[[2]string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[[2]string{a.ContainerID, a.IfName}] = true
	}
	st := nodestate.State{Dir: conf.Entry.StateDir}
	containers, err := st.Containers()
	if err != nil {
		return types.NewError(types.ErrIOFailure, "nsegress: "+err.Error(), "")
	}
	for _, c := range containers {
		if valid[c] {
			continue
		}
		gone := args
		gone.ContainerID, gone.IfName = c[0], c[1]
		if err := p.cmdDel(gone); err != nil {
			return err
		}
	}
	return nil
}

// cmdStatus reports the plugin ready whenever its configuration parses:
// pods no policy selects must start whatever state the agent is in.
func (p *Plugin) cmdStatus(args *skel.CmdArgs) error {
	_, err := ParseConfig(args.StdinData)
	return err
}

func podOf(args *skel.CmdArgs) (namespace, pod string, err error) {
	var a k8sArgs
	a.IgnoreUnknown = true
	if err := types.LoadArgs(args.Args, &a); err != nil {
		return "", "", types.NewError(types.ErrInvalidNetworkConfig, "nsegress: parse CNI_ARGS", err.Error())
	}
	return string(a.K8S_POD_NAMESPACE), string(a.K8S_POD_NAME), nil
}

// podIPv4 is the first IPv4 address of the primary's result.
func podIPv4(prev types.Result) (netip.Addr, error) {
	res, err := current.NewResultFromResult(prev)
	if err != nil {
		return netip.Addr{}, types.NewError(types.ErrDecodingFailure, "nsegress: convert prevResult", err.Error())
	}
	for _, c := range res.IPs {
		if a, ok := netip.AddrFromSlice(c.Address.IP.To4()); ok && c.Address.IP.To4() != nil {
			return a, nil
		}
	}
	return netip.Addr{}, nil
}

// hostInterface is the node-side interface the pod's packets arrive on:
// the one the node routes the pod's address through (a ptp veth, a
// Calico cali*, a bridge). It keys the pod's element together with the
// address, so that another pod cannot borrow it by forging the address.
// The route's device must be a host-side interface of the primary's
// result, or the bridge one of them is a port of: otherwise the element
// would never match (a primary that routes pods through a shared device,
// or has not installed the pod's route yet) and the pod's traffic would
// leave unmarked. The error is then "try again later". For a bridge, port
// is the pod's port on it (its host-side veth), where its address is
// guarded: on a bridge the key alone cannot tell the pods apart.
func hostInterface(ip netip.Addr, prev types.Result) (hostIf, port string, err error) {
	routes, err := netlink.RouteGet(net.IP(ip.AsSlice()))
	if err != nil || len(routes) == 0 {
		return "", "", types.NewError(types.ErrTryAgainLater, fmt.Sprintf("nsegress: no route to the pod's address %s on this node", ip), fmt.Sprint(err))
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return "", "", types.NewError(types.ErrInternal, fmt.Sprintf("nsegress: interface towards %s", ip), err.Error())
	}
	name := link.Attrs().Name
	res, err := current.NewResultFromResult(prev)
	if err != nil {
		return "", "", types.NewError(types.ErrDecodingFailure, "nsegress: convert prevResult", err.Error())
	}
	var hostSide []string
	direct := false
	for _, iface := range res.Interfaces {
		if iface.Sandbox != "" {
			continue
		}
		hostSide = append(hostSide, iface.Name)
		if iface.Name == name {
			direct = true // a ptp veth; or the bridge itself, listed too
			continue
		}
		if l, err := netlink.LinkByName(iface.Name); err == nil && l.Attrs().MasterIndex == link.Attrs().Index {
			return name, iface.Name, nil // a bridge port: packets arrive on the bridge
		}
	}
	if direct {
		if _, isBridge := link.(*netlink.Bridge); isBridge {
			return name, "", types.NewError(types.ErrTryAgainLater,
				fmt.Sprintf("nsegress: the pod's address %s is routed through the bridge %s, but none of the primary's host-side interfaces %v is a port of it; nsegress cannot guard the pod's address", ip, name, hostSide), "")
		}
		return name, "", nil
	}
	return name, "", types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("nsegress: the node routes the pod's address %s through %s, which is none of the primary's host-side interfaces %v nor their bridge; nsegress cannot key the pod's packets", ip, name, hostSide), "")
}

// logger logs to the entry's logFile; a plugin's stderr is the runtime's.
func logger(conf *Config) *slog.Logger {
	// A log that cannot be opened must not fail the pod: the plugin then
	// logs nothing, and its errors still reach the runtime.
	_ = os.MkdirAll(filepath.Dir(conf.Entry.LogFile), 0o755)
	f, err := os.OpenFile(conf.Entry.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return slog.New(slog.DiscardHandler)
	}
	// The process ends with the verb; the OS closes the file.
	return slog.New(slog.NewTextHandler(f, nil))
}
