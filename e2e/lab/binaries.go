package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Versions of the third-party binaries the lab runs. tools/build.sh builds
// them into the cache under these names; keep both in step.
const (
	KubernetesVersion = "v1.37.2"
	EtcdVersion       = "v3.7.3"
	FlannelVersion    = "v0.28.10"
	// CNIFlannelVersion is the containernetworking/plugins release whose
	// meta plugin "flannel" the flannel nodes run (later releases moved
	// it to flannel's own repository).
	CNIFlannelVersion = "v0.9.1"
	KubeRouterVersion = "v2.1.0"
)

// ErrBinariesMissing says the lab cannot run because binaries it needs
// are not on the machine; `make tools` builds them.
var ErrBinariesMissing = errors.New("lab binaries missing")

// Binaries are the paths of the programs the lab runs.
type Binaries struct {
	Etcd, APIServer, ControllerManager, Scheduler, Kubelet, Kubectl, KubeProxy string
	// CNIDir holds ptp, bridge, host-local and loopback.
	CNIDir string
	// Flanneld is flannel's node daemon; CNIFlannel its CNI plugin.
	Flanneld, CNIFlannel string
	// KubeRouter is kube-router's node daemon.
	KubeRouter string
	// Containerd, Ctr and Runc come from the machine's packages.
	Containerd, Ctr, Runc string
}

// CacheDir is where tools/build.sh puts what it builds.
func CacheDir() string {
	if d := os.Getenv("NSEGRESS_CACHE"); d != "" {
		return d
	}
	return "/var/cache/nsegress"
}

// FindBinaries locates every binary the lab needs and says which are
// missing and how to get them. cniVersion is the containernetworking/plugins
// version of the main module.
func FindBinaries(cniVersion string) (Binaries, error) {
	cache := CacheDir()
	k8s := filepath.Join(cache, "kubernetes-"+KubernetesVersion)
	b := Binaries{
		Etcd:              filepath.Join(cache, "etcd-"+EtcdVersion, "etcd"),
		APIServer:         filepath.Join(k8s, "kube-apiserver"),
		ControllerManager: filepath.Join(k8s, "kube-controller-manager"),
		Scheduler:         filepath.Join(k8s, "kube-scheduler"),
		Kubelet:           filepath.Join(k8s, "kubelet"),
		Kubectl:           filepath.Join(cache, "kubectl-"+KubernetesVersion, "kubectl"),
		KubeProxy:         filepath.Join(cache, "kube-proxy-"+KubernetesVersion, "kube-proxy"),
		CNIDir:            filepath.Join(cache, "cni-plugins-"+cniVersion),
		Flanneld:          filepath.Join(cache, "flannel-"+FlannelVersion, "flanneld"),
		CNIFlannel:        filepath.Join(cache, "cni-flannel-"+CNIFlannelVersion, "flannel"),
		KubeRouter:        filepath.Join(cache, "kube-router-"+KubeRouterVersion, "kube-router"),
	}
	var missing []string
	for _, p := range []string{b.Etcd, b.APIServer, b.ControllerManager, b.Scheduler, b.Kubelet, b.Kubectl, b.KubeProxy,
		filepath.Join(b.CNIDir, "ptp"), filepath.Join(b.CNIDir, "bridge"),
		filepath.Join(b.CNIDir, "host-local"), filepath.Join(b.CNIDir, "loopback"), b.Flanneld, b.CNIFlannel, b.KubeRouter} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	for _, t := range []struct {
		dst  *string
		name string
	}{{&b.Containerd, "containerd"}, {&b.Ctr, "ctr"}, {&b.Runc, "runc"}} {
		p, err := exec.LookPath(t.name)
		if err != nil {
			missing = append(missing, t.name+" (Debian package containerd/runc)")
			continue
		}
		*t.dst = p
	}
	// flanneld programs its masquerade and forward rules with iptables;
	// kube-router calls ipset at start.
	for _, tool := range []string{"nsenter", "unshare", "nft", "mount", "iptables", "ipset"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("%w (run `make tools` to build them into %s): %s",
			ErrBinariesMissing, cache, strings.Join(missing, ", "))
	}
	return b, nil
}
