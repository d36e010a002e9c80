package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"

	"github.com/nsegress/nsegress/api/v1alpha1"
)

// Snapshot is the agent's last known view of what the plugin looks up,
// written to the state directory whenever it changes. ADD falls back to
// it when the API server does not answer in time (SPEC §5).
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
	b, err := os.ReadFile(filepath.Join(s.Dir, snapshotName))
	if errors.Is(err, fs.ErrNotExist) {
		return Snapshot{}, false, nil
	}
	if err != nil {
		return Snapshot{}, false, fmt.Errorf("snapshot: %w", err)
	}
	if err := json.Unmarshal(b, &snap); err != nil {
		return Snapshot{}, false, fmt.Errorf("snapshot %s: %w", filepath.Join(s.Dir, snapshotName), err)
	}
	return snap, true, nil
}

// WriteSnapshot replaces the snapshot atomically.
func (s State) WriteSnapshot(snap Snapshot) error {
	b, err := json.Marshal(snap)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := renameio.WriteFile(filepath.Join(s.Dir, snapshotName), b, 0o600); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}
