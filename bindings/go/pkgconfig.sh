#!/usr/bin/env bash
# Writes easdirect.pc (links libeasdirect.so) and easdirect-static.pc (links libeasdirect.a)
# for the Go binding's `#cgo pkg-config` directives.
#
#   bindings/go/pkgconfig.sh                 # for the repository's own build: libdir is
#                                            # target/release, includedir is include/, the .so is
#                                            # found at run time through an rpath; writes to
#                                            # bindings/go/build/
#   bindings/go/pkgconfig.sh --prefix /usr/local --out /usr/local/lib/pkgconfig
#                                            # for an installed copy: $prefix/lib/libeasdirect.*,
#                                            # $prefix/include/easdirect.h
#
# Then build with PKG_CONFIG_PATH pointing at the output directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
prefix=""
libdir=""
includedir=""
out="$here/build"

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --libdir) libdir=$2; shift 2 ;;
    --includedir) includedir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "pkgconfig.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

rpath=""
if [ -z "$prefix" ]; then
  # The repository's build tree: not installed, so the binary carries an rpath to it.
  prefix=$repo
  libdir=${libdir:-$repo/target/release}
  includedir=${includedir:-$repo/include}
  rpath=" -Wl,-rpath,\${libdir}"
else
  libdir=${libdir:-$prefix/lib}
  includedir=${includedir:-$prefix/include}
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
[ -n "$version" ] || { echo "pkgconfig.sh: no version in $repo/Cargo.toml" >&2; exit 1; }

mkdir -p "$out"
header() {
  cat <<PC
prefix=$prefix
libdir=$libdir
includedir=$includedir

Version: $version
Cflags: -I\${includedir}
PC
}
{
  header
  echo "Name: easdirect"
  echo "Description: libeasdirect, client-side discovery and load balancing for PAI-EAS (shared library)"
  echo "Libs: -L\${libdir}$rpath -leasdirect"
} >"$out/easdirect.pc"
{
  header
  echo "Name: easdirect-static"
  echo "Description: libeasdirect, client-side discovery and load balancing for PAI-EAS (static archive)"
  echo "Libs: \${libdir}/libeasdirect.a -lpthread -ldl -lm"
} >"$out/easdirect-static.pc"
echo "wrote $out/easdirect.pc and $out/easdirect-static.pc (libdir $libdir)"
