package nodestate

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dirContent maps each file of dir to its mode and content.
func dirContent(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = info.Mode().Perm().String() + " " + string(b)
	}
	return out
}

func TestWriteFileLeavesOnlyTheFileWithItsMode(t *testing.T) {
	t.Parallel()
	for _, d := range []Durability{Volatile, Durable} {
		dir := t.TempDir()
		p := filepath.Join(dir, "10-x.conflist")
		for _, mode := range []fs.FileMode{0o644, 0o600, 0o640, 0o444} {
			if err := WriteFile(p, []byte("data"), mode, d, nil); err != nil {
				t.Fatal(err)
			}
			got := dirContent(t, dir)
			if want := mode.String() + " data"; len(got) != 1 || got["10-x.conflist"] != want {
				t.Errorf("durable=%v: after writing with mode %v the dir holds %v", d, mode, got)
			}
		}
	}
}

func TestWriteFileKeepsTheOldFileAndNoTempFileOnFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "10-x.conflist")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	errCrash := errors.New("crash before the rename")
	var tmpName string
	err := WriteFile(p, []byte("new"), 0o644, Durable, func(tmp string) error {
		tmpName = filepath.Base(tmp)
		return errCrash
	})
	if !errors.Is(err, errCrash) || !strings.Contains(err.Error(), p) {
		t.Fatalf("error %v, want the crash with the file's name", err)
	}
	if !IsTempName(tmpName) || strings.HasSuffix(tmpName, ".conflist") || strings.HasSuffix(tmpName, ".json") {
		t.Errorf("temporary name %q is not hidden, or has an extension a reader loads", tmpName)
	}
	if got := dirContent(t, dir); len(got) != 1 || got["10-x.conflist"] != "-rw-r--r-- old" {
		t.Errorf("after a failed write the dir holds %v", got)
	}
}

func TestEntryMarshalsTheSameBytesEveryTime(t *testing.T) {
	t.Parallel()
	e := Entry{Kubeconfig: "/etc/nsegress/node-1/kubeconfig", StateDir: "/var/lib/nsegress/node-1", LogFile: "/var/log/nsegress/node-1/plugin&.log"}
	want := `{"type":"nsegress","kubeconfig":"/etc/nsegress/node-1/kubeconfig","stateDir":"/var/lib/nsegress/node-1",` +
		`"logFile":"/var/log/nsegress/node-1/plugin&.log"}`
	for range 20 {
		b, err := e.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want {
			t.Fatalf("got  %s\nwant %s", b, want)
		}
	}
}
