#!/usr/bin/env bash
# Builds the lab's third-party binaries into a cache outside the repository,
# one folder per component and version, so a second run rebuilds nothing:
#
#   $NSEGRESS_CACHE/kubernetes-v1.37.2/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet}
#   $NSEGRESS_CACHE/kubectl-v1.37.2/kubectl
#   $NSEGRESS_CACHE/kube-proxy-v1.37.2/kube-proxy
#   $NSEGRESS_CACHE/etcd-v3.7.3/etcd
#   $NSEGRESS_CACHE/cni-plugins-<version the main module uses>/{ptp,bridge,host-local,loopback}
#   $NSEGRESS_CACHE/flannel-v0.28.10/flanneld
#   $NSEGRESS_CACHE/cni-flannel-v0.9.1/flannel
#   $NSEGRESS_CACHE/kube-router-v2.1.0/kube-router
#
# A folder appears only once all of its binaries are built (build into a
# temporary folder, then rename), so an interrupted build is redone, never
# half-used. Prints the cache folder on success.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${NSEGRESS_CACHE:-/var/cache/nsegress}
k8s_version=v1.37.2
etcd_version=v3.7.3
flannel_version=v0.28.10
cni_flannel_version=v0.9.1
kube_router_version=v2.1.0
cni_version=$(cd "$root" && go list -m -f '{{.Version}}' github.com/containernetworking/plugins)

export CGO_ENABLED=0
mkdir -p "$cache"

# build_set DIR MODULE_DIR LDFLAGS NAME=PACKAGE...
build_set() {
	local dest=$1 moddir=$2 ldflags=$3
	shift 3
	if [ -d "$dest" ]; then
		return 0
	fi
	local tmp
	tmp=$(mktemp -d "$dest.tmp.XXXXXX")
	trap 'rm -rf "$tmp"' RETURN
	local pair
	for pair in "$@"; do
		echo "building ${pair%%=*} into $dest" >&2
		(cd "$moddir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/${pair%%=*}" "${pair#*=}")
	done
	mv "$tmp" "$dest"
}

# The kubelet reports its version to the API server; without the stamp it
# says v0.0.0.
minor=${k8s_version#v1.}
minor=${minor%%.*}
k8s_ldflags="-X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"

build_set "$cache/kubernetes-$k8s_version" "$root/tools/k8s" "$k8s_ldflags" \
	kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
	kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
	kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
	kubelet=k8s.io/kubernetes/cmd/kubelet

build_set "$cache/kubectl-$k8s_version" "$root/tools/k8s" "$k8s_ldflags" \
	kubectl=k8s.io/kubernetes/cmd/kubectl

# Its own folder: machines that built the kubernetes folder before the lab
# ran kube-proxy keep it and build only this one.
build_set "$cache/kube-proxy-$k8s_version" "$root/tools/k8s" "$k8s_ldflags" \
	kube-proxy=k8s.io/kubernetes/cmd/kube-proxy

build_set "$cache/etcd-$etcd_version" "$root/tools/etcd" "" \
	etcd=go.etcd.io/etcd/server/v3

build_set "$cache/cni-plugins-$cni_version" "$root" "" \
	ptp=github.com/containernetworking/plugins/plugins/main/ptp \
	bridge=github.com/containernetworking/plugins/plugins/main/bridge \
	host-local=github.com/containernetworking/plugins/plugins/ipam/host-local \
	loopback=github.com/containernetworking/plugins/plugins/main/loopback

# flanneld's UDP backend needs cgo.
CGO_ENABLED=1 build_set "$cache/flannel-$flannel_version" "$root/tools/flannel" \
	"-X github.com/flannel-io/flannel/pkg/version.Version=$flannel_version" \
	flanneld=github.com/flannel-io/flannel

build_set "$cache/cni-flannel-$cni_flannel_version" "$root/tools/cniflannel" \
	"-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$cni_flannel_version" \
	flannel=github.com/containernetworking/plugins/plugins/meta/flannel

build_set "$cache/kube-router-$kube_router_version" "$root/tools/kuberouter" \
	"-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$kube_router_version" \
	kube-router=github.com/cloudnativelabs/kube-router/v2/cmd/kube-router

echo "$cache"
