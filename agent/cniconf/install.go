package cniconf

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/libcni"

	"github.com/nsegress/nsegress/nodestate"
)

const (
	// recordName is the install record in the state dir.
	recordName = "cniconf-install.json"
	// backupSuffix makes the backup's name: the primary's file name plus
	// this. No runtime loads a file with this extension, should the
	// backup ever land in a conf dir.
	backupSuffix = ".orig"
	// stateFileMode keeps the record and backup private: the primary's
	// config can hold credentials (Calico's kubeconfig path, tokens).
	stateFileMode = 0o600
)

// Installer puts nsegress into the primary CNI's config in ConfDir and
// takes it out again, keeping in StateDir what it needs for the way back.
// Its methods are safe to call again after a crash or with the same Entry
// twice; one agent per node calls them, never two at once.
type Installer struct {
	// ConfDir is the runtime's CNI conf dir, e.g. /etc/cni/net.d.
	ConfDir string
	// StateDir holds the install record and the backup of the primary's
	// file. It lies outside ConfDir, so the runtime never reads it.
	StateDir string

	// beforeRename, when set, runs between writing a temporary file and
	// renaming it into place; tests use it to stand for a crash there.
	beforeRename func(tmp string) error
}

// SetBeforeRename installs a hook that runs after a temporary file is
// complete and before it is renamed into place. It is a seam for
// fault-injection tests (the agent kills itself there to prove that a
// crash at the worst moment leaves a valid conflist); nil removes it.
func (in *Installer) SetBeforeRename(hook func(tmp string) error) { in.beforeRename = hook }

// CleanTemp removes temporary files that a killed writer left in the conf
// dir: "." + the name of a config file + digits, as nodestate.WriteFile
// names them.
func (in *Installer) CleanTemp() error {
	entries, err := os.ReadDir(in.ConfDir)
	if err != nil {
		return fmt.Errorf("clean %s: %w", in.ConfDir, err)
	}
	for _, e := range entries {
		if staleTemp.MatchString(e.Name()) {
			if err := os.Remove(filepath.Join(in.ConfDir, e.Name())); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("clean %s: %w", in.ConfDir, err)
			}
		}
	}
	return nil
}

// staleTemp matches our temporary files.
var staleTemp = regexp.MustCompile(`^\..+\.(conflist|conf|json)[0-9]+$`)

// NewInstaller checks the two directories. The state dir must not be the
// conf dir or inside it: libcni reads <conf dir>/<network name>/*.conf,
// and a runtime that reads our backup would run a second network.
func NewInstaller(confDir, stateDir string) (*Installer, error) {
	if confDir == "" || stateDir == "" {
		return nil, errors.New("cniconf: conf dir and state dir must both be set")
	}
	ca, err := filepath.Abs(confDir)
	if err != nil {
		return nil, fmt.Errorf("cniconf: conf dir %s: %w", confDir, err)
	}
	sa, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("cniconf: state dir %s: %w", stateDir, err)
	}
	if rel, err := filepath.Rel(ca, sa); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil, fmt.Errorf("cniconf: state dir %s is inside conf dir %s, where the runtime could read our backup", stateDir, confDir)
	}
	return &Installer{ConfDir: ca, StateDir: sa}, nil
}

// Result says what Install or Uninstall did.
type Result struct {
	// Primary is the base name of the primary's own file.
	Primary string
	// Written is the base name of the file that carries nsegress (after
	// Install) or did (after Uninstall). It differs from Primary when a
	// single-plugin .conf was upconverted.
	Written string
	// Changed is whether a file in the conf dir changed.
	Changed bool
	// Skipped are config files passed over as the primary because they
	// do not load.
	Skipped []SkippedFile
}

// record is what the state dir remembers of an install.
type record struct {
	ConfDir string `json:"confDir"`
	// Primary is the primary's file as it was found; its bytes are in
	// the backup.
	Primary string `json:"primary"`
	// Written is the file we wrote.
	Written string `json:"written"`
	// Mode is the primary's file mode, in octal, given to every file we
	// write in its place.
	Mode string `json:"mode"`
	// WrittenSHA256 is the digest of the bytes we wrote: while Written
	// still has them, the file is ours to restore.
	WrittenSHA256 string `json:"writtenSHA256"`
}

