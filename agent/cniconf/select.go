package cniconf

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// isConfName reports whether a runtime reads a file of this name from the
// conf dir: go-cni lists the dir with libcni.ConfFiles and these
// extensions, compared exactly (".CONF" is not read).
func isConfName(name string) bool {
	switch filepath.Ext(name) {
	case ".conflist", ".conf", ".json":
		return true
	}
	return false
}

// SkippedFile is a config file that SelectPrimary passed over because it
// does not load, with the reason.
type SkippedFile struct {
	Name string
	Err  error
}

// Selection is the runtime's choice of network in a conf dir.
type Selection struct {
	// Name is the base name of the primary's file.
	Name string
	// Skipped are the files before it, in order, that do not load; the
	// agent logs them, since a broken file that sorts first stops
	// containerd from loading any network at all.
	Skipped []SkippedFile
}

// NoPrimaryError means the conf dir holds no loadable network config:
// typically the primary CNI has not written its config yet, so the agent
// should wait and try again rather than write a network of its own.
type NoPrimaryError struct {
	Dir     string
	Skipped []SkippedFile
}

func (e *NoPrimaryError) Error() string {
	msg := fmt.Sprintf("cni conf dir %s: no loadable network config (.conflist, .conf, .json); is the primary CNI installed?", e.Dir)
	for _, s := range e.Skipped {
		msg += fmt.Sprintf("; skipped %s: %v", s.Name, s.Err)
	}
	return msg
}

// SelectPrimary finds the network config the container runtime uses: the
// first file of confDir, in lexical order of name, among .conflist, .conf
// and .json files, that loads as libcni loads it (.conflist as a list,
// the others as one plugin with a type). Files that do not load are
// skipped; see the package comment for how runtimes differ there.
// Backups and temporary files never qualify: their extensions are not
// read by runtimes.
func SelectPrimary(confDir string) (Selection, error) {
	names, err := confNames(confDir)
	if err != nil {
		return Selection{}, err
	}
	var sel Selection
	for _, n := range names {
		if err := loadable(filepath.Join(confDir, n)); err != nil {
			sel.Skipped = append(sel.Skipped, SkippedFile{Name: n, Err: err})
			continue
		}
		sel.Name = n
		return sel, nil
	}
	return sel, &NoPrimaryError{Dir: confDir, Skipped: sel.Skipped}
}

// confNames lists the names a runtime considers, sorted as it sorts them
// (sort.Strings: bytewise, so "10-a.conf" comes before "10-a.conflist").
func confNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cni conf dir %s: %w", dir, err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && isConfName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// loadable reports why the runtime would not load path as a network.
func loadable(path string) error {
	if strings.HasSuffix(path, ".conflist") {
		_, err := libcni.ConfListFromFile(path)
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	// go-cni then upconverts with ConfListFromConf, which cannot fail for
	// an object that decoded with a type.
	_, err = libcni.NetworkPluginConfFromBytes(b)
	return err
}
