#!/usr/bin/env bash
# The Go module as a release ships it: a file-based module proxy (GOPROXY protocol, static files)
#
#   OUTDIR/goproxy/github.com/easdirect/libeasdirect/bindings/go/@v/
#     list  vX.Y.Z.info  vX.Y.Z.mod  vX.Y.Z.zip
#
# where vX.Y.Z is Cargo.toml's [workspace.package] version (the module's git tag is
# bindings/go/vX.Y.Z; nothing here carries a version of its own) and vX.Y.Z.zip is the module's
# zip (golang.org/x/mod/zip layout: module@version/...) with its tracked files plus the prebuilt
# lib/linux_amd64/libeasdirect.a and include/easdirect.h that the default build links
# (link_bundled.go; made by bundle.sh, never committed). A consumer builds with
#   GOPROXY=file://OUTDIR/goproxy,https://proxy.golang.org GONOSUMDB=github.com/easdirect/libeasdirect
# (or the directory served over HTTPS). Run after `make build`:
#
#   bash bindings/go/dist.sh dist/       # then: bash bindings/go/test-dist.sh dist/
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: bindings/go/dist.sh OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
mkdir -p "$1"
outdir=$(cd "$1" && pwd)
export PATH=/usr/local/go/bin:$PATH
module=$(sed -n 's/^module \(.*\)$/\1/p' "$here/go.mod")
[ "$module" = github.com/easdirect/libeasdirect/bindings/go ] || { echo "dist.sh: go.mod says module '$module'" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
[[ $version =~ ^(0|[1-9][0-9]*)\.[0-9]+\.[0-9]+$ ]] \
  || { echo "dist.sh: Cargo.toml's version '$version' is not X.Y.Z" >&2; exit 1; }
# A major version of 2 or more would need the /vN suffix on the module path (Go's rule).
[ "${BASH_REMATCH[1]}" -le 1 ] || { echo "dist.sh: version $version needs module path $module/v${BASH_REMATCH[1]}" >&2; exit 1; }
header_version=$(sed -n 's/^#define EAS_VERSION "\(.*\)"$/\1/p' "$repo/include/easdirect.h")
[ "$header_version" = "$version" ] \
  || { echo "dist.sh: include/easdirect.h says EAS_VERSION '$header_version', Cargo.toml $version (regenerate the header)" >&2; exit 1; }
v=v$version

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/mod
mkdir -p "$root"

# The module's files: what git has here (tracked, or new and not ignored), less the nested
# modules (prometheus/, bench/: modules of their own) and the generated lib/, include/, build/.
cd "$here"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  list=$(git ls-files --cached --others --exclude-standard -- .)
else
  list=$(find . -type f ! -path './build/*' ! -path './lib/*' ! -path './include/*' | sed 's|^\./||')
fi
nested=$(grep '/go\.mod$' <<<"$list" | sed 's|/go\.mod$|/|' || true)
count=0
while IFS= read -r f; do
  [ -n "$f" ] && [ -f "$f" ] || continue # a tracked file deleted in the work tree
  skip=0
  while IFS= read -r n; do [ -n "$n" ] && [[ $f == "$n"* ]] && { skip=1; break; }; done <<<"$nested"
  case $f in lib/* | include/* | build/*) skip=1 ;; esac
  [ $skip = 1 ] && continue
  mkdir -p "$root/$(dirname "$f")"
  cp "$f" "$root/$f"
  count=$((count + 1))
done <<<"$list"
[ -f "$root/go.mod" ] && [ -f "$root/link_bundled.go" ] || { echo "dist.sh: the module's files were not found ($count copied)" >&2; exit 1; }
bash "$here/bundle.sh" "$root" >/dev/null

proxy=$outdir/goproxy/$module/@v
mkdir -p "$proxy"
GOFLAGS= GOTOOLCHAIN=local go run "$here/modzip.go" -module "$module" -version "$v" -dir "$root" -out "$proxy/$v.zip" >/dev/null
cp "$here/go.mod" "$proxy/$v.mod"
# The version's time: the commit's (stable for one commit), or now outside git.
when=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
when=$(date -u -d "$when" +%Y-%m-%dT%H:%M:%SZ)
printf '{"Version":"%s","Time":"%s"}\n' "$v" "$when" >"$proxy/$v.info"
{ [ -f "$proxy/list" ] && cat "$proxy/list"; echo "$v"; } | sort -uV >"$proxy/list.new"
mv "$proxy/list.new" "$proxy/list"
size=$(du -m "$proxy/$v.zip" | cut -f1)
echo "dist: $proxy/$v.zip (module $module $v, tag bindings/go/$v; $count files + lib/linux_amd64/libeasdirect.a, include/easdirect.h; ${size} MB)"
