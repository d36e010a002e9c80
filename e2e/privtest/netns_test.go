package privtest

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

func TestDoRunsInTheNamespaceAndLeavesTheCallerWhereItWas(t *testing.T) {
	Require(t)
	runtime.LockOSThread() // so that netns.Get below reads this goroutine's namespace
	defer runtime.UnlockOSThread()
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	ns := NewNetNS(t)
	var inside netns.NsHandle
	if err := Do(ns, func() error {
		var err error
		inside, err = netns.Get()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer inside.Close()
	if !inside.Equal(ns) {
		t.Errorf("fn ran in %s, want the namespace %s", inside, ns)
	}
	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Equal(before) {
		t.Errorf("the caller moved from %s to %s", before, after)
	}
}

func TestDoReturnsFnsErrorAsIs(t *testing.T) {
	Require(t)
	ns := NewNetNS(t)
	want := errors.New("from fn")
	if err := Do(ns, func() error { return want }); !errors.Is(err, want) {
		t.Errorf("Do = %v, want fn's own error", err)
	}
}

func TestDoDoesNotHangWhenFnEndsItsGoroutine(t *testing.T) {
	Require(t)
	ns := NewNetNS(t)
	err := Do(ns, func() error { runtime.Goexit(); return nil })
	if err == nil || !strings.Contains(err.Error(), "did not return") {
		t.Errorf("Do = %v, want an error saying fn did not return", err)
	}
}
