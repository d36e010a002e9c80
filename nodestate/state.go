package nodestate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The plugin and the agent share the node's state directory:
//
//	pods/<ip>_<hostIf>.json          one PodRecord per pod address: the pod that owns it now
//	containers/<containerID>_<ifname> the record name a container's ADD wrote
//	pods.lock                         serialises changes of records and of the nft pods map
//	snapshot.json                     the agent's last known view (Snapshot)
//	floating-ips.json                 every floating IP the node has held (Held)
//	agent.sock                        the agent's answers to ADD's lookups (View)
//
// A record is keyed like the pod's element in the nft map (address and
// host-side interface), so that a late DEL of an old container can tell
// that a new pod owns the address now and leave its element alone.
const (
	podsDir       = "pods"
	containersDir = "containers"
	lockName      = "pods.lock"
	snapshotName  = "snapshot.json"
	heldName      = "floating-ips.json"
	socketName    = "agent.sock"
	// haKeyName is the agent's copy of the cluster's HA key (package
	// agent/ha), for restarts while the API server is down.
	haKeyName = "ha.key"
)

// PodRecord is what ADD learnt about one pod address. The agent reads the
// records to re-program running pods when policies or labels change.
type PodRecord struct {
	ContainerID string     `json:"containerID"`
	IfName      string     `json:"ifName"`
	Namespace   string     `json:"namespace"`
	Name        string     `json:"name"`
	IP          netip.Addr `json:"ip"`
	HostIf      string     `json:"hostIf"`
	// Port is the pod's bridge port (its host-side veth) when HostIf is
	// a bridge, "" otherwise: a selected pod's address is guarded there.
	Port string `json:"port,omitempty"`
	// Policy and TunnelID are the policy ADD programmed for the pod;
	// empty and 0 when none selected it.
	Policy   string `json:"policy,omitempty"`
	TunnelID uint16 `json:"tunnelID,omitempty"`
	// Added is when ADD wrote the record. The agent uses it to tell a pod
	// its informer has not seen yet from one whose DEL never came.
	Added time.Time `json:"added"`
	// Rebuilt: the agent wrote the record, from the API's view of a
	// running pod whose record was lost, not ADD.
	Rebuilt bool `json:"rebuilt,omitempty"`
}

// key is the record's file name, the same pair that keys its nft element.
func (r PodRecord) key() string { return recordKey(r.IP, r.HostIf) }

func recordKey(ip netip.Addr, hostIf string) string { return ip.String() + "_" + hostIf }

// State is the node's state directory.
type State struct{ Dir string }

// LockWait bounds how long a verb waits for the node's state lock, so
// that a hung agent or plugin cannot hold ADD past its 2 s bound.
const LockWait = 500 * time.Millisecond

// ErrLockBusy: the state lock stayed taken for LockWait.
var ErrLockBusy = errors.New("the node's nsegress state lock stayed busy")

// Lock takes the node-wide lock that orders record and nft map changes
// between concurrent plugin calls and the agent, waiting at most
// LockWait. unlock releases it.
func (s State) Lock() (unlock func(), err error) {
	return s.LockWithin(LockWait)
}

