#!/usr/bin/env bash
# Benchmarks easdirect's Client.select() against eas-prediction's endpoint get() (the official
# SDK's pick) on the same 3, 100 and 1,000 instances, with 1 and 4 threads, and prints a table
# (medians of repeated runs). Extra arguments go to bench/bench_select.py (--repeat, --picks).
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/venv.sh"
cd "$PY_DIR/bench"
exec "$VPY" bench_select.py "$@"
