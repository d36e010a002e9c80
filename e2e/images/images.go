// Package images builds the lab's container images as image tarballs,
// without Docker or a registry (docs/design.md §6: images without a registry).
//
// Each image is one static binary on an empty base: a single layer
// holding the binary, and a config with OS linux, the architecture of the
// running program and the entrypoint. The tarballs are in the
// docker-archive format ("docker save"), which `ctr -n k8s.io images
// import` accepts.
//
// # Image names
//
// Every ref starts with "localhost/": containerd takes that first
// component for a registry host (its own machine's), so it imports the
// tarball under the ref exactly as given, and the kubelet, the CRI and
// the pod specs all use that one name. A ref without it would be
// renamed on import, under the public registry's name, and a pull of it
// would be sent out of the lab. Pods must use imagePullPolicy: Never (or
// IfNotPresent): nothing can be pulled.
package images

import "strings"

// LocalPrefix starts every ref of the lab's images (see the package
// documentation).
const LocalPrefix = "localhost/"

// The lab's images.
const (
	// PauseRef is the pod sandbox image: entrypoint "/labbox pause".
	PauseRef = LocalPrefix + "nsegress/pause:lab"
	// LabboxRef is the test image: entrypoint "/labbox", default command
	// "sleep"; pods pick a command with args, e.g. ["echo", "-listen",
	// ":8080"], and tests run "/labbox get URL" in it with kubectl exec.
	LabboxRef = LocalPrefix + "nsegress/labbox:lab"
)

// Tarball is one image archive on disk, ready for
// `ctr -n k8s.io images import PATH`.
type Tarball struct {
	// Path is the archive file.
	Path string
	// Ref is the tag in the archive's manifest.json, e.g.
	// "localhost/nsegress/pause:lab", and the name containerd lists it
	// under after import.
	Ref string
}

// sanitizeForFileName turns a ref into a string safe in a file name:
// "localhost/nsegress/pause:lab" gives "localhost-nsegress-pause-lab".
func sanitizeForFileName(ref string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		default:
			return '-'
		}
	}, ref)
}
