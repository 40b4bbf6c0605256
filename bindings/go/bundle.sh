#!/usr/bin/env bash
# Puts the prebuilt libeasdirect where the package's default cgo flags look for it
# (link_bundled.go):
#   DIR/lib/linux_amd64/libeasdirect.a   target/release/libeasdirect.a, debug info stripped
#   DIR/include/easdirect.h              include/easdirect.h
#
#   bindings/go/bundle.sh [DIR]          # DIR: bindings/go by default (what `go generate` runs)
#
# Assumes the repository's `make build` has run. Both files are .gitignore'd here: a release's
# module zip (dist.sh) carries them; a checkout makes them with `go generate` (or this script).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=${1:-$here}
archive=$repo/target/release/libeasdirect.a
header=$repo/include/easdirect.h

[ "$(uname -sm)" = "Linux x86_64" ] || { echo "bundle.sh: the bundled library is for linux/amd64 (this is $(uname -sm)); build with -tags easdirect_pkgconfig" >&2; exit 1; }
for f in "$archive" "$header"; do
  [ -f "$f" ] || { echo "bundle.sh: $f is missing: run 'make build' in $repo first" >&2; exit 1; }
done

mkdir -p "$dir/lib/linux_amd64" "$dir/include"
tmp=$dir/lib/linux_amd64/.libeasdirect.a.$$
cp "$archive" "$tmp"
# Rust's standard library comes with debug info even in a release build: a quarter of the
# archive, not needed to link or to name functions (the symbols stay).
if command -v strip >/dev/null; then strip --strip-debug "$tmp"; fi
mv -f "$tmp" "$dir/lib/linux_amd64/libeasdirect.a"
cp "$header" "$dir/include/easdirect.h"
echo "bundle.sh: wrote $dir/lib/linux_amd64/libeasdirect.a and $dir/include/easdirect.h"
