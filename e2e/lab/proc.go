package lab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupName is the lab's subtree in every cgroup hierarchy (its slot's,
// see slotEnv). Every process the lab starts moves itself there before it
// execs, and the kubelets put their pods below it (cgroupRoot), so killing
// the subtree's members kills everything the lab ever ran, including what
// a killed earlier run of the slot left.
var cgroupName = labName

// joinCgroup is a shell prologue that moves the shell into the cgroup named
// by $1 in every hierarchy, then runs the rest of the script. Joining
// before exec means no child can be forked outside the subtree.
const joinCgroup = `cg=$1; shift
joined=
for d in /sys/fs/cgroup/*/"$cg"; do
	if [ -d "$d" ]; then echo $$ > "$d/cgroup.procs" || exit 1; joined=1; fi
done
[ -n "$joined" ] || { echo "no cgroup $cg to join" >&2; exit 1; }
`

// cgroupMounts lists the mount points of the cgroup hierarchies (v1 and the
// hybrid v2 one) from /proc/self/mountinfo.
func cgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Fields: id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if fs := fields[sep+1]; fs == "cgroup" || fs == "cgroup2" {
			out = append(out, fields[4])
		}
	}
	return out, sc.Err()
}

// makeCgroup creates rel (below the lab's subtree) in every hierarchy.
// cgroup v1 cpuset groups start with no CPUs and no memory nodes, which
// makes them unusable; each new level copies its parent's.
func makeCgroup(rel string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return fmt.Errorf("list cgroup hierarchies: %w", err)
	}
	for _, m := range mounts {
		dir := m
		for _, part := range strings.Split(filepath.Join(cgroupName, rel), "/") {
			parent := dir
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("create cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if b, err := os.ReadFile(filepath.Join(parent, f)); err == nil {
					cur, _ := os.ReadFile(filepath.Join(dir, f))
					if strings.TrimSpace(string(cur)) == "" {
						if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
							return fmt.Errorf("copy %s into %s: %w", f, dir, err)
						}
					}
				}
			}
		}
	}
	return nil
}

// cgroupPIDs returns every process in the lab's subtree, in any hierarchy.
func cgroupPIDs() (map[int]bool, error) { return cgroupPIDsBelow("") }

// cgroupPIDsBelow returns every process in the group rel of the lab's
// subtree (a node's name: its daemons and pods), in any hierarchy.
func cgroupPIDsBelow(rel string) (map[int]bool, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	pids := map[int]bool{}
	for _, m := range mounts {
		root := filepath.Join(m, cgroupName, rel)
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil // the group went away under us
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids[pid] = true
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("walk %s: %w", root, err)
		}
	}
	return pids, nil
}

// killCgroupTree kills every process in the lab's subtree until none is
// left; processes may fork while we kill, so it repeats.
func killCgroupTree() error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids, err := cgroupPIDs()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still alive in cgroup %s after 20s: %v", cgroupName, keys(pids))
		}
		// runc freezes a container's cgroup while it kills or pauses it;
		// a frozen process cannot act on SIGKILL until it is thawed, so
		// a lab killed in the middle of that would leave it forever.
		thawCgroupTree()
		for pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// thawCgroupTree thaws every frozen group in the lab's subtree of the v1
// freezer hierarchy.
func thawCgroupTree() {
	mounts, err := cgroupMounts()
	if err != nil {
		return
	}
	for _, m := range mounts {
		_ = filepath.WalkDir(filepath.Join(m, cgroupName), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && d.Name() == "freezer.state" {
				_ = os.WriteFile(p, []byte("THAWED"), 0o644)
			}
			return nil
		})
	}
}

// removeCgroupTree removes the lab's subtree, deepest groups first.
func removeCgroupTree() error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		var dirs []string
		root := filepath.Join(m, cgroupName)
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			// A cgroup whose last process just died can stay busy for a
			// moment; retry briefly.
			var err error
			for try := 0; try < 50; try++ {
				if err = syscall.Rmdir(dirs[i]); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

func keys(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// proc is one long-running process of the lab.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startProc starts argv in folder dir with its output in logPath. The
// caller has already wrapped argv so that it joins the lab's cgroup before
// it execs.
func startProc(name, logPath string, argv []string, env []string, dir string) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.Env = env
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group, so a terminal's Ctrl-C reaches the lab,
		// which then shuts down in order, and not every daemon at once.
		Setpgid: true,
		// If the lab process dies, so do its daemons; what they started
		// is found through the cgroup at the next start.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// pid is the process's ID (nsenter and unshare exec in place, so this is
// the daemon's own PID).
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end, then kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last lines of the process's log, for error messages.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