func (r *record) mode() fs.FileMode {
	m, _ := strconv.ParseUint(r.Mode, 8, 32) // checked by loadRecord
	return fs.FileMode(m).Perm()
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (in *Installer) confPath(name string) string { return filepath.Join(in.ConfDir, name) }
func (in *Installer) recordPath() string          { return filepath.Join(in.StateDir, recordName) }
func (in *Installer) backupPath(name string) string {
	return filepath.Join(in.StateDir, name+backupSuffix)
}

// loadRecord returns nil when nsegress is not installed (no record).
func (in *Installer) loadRecord() (*record, error) {
	b, err := os.ReadFile(in.recordPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("install record: %w", err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("install record %s: %w", in.recordPath(), err)
	}
	for _, f := range []struct{ field, name string }{{"primary", r.Primary}, {"written", r.Written}} {
		if !isConfName(f.name) || filepath.Base(f.name) != f.name {
			return nil, fmt.Errorf("install record %s: %s %q is not a config file name", in.recordPath(), f.field, f.name)
		}
	}
	if _, err := strconv.ParseUint(r.Mode, 8, 32); err != nil {
		return nil, fmt.Errorf("install record %s: mode %q is not octal", in.recordPath(), r.Mode)
	}
	if r.ConfDir != in.ConfDir {
		return nil, fmt.Errorf("install record %s: it is for conf dir %s, not %s", in.recordPath(), r.ConfDir, in.ConfDir)
	}
	return &r, nil
}

// A state file that already holds data is left alone: a primary that
// rewrites the same bytes again and again (kindnet at every start) must
// cost one conf write, not three, each with its fsyncs, before nsegress is
// back in the conflist.
func (in *Installer) writeState(name string, data []byte) error {
	path := filepath.Join(in.StateDir, name)
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, data) {
		return nil
	}
	return nodestate.WriteFile(path, data, stateFileMode, nodestate.Durable, in.beforeRename)
}

// CheckForeignRename reports a ForeignRenameError when another component
// has renamed our file or the primary's to *.cilium_bak. Install checks
// this first; the agent can also call it on its own schedule, to raise
// the problem while no install is due.
func (in *Installer) CheckForeignRename() error {
	rec, err := in.loadRecord()
	if err != nil || rec == nil {
		return err
	}
	return in.checkRenamed(rec)
}

func (in *Installer) checkRenamed(rec *record) error {
	ents, err := os.ReadDir(in.ConfDir)
	if err != nil {
		return fmt.Errorf("cni conf dir %s: %w", in.ConfDir, err)
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return detectForeignRename(in.ConfDir, names, rec.Written, rec.Primary)
}

// Install makes the primary's config, as the runtime chooses it, run
// nsegress with e after the primary's plugins. The primary's original
// bytes go to the state dir first, then the record, then the config:
// a record naming bytes not yet written is harmless (the next Install
// starts over; Uninstall finds the file not ours and removes only our
// entry, which is not there), while a config with our entry and no record
// could leave an upconverted file behind.
//
// It errors with a *NoPrimaryError when there is no config to chain
// after, and with a *ForeignRenameError when Cilium renamed our file.
func (in *Installer) Install(e nodestate.Entry) (Result, error) {
	if err := e.Validate(); err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(in.StateDir, 0o700); err != nil {
		return Result{}, fmt.Errorf("state dir: %w", err)
	}
	rec, err := in.loadRecord()
	if err != nil {
		return Result{}, err
	}
	if rec != nil {
		if err := in.checkRenamed(rec); err != nil {
			return Result{}, err
		}
	}
	sel, err := SelectPrimary(in.ConfDir)
	if err != nil {
		return Result{Skipped: sel.Skipped}, err
	}
	if rec != nil && sel.Name != rec.Written && sel.Name != rec.Primary {
		// The runtime's choice moved to another file (a new primary CNI,
		// or a file of ours that broke). Undo the old install first, so
		// that one file only carries nsegress and the old backup is not
		// lost with the record, then choose again: what undo restores
		// may sort first.
		if _, err := in.undo(rec); err != nil {
			return Result{Skipped: sel.Skipped}, err
		}
		rec = nil
		if sel, err = SelectPrimary(in.ConfDir); err != nil {
			return Result{Skipped: sel.Skipped}, err
		}
	}
	res := Result{Skipped: sel.Skipped}

	cur, src, err := in.source(rec, sel.Name)
	if err != nil {
		return res, err
	}
	outPath, out, err := Patch(in.confPath(src.name), src.data, e)
	if err != nil {
		return res, err
	}
	written := filepath.Base(outPath)
	res.Primary, res.Written = src.name, written
	if written != src.name {
		if err := in.checkUpconvert(rec, src.name, written, out); err != nil {
			return res, err
		}
	}
	newRec := record{
		ConfDir:       in.ConfDir,
		Primary:       src.name,
		Written:       written,
		Mode:          fmt.Sprintf("%#o", src.mode),
		WrittenSHA256: digest(out),
	}
	upToDate := written == sel.Name && bytes.Equal(cur, out)
	if src.fromBackup && upToDate && *rec == newRec {
		return res, nil
	}

	if !src.fromBackup {
		if err := in.writeState(src.name+backupSuffix, src.data); err != nil {
			return res, err
		}
	}
	rb, err := json.MarshalIndent(newRec, "", "  ")
	if err != nil {
		return res, err
	}
	if err := in.writeState(recordName, append(rb, '\n')); err != nil {
		return res, err
	}
	if rec != nil && rec.Primary != src.name {
		// The primary's file has a new name (an upconverted file that we
		// no longer recognise as ours): the old backup is not ours to keep.
		if err := nodestate.RemoveFile(in.backupPath(rec.Primary)); err != nil {
			return res, err
		}
	}
	if !upToDate {
		if err := nodestate.WriteFile(in.confPath(written), out, src.mode, nodestate.Volatile, in.beforeRename); err != nil {
			return res, err
		}
		res.Changed = true
	}
	if written != src.name {
		// Only now that the conflist is in place: until here the
		// runtime kept loading the .conf, so pods never lacked a network.
		if _, err := os.Lstat(in.confPath(src.name)); err == nil {
			if err := nodestate.RemoveFile(in.confPath(src.name)); err != nil {
				return res, err
			}
			res.Changed = true
		}
	}
	return res, nil
}

// source is the primary's own config: the bytes, name and mode that Patch
// starts from and Uninstall restores.
type source struct {
	name       string
	data       []byte
	mode       fs.FileMode
	fromBackup bool
}

// source reads the selected file (returned as cur) and finds the
// primary's own config behind it.
func (in *Installer) source(rec *record, selected string) (cur []byte, src source, err error) {
	path := in.confPath(selected)
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, source{}, err
	}
	if !fi.Mode().IsRegular() {
		// Renaming over a symlink would replace the link with a file, and
		// restoring the bytes would not bring the link back.
		return nil, source{}, fmt.Errorf("%s is not a regular file (%v); nsegress edits only regular files", path, fi.Mode().Type())
	}
	cur, err = os.ReadFile(path)
	if err != nil {
		return nil, source{}, err
	}
	if filepath.Ext(selected) == ".conflist" {
		if err := checkNoDirPlugins(path, cur); err != nil {
			return nil, source{}, err
		}
	}
	if rec != nil && selected == rec.Written && digest(cur) == rec.WrittenSHA256 {
		// Still exactly what we wrote: start again from the backup, so a
		// changed Entry takes effect and the backup stays the primary's
		// own bytes.
		orig, err := os.ReadFile(in.backupPath(rec.Primary))
		if err == nil {
			return cur, source{name: rec.Primary, data: orig, mode: rec.mode(), fromBackup: true}, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, source{}, fmt.Errorf("backup: %w", err)
		}
		// The backup is lost: rebuild it from the file, as below.
	}
	src = source{name: selected, data: cur, mode: fi.Mode().Perm()}
	if filepath.Ext(selected) == ".conflist" {
		// An entry we hold no record of (a lost state dir, or a primary
		// that kept our entry when it rewrote its file) is not the
		// primary's: its config is the file without it.
		if src.data, _, err = Unpatch(path, cur); err != nil {
			return nil, source{}, err
		}
	}
	return cur, src, nil
}

// checkNoDirPlugins refuses a conflist whose network also takes plugins
// from <conf dir>/<network name>/*.conf (libcni does this unless
// loadOnlyInlinedPlugins is set): those run after the inline list, so
// nsegress would not run last.
func checkNoDirPlugins(path string, data []byte) error {
	inline, err := libcni.ConfListFromBytes(data)
	if err != nil {
		return fmt.Errorf("conflist %s: %w", path, err)
	}
	full, err := libcni.ConfListFromFile(path)
	if err != nil {
		return fmt.Errorf("conflist %s: %w", path, err)
	}
	if n := len(full.Plugins) - len(inline.Plugins); n > 0 {
		return fmt.Errorf("conflist %s: %d plugins come from %s/*.conf and would run after nsegress; not supported",
			path, n, filepath.Join(filepath.Dir(path), inline.Name))
	}
	return nil
}

// checkUpconvert makes sure that writing to (a .conflist) in place of from
// (a .conf or .json) keeps the runtime's choice: no other config file may
// sort between the two names, and to must not be someone else's file.
func (in *Installer) checkUpconvert(rec *record, from, to string, out []byte) error {
	names, err := confNames(in.ConfDir)
	if err != nil {
		return err
	}
	lo, hi := min(from, to), max(from, to)
	for _, n := range names {
		if n != from && n != to && lo < n && n < hi {
			return fmt.Errorf("cannot upconvert %s to %s in %s: %s sorts between them, so the runtime would load another network",
				from, to, in.ConfDir, n)
		}
	}
	existing, err := os.ReadFile(in.confPath(to))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	}
	ours := bytes.Equal(existing, out) || (rec != nil && rec.Written == to && digest(existing) == rec.WrittenSHA256)
	if !ours {
		return fmt.Errorf("cannot upconvert %s to %s in %s: %s exists and is not ours", from, to, in.ConfDir, to)
	}
	return nil
}