// LockWithin is Lock with its own bound (the agent waits longer).
func (s State) LockWithin(wait time.Duration) (unlock func(), err error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", s.Dir, err)
	}
	f, err := os.OpenFile(filepath.Join(s.Dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// Closing the file releases the lock; a close error cannot
			// leave it held.
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			_ = f.Close() // already failing; the lock error is what matters
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		if time.Now().After(deadline) {
			_ = f.Close() // already failing; the busy lock is what matters
			return nil, fmt.Errorf("%s: %w for %s", f.Name(), ErrLockBusy, wait)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Save writes r and the container's index to it. Call with the lock held.
func (s State) Save(r PodRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("state: record of %s/%s: %w", r.Namespace, r.Name, err)
	}
	if err := s.write(filepath.Join(s.Dir, podsDir, r.key()+".json"), b); err != nil {
		return err
	}
	return s.write(filepath.Join(s.Dir, containersDir, containerKey(r.ContainerID, r.IfName)), []byte(r.key()))
}

// write replaces path atomically, without fsync: the records describe
// pods, which a reboot ends anyway, and ADD must stay fast on a busy
// disk.
func (s State) write(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := WriteFile(path, b, 0o600, Volatile, nil); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// ForContainer returns the record a container's ADD wrote, if that
// container still owns it. owned is false when the container is unknown
// or a newer pod owns its address now; the index is returned so that the
// caller can forget it either way.
func (s State) ForContainer(containerID, ifName string) (r PodRecord, owned bool, err error) {
	idx := filepath.Join(s.Dir, containersDir, containerKey(containerID, ifName))
	key, err := os.ReadFile(idx)
	if errors.Is(err, fs.ErrNotExist) {
		return PodRecord{}, false, nil
	}
	if err != nil {
		return PodRecord{}, false, fmt.Errorf("state: %w", err)
	}
	r, err = s.read(filepath.Join(s.Dir, podsDir, string(key)+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return PodRecord{}, false, nil
	}
	if err != nil {
		return PodRecord{}, false, err
	}
	return r, r.ContainerID == containerID && r.IfName == ifName, nil
}

// Forget removes the container's index and, when the container still
// owns it, its record. Call with the lock held.
func (s State) Forget(containerID, ifName string, owned PodRecord, isOwner bool) error {
	if isOwner {
		if err := removeIfExists(filepath.Join(s.Dir, podsDir, owned.key()+".json")); err != nil {
			return err
		}
	}
	return removeIfExists(filepath.Join(s.Dir, containersDir, containerKey(containerID, ifName)))
}

// ContainerOf returns the container whose index names the record of
// (ip, hostIf), when one does: a record rebuilt for a running pod takes
// over the container ID its lost record had, so that the pod's DEL finds
// it.
func (s State) ContainerOf(ip netip.Addr, hostIf string) (containerID, ifName string, ok bool) {
	containers, err := s.Containers()
	if err != nil {
		return "", "", false
	}
	want := recordKey(ip, hostIf)
	for _, c := range containers {
		if b, err := os.ReadFile(filepath.Join(s.Dir, containersDir, containerKey(c[0], c[1]))); err == nil && string(b) == want {
			return c[0], c[1], true
		}
	}
	return "", "", false
}

// Remove deletes a record (not its container's index). Call with the
// lock held.
func (s State) Remove(r PodRecord) error {
	return removeIfExists(filepath.Join(s.Dir, podsDir, r.key()+".json"))
}

// PodsDir is the folder of the pod records, which the agent watches.
func (s State) PodsDir() string { return filepath.Join(s.Dir, podsDir) }

// HAKeyPath is where the agent keeps its copy of the HA key.
func (s State) HAKeyPath() string { return filepath.Join(s.Dir, haKeyName) }

// Records lists every pod record of the node.
func (s State) Records() ([]PodRecord, error) {
	entries, err := os.ReadDir(filepath.Join(s.Dir, podsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	out := make([]PodRecord, 0, len(entries))
	for _, e := range entries {
		if IsTempName(e.Name()) || !strings.HasSuffix(e.Name(), ".json") {
			continue // temporary files of a write in progress
		}
		r, err := s.read(filepath.Join(s.Dir, podsDir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Containers lists the (containerID, ifName) pairs the node has indexes
// for, for GC.
func (s State) Containers() ([][2]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.Dir, containersDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var out [][2]string
	for _, e := range entries {
		id, ifName, ok := strings.Cut(e.Name(), "_")
		if ok && !IsTempName(e.Name()) {
			out = append(out, [2]string{id, ifName})
		}
	}
	return out, nil
}

func (s State) read(path string) (PodRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return PodRecord{}, err
	}
	var r PodRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return PodRecord{}, fmt.Errorf("state: %s: %w", path, err)
	}
	return r, nil
}

// RemoveAll deletes the records, indexes, lock, snapshot, socket and the
// list of held floating IPs: the agent's uninstall, once the floating IPs
// are released.
func (s State) RemoveAll() error {
	for _, p := range []string{podsDir, containersDir, lockName, snapshotName, socketName, heldName, haKeyName, haKeyName + ".tmp"} {
		if err := os.RemoveAll(filepath.Join(s.Dir, p)); err != nil {
			return fmt.Errorf("state: %w", err)
		}
	}
	return nil
}

func containerKey(containerID, ifName string) string { return containerID + "_" + ifName }

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}
