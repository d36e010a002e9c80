// Package cniconf installs the nsegress plugin into the primary CNI's
// network configuration on a node and takes it out again (docs/design.md §2, §4).
//
// nsegress only works chained after the cluster's primary CNI, and a
// container runtime runs exactly one network configuration: the first file
// of the CNI conf dir, in lexical order of file name, with the extension
// .conflist, .conf or .json that loads as a network config. SelectPrimary
// reproduces that choice. Files that fail to load are passed over and
// reported (Selection.Skipped), as the kubelet's dockershim-era loader and
// CRI-O's ocicni do; current containerd (go-cni) instead refuses to load
// any network while the first file is broken, so on such a node pods do not
// start until the broken file is fixed, and our entry is then already in
// the file that comes next.
//
// # Pure patching
//
// Patch and Unpatch work on bytes only. They splice our entry into the
// "plugins" list of the primary's text (after its last plugin, with the
// file's own indentation and line endings) instead of re-encoding the file,
// so the rest of the file keeps its key order, spacing and escapes, and
// Unpatch(Patch(x)) == x byte for byte. A single-plugin .conf or .json file
// is upconverted to a conflist first, the same way libcni's
// ConfListFromConf does it for the runtime; the result has to be written to
// a file named .conflist, because runtimes load .conf and .json files as a
// single plugin.
//
// # On disk
//
// The conf dir holds only files the runtime may read: the primary's file,
// patched in place (X.conflist), or for an upconverted single-plugin file
// X.conf (or X.json) a new X.conflist that replaces it. Temporary files
// (nodestate.WriteFile's ".X" + digits, an extension no runtime loads) are
// renamed over the target only once complete.
//
// The state dir, given by the caller and outside the conf dir, holds:
//
//   - X.orig: the primary's file exactly as it was before we changed it
//     (bytes, not a parsed form), so that uninstall can restore it byte for
//     byte;
//   - cniconf-install.json: the record of the install: which file was the
//     primary, which file we wrote, the primary's file mode, and the SHA-256
//     of the bytes we wrote.
//
// Uninstall decides by comparing the file we wrote with the recorded hash:
// if it is still exactly our bytes, the backup goes back in place (for an
// upconverted file: X.conf comes back and X.conflist goes); if the primary
// has rewritten it since, only our entry is taken out and everything else
// in the file stays as the primary left it. It then removes an nsegress
// entry from any other conflist in the conf dir (a lost state dir, a
// primary that kept our entry when it rewrote its file), and only then
// deletes the record and the backup, so that a crash part way through is
// finished by the next call.
package cniconf
