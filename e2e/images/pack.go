package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Spec describes an image made of one static binary.
type Spec struct {
	// Ref is the image's tag: LocalPrefix, a path and an explicit tag
	// part, e.g. "localhost/nsegress/agent:lab". It is written to the
	// archive's manifest.json as given, and containerd lists the image
	// under it.
	Ref string
	// Path is where the binary lives in the image, absolute.
	// Default: "/" followed by the binary's file name.
	Path string
	// Entrypoint is the image's entrypoint. Default: [Path].
	Entrypoint []string
	// Cmd is the image's default arguments to Entrypoint; may be empty.
	Cmd []string
	// Extra are more static binaries to put into the image, keyed by
	// their absolute path in the image, valued by their path on the
	// machine: the agent image carries the plugin it installs.
	Extra map[string]string
}

// layerModTime is the modification time of every file in a layer. A
// fixed time makes the layer, and so the image, a function of the binary
// alone: the same binary gives the same digests.
var layerModTime = time.Unix(0, 0).UTC()

// withDefaults validates s and fills in its defaults for the binary at
// binaryPath.
func (s Spec) withDefaults(binaryPath string) (Spec, error) {
	if !strings.HasPrefix(s.Ref, LocalPrefix) {
		return Spec{}, fmt.Errorf("image ref %q: must start with %q, or containerd renames it on import (and a pull would leave the lab)", s.Ref, LocalPrefix)
	}
	tag, err := name.NewTag(s.Ref)
	if err != nil {
		return Spec{}, fmt.Errorf("image ref %q: %w", s.Ref, err)
	}
	// Without an explicit tag go-containerregistry appends ":latest" in
	// manifest.json, and the ref would no longer be the name callers use.
	if !strings.HasSuffix(s.Ref, ":"+tag.TagStr()) {
		return Spec{}, fmt.Errorf("image ref %q: no tag; give one, e.g. %q", s.Ref, s.Ref+":lab")
	}
	if s.Path == "" {
		s.Path = "/" + filepath.Base(binaryPath)
	}
	if !path.IsAbs(s.Path) || path.Clean(s.Path) != s.Path || s.Path == "/" {
		return Spec{}, fmt.Errorf("image %s: binary path %q must be a clean absolute file path", s.Ref, s.Path)
	}
	if len(s.Entrypoint) == 0 {
		s.Entrypoint = []string{s.Path}
	}
	return s, nil
}

// PackBinary writes to outTar a docker-archive image tarball holding only
// the static binary at binaryPath, as spec describes. The archive is
// written to a temporary file and renamed into place, so outTar is either
// absent or complete.
func PackBinary(binaryPath string, spec Spec, outTar string) error {
	spec, err := spec.withDefaults(binaryPath)
	if err != nil {
		return fmt.Errorf("pack %s: %w", binaryPath, err)
	}
	content, err := readBinary(binaryPath)
	if err != nil {
		return fmt.Errorf("pack %s: %w", binaryPath, err)
	}
	if err := writeImage(content, spec, outTar); err != nil {
		return fmt.Errorf("pack %s as %s: %w", binaryPath, spec.Ref, err)
	}
	return nil
}

// readBinary reads the binary to pack and checks that it is a non-empty
// regular file.
func readBinary(binaryPath string) ([]byte, error) {
	fi, err := os.Stat(binaryPath)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", binaryPath)
	}
	content, err := os.ReadFile(binaryPath)
	if err != nil {
		return nil, err
	}
	if len(content) == 0 {
		return nil, fmt.Errorf("%s is empty", binaryPath)
	}
	return content, nil
}

// writeImage builds the image of content as spec (already defaulted)
// describes and writes it atomically to outTar.
func writeImage(content []byte, spec Spec, outTar string) error {
	img, err := newImage(content, spec)
	if err != nil {
		return err
	}
	tag, err := name.NewTag(spec.Ref)
	if err != nil {
		return fmt.Errorf("parse ref: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(outTar), ".pack-*.tar")
	if err != nil {
		return fmt.Errorf("create temporary archive: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	// tarball.Write puts tag.String(), the ref as given, in RepoTags.
	if err := tarball.Write(tag, img, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("write archive %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod archive %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close archive %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), outTar); err != nil {
		return fmt.Errorf("move archive into place: %w", err)
	}
	return nil
}

// newImage returns empty.Image plus one layer holding content at
// spec.Path, with a config for linux on this program's architecture.
func newImage(content []byte, spec Spec) (v1.Image, error) {
	files := map[string][]byte{spec.Path: content}
	for inImage, src := range spec.Extra {
		if !path.IsAbs(inImage) || path.Clean(inImage) != inImage || inImage == spec.Path {
			return nil, fmt.Errorf("extra file path %q must be a clean absolute path other than %s", inImage, spec.Path)
		}
		b, err := readBinary(src)
		if err != nil {
			return nil, err
		}
		files[inImage] = b
	}
	layerTar, err := binaryLayerTar(files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("make layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS = "linux"
	// The binary is built for, and the lab runs on, this machine.
	cfg.Architecture = runtime.GOARCH
	cfg.Config.Entrypoint = spec.Entrypoint
	cfg.Config.Cmd = spec.Cmd
	// The image has no /usr/bin or /bin: a PATH of the binary's directory
	// lets `kubectl exec pod -- labbox get …` work without a leading slash.
	cfg.Config.Env = []string{"PATH=" + path.Dir(spec.Path)}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

// binaryLayerTar returns an uncompressed layer tar holding each file
// (keyed by absolute path) with mode 0755, owned by root, in path order,
// each preceded by entries for parent directories not yet written.
func binaryLayerTar(files map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	written := map[string]bool{}
	for _, filePath := range slices.Sorted(maps.Keys(files)) {
		content := files[filePath]
		// Layer entries are relative to the root: "/labbox" is "labbox".
		rel := strings.TrimPrefix(filePath, "/")
		var dirs []string
		for d := path.Dir(rel); d != "."; d = path.Dir(d) {
			dirs = append([]string{d}, dirs...)
		}
		for _, d := range dirs {
			if written[d] {
				continue
			}
			written[d] = true
			hdr := &tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: layerModTime}
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, fmt.Errorf("write layer entry %s: %w", d, err)
			}
		}
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     rel,
			Mode:     0o755,
			Size:     int64(len(content)),
			ModTime:  layerModTime,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("write layer entry %s: %w", rel, err)
		}
		if _, err := tw.Write(content); err != nil {
			return nil, fmt.Errorf("write layer entry %s: %w", rel, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close layer: %w", err)
	}
	return buf.Bytes(), nil
}
