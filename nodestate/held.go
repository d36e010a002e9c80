package nodestate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
)

// Held reads every floating IP the node has held since it was installed:
// what uninstall, and a reconcile after a restart, must release when no
// group gives it to the node any more.
func (s State) Held() ([]netip.Addr, error) {
	path := filepath.Join(s.Dir, heldName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("held floating IPs: %w", err)
	}
	var ips []netip.Addr
	if err := json.Unmarshal(b, &ips); err != nil {
		return nil, fmt.Errorf("held floating IPs %s: %w", path, err)
	}
	return ips, nil
}

// SaveHeld replaces the list of held floating IPs, durably: a node that
// lost it after a power loss would never release an address it still
// announces.
func (s State) SaveHeld(ips []netip.Addr) error {
	if err := s.writeJSON(heldName, ips); err != nil {
		return fmt.Errorf("held floating IPs: %w", err)
	}
	return nil
}
