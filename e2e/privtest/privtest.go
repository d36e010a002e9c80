// Package privtest is the one gate for tests that need root, namespaces
// and the lab's binaries. Outside CI such a test skips when the machine
// cannot run it; when NSEGRESS_REQUIRE_PRIVILEGED is set (as .ci/run sets
// it) the same condition fails the test, so a privileged suite can never
// pass by skipping.
package privtest

import (
	"os"
	"os/exec"
	"testing"
)

// RequiredEnv names the variable that turns skips into failures.
const RequiredEnv = "NSEGRESS_REQUIRE_PRIVILEGED"

// Require skips or fails t unless it runs as root.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (namespaces, cgroups, mounts)")
	}
}

// Unavailable ends t because something a privileged test needs is
// missing: a skip on a developer's machine, a failure where privileged
// tests are required.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(RequiredEnv) != "" {
		t.Fatalf("privileged test cannot run, and %s is set: %s", RequiredEnv, why)
	}
	t.Skipf("skipped (set %s=1 to make this a failure): %s", RequiredEnv, why)
}

// RequireTools is Require, and ends t the same way unless every tool is
// on the PATH.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	Require(t)
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Unavailable(t, "needs "+tool)
		}
	}
}
