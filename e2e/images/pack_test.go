package images

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestPackBinary(t *testing.T) {
	tests := []struct {
		name           string
		spec           Spec
		wantFile       string // entry name in the layer tar
		wantDirs       []string
		wantEntrypoint []string
		wantCmd        []string
		wantEnv        []string
	}{
		{
			name:           "a binary packed with defaults sits at the root and is the entrypoint",
			spec:           Spec{Ref: "localhost/nsegress/agent:lab"},
			wantFile:       "agent",
			wantEntrypoint: []string{"/agent"},
			wantEnv:        []string{"PATH=/"},
		},
		{
			name: "entrypoint and command are written as given",
			spec: Spec{
				Ref:        "localhost/nsegress/pause:lab",
				Path:       "/labbox",
				Entrypoint: []string{"/labbox", "pause"},
				Cmd:        []string{"-x"},
			},
			wantFile:       "labbox",
			wantEntrypoint: []string{"/labbox", "pause"},
			wantCmd:        []string{"-x"},
			wantEnv:        []string{"PATH=/"},
		},
		{
			name:           "a nested path gets its parent directories and PATH",
			spec:           Spec{Ref: "localhost/nsegress/agent:lab", Path: "/usr/local/bin/agent"},
			wantFile:       "usr/local/bin/agent",
			wantDirs:       []string{"usr/", "usr/local/", "usr/local/bin/"},
			wantEntrypoint: []string{"/usr/local/bin/agent"},
			wantEnv:        []string{"PATH=/usr/local/bin"},
		},
	}
	const content = "\x7fELF pretend static binary"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := writeFakeBinary(t, "agent", content)
			// A non-executable source proves the image sets the mode itself.
			if err := os.Chmod(bin, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "image.tar")
			if err := PackBinary(bin, tt.spec, out); err != nil {
				t.Fatalf("PackBinary: %v", err)
			}
			a := readArchive(t, out)

			if want := []string{tt.spec.Ref}; !slices.Equal(a.repoTags, want) {
				t.Errorf("manifest.json RepoTags = %q, want %q", a.repoTags, want)
			}
			if a.config.OS != "linux" || a.config.Architecture != runtime.GOARCH {
				t.Errorf("platform = %s/%s, want linux/%s", a.config.OS, a.config.Architecture, runtime.GOARCH)
			}
			if !slices.Equal(a.config.Config.Entrypoint, tt.wantEntrypoint) {
				t.Errorf("entrypoint = %q, want %q", a.config.Config.Entrypoint, tt.wantEntrypoint)
			}
			if !slices.Equal(a.config.Config.Cmd, tt.wantCmd) {
				t.Errorf("cmd = %q, want %q", a.config.Config.Cmd, tt.wantCmd)
			}
			if !slices.Equal(a.config.Config.Env, tt.wantEnv) {
				t.Errorf("env = %q, want %q", a.config.Config.Env, tt.wantEnv)
			}
			if a.layers != 1 {
				t.Fatalf("image has %d layers, want 1", a.layers)
			}
			if len(a.files) != len(tt.wantDirs)+1 {
				t.Errorf("layer holds %d entries, want %d: %v", len(a.files), len(tt.wantDirs)+1, a.files)
			}
			for _, d := range tt.wantDirs {
				if f, ok := a.files[d]; !ok || f.mode != 0o755 {
					t.Errorf("layer entry %s = %+v (present: %v), want a directory with mode 0755", d, f, ok)
				}
			}
			f, ok := a.files[tt.wantFile]
			if !ok {
				t.Fatalf("layer has no %s; entries: %v", tt.wantFile, a.files)
			}
			if f.mode != 0o755 {
				t.Errorf("%s has mode %o, want 755", tt.wantFile, f.mode)
			}
			if string(f.content) != content {
				t.Errorf("%s holds %q, want the binary %q", tt.wantFile, f.content, content)
			}
		})
	}
}

