package privtest

import (
	"testing"
	"time"
)

// firstPoll and maxPoll bound the pause between two checks of
// Eventually's condition. It starts short, so that a condition that
// comes true quickly is seen at once, and grows by half at each check up
// to maxPoll, so that a long wait on a condition that runs a command or
// asks an API server does not keep the shared machine busy.
const (
	firstPoll = 10 * time.Millisecond
	maxPoll   = 200 * time.Millisecond
)

// Eventually checks cond, at growing intervals, until it reports true, and
// fails t when it still does not hold once timeout has passed since
// Eventually was called. The last check is made at the deadline or after
// it, never a pause before it, so a slow machine costs no false timeout.
//
// cond's error says why the condition does not hold yet (a read that
// failed, the state it saw); it does not stop the polling, since what a
// test waits for often fails before it holds, and the last one is in the
// failure message. cond runs on the caller's goroutine: for an error
// that no wait can cure it may call t.Fatal itself. Eventually must
// therefore be called from the test's goroutine, as t.Fatal requires.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := firstPoll
	for {
		ok, err := cond()
		if ok {
			return
		}
		if !time.Now().Before(deadline) {
			if err != nil {
				t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(min(pause, time.Until(deadline)))
		pause = min(pause*3/2, maxPoll)
	}
}
