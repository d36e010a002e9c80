package cniconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// writeFileAtomic replaces path with data so that a reader (the runtime
// loading the conf dir for a new pod) sees the old file or the new one,
// never a part: the bytes go to a temporary file in the same directory
// (rename is atomic only within a file system), are synced, get perm, and
// only then are renamed over path; the directory is synced so the rename
// survives a power loss. The temporary name, ".<base>.nsegress-tmp-N",
// has no extension a runtime loads, so a crash leaves nothing it would
// pick up. beforeRename, when not nil, runs just before the rename; tests
// return an error from it to stand for a crash at that point.
//
// This is a small stand-in for github.com/google/renameio, which the
// module does not depend on.
func writeFileAtomic(path string, data []byte, perm fs.FileMode, beforeRename func(tmp string) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".nsegress-tmp-*")
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
	// CreateTemp makes the file 0600; Chmod is not subject to the umask,
	// so the file gets exactly the mode the original had.
	if err := f.Chmod(perm.Perm()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
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
	return syncDir(dir)
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
