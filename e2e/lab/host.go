package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// host is one machine of the lab: a network namespace (and, for nodes, a
// mount namespace) held open by a sleeping "holder" process. Namespaces
// held by a process need no bind mount under /run/netns, so the host's
// mount table never changes and killing the holder is all it takes to
// remove them.
type host struct {
	name   string
	cg     string // cgroup below the lab's subtree that its processes join
	mounts bool   // has its own mount namespace
	wd     string // working folder of its processes: the lab's folder
	holder *proc
	netns  ns.NetNS
	nl     *netlink.Handle
	// ports are the host's switch ports by segment (the bridge's name).
	ports map[string]string
}

// newHost starts a holder in fresh namespaces. setup is shell run inside
// them (as the holder, after it joined the cgroup) before it sleeps.
func (l *Lab) newHost(name string, ownMounts bool, setup string) (*host, error) {
	return l.newHostIn(name, name+"/daemons", ownMounts, setup)
}

// newHostIn is newHost with the host's processes in cgroup cg (below the
// lab's subtree).
func (l *Lab) newHostIn(name, cg string, ownMounts bool, setup string) (*host, error) {
	h := &host{name: name, cg: cgroupName + "/" + cg, mounts: ownMounts, wd: l.cfg.Dir}
	if err := makeCgroup(cg); err != nil {
		return nil, err
	}
	ready := filepath.Join(l.cfg.Dir, "run", name+".ready")
	argv := []string{"unshare", "--net"}
	if ownMounts {
		argv = append(argv, "--mount", "--propagation", "private")
	}
	script := joinCgroup + "set -e\n" + setup + "\n: > " + shellQuote(ready) + "\nexec sleep infinity\n"
	argv = append(argv, "--", "/bin/sh", "-c", script, "sh", h.cg)
	p, err := startProc(name+"/holder", l.logPath(name, "holder"), argv, l.env(), l.cfg.Dir)
	if err != nil {
		return nil, err
	}
	h.holder = p
	l.addProc(p)
	if err := waitFor(10*time.Second, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("holder of %s exited: %w\n%s", name, p.err, p.tail(20))
		}
		_, err := os.Stat(ready)
		return err == nil, nil
	}); err != nil {
		return nil, fmt.Errorf("start host %s: %w", name, err)
	}
	h.netns, err = ns.GetNS(fmt.Sprintf("/proc/%d/ns/net", p.pid()))
	if err != nil {
		return nil, fmt.Errorf("open netns of %s: %w", name, err)
	}
	h.nl, err = netlink.NewHandleAt(netns.NsHandle(int(h.netns.Fd())))
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	l.mu.Lock()
	l.hosts[name] = h
	l.mu.Unlock()
	return h, nil
}

// host returns the named host, or nil.
func (l *Lab) host(name string) *host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[name]
}

// close releases the host's handles; its namespaces go when its
// processes are killed.
func (h *host) close() {
	if h.nl != nil {
		h.nl.Close()
	}
	if h.netns != nil {
		h.netns.Close()
	}
}

// NetNSPath is a path to the host's network namespace, valid while the
// lab runs.
func (h *host) NetNSPath() string { return fmt.Sprintf("/proc/%d/ns/net", h.holder.pid()) }

// nsenterArgs prefixes argv so that it runs in the host's namespaces and
// joins its cgroup before exec. It runs in the lab's folder: entering a
// mount namespace moves a process to the machine's /, and whatever a
// program writes relative to where it runs must land in the lab.
func (h *host) nsenterArgs(argv []string) []string {
	out := []string{"nsenter", "-t", strconv.Itoa(h.holder.pid()), "-n"}
	if h.mounts {
		out = append(out, "-m")
	}
	if h.wd != "" {
		out = append(out, "--wd="+h.wd)
	}
	out = append(out, "--", "/bin/sh", "-c", joinCgroup+`exec "$@"`, "sh", h.cg)
	return append(out, argv...)
}

// start runs a long-lived daemon in the host.
func (l *Lab) startIn(h *host, name string, argv []string) (*proc, error) {
	p, err := startProc(h.name+"/"+name, l.logPath(h.name, name), h.nsenterArgs(argv), l.env(), l.cfg.Dir)
	if err != nil {
		return nil, err
	}
	l.addProc(p)
	return p, nil
}

func (l *Lab) addProc(p *proc) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.procs = append(l.procs, p)
}

// run runs a short command in the host and returns its combined output.
func (l *Lab) run(ctx context.Context, h *host, stdin []byte, argv ...string) ([]byte, error) {
	full := h.nsenterArgs(argv)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Env = l.env()
	cmd.Dir = l.cfg.Dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), h.name, err, bytes.TrimSpace(out))
	}
	return out, nil
}

// sysctl writes /proc/sys/net settings inside the host's network namespace.
// /proc/sys/net resolves against the calling thread's namespace, which
// ns.Do pins, so the machine's own values are never touched.
func (h *host) sysctl(kv map[string]string) error {
	return h.netns.Do(func(ns.NetNS) error {
		for k, v := range kv {
			p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s in %s: %w", k, v, h.name, err)
			}
		}
		return nil
	})
}

func (l *Lab) logPath(hostName, proc string) string {
	return filepath.Join(l.cfg.Dir, "logs", hostName+"-"+proc+".log")
}

// labPath is the PATH of every process the lab starts.
const labPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// env is the environment of every process the lab starts: a plain PATH and
// a HOME inside the lab, so no tool writes into the user's home.
func (l *Lab) env() []string {
	return []string{
		"PATH=" + labPath,
		"HOME=" + filepath.Join(l.cfg.Dir, "home"),
	}
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// waitFor polls cond every 50 ms until it is true, returns an error, or
// timeout passes.
func waitFor(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
