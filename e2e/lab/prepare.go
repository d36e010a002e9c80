package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/nsegress/nsegress/e2e/images"
)

// Prepare fills in what cfg needs from the machine: the cached binaries,
// the labbox binary the backends run, and the lab's images (built from
// this module). It fails with the command to run when the binaries are
// missing.
func Prepare(ctx context.Context, cfg *Config) error {
	moduleDir, err := goList(ctx, "-m", "-f", "{{.Dir}}")
	if err != nil {
		return err
	}
	cniVersion, err := goList(ctx, "-m", "-f", "{{.Version}}", "github.com/containernetworking/plugins")
	if err != nil {
		return err
	}
	if cfg.Bins, err = FindBinaries(cniVersion); err != nil {
		return err
	}
	cache := filepath.Join(CacheDir(), "images")
	imgs, err := images.Build(ctx, images.Options{CacheDir: cache, ModuleDir: moduleDir})
	if err != nil {
		return err
	}
	// Built beside, then renamed: another test binary's lab may be
	// running the current one.
	cfg.Labbox = filepath.Join(cache, "labbox")
	tmp, err := os.MkdirTemp(cache, ".labbox-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := images.BuildStatic(ctx, moduleDir, images.LabboxPackage, filepath.Join(tmp, "labbox")); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(tmp, "labbox"), cfg.Labbox); err != nil {
		return err
	}
	for _, t := range imgs.All() {
		cfg.Images = append(cfg.Images, t.Path)
	}
	cfg.SandboxImage = imgs.Pause.Ref
	return nil
}

// LabboxImage is the test image's name for pod specs.
const LabboxImage = images.LabboxRef

func goList(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			return "", fmt.Errorf("go list %s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return "", fmt.Errorf("go list %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}
