package cniconf

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ciliumBackupSuffix is what Cilium appends to every other CNI config in
// the conf dir when it runs in exclusive mode (its default), so that the
// runtime loads only Cilium's file.
const ciliumBackupSuffix = ".cilium_bak"

// ForeignRenameError means that the config file nsegress is installed in
// (or the primary's file it came from) was renamed away, as Cilium does in
// exclusive mode. The agent must not quietly install again somewhere else:
// Cilium would rename that too, and pods would start without nsegress.
// The operator has to change Cilium's setting; the message says which.
type ForeignRenameError struct {
	// Dir is the conf dir.
	Dir string
	// File is our or the primary's file that is gone.
	File string
	// Renamed is the .cilium_bak file found in its place.
	Renamed string
}

func (e *ForeignRenameError) Error() string {
	what := fmt.Sprintf("%s was renamed to %s", e.File, e.Renamed)
	if e.Renamed != e.File+ciliumBackupSuffix {
		what = fmt.Sprintf("%s is gone and %s is there", e.File, e.Renamed)
	}
	return fmt.Sprintf("cni conf dir %s: %s: Cilium in exclusive mode renames every other CNI config to *%s, which takes nsegress out of the pod network; "+
		"set cni.exclusive=false in Cilium's Helm values (agent flag --cni-exclusive=false), then restore the file",
		e.Dir, what, ciliumBackupSuffix)
}

// IsForeignRename reports whether err is, or wraps, a ForeignRenameError.
func IsForeignRename(err error) bool {
	var e *ForeignRenameError
	return errors.As(err, &e)
}

// detectForeignRename looks at the names in the conf dir for the signs of
// a rename: X gone and X.cilium_bak present, where X is our file or the
// primary's; or our file gone while any .cilium_bak is present. A
// .cilium_bak next to a file that exists is an old leftover (Cilium never
// renames them back) and is not reported, or the error would never clear.
func detectForeignRename(dir string, names []string, ours, primary string) error {
	has := make(map[string]bool, len(names))
	for _, n := range names {
		has[n] = true
	}
	for _, f := range []string{ours, primary} {
		if f != "" && !has[f] && has[f+ciliumBackupSuffix] {
			return &ForeignRenameError{Dir: dir, File: f, Renamed: f + ciliumBackupSuffix}
		}
	}
	if ours == "" || has[ours] {
		return nil
	}
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	for _, n := range sorted {
		if strings.HasSuffix(n, ciliumBackupSuffix) {
			return &ForeignRenameError{Dir: dir, File: ours, Renamed: n}
		}
	}
	return nil
}
