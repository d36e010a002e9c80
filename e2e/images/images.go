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
// The tag written into a tarball's manifest.json (its RepoTags) is the
// Ref string exactly as given, with no registry added: "nsegress/pause:lab"
// stays "nsegress/pause:lab". On import containerd normalises it the way
// Docker does, so `ctr -n k8s.io images ls` and crictl list
//
//	docker.io/nsegress/pause:lab   (PauseRef)
//	docker.io/nsegress/labbox:lab  (LabboxRef)
//
// ContainerdName computes that name for any Ref. A pod spec may use either
// form, since the kubelet and containerd's CRI normalise the same way; give
// containerd's sandbox_image the full form. Pods must use
// imagePullPolicy: Never (or IfNotPresent): nothing can be pulled.
package images

import "strings"

// The lab's images. Their refs carry no registry host; see the package
// documentation for the names containerd lists after import.
const (
	// PauseRef is the pod sandbox image: entrypoint "/labbox pause".
	PauseRef = "nsegress/pause:lab"
	// LabboxRef is the test image: entrypoint "/labbox", default command
	// "sleep"; pods pick a command with args, e.g. ["echo", "-listen",
	// ":8080"], and tests run "/labbox get URL" in it with kubectl exec.
	LabboxRef = "nsegress/labbox:lab"
)

// Tarball is one image archive on disk, ready for
// `ctr -n k8s.io images import PATH`.
type Tarball struct {
	// Path is the archive file.
	Path string
	// Ref is the tag in the archive's manifest.json, e.g.
	// "nsegress/pause:lab".
	Ref string
}

// ContainerdName returns the name containerd lists the image under after
// import.
func (t Tarball) ContainerdName() string { return ContainerdName(t.Ref) }

// ContainerdName returns the name containerd gives a docker-archive tag on
// import. containerd (images/archive.ImportIndex) normalises RepoTags the
// way Docker does: a first path component that has no '.' or ':' and is
// not "localhost" is no registry, so docker.io/ is added, and a one-part
// name gets library/ too; "index.docker.io" becomes "docker.io".
//
//	nsegress/pause:lab         -> docker.io/nsegress/pause:lab
//	busybox:1                  -> docker.io/library/busybox:1
//	localhost:5000/x:1         -> localhost:5000/x:1
//
// ref must carry a tag, as every Spec.Ref does.
func ContainerdName(ref string) string {
	first, rest, found := strings.Cut(ref, "/")
	switch {
	case !found:
		return "docker.io/library/" + ref
	case first == "index.docker.io":
		return ContainerdName("docker.io/" + rest)
	case first == "docker.io" && !strings.Contains(rest, "/"):
		return "docker.io/library/" + rest
	case first == "localhost" || strings.ContainsAny(first, ".:"):
		return ref
	default:
		return "docker.io/" + ref
	}
}

// sanitizeForFileName turns a ref into a string safe in a file name:
// "nsegress/pause:lab" gives "nsegress-pause-lab".
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
