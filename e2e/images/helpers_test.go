package images

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// archive is what a test reads back from an image tarball.
type archive struct {
	repoTags []string
	config   *v1.ConfigFile
	layers   int
	files    map[string]layerFile // by name in the layer tar
}

// layerFile is one entry of the image's only layer.
type layerFile struct {
	typeflag byte
	mode     int64
	content  []byte
}

// readArchive loads the image tarball at path with go-containerregistry,
// the way an importer would.
func readArchive(t *testing.T, path string) archive {
	t.Helper()
	opener := func() (io.ReadCloser, error) { return os.Open(path) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		t.Fatalf("load manifest.json of %s: %v", path, err)
	}
	if len(m) != 1 {
		t.Fatalf("manifest.json of %s lists %d images, want 1", path, len(m))
	}
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatalf("read image %s: %v", path, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("read config of %s: %v", path, err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatalf("read layers of %s: %v", path, err)
	}
	a := archive{repoTags: m[0].RepoTags, config: cfg, layers: len(layers), files: map[string]layerFile{}}
	if len(layers) == 0 {
		return a
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatalf("open layer of %s: %v", path, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read layer of %s: %v", path, err)
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s in layer of %s: %v", hdr.Name, path, err)
		}
		a.files[hdr.Name] = layerFile{typeflag: hdr.Typeflag, mode: hdr.Mode, content: content}
	}
	return a
}

// writeFakeBinary writes content as an executable file named base in a
// fresh temporary directory and returns its path.
func writeFakeBinary(t *testing.T, base, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), base)
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatalf("write fake binary: %v", err)
	}
	return p
}
