package nodestate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// Snapshot is the agent's last known view of what the plugin looks up,
// written to the state directory whenever it changes. ADD falls back to
// it when neither the agent nor the API server answers in time, so that
// ADD stays bounded (docs/design.md §5).
type Snapshot struct {
	// Written is when the agent wrote it.
	Written time.Time `json:"written"`
	// Namespaces maps every namespace to its labels.
	Namespaces map[string]map[string]string `json:"namespaces"`
	// Pods maps "namespace/name" of the node's pods to their labels.
	Pods map[string]map[string]string `json:"pods"`
	// Policies are all EgressNATPolicies, with their status.
	Policies []v1alpha1.EgressNATPolicy `json:"policies"`
}

// ReadSnapshot loads the snapshot; ok is false when there is none.
func (s State) ReadSnapshot() (snap Snapshot, ok bool, err error) {
	path := filepath.Join(s.Dir, snapshotName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Snapshot{}, false, nil
	}
	if err != nil {
		return Snapshot{}, false, fmt.Errorf("snapshot: %w", err)
	}
	if err := json.Unmarshal(b, &snap); err != nil {
		return Snapshot{}, false, fmt.Errorf("snapshot %s: %w", path, err)
	}
	return snap, true, nil
}

// WriteSnapshot replaces the snapshot atomically and durably: after a
// reboot, pods may be started before the agent is back.
func (s State) WriteSnapshot(snap Snapshot) error {
	if err := s.writeJSON(snapshotName, snap); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// writeJSON replaces the state directory's file name with v as JSON,
// durably: what the agent writes there must survive a reboot.
func (s State) writeJSON(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	return WriteFile(filepath.Join(s.Dir, name), b, 0o600, Durable, nil)
}
