package images

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
)

// cacheFormat names the layout of the images this package writes; bump
// it whenever newImage changes, so old cache entries are not reused.
const cacheFormat = "nsegress-images/1"

// PackBinaryCached is PackBinary with a cache: the archive lives in
// cacheDir (created if missing) under a name made of the ref and a hash
// of the binary's content and the spec, so packing an unchanged binary
// again only reads and hashes it. Entries are never removed; the caller
// may clear cacheDir at any time.
func PackBinaryCached(cacheDir, binaryPath string, spec Spec) (Tarball, error) {
	spec, err := spec.withDefaults(binaryPath)
	if err != nil {
		return Tarball{}, fmt.Errorf("pack %s: %w", binaryPath, err)
	}
	content, err := readBinary(binaryPath)
	if err != nil {
		return Tarball{}, fmt.Errorf("pack %s: %w", binaryPath, err)
	}
	key, err := cacheKey(content, spec)
	if err != nil {
		return Tarball{}, fmt.Errorf("pack %s: %w", binaryPath, err)
	}
	out := Tarball{
		Path: filepath.Join(cacheDir, sanitizeForFileName(spec.Ref)+"-"+key+".tar"),
		Ref:  spec.Ref,
	}
	// Archives are renamed into place only when complete, so one that
	// exists is whole.
	if _, err := os.Stat(out.Path); err == nil {
		return out, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Tarball{}, fmt.Errorf("pack %s: check cache: %w", binaryPath, err)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Tarball{}, fmt.Errorf("pack %s: create cache directory: %w", binaryPath, err)
	}
	if err := writeImage(content, spec, out.Path); err != nil {
		return Tarball{}, fmt.Errorf("pack %s as %s: %w", binaryPath, spec.Ref, err)
	}
	return out, nil
}

// cacheKey returns a hex digest of everything the archive depends on: the
// format, the architecture, the spec (with defaults) and the binary.
func cacheKey(content []byte, spec Spec) (string, error) {
	specJSON, err := json.Marshal(struct {
		Format, Arch, Ref, Path string
		Entrypoint, Cmd         []string
		Extra                   map[string]string
	}{cacheFormat, runtime.GOARCH, spec.Ref, spec.Path, spec.Entrypoint, spec.Cmd, spec.Extra})
	if err != nil {
		return "", fmt.Errorf("hash spec: %w", err)
	}
	h := sha256.New()
	h.Write(specJSON)
	h.Write([]byte{0})
	h.Write(content)
	// The extra files' contents count too, in path order.
	for _, p := range slices.Sorted(maps.Keys(spec.Extra)) {
		b, err := os.ReadFile(spec.Extra[p])
		if err != nil {
			return "", fmt.Errorf("hash extra file %s: %w", spec.Extra[p], err)
		}
		h.Write([]byte{0})
		h.Write(b)
	}
	// 16 bytes are plenty to tell a handful of builds apart.
	return hex.EncodeToString(h.Sum(nil)[:16]), nil
}
