package lab

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
)

// machinePaths are folders of the machine that something the lab runs
// would create if one of its defaults were left in place. The lab moves
// every one of them into its own folder (a flag, a config field or a
// per-node mount), so none of them may ever appear because of a lab.
var machinePaths = []string{
	// kube-controller-manager --flex-volume-plugin-dir and the kubelet's
	// volumePluginDir; both create the folder when it is missing.
	"/usr/libexec/kubernetes",
	// The kubelet's --root-dir and --cert-dir; its podLogsDir and
	// container log links.
	"/var/lib/kubelet",
	"/var/log/pods",
	"/var/log/containers",
	// kube-apiserver --cert-dir (/var/run/kubernetes; /var/run is /run).
	"/run/kubernetes",
	// The conventional home of the control plane's and kubelets'
	// configuration (kubeadm's); the lab keeps its own in its folder.
	"/etc/kubernetes",
	// kubectl's cache (--cache-dir, KUBECACHEDIR) of the user running
	// the lab.
	"/root/.kube",
	// containerd's root, state and opt plugin; its CRI plugin creates
	// its CNI conf_dir; CNI plugins keep results and IPAM leases in
	// /var/lib/cni.
	"/var/lib/containerd",
	"/run/containerd",
	"/opt/containerd",
	"/etc/cni",
	"/opt/cni",
	"/var/lib/cni",
	// nsegress's own node folders, hostPath volumes of its DaemonSet.
	"/var/lib/nsegress",
	"/var/log/nsegress",
}

// MachinePaths lists the machine's folders that a lab must never create,
// the invoking user's ~/.kube included.
func MachinePaths() []string {
	out := append([]string(nil), machinePaths...)
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		out = append(out, filepath.Join(home, ".kube"))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// MachineSnapshot records which of MachinePaths existed when it was
// taken.
type MachineSnapshot map[string]bool

// SnapshotMachine records which of MachinePaths exist now. Take it before
// any lab starts: a folder that a lab created before the snapshot looks
// like the machine's own.
func SnapshotMachine() MachineSnapshot { return snapshotPaths(MachinePaths()) }

func snapshotPaths(paths []string) MachineSnapshot {
	s := MachineSnapshot{}
	for _, p := range paths {
		s[p] = exists(p)
	}
	return s
}

// Appeared lists the paths that exist now but did not when s was taken.
// Nothing but a lab creates them on a machine that runs the lab, so one
// that appeared is a lab's leak, whichever lab it was.
func (s MachineSnapshot) Appeared() []string {
	var out []string
	for _, p := range slices.Sorted(maps.Keys(s)) {
		if !s[p] && exists(p) {
			out = append(out, p)
		}
	}
	return out
}

// Existing lists the paths that already existed when s was taken; a lab
// that writes into one of them cannot be told by comparing snapshots.
func (s MachineSnapshot) Existing() []string {
	var out []string
	for _, p := range slices.Sorted(maps.Keys(s)) {
		if s[p] {
			out = append(out, p)
		}
	}
	return out
}

// exists reports whether p is there, a dangling symlink included.
func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
