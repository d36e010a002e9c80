package images

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// LabboxPackage is the import path of the lab's multi-call test binary.
const LabboxPackage = "github.com/nsegress/nsegress/e2e/labbox"

// Options configures Build.
type Options struct {
	// CacheDir holds the archives across runs; required. Build also uses
	// it for its temporary build directory.
	CacheDir string
	// ModuleDir is a directory inside the nsegress module, where go build
	// runs. Default: the current directory (a test's package directory
	// will do).
	ModuleDir string
}

// LabImages are the archives of the lab's own images.
type LabImages struct {
	// Pause is the pod sandbox image, PauseRef.
	Pause Tarball
	// Labbox is the test image, LabboxRef.
	Labbox Tarball
}

// All returns every archive, for importing them in one loop.
func (li LabImages) All() []Tarball { return []Tarball{li.Pause, li.Labbox} }

// Build compiles labbox as a static binary and packs it as the pause
// image and the test image, reusing cached archives when the binary has
// not changed. The compile is incremental through Go's build cache, so a
// repeated Build costs a link and a hash.
func Build(ctx context.Context, opts Options) (LabImages, error) {
	if opts.CacheDir == "" {
		return LabImages{}, fmt.Errorf("build lab images: no cache directory given")
	}
	if err := os.MkdirAll(opts.CacheDir, 0o755); err != nil {
		return LabImages{}, fmt.Errorf("build lab images: create cache directory: %w", err)
	}
	tmp, err := os.MkdirTemp(opts.CacheDir, ".build-*")
	if err != nil {
		return LabImages{}, fmt.Errorf("build lab images: %w", err)
	}
	defer os.RemoveAll(tmp)

	bin := filepath.Join(tmp, "labbox")
	if err := BuildStatic(ctx, opts.ModuleDir, LabboxPackage, bin); err != nil {
		return LabImages{}, fmt.Errorf("build lab images: %w", err)
	}
	var li LabImages
	li.Pause, err = PackBinaryCached(opts.CacheDir, bin, Spec{
		Ref:        PauseRef,
		Path:       "/labbox",
		Entrypoint: []string{"/labbox", "pause"},
	})
	if err != nil {
		return LabImages{}, fmt.Errorf("build lab images: %w", err)
	}
	li.Labbox, err = PackBinaryCached(opts.CacheDir, bin, Spec{
		Ref:        LabboxRef,
		Path:       "/labbox",
		Entrypoint: []string{"/labbox"},
		Cmd:        []string{"sleep"},
	})
	if err != nil {
		return LabImages{}, fmt.Errorf("build lab images: %w", err)
	}
	return li, nil
}

// BuildStatic compiles the Go package pkg (an import path or a path
// relative to dir) into the static binary out for linux on this
// program's architecture, with the go command found on PATH, run in dir
// ("" is the current directory): CGO_ENABLED=0, -trimpath and
// -ldflags "-s -w", so the binary runs in an empty image and is small.
func BuildStatic(ctx context.Context, dir, pkg, out string) error {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go build %s: find go on PATH: %w", pkg, err)
	}
	absOut, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-ldflags", "-s -w", "-o", absOut, pkg)
	cmd.Dir = dir
	// The image says linux/runtime.GOARCH (newImage); build exactly that,
	// whatever GOOS or GOARCH the environment sets.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, strings.TrimSpace(output.String()))
	}
	return nil
}
