package images

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPackBinaryCached(t *testing.T) {
	cacheDir := filepath.Join(t.TempDir(), "cache") // created on demand
	bin := writeFakeBinary(t, "agent", "version 1")
	spec := Spec{Ref: "localhost/nsegress/agent:lab"}

	first, err := PackBinaryCached(cacheDir, bin, spec)
	if err != nil {
		t.Fatalf("first PackBinaryCached: %v", err)
	}
	if first.Ref != spec.Ref || filepath.Dir(first.Path) != cacheDir {
		t.Fatalf("first = %+v, want ref %s in %s", first, spec.Ref, cacheDir)
	}
	if base := filepath.Base(first.Path); !strings.HasPrefix(base, "localhost-nsegress-agent-lab-") || !strings.HasSuffix(base, ".tar") {
		t.Errorf("archive name = %s, want localhost-nsegress-agent-lab-<hash>.tar", base)
	}
	readArchive(t, first.Path) // it is a valid image
	// Age the archive: a rewrite would give it a fresh modification time.
	old := time.Unix(1_000_000_000, 0)
	if err := os.Chtimes(first.Path, old, old); err != nil {
		t.Fatal(err)
	}

	t.Run("an unchanged binary reuses the archive", func(t *testing.T) {
		again, err := PackBinaryCached(cacheDir, bin, spec)
		if err != nil {
			t.Fatalf("PackBinaryCached: %v", err)
		}
		if again != first {
			t.Errorf("got %+v, want the cached %+v", again, first)
		}
		fi, err := os.Stat(first.Path)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(old) {
			t.Errorf("archive was rewritten at %s", fi.ModTime())
		}
	})
	t.Run("a changed binary gets a new archive", func(t *testing.T) {
		changed := writeFakeBinary(t, "agent", "version 2")
		got, err := PackBinaryCached(cacheDir, changed, spec)
		if err != nil {
			t.Fatalf("PackBinaryCached: %v", err)
		}
		if got.Path == first.Path {
			t.Errorf("changed binary reused %s", first.Path)
		}
		if f := readArchive(t, got.Path).files["agent"]; string(f.content) != "version 2" {
			t.Errorf("new archive holds %q, want %q", f.content, "version 2")
		}
	})
	t.Run("a changed spec gets a new archive", func(t *testing.T) {
		withCmd := spec
		withCmd.Cmd = []string{"run"}
		got, err := PackBinaryCached(cacheDir, bin, withCmd)
		if err != nil {
			t.Fatalf("PackBinaryCached: %v", err)
		}
		if got.Path == first.Path {
			t.Errorf("changed spec reused %s", first.Path)
		}
	})
	t.Run("no temporary files are left in the cache", func(t *testing.T) {
		entries, err := os.ReadDir(cacheDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("leftover %s", e.Name())
			}
		}
	})
}
