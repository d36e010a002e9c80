package cniconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"
)

// writeFileAtomic replaces path with data so that a reader (the runtime
// loading the conf dir for a new pod) sees the old file or the new one,
// never a part. renameio writes a temporary file in the same directory
// (rename is atomic only within a file system), syncs it, gives it perm
// exactly (no umask) and renames it over path; we then sync the directory
// so the rename survives a power loss. renameio names the temporary file
// "." + base + digits: its extension (".conflist123…") is none a runtime
// loads, so a crash leaves nothing it would pick up. beforeRename, when
// not nil, runs just before the rename; tests return an error from it to
// stand for a crash at that point.
func writeFileAtomic(path string, data []byte, perm fs.FileMode, beforeRename func(tmp string) error) error {
	// The temporary file stays beside path: renameio would otherwise use
	// the machine's temp dir when it shares a file system with path.
	pf, err := renameio.NewPendingFile(path, renameio.WithTempDir(filepath.Dir(path)), renameio.WithStaticPermissions(perm.Perm()))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer pf.Cleanup()
	if _, err := pf.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if beforeRename != nil {
		if err := beforeRename(pf.Name()); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := pf.CloseAtomicallyReplace(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// isTempName says whether a conf dir entry is one of writeFileAtomic's
// temporary files.
func isTempName(name string) bool {
	return strings.HasPrefix(name, ".")
}

// removeFile removes path and syncs its directory; a file already gone is
// fine, as every caller wants it gone.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
