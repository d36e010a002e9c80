#!/usr/bin/env bash
# Fails when the generated files in the tree (see tools/generate.sh) are not
# what the API types generate: it regenerates in a temporary copy of the
# inputs and prints the difference. The working tree is never touched.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
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
