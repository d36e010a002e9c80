#!/usr/bin/env bash
# Fails when a netlink dump bypasses agent/datapath's retrying wrappers (see
# below), or when the generated files in the tree (see tools/generate.sh) are
# not what the API types generate: it regenerates in a temporary copy of the
# inputs and prints the difference. The working tree is never touched.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

# Netlink dumps go through agent/datapath's wrappers (Dump, AddrList, ...),
# which retry a dump that the kernel interrupted (netlink.ErrDumpInterrupted)
# rather than fail or use its partial result. A dump called directly, as a
# netlink function or as a method of a *netlink.Handle, is an error in any
# tracked .go file but agent/datapath/dump.go, unless the same line passes
# it to Dump (datapath.Dump("list links", func() ... { return h.LinkList() })).
# Comment lines and calls of the wrappers themselves, such as
# datapath.AddrList(...), do not count.
dumps='LinkList|RouteList|RouteListFiltered|RuleList|RuleListFiltered|NeighList|AddrList|LinkByAlias'
tracked=$(git -C "$root" ls-files -- '*.go')
gofiles=()
while IFS= read -r f; do
	if [ -n "$f" ] && [ "$f" != agent/datapath/dump.go ] && [ -f "$root/$f" ]; then
		gofiles+=("$f")
	fi
done <<<"$tracked"
direct=""
if [ "${#gofiles[@]}" -gt 0 ]; then
	direct=$(cd "$root" && awk -v dumps="$dumps" '
		BEGIN { call = "\\.(" dumps ")\\("; wrapper = "datapath\\.(" dumps ")\\(" }
		/^[ \t]*\/\// { next }
		/(^|[^A-Za-z0-9_])Dump(\[[^(]*\])?\(/ { next }
		{ line = $0; gsub(wrapper, "", line) }
		line ~ call { printf "%s:%d: %s\n", FILENAME, FNR, $0 }
	' "${gofiles[@]}")
fi
if [ -n "$direct" ]; then
	echo "$direct" >&2
	echo "verify: netlink dumps called directly (above); use the agent/datapath wrappers (datapath.AddrList, datapath.FindUplink, datapath.Dump for any other dump), which retry an interrupted dump" >&2
	exit 1
fi
echo "verify: every netlink dump goes through the agent/datapath wrappers" >&2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nsegress-verify.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Everything generate.sh reads or writes, and nothing else.
mkdir -p "$tmp/install" "$tmp/tools"
cp -a "$root/go.mod" "$root/go.sum" "$root/api" "$tmp/"
cp -a "$root/tools/codegen" "$root/tools/generate.sh" "$root/tools/boilerplate.go.txt" "$tmp/tools/"
if [ -d "$root/install/crds" ]; then
	cp -a "$root/install/crds" "$tmp/install/crds"
fi

"$tmp/tools/generate.sh"

status=0
diff -ruN "$root/api" "$tmp/api" || status=1
diff -ruN "$root/install/crds" "$tmp/install/crds" || status=1
if [ "$status" -ne 0 ]; then
	echo >&2
	echo "verify: generated files are stale (diff above: committed vs regenerated); run tools/generate.sh" >&2
	exit 1
fi
echo "verify: generated files are up to date" >&2
