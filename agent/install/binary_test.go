package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func writeExe(t *testing.T, path, script string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestCopyPluginInstallsExecutableAndIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(t.TempDir(), "nsegress")
	writeExe(t, src, "#!/bin/sh\necho v1\n")
	changed, err := CopyPlugin(src, dir)
	if err != nil || !changed {
		t.Fatalf("first copy: changed=%v err=%v", changed, err)
	}
	fi, err := os.Stat(filepath.Join(dir, PluginBinary))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("installed binary: %v, mode %v", err, fi.Mode())
	}
	if changed, err := CopyPlugin(src, dir); err != nil || changed {
		t.Errorf("second copy of the same binary: changed=%v err=%v, want no change", changed, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("bin dir holds %d files, want only the plugin (no temporary file left)", len(entries))
	}
}

// TestCopyPluginReplacesABinaryThatIsRunning is the "text file busy" case:
// the runtime executes the old plugin (a real ELF file, which the kernel
// refuses to open for writing while it runs) while the agent upgrades it.
func TestCopyPluginReplacesABinaryThatIsRunning(t *testing.T) {
	dir := t.TempDir()
	if _, err := CopyPlugin("/bin/sleep", dir); err != nil {
		t.Fatal(err)
	}
	running := exec.Command(filepath.Join(dir, PluginBinary), "30")
	if err := running.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = running.Process.Kill(); _ = running.Wait() }()
	if changed, err := CopyPlugin("/bin/echo", dir); err != nil || !changed {
		t.Fatalf("copy over a running binary: changed=%v err=%v", changed, err)
	}
	got, err := exec.Command(filepath.Join(dir, PluginBinary), "new").Output()
	if err != nil || strings.TrimSpace(string(got)) != "new" {
		t.Errorf("after the copy the plugin prints %q (%v), want the new binary's output", got, err)
	}
}

func TestRemovePluginToleratesAMissingBinary(t *testing.T) {
	if err := RemovePlugin(t.TempDir()); err != nil {
		t.Error(err)
	}
}
