// Package install puts the nsegress plugin onto a node and takes it off
// again: the binary in the CNI bin dir, the entry in the primary's conflist
// (through package cniconf).
package install

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nsegress/nsegress/nodestate"
)

// PluginBinary is the plugin's file name in the CNI bin dir: its conflist
// "type", by which the runtime finds it.
const PluginBinary = nodestate.PluginType

// CopyPlugin places the plugin binary src into binDir as PluginBinary.
// The bytes go to a temporary file in binDir, which is then renamed over
// the old binary: a runtime that is executing the old one keeps its inode,
// so the copy never fails with "text file busy", and a runtime that
// starts the plugin sees the old binary or the new one, never a part.
// It reports whether the file changed; an identical binary is left alone.
func CopyPlugin(src, binDir string) (changed bool, err error) {
	want, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("read plugin binary: %w", err)
	}
	dst := filepath.Join(binDir, PluginBinary)
	if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, want) {
		return false, nil
	}
	if err := nodestate.WriteFile(dst, want, 0o755, nodestate.Durable, nil); err != nil {
		return false, fmt.Errorf("install plugin into %s: %w", binDir, err)
	}
	return true, nil
}

// RemovePlugin deletes the plugin binary from binDir; a missing binary is
// not an error.
func RemovePlugin(binDir string) error {
	err := os.Remove(filepath.Join(binDir, PluginBinary))
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove plugin from %s: %w", binDir, err)
	}
	return nil
}
