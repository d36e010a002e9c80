package nft

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nsegress/nsegress/e2e/privtest"
	"github.com/vishvananda/netns"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// newNetNS creates a throwaway network namespace for t.
func newNetNS(t testing.TB) netns.NsHandle { return privtest.NewNetNS(t) }

// nsPath names ns without naming it in /run/netns.
func nsPath(ns netns.NsHandle) string { return privtest.NetNSPath(ns) }

// runIn runs a command inside ns and returns its output.
func runIn(t testing.TB, ns netns.NsHandle, args ...string) string {
	t.Helper()
	out, err := privtest.RunIn(ns, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// newTestTable opens the nsegress table in a fresh netns.
func newTestTable(t testing.TB) (*Table, netns.NsHandle) {
	t.Helper()
	privtest.Require(t)
	if _, err := exec.LookPath("nft"); err != nil {
		privtest.Unavailable(t, "needs the nft CLI")
	}
	ns := newNetNS(t)
	tbl, err := Open(WithNetNS(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tbl.Close() })
	return tbl, ns
}

// listTable returns `nft list table ip nsegress` in ns with the elements
// of every set sorted, one a line: the kernel dumps hash sets in an
// order that changes from run to run.
func listTable(t testing.TB, ns netns.NsHandle) string {
	t.Helper()
	return sortElements(runIn(t, ns, "nft", "list", "table", "ip", DefaultTableName))
}

// sortElements rewrites each "elements = { a, b, … }" block of nft's
// output as one element a line, sorted.
func sortElements(out string) string {
	var b strings.Builder
	for {
		i := strings.Index(out, "elements = { ")
		if i < 0 {
			b.WriteString(out)
			return b.String()
		}
		j := strings.Index(out[i:], " }")
		if j < 0 {
			b.WriteString(out)
			return b.String()
		}
		indent := out[strings.LastIndex(out[:i], "\n")+1 : i]
		var elems []string
		for _, e := range strings.Split(out[i+len("elements = { "):i+j], ",") {
			elems = append(elems, strings.TrimSpace(e))
		}
		slices.Sort(elems)
		b.WriteString(out[:i])
		b.WriteString("elements = {\n")
		for _, e := range elems {
			b.WriteString(indent + "\t" + e + ",\n")
		}
		b.WriteString(indent + "}")
		out = out[i+j+len(" }"):]
	}
}

// checkGolden compares got with testdata/<name>.golden, or rewrites the
// file with -update.
func checkGolden(t testing.TB, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the table (run with -update to accept):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}
