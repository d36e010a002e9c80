package privtest

import (
	"errors"
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
// last reference). It is created on a thread of its own, as Do's are, so
// no goroutine of the test ever runs in it, the machine's own namespace
// is never changed, and nothing is named in /run/netns.
func NewNetNS(t testing.TB) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	err := onThrowawayThread(func() error {
		var err error
		ns, err = netns.New()
		return err
	})
	if err != nil {
		t.Fatalf("create a network namespace: %v", err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	return ns
}

// Do runs fn inside ns and returns its error. Everything fn opens that
// belongs to a namespace (sockets, netlink's default handle, the
// listening socket a server keeps) is opened in ns; what fn starts on
// other goroutines runs wherever the scheduler puts it.
//
// fn runs on a goroutine locked to its OS thread that enters ns and is
// never unlocked: when the goroutine ends, its thread exits with it,
// whatever namespace it is left in, instead of going back to the
// scheduler still in ns. So no other goroutine ever runs in ns, and no
// later one finds itself in a namespace it did not enter.
//
// fn runs on another goroutine than the test's, so it must not call
// t.FailNow or t.Fatal; should it end its goroutine so anyway, Do
// returns an error rather than waiting for ever.
func Do(ns netns.NsHandle, fn func() error) error {
	return onThrowawayThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", NetNSPath(ns), err)
		}
		return fn()
	})
}

// onThrowawayThread runs fn on a new goroutine locked to its OS thread
// for good, and waits for its error; see Do for why the thread is never
// unlocked.
func onThrowawayThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread exits with the goroutine, whatever
		// namespace fn left it in.
		runtime.LockOSThread()
		returned := false
		defer func() {
			if !returned {
				errc <- errors.New("the function run in a namespace did not return (runtime.Goexit, t.FailNow?)")
			}
		}()
		err := fn()
		returned = true
		errc <- err
	}()
	return <-errc
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
