package privtest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// NewNetNS creates a throwaway network namespace for t and returns a
// handle to it; the namespace disappears when t ends (the handle is its
// last reference). It is created on a dedicated thread that dies with its
// goroutine, so no goroutine of the test ever runs in it, the machine's
// own namespace is never changed, and nothing is named in /run/netns.
func NewNetNS(t testing.TB) netns.NsHandle {
	t.Helper()
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result)
	go func() {
		// Never unlocked: the thread exits with the goroutine, whatever
		// namespace it is left in.
		runtime.LockOSThread()
		ns, err := netns.New()
		ch <- result{ns, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("create a network namespace: %v", r.err)
	}
	t.Cleanup(func() { _ = r.ns.Close() })
	return r.ns
}

// NetNSPath names ns for nsenter and nft without naming it in
// /run/netns: the path of the handle's file descriptor.
func NetNSPath(ns netns.NsHandle) string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))
}

// RunIn runs a command inside ns with nsenter, feeding it stdin when not
// empty, and returns its combined output; the error names the command.
func RunIn(ns netns.NsHandle, stdin string, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + NetNSPath(ns), "--"}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
