#!/usr/bin/env bash
# The Go binding's benchmarks: Select at 3, 100 and 1,000 instances (serial and RunParallel),
# a call's cycle, the HTTP helper beside plain net/http to the emulator's echo backend,
# then, when rnacos is available, libeasdirect's Select against nacos-sdk-go v2's
# SelectOneHealthyInstance on the same lists served by a local rnacos, in the same run.
# Prints the raw `go test -bench` lines and a table of medians (ns/op) with the ratios.
#
#   bindings/go/run-bench.sh                     # BENCH_COUNT=5 BENCH_TIME=1s by default
#   EASDIRECT_RNACOS=/path/to/rnacos bindings/go/run-bench.sh
#   BENCH='HTTP|WithoutNetwork|CallCycle|Select$' bindings/go/run-bench.sh   # the helper's figures
#
# Assumes the repository's `make build` has run. The bench module (bindings/go/bench) downloads
# nacos-sdk-go through the Go module proxy the first time.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export PATH=/usr/local/go/bin:$PATH
export CGO_ENABLED=1
count=${BENCH_COUNT:-5}
benchtime=${BENCH_TIME:-1s}
bench=${BENCH:-.}

[ -e "$repo/target/release/libeasdirect.so" ] || { echo "run-bench.sh: run 'make build' first" >&2; exit 1; }
"$here/pkgconfig.sh" >/dev/null
export PKG_CONFIG_PATH=$here/build${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
# The repository's own build through pkg-config (the default links the bundled archive of a
# release's module zip: see link_bundled.go); -tags easdirect_static on a command line wins.
export GOFLAGS="-tags=easdirect_pkgconfig${GOFLAGS:+ $GOFLAGS}"

out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "== bindings/go: go test -run '^\$' -bench '$bench' -benchmem -count=$count -benchtime=$benchtime"
(cd "$here" && EASDIRECT_EMULATOR=${EASDIRECT_EMULATOR:-$repo/target/release/easdirect} go test -run '^$' -bench "$bench" -benchmem -count="$count" -benchtime="$benchtime" ./...) | tee -a "$out"

rnacos=${EASDIRECT_RNACOS:-$HOME/.cache/easdirect/tools/rnacos-0.8.8/bin/rnacos}
if [ "$bench" != . ]; then
  echo
  echo "== nacos-sdk-go comparison skipped: BENCH=$bench"
elif [ -x "$rnacos" ]; then
  echo
  echo "== bindings/go/bench (rnacos $rnacos): go test -run '^\$' -bench . -benchmem -count=$count -benchtime=$benchtime"
  (cd "$here/bench" && EASDIRECT_RNACOS=$rnacos go test -run '^$' -bench . -benchmem -count="$count" -benchtime="$benchtime" ./...) | tee -a "$out"
else
  echo
  echo "== nacos-sdk-go comparison skipped: no rnacos at $rnacos (set EASDIRECT_RNACOS)"
fi

echo
echo "== medians of $count runs (ns/op; machine: $(nproc) cores, $(go env GOOS)/$(go env GOARCH), $(go version | cut -d' ' -f3))"
awk '
  /^Benchmark/ {
    base = $1; sub(/-[0-9]+$/, "", base)
    for (f = 3; f < NF; f += 2) {
      unit = $(f + 1)
      if (unit == "ns/op") name = base
      else if (unit ~ /-ns\/req$/) { name = base "/" unit; sub(/-ns\/req$/, " (ns/req, median of the run)", name) }
      else continue
      if (!(name in n)) order[++k] = name
      v[name, ++n[name]] = $f
    }
  }
  function median(name,   i, j, t, a, m) {
    m = n[name]
    for (i = 1; i <= m; i++) a[i] = v[name, i] + 0
    for (i = 2; i <= m; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    for (i = 1; i <= k; i++) { med[order[i]] = median(order[i]); printf "%-60s %12.1f\n", order[i], med[order[i]] }
    header = 0
    for (i = 1; i <= k; i++) {
      name = order[i]
      if (name !~ /\/nacos-sdk-go$/) continue
      ours = name; sub(/\/nacos-sdk-go$/, "/easdirect", ours)
      if (!(ours in med) || med[ours] == 0) continue
      if (!header) { print ""; print "nacos-sdk-go SelectOneHealthyInstance / easdirect Select (same list):"; header = 1 }
      base = name; sub(/\/nacos-sdk-go$/, "", base)
      printf "%-60s %10.0fx\n", base, med[name] / med[ours]
    }
  }' "$out"
