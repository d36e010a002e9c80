package cniconf

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nsegress/nsegress/nodestate"
)

// Uninstall takes nsegress out of the conf dir. The file we wrote gets
// the primary's original bytes back when it still holds exactly what we
// wrote; when the primary has rewritten it since, only our entry goes.
// Then any nsegress entry left in another conflist goes too, and last the
// record and backup: a crash part way is finished by the next call.
// Uninstall when nothing is installed changes nothing.
func (in *Installer) Uninstall() (Result, error) {
	rec, err := in.loadRecord()
	if err != nil {
		return Result{}, err
	}
	var res Result
	if rec != nil {
		res.Primary, res.Written = rec.Primary, rec.Written
		if res.Changed, err = in.undo(rec); err != nil {
			return res, err
		}
	}
	swept, err := in.sweep()
	res.Changed = res.Changed || swept
	return res, err
}

// undo reverses the install that rec describes and deletes rec and its
// backup.
func (in *Installer) undo(rec *record) (changed bool, err error) {
	wpath := in.confPath(rec.Written)
	orig, err := os.ReadFile(in.backupPath(rec.Primary))
	haveOrig := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("backup: %w", err)
	}
	cur, err := os.ReadFile(wpath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Our file is gone: removed or renamed by someone else (see
		// ForeignRenameError). Bringing the backup back would revive a
		// network someone took away.
	case err != nil:
		return false, err
	case haveOrig && digest(cur) == rec.WrittenSHA256:
		if err := in.restore(rec, orig); err != nil {
			return false, err
		}
		changed = true
	default:
		stripped, n, err := Unpatch(wpath, cur)
		if err != nil {
			// Rewritten into something that does not parse: the runtime
			// cannot run it either, and it is not ours to repair.
			break
		}
		if haveOrig && rec.Primary != rec.Written {
			if up, err := upconvert(rec.Primary, orig); err == nil && bytes.Equal(stripped, up) {
				// Nothing but our entry differs from the list made of
				// the .conf: the .conf can come back.
				if err := in.restore(rec, orig); err != nil {
					return false, err
				}
				changed = true
				break
			}
		}
		if n > 0 {
			fi, err := os.Stat(wpath)
			if err != nil {
				return false, err
			}
			if err := nodestate.WriteFile(wpath, stripped, fi.Mode().Perm(), nodestate.Durable, in.beforeRename); err != nil {
				return false, err
			}
			changed = true
		}
	}
	// The record goes first: without it a backup is only a stray file,
	// while a record without its backup makes the next call fall back to
	// removing our entry.
	if err := nodestate.RemoveFile(in.recordPath()); err != nil {
		return changed, err
	}
	return changed, nodestate.RemoveFile(in.backupPath(rec.Primary))
}

// restore gives the primary its original file back.
func (in *Installer) restore(rec *record, orig []byte) error {
	if rec.Primary == rec.Written {
		return nodestate.WriteFile(in.confPath(rec.Primary), orig, rec.mode(), nodestate.Durable, in.beforeRename)
	}
	// Upconverted: the .conf (or .json) comes back before our .conflist
	// goes, so the runtime has a network to load at every moment. If the
	// primary has written its file again meanwhile, theirs is newer than
	// our backup and stays.
	ppath := in.confPath(rec.Primary)
	if _, err := os.Lstat(ppath); errors.Is(err, fs.ErrNotExist) {
		if err := nodestate.WriteFile(ppath, orig, rec.mode(), nodestate.Durable, in.beforeRename); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	return nodestate.RemoveFile(in.confPath(rec.Written))
}

// sweep removes nsegress entries from every conflist in the conf dir:
// those of an install whose record is lost, or that a primary kept when
// it rewrote its file under another name. Files that do not parse are
// left alone; a list of nothing but nsegress is reported, as removing
// the entry would leave a config no runtime loads.
func (in *Installer) sweep() (changed bool, err error) {
	names, err := confNames(in.ConfDir)
	if err != nil {
		return false, err
	}
	var errs []error
	for _, n := range names {
		if filepath.Ext(n) != ".conflist" {
			continue
		}
		path := in.confPath(n)
		fi, err := os.Lstat(path)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out, removed, err := Unpatch(path, data)
		if err != nil {
			if _, perr := parseList(path, data); perr == nil {
				errs = append(errs, err)
			}
			continue
		}
		if removed == 0 {
			continue
		}
		if err := nodestate.WriteFile(path, out, fi.Mode().Perm(), nodestate.Durable, in.beforeRename); err != nil {
			errs = append(errs, err)
			continue
		}
		changed = true
	}
	return changed, errors.Join(errs...)
}