func TestPackBinaryRefusesBadInput(t *testing.T) {
	tests := []struct {
		name    string
		binary  func(t *testing.T) string
		spec    Spec
		wantErr string
	}{
		{
			name:    "a ref without a tag is refused",
			binary:  func(t *testing.T) string { return writeFakeBinary(t, "agent", "x") },
			spec:    Spec{Ref: "localhost/nsegress/agent"},
			wantErr: "no tag",
		},
		{
			name:    "a ref that is not a valid name is refused",
			binary:  func(t *testing.T) string { return writeFakeBinary(t, "agent", "x") },
			spec:    Spec{Ref: "localhost/NSEGRESS/Agent:lab"},
			wantErr: "image ref",
		},
		{
			name:    "a ref containerd would rename is refused",
			binary:  func(t *testing.T) string { return writeFakeBinary(t, "agent", "x") },
			spec:    Spec{Ref: "nsegress/agent:lab"},
			wantErr: "must start with",
		},
		{
			name:    "a ref of another registry host is refused",
			binary:  func(t *testing.T) string { return writeFakeBinary(t, "agent", "x") },
			spec:    Spec{Ref: "registry.example:5000/nsegress/agent:v1"},
			wantErr: "must start with",
		},
		{
			name:    "a relative binary path in the image is refused",
			binary:  func(t *testing.T) string { return writeFakeBinary(t, "agent", "x") },
			spec:    Spec{Ref: "localhost/nsegress/agent:lab", Path: "bin/agent"},
			wantErr: "clean absolute file path",
		},
		{
			name:    "a missing binary is refused",
			binary:  func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") },
			spec:    Spec{Ref: "localhost/nsegress/agent:lab"},
			wantErr: "no such file",
		},
		{
			name:    "an empty binary is refused",
			binary:  func(t *testing.T) string { return writeFakeBinary(t, "agent", "") },
			spec:    Spec{Ref: "localhost/nsegress/agent:lab"},
			wantErr: "is empty",
		},
		{
			name:    "a directory is refused",
			binary:  func(t *testing.T) string { return t.TempDir() },
			spec:    Spec{Ref: "localhost/nsegress/agent:lab"},
			wantErr: "not a regular file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outDir := t.TempDir()
			err := PackBinary(tt.binary(t), tt.spec, filepath.Join(outDir, "image.tar"))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("PackBinary error = %v, want one containing %q", err, tt.wantErr)
			}
			if entries, _ := os.ReadDir(outDir); len(entries) != 0 {
				t.Errorf("left %d files behind after a failure", len(entries))
			}
		})
	}
}

func TestPackBinaryIsReproducible(t *testing.T) {
	bin := writeFakeBinary(t, "agent", "same bytes")
	spec := Spec{Ref: "localhost/nsegress/agent:lab"}
	var archives [][]byte
	for i := range 2 {
		out := filepath.Join(t.TempDir(), "image.tar")
		if err := PackBinary(bin, spec, out); err != nil {
			t.Fatalf("PackBinary #%d: %v", i+1, err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		archives = append(archives, b)
	}
	if !bytes.Equal(archives[0], archives[1]) {
		t.Error("packing the same binary twice gave different archives")
	}
}

func TestPackBinaryCarriesExtraFiles(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "agent")
	extra := filepath.Join(dir, "plugin")
	if err := os.WriteFile(main, []byte("agent-binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(extra, []byte("plugin-binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	spec := Spec{Ref: "localhost/nsegress/agent:lab", Path: "/nsegress-agent", Extra: map[string]string{"/nsegress": extra}}
	if err := PackBinary(main, spec, out); err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %v, %d", err, len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		got[hdr.Name] = string(b)
	}
	if got["nsegress-agent"] != "agent-binary" || got["nsegress"] != "plugin-binary" || len(got) != 2 {
		t.Errorf("layer holds %v, want the agent and the plugin", got)
	}
}
