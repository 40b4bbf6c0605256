#!/usr/bin/env bash
# bindings/python/test-dist.sh OUTDIR: the wheel dist.sh put in OUTDIR, as a user gets it. In a
# temporary directory: a fresh venv (PYTHON, default python3.11), an empty environment (env -i)
# whose PATH holds the venv and a directory with only python3 (no cargo, rustc, gcc or cc:
# checked), `pip install --no-index` from a local directory holding the wheel and its
# dependencies' wheels (cffi, pycparser), then a script run from outside the repository that
# imports easdirect, checks where it and libeasdirect.so.1 were loaded from, that
# easdirect.__version__ and the library's version are Cargo.toml's, and picks from a client on
# the repository's emulator (target/release/easdirect emulate, the server side only).
# Set-up, the only step that may reach PyPI: the dependencies' wheels are downloaded once into
# ${EASDIRECT_DIST_CACHE:-/tmp/dist-py-cache}/wheels-X.Y; the test proper is offline.
set -euo pipefail
PY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$PY_DIR/../.." && pwd)
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUT=$(cd "$1" && pwd)
CACHE=${EASDIRECT_DIST_CACHE:-/tmp/dist-py-cache}
PYTHON=${PYTHON:-python3.11}
RUNTIME_REQS="cffi==2.1.1 pycparser==3.12" # the wheel's one dependency (cffi) and its own

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml")
[ -n "$version" ] || { echo "python test-dist: no [workspace.package] version in Cargo.toml" >&2; exit 1; }
emulator=$REPO_ROOT/target/release/easdirect
[ -x "$emulator" ] || { echo "python test-dist: $emulator not found; run 'make build' first" >&2; exit 1; }
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
tag=cp${pyver/./}
shopt -s nullglob
wheels=("$OUT/easdirect-$version-$tag-$tag-manylinux_"*_x86_64.whl)
shopt -u nullglob
[ ${#wheels[@]} -eq 1 ] || {
  echo "python test-dist: want one easdirect-$version-$tag-$tag-manylinux_*_x86_64.whl in $OUT" \
    "(run bindings/python/dist.sh $1), found ${#wheels[@]}" >&2
  exit 1
}
wheel=${wheels[0]}

# Set-up (online once): the dependencies' wheels, kept in the cache.
deps=$CACHE/wheels-$pyver
stamp=$deps/.easdirect-runtime-reqs
if [ "$(cat "$stamp" 2>/dev/null)" != "$RUNTIME_REQS" ]; then
  echo "python test-dist: downloading $RUNTIME_REQS into $deps"
  rm -rf "$deps"
  mkdir -p "$deps"
  # shellcheck disable=SC2086 # one requirement a word
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary :all: -d "$deps" \
    $RUNTIME_REQS
  echo "$RUNTIME_REQS" >"$stamp"
fi

work=$(mktemp -d /tmp/dist-py-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/wheels" "$work/bin" "$work/home"
cp "$wheel" "$deps"/*.whl "$work/wheels/"
real_python=$("$PYTHON" -c 'import sys; print(sys.executable)')
ln -s "$real_python" "$work/bin/python3"
# The user's environment: nothing inherited (no LD_LIBRARY_PATH, no EASDIRECT_*, no pip
# configuration), a PATH with the venv and python3 alone.
clean=(env -i "HOME=$work/home" "PATH=$work/venv/bin:$work/bin" "TMPDIR=$work" "LANG=C.UTF-8"
  PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1)
cd "$work"
"${clean[@]}" /bin/bash -c 'for t in cargo rustc gcc cc; do
    if command -v "$t" >/dev/null; then echo "python test-dist: $t is on the PATH" >&2; exit 1; fi
  done'
"${clean[@]}" python3 -m venv "$work/venv"
"${clean[@]}" python -m pip install --quiet --no-index --find-links "$work/wheels" \
  --only-binary :all: --no-cache-dir "easdirect==$version"

cat >"$work/check.py" <<'PY'
import os
import re
import selectors
import shutil
import subprocess
import sys
import threading

emulator, want = sys.argv[1], sys.argv[2]
for tool in ("cargo", "rustc", "gcc", "cc"):
    assert shutil.which(tool) is None, f"{tool} is on the PATH"
assert "LD_LIBRARY_PATH" not in os.environ

import easdirect
from easdirect import _fastpick, _native

pkg = os.path.realpath(os.path.dirname(easdirect.__file__))
site = os.path.realpath(sys.prefix)
assert pkg.startswith(site + os.sep), f"easdirect imported from {pkg}, not the venv {site}"
for mod in (_native, _fastpick):
    assert mod.__file__.endswith(".so"), mod.__file__
assert os.path.isfile(os.path.join(pkg, "py.typed")), "py.typed missing"
with open("/proc/self/maps") as f:
    mapped = {os.path.realpath(l.split()[-1]) for l in f if "libeasdirect" in l}
assert mapped == {os.path.join(pkg, "libeasdirect.so.1")}, f"libeasdirect loaded from {mapped}"
assert easdirect.__version__ == want, f"__version__ {easdirect.__version__}, Cargo.toml {want}"
assert easdirect.library_version() == want, f"library {easdirect.library_version()}, Cargo.toml {want}"

proc = subprocess.Popen(
    [emulator, "emulate", "--listen", "127.0.0.1:0", "--service", "svc", "--backends", "3"],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
)
try:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    assert sel.select(15.0), "the emulator printed nothing within 15 s"
    line = proc.stdout.readline()
    m = re.match(r"listening (\S+)", line)
    assert m, f"unexpected first line from the emulator: {line!r}"
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    with easdirect.Client(f"eas://{m.group(1)}/svc?refresh_interval_ms=50") as client:
        client.wait_ready(10.0)
        listed = {i.host for i in client.instances()}
        assert len(listed) == 3, listed
        picked = set()
        for _ in range(30):
            inst = client.select()
            client.report_success(inst.id)
            picked.add(inst.host)
        assert picked == listed, (picked, listed)
finally:
    proc.terminate()
    proc.wait(10)
print(f"{len(picked)} instances picked by easdirect {easdirect.__version__} from {pkg}")
PY
result=$("${clean[@]}" python -I "$work/check.py" "$emulator" "$version")
echo "python test-dist: $(basename "$wheel") installs offline in a fresh Python $pyver venv with no" \
  "cargo, rustc or compiler on the PATH and no library path; it loads its own libeasdirect.so.1," \
  "__version__ is Cargo's $version, and a client picks from the emulator (${result%% *} instances)"
