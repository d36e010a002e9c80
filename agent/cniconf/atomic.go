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

// replaceFile is writeFileAtomic without the fsyncs, for the one write
// on the hot path: putting nsegress back into a conflist that the primary
// just rewrote. On a node busy creating pods an fsync waits for the whole
// file system journal and was measured at over a second in the lab, past
// the one-second bound for the entry to be back (issue 3). Atomicity
// against a killed process comes from the rename alone; what the fsyncs
// add is durability across a power loss, and after one the agent rewrites
// the conflist at start anyway. renameio always syncs, hence this small
// variant with the same temporary name scheme.
func replaceFile(path string, data []byte, perm fs.FileMode, beforeRename func(tmp string) error) (err error) {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// CreateTemp makes the file 0600; Chmod ignores the umask.
	if err := f.Chmod(perm.Perm()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if beforeRename != nil {
		if err := beforeRename(tmp); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
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
