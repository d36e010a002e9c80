package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nsegress/nsegress/e2e/privtest"
)

// childEnv makes the test binary a lab process that a test then kills.
const childEnv = "NSEGRESS_LAB_TEST_CHILD"

// atStart is which of the machine's folders existed when the test binary
// started, before any of its labs. The tests' own before-snapshots come
// later, after earlier tests' labs (and those of other test binaries
// running beside this one) may already have created a folder, which then
// looks like the machine's own.
var atStart MachineSnapshot

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	atStart = SnapshotMachine()
	os.Exit(m.Run())
}

// smallConfig is the smallest useful lab: one worker, one backend.
func smallConfig(t testing.TB) Config {
	t.Helper()
	privtest.Require(t)
	if testing.Short() {
		t.Skip("lab tests do not run with -short")
	}
	cfg := DefaultConfig()
	cfg.Workers, cfg.Gateways, cfg.Backends = 1, 0, 1
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Prepare(ctx, &cfg); err != nil {
		if errors.Is(err, ErrBinariesMissing) {
			privtest.Unavailable(t, err.Error())
		}
		t.Fatal(err)
	}
	return cfg
}

// runChild starts a small lab with one running pod, says "ready" and
// waits to be killed.
func runChild() error {
	cfg := DefaultConfig()
	cfg.Workers, cfg.Gateways, cfg.Backends = 1, 0, 1
	ctx := context.Background()
	if err := Prepare(ctx, &cfg); err != nil {
		return err
	}
	// fd 3 is the parent's lab lock.
	l, err := start(ctx, cfg, os.NewFile(3, "lab-lock"))
	if err != nil {
		return err
	}
	if err := runPod(ctx, l); err != nil {
		return err
	}
	fmt.Println("ready")
	select {}
}

func runPod(ctx context.Context, l *Lab) error {
	cs := l.Client()
	err := waitFor(30*time.Second, func() (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("default ServiceAccount: %w", err)
	}
	_, err = cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sleeper"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "s", Image: LabboxImage, ImagePullPolicy: corev1.PullNever, Command: []string{"/labbox", "sleep"}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	return waitFor(60*time.Second, func() (bool, error) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "sleeper", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, nil
	})
}

// machineState is what the lab must leave as it found it.
func machineState(t *testing.T) map[string]string {
	t.Helper()
	state := map[string]string{}
	for name, argv := range map[string][]string{
		"ip netns list":      {"ip", "netns", "list"},
		"ip link":            {"ip", "-o", "link", "show"},
		"ip addr":            {"ip", "-o", "addr", "show"},
		"ip route":           {"ip", "route", "show", "table", "all"},
		"ip rule":            {"ip", "rule", "show"},
		"nft list ruleset":   {"nft", "list", "ruleset"},
		"mounts":             {"cat", "/proc/self/mountinfo"},
		"cgroups of the lab": {"sh", "-c", "ls -d /sys/fs/cgroup/*/" + cgroupName + " 2>/dev/null || true"},
	} {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", name, err, out)
		}
		state[name] = string(out)
	}
	for _, s := range []string{
		"net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter",
		"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
		"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	} {
		b, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			t.Fatal(err)
		}
		state["sysctl "+s] = string(b)
	}
	for p, ok := range SnapshotMachine() {
		state["exists "+p] = fmt.Sprint(ok)
	}
	return state
}

// checkMachine fails the test if the machine differs from before, or if
// one of its folders exists that did not when the test binary started.
func checkMachine(t *testing.T, before map[string]string) {
	t.Helper()
	after := machineState(t)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed:\nbefore:\n%s\nafter:\n%s", k, v, after[k])
		}
	}
	for _, p := range atStart.Appeared() {
		t.Errorf("%s exists on the machine but did not when the test binary started: "+
			"a lab (this test's, an earlier test's or another test binary's) created it", p)
	}
	for _, p := range atStart.Existing() {
		t.Logf("%s existed before the test binary started; whether a lab writes there cannot be told", p)
	}
}

