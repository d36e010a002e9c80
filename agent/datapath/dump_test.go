package datapath

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

// fakeDump is a dump that fails with the given errors, one per call,
// and then returns the number of its calls.
type fakeDump struct {
	errs  []error
	calls int
}

func (f *fakeDump) dump() ([]int, error) {
	f.calls++
	if f.calls <= len(f.errs) {
		// What netlink does: a partial result along with the error.
		return []int{-1}, f.errs[f.calls-1]
	}
	return []int{f.calls}, nil
}

func TestDumpRetriesAnInterruptedDump(t *testing.T) {
	f := &fakeDump{errs: []error{netlink.ErrDumpInterrupted, netlink.ErrDumpInterrupted}}
	got, err := Dump("list things", f.dump)
	if err != nil || len(got) != 1 || got[0] != 3 {
		t.Errorf("Dump = %v, %v; want the third attempt's [3], no error", got, err)
	}
	if f.calls != 3 {
		t.Errorf("the dump ran %d times, want 3", f.calls)
	}
}

func TestDumpGivesUpOnADumpThatIsAlwaysInterrupted(t *testing.T) {
	f := &fakeDump{errs: make([]error, 100)}
	for i := range f.errs {
		f.errs[i] = netlink.ErrDumpInterrupted
	}
	got, err := Dump("list things", f.dump)
	if err == nil || !strings.HasPrefix(err.Error(), "list things: ") || !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Errorf("Dump error = %v; want one naming the dump (list things) and wrapping ErrDumpInterrupted", err)
	}
	if got != nil {
		t.Errorf("Dump returned the partial result %v", got)
	}
	if f.calls != dumpAttempts {
		t.Errorf("the dump ran %d times, want %d", f.calls, dumpAttempts)
	}
}

func TestDumpReturnsAnyOtherErrorAtOnce(t *testing.T) {
	f := &fakeDump{errs: []error{syscall.EPERM}}
	got, err := Dump("list things", f.dump)
	if !errors.Is(err, syscall.EPERM) || !strings.HasPrefix(err.Error(), "list things: ") {
		t.Errorf("Dump error = %v; want EPERM, named list things", err)
	}
	if got != nil {
		t.Errorf("Dump returned the partial result %v", got)
	}
	if f.calls != 1 {
		t.Errorf("the dump ran %d times, want 1 (no retry)", f.calls)
	}
}
