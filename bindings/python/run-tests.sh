#!/usr/bin/env bash
# Runs the Python binding's tests: sets up the venv (see venv.sh), installs the package and
# the pinned test dependencies, and runs pytest against the installed package and the
# project's emulator (target/release/easdirect). Exits non-zero on failure.
# Extra arguments go to pytest (e.g. -k adapter, -x).
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/venv.sh"

export EASDIRECT_BIN=${EASDIRECT_BIN:-$REPO_ROOT/target/release/easdirect}
if [ ! -x "$EASDIRECT_BIN" ]; then
  echo "python: $EASDIRECT_BIN not found; run 'make build' first" >&2
  exit 1
fi
# Run from the tests directory, so that the source tree's easdirect/ (without its compiled
# extension) never shadows the installed package.
cd "$PY_DIR/tests"
exec "$VENV/bin/pytest" -p no:cacheprovider -q -rfE "$@" .
