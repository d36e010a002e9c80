package images

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
)

// TestBuildLabImages compiles labbox for real (a link of a small stdlib
// binary, cheap with a warm build cache) and checks both archives.
func TestBuildLabImages(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles labbox; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cacheDir := t.TempDir()
	li, err := Build(ctx, Options{CacheDir: cacheDir})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}

	tests := []struct {
		name           string
		tarball        Tarball
		wantRef        string
		wantEntrypoint []string
		wantCmd        []string
	}{
		{
			name:           "the pause image runs labbox pause",
			tarball:        li.Pause,
			wantRef:        "localhost/nsegress/pause:lab",
			wantEntrypoint: []string{"/labbox", "pause"},
		},
		{
			name:           "the test image runs labbox and sleeps by default",
			tarball:        li.Labbox,
			wantRef:        "localhost/nsegress/labbox:lab",
			wantEntrypoint: []string{"/labbox"},
			wantCmd:        []string{"sleep"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.tarball.Ref != tt.wantRef {
				t.Errorf("tarball = %+v, want ref %s", tt.tarball, tt.wantRef)
			}
			a := readArchive(t, tt.tarball.Path)
			if !slices.Equal(a.repoTags, []string{tt.wantRef}) {
				t.Errorf("manifest.json RepoTags = %q, want [%q]", a.repoTags, tt.wantRef)
			}
			if a.config.OS != "linux" || a.config.Architecture != runtime.GOARCH {
				t.Errorf("platform = %s/%s, want linux/%s", a.config.OS, a.config.Architecture, runtime.GOARCH)
			}
			if !slices.Equal(a.config.Config.Entrypoint, tt.wantEntrypoint) || !slices.Equal(a.config.Config.Cmd, tt.wantCmd) {
				t.Errorf("entrypoint, cmd = %q, %q; want %q, %q",
					a.config.Config.Entrypoint, a.config.Config.Cmd, tt.wantEntrypoint, tt.wantCmd)
			}
			f, ok := a.files["labbox"]
			if !ok || len(a.files) != 1 {
				t.Fatalf("layer entries = %v, want exactly labbox", a.files)
			}
			if f.mode&0o111 != 0o111 {
				t.Errorf("/labbox has mode %o, want it executable by all", f.mode)
			}
			checkStaticLabbox(t, f.content)
		})
	}

	t.Run("building again reuses the archives", func(t *testing.T) {
		again, err := Build(ctx, Options{CacheDir: cacheDir})
		if err != nil {
			t.Fatalf("second Build: %v", err)
		}
		if again != li {
			t.Errorf("second Build = %+v, want the cached %+v", again, li)
		}
		entries, err := os.ReadDir(cacheDir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 2 {
			t.Errorf("cache holds %d entries, want the 2 archives", len(entries))
		}
	})
}

// checkStaticLabbox checks that content is a static ELF binary for this
// architecture that runs as labbox.
func checkStaticLabbox(t *testing.T, content []byte) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(content))
	if err != nil {
		t.Fatalf("/labbox is not ELF: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		// An interpreter means a dynamic binary, which an empty image
		// cannot run.
		if p.Type == elf.PT_INTERP {
			t.Error("/labbox has an ELF interpreter; want a static binary")
		}
	}
	if runtime.GOOS != "linux" {
		return
	}
	bin := filepath.Join(t.TempDir(), "labbox")
	if err := os.WriteFile(bin, content, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "get", "-h").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("usage: labbox get")) {
		t.Errorf("labbox get -h = %v, output %q; want labbox's usage", err, out)
	}
}
