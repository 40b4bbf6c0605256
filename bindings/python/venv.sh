# Sourced by run-tests.sh and run-bench.sh: creates (or reuses) the venv under
# ${EASDIRECT_CACHE:-$HOME/.cache/easdirect}/py-venv, installs the pinned dependencies when
# requirements-test.txt changed, and (re)installs the easdirect package from this directory.
# The package build reuses target/release/libeasdirect.so when it exists (run `make build`
# first), else builds the crate with cargo. Sets PY_DIR, REPO_ROOT, VENV and VPY.

PY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$PY_DIR/../.." && pwd)
CACHE=${EASDIRECT_CACHE:-$HOME/.cache/easdirect}
VENV=$CACHE/py-venv
VPY=$VENV/bin/python
PYTHON=${PYTHON:-python3}

if ! "$VPY" -c 'import sys; sys.exit(sys.version_info < (3, 8))' 2>/dev/null; then
  echo "python: creating $VENV"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  "$PYTHON" -m venv "$VENV"
fi

REQ=$PY_DIR/requirements-test.txt
STAMP=$VENV/.easdirect-requirements
want=$(sha256sum < "$REQ" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "python: installing pinned dependencies"
  "$VPY" -m pip install --quiet --disable-pip-version-check -r "$REQ"
  echo "$want" > "$STAMP"
fi

echo "python: installing easdirect from $PY_DIR"
"$VPY" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps \
  --force-reinstall "$PY_DIR"
