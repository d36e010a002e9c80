package privtest

import (
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and
// ends the goroutine, as t.Fatalf does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// eventually runs Eventually on a goroutine of its own, since a failure
// ends it, and returns the failure message, empty if none.
func eventually(timeout time.Duration, what string, cond func() (bool, error)) string {
	f := &fatalRecorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(f, timeout, what, cond)
	}()
	<-done
	return f.msg
}

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	msg := eventually(10*time.Second, "the third call", func() (bool, error) {
		calls++
		return calls == 3, errors.New("not yet")
	})
	if msg != "" || calls != 3 {
		t.Errorf("Eventually failed with %q after %d calls, want no failure after 3", msg, calls)
	}
}

func TestEventuallyFailsWithWhatItWaitedForAndTheLastError(t *testing.T) {
	calls := 0
	start := time.Now()
	msg := eventually(100*time.Millisecond, "a condition that never holds", func() (bool, error) {
		calls++
		return false, fmt.Errorf("check %d", calls)
	})
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("Eventually gave up after %s, before its timeout", took)
	}
	want := fmt.Sprintf("timed out after 100ms waiting for a condition that never holds: check %d", calls)
	if msg != want {
		t.Errorf("failure = %q, want %q", msg, want)
	}
	if calls < 2 {
		t.Errorf("the condition was checked %d times in 100ms, want it polled", calls)
	}
}

func TestEventuallyWithoutAnErrorSaysNoneInItsFailure(t *testing.T) {
	msg := eventually(0, "nothing", func() (bool, error) { return false, nil })
	if want := "timed out after 0s waiting for nothing"; msg != want {
		t.Errorf("failure = %q, want %q", msg, want)
	}
}
