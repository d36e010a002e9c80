package nodestate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Durability says whether WriteFile makes a file survive a power loss.
type Durability bool

const (
	// Volatile files are replaced atomically against a crash of the
	// writer, but not synced: a power loss may leave the old content. For
	// files on a hot path whose content a reboot makes moot or the agent
	// rewrites at start (pod records, a conflist the primary just
	// rewrote): an fsync there waits for the whole file system's journal,
	// measured at over a second on a busy node.
	Volatile Durability = false
	// Durable files are synced, and so is their directory after the
	// rename: what the node must still know after a power loss (the
	// snapshot ADD falls back to, the plugin's kubeconfig, the floating
	// IPs to release on uninstall, the conflist the agent owns).
	Durable Durability = true
)

// WriteFile replaces path with data so that a reader sees the old file or
// the new one, never a part: the data go to a temporary file in the same
// directory (a rename is atomic only within a file system), which gets
// perm exactly (no umask) and is then renamed over path. The temporary
// name is "." + base + digits: hidden, and with an extension no CNI
// runtime loads and no reader of records matches, so a crash leaves
// nothing anyone would pick up. beforeRename, when not nil, runs just
// before the rename; tests return an error from it to stand for a crash
// at that point.
func WriteFile(path string, data []byte, perm fs.FileMode, d Durability, beforeRename func(tmp string) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			// Best effort: the write already failed, and a leftover
			// temporary file is hidden and never loaded.
			_ = f.Close()      // may be closed already
			_ = os.Remove(tmp) // hidden and never loaded if it stays
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// CreateTemp makes the file 0600; Chmod ignores the umask.
	if err := f.Chmod(perm.Perm()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d == Durable {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("write %s: sync: %w", path, err)
		}
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
	if d == Durable {
		return SyncDir(dir)
	}
	return nil
}

// IsTempName says whether a directory entry is one of WriteFile's
// temporary files.
func IsTempName(name string) bool { return strings.HasPrefix(name, ".") }

// SyncDir syncs a directory, so that a rename or removal in it survives a
// power loss.
func SyncDir(dir string) error {
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

// RemoveFile removes path, a file already gone included, and syncs its
// directory.
func RemoveFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}
