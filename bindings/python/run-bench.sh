#!/usr/bin/env bash
# Benchmarks of the Python binding (medians of repeated runs, tables printed):
#   run-bench.sh [args]       easdirect's Client.select() against eas-prediction's endpoint get()
#                             (the official SDK's pick) on 3, 100 and 1,000 instances, with 1 and
#                             4 threads, and a call cycle; args go to bench/bench_select.py
#                             (--repeat, --picks)
#   run-bench.sh http [args]  the HTTP helpers' overhead over plain requests / httpx to the
#                             emulator's echo backend (bench/bench_http.py: --requests, --repeat)
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/venv.sh"
cd "$PY_DIR/bench"
if [ "${1:-}" = http ]; then
  shift
  export EASDIRECT_BIN=${EASDIRECT_BIN:-$REPO_ROOT/target/release/easdirect}
  exec "$VPY" bench_http.py "$@"
fi
exec "$VPY" bench_select.py "$@"