// startTime is field 22 of /proc/PID/stat, or "" if the process is gone.
func startTime(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces; count from its ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// lockLab takes the lab lock for the whole test, so that a lab of another
// test binary cannot run between our two snapshots of the machine. The
// e2e suite may hold it for minutes, hence the callers' long deadlines.
func lockLab(t *testing.T, ctx context.Context) *os.File {
	t.Helper()
	lock, err := acquireLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	return lock
}

func TestLabLeavesTheMachineAsItFound(t *testing.T) {
	cfg := smallConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	lock := lockLab(t, ctx)
	before := machineState(t)
	l, err := start(ctx, cfg, lock)
	if err != nil {
		t.Fatal(err)
	}
	if err := runPod(ctx, l); err != nil {
		l.Close()
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkMachine(t, before)
	if _, err := os.Stat(cfg.Dir); !os.IsNotExist(err) {
		t.Errorf("lab folder %s still exists (err=%v)", cfg.Dir, err)
	}
}

func TestStartFailsClearlyOnBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no workers", Config{Workers: 0, Backends: 1, Dir: "/tmp/x"}, "workers"},
		{"too many backends", Config{Workers: 1, Backends: 4, Dir: "/tmp/x"}, "backends"},
		{"a relative folder", Config{Workers: 1, Dir: "lab"}, "absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Start(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

// startChild runs a small lab with a running pod in a child process,
// under the caller's lock, and returns once it is up.
func startChild(t *testing.T, lock *os.File) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(self, "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"=1")
	// The child runs under our lock (its fd 3 shares our lock), so no lab
	// of another test binary can start, and clear the leftovers, before
	// this test looks at them.
	child.ExtraFiles = []*os.File{lock}
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			_ = child.Wait()
			t.Fatal("the child lab did not come up")
		}
	case <-time.After(3 * time.Minute):
		_ = child.Process.Kill()
		t.Fatal("the child lab did not come up in 3 minutes")
	}
	return child
}

func TestInterruptedLabRemovesItself(t *testing.T) {
	cfg := smallConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	lock := lockLab(t, ctx)
	before := machineState(t)
	child := startChild(t, lock)
	// Ctrl-C: the lab catches it, removes itself and exits.
	_ = child.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Errorf("interrupted lab exited with %v, want status 130", err)
		}
	case <-time.After(2 * time.Minute):
		_ = child.Process.Kill()
		t.Fatal("the interrupted lab did not exit in 2 minutes")
	}
	if pids, err := cgroupPIDs(); err != nil || len(pids) > 0 {
		t.Errorf("processes left after the interrupt: %v (%v)", pids, err)
	}
	checkMachine(t, before)
	if _, err := os.Stat(cfg.Dir); !os.IsNotExist(err) {
		t.Errorf("lab folder %s still exists after the interrupt", cfg.Dir)
	}
}

func TestKilledLabIsClearedAtNextStart(t *testing.T) {
	cfg := smallConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	lock := lockLab(t, ctx)
	before := machineState(t)
	child := startChild(t, lock)
	// No chance to clean up: SIGKILL.
	_ = child.Process.Signal(syscall.SIGKILL)
	_ = child.Wait()

	// The running pod's processes were started by containerd's shim, not
	// by the lab; they outlive the lab process.
	var pids map[int]bool
	_ = waitFor(5*time.Second, func() (bool, error) {
		var err error
		pids, err = cgroupPIDs()
		return err == nil && len(pids) > 0, err
	})
	left := map[int]string{} // pid -> start time, so a reused PID is not mistaken
	for pid := range pids {
		left[pid] = startTime(pid)
	}
	if len(left) == 0 {
		t.Fatal("expected the killed lab to leave its pod's processes behind; found none, so this test proves nothing")
	}

	l, err := start(ctx, cfg, lock)
	if err != nil {
		t.Fatalf("start after a killed lab: %v", err)
	}
	for pid, started := range left {
		if started != "" && startTime(pid) == started {
			t.Errorf("process %d of the killed lab still runs", pid)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkMachine(t, before)
}
