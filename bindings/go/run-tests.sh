#!/usr/bin/env bash
# The Go binding's tests: gofmt, go vet (shared and static builds, examples), go test -race
# (with the repository's EAS emulator), a static-link smoke test, the Prometheus collector's
# module (prometheus/, its own go.mod: the first run downloads its pinned dependencies through
# the Go module proxy, later runs use the module cache) and the examples.
# Assumes the repository's `make build` has run (target/release/libeasdirect.{so,a} and the
# `easdirect` CLI with its emulator). Exits non-zero on the first failure.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
release=$repo/target/release
export PATH=/usr/local/go/bin:$PATH
export CGO_ENABLED=1

for f in "$release/libeasdirect.so" "$release/libeasdirect.a" "$release/easdirect"; do
  [ -e "$f" ] || { echo "run-tests.sh: $f is missing: run 'make build' first" >&2; exit 1; }
done
command -v go >/dev/null || { echo "run-tests.sh: no go toolchain on PATH" >&2; exit 1; }
command -v pkg-config >/dev/null || { echo "run-tests.sh: pkg-config is needed (apt-get install pkg-config)" >&2; exit 1; }

"$here/pkgconfig.sh" >/dev/null
export PKG_CONFIG_PATH=$here/build${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
# The repository's own build through pkg-config (the default links the bundled archive of a
# release's module zip: see link_bundled.go); -tags easdirect_static on a command line wins.
export GOFLAGS="-tags=easdirect_pkgconfig${GOFLAGS:+ $GOFLAGS}"
export EASDIRECT_EMULATOR=$release/easdirect EASDIRECT_REQUIRE_EMULATOR=1

step() { printf '\n== %s\n' "$*"; }

step "gofmt -l"
unformatted=$(gofmt -l "$here" "$repo/examples/go")
if [ -n "$unformatted" ]; then
  echo "not gofmt-formatted (run gofmt -w):"; echo "$unformatted"; exit 1
fi

cd "$here"
step "go vet (shared, static)"
go vet ./...
go vet -tags easdirect_static ./...

step "go test -race"
go test -race -count=1 -timeout 120s ./...

step "static link (-tags easdirect_static)"
go test -tags easdirect_static -count=1 -timeout 60s -run 'Example|TestTheABICheck|TestTheTransportSends' ./...

step "prometheus/ (the collector's module): go vet, go test -race"
cd "$here/prometheus"
go vet ./...
go test -race -count=1 -timeout 60s ./...

step "examples/go"
cd "$repo/examples/go"
go vet ./...
go run ./pick -n 4
list=$(mktemp)
printf '10.0.0.1:50000\n10.0.0.2:50000*300  # three times the default weight\n10.0.0.3:50000*0\n' >"$list"
out=$(go run ./source -file "$list" -n 4 -interval 50ms)
rm -f "$list"
echo "$out"
grep -q '^pick 3: 10.0.0.' <<<"$out" || { echo "examples/go/source: unexpected output"; exit 1; }
log=$(mktemp)
"$release/easdirect" emulate --listen 127.0.0.1:0 --service my_service --backends 3 --duration 60 >"$log" &
emu=$!
trap 'kill $emu 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q '^listening ' "$log" && break; sleep 0.1; done
addr=$(sed -n 's/^listening //p' "$log" | head -n1)
[ -n "$addr" ] || { echo "the emulator did not start"; cat "$log"; exit 1; }
out=$(go run ./predict -target "eas://$addr/my_service" -n 5 -metrics)
echo "$out"
attempts=$(awk '/^easdirect_instance_attempts_total\{/ {n += $NF} END {print n + 0}' <<<"$out")
[ "$attempts" = 5 ] || { echo "examples/go/predict: 5 requests, $attempts attempts in the metrics"; exit 1; }
# A streamed LLM call with a session key: LLM backends under a service of their own.
command -v curl >/dev/null || { echo "run-tests.sh: curl is needed for examples/go/llm" >&2; exit 1; }
curl -fsS -X POST "http://$addr/_emulator/backends" \
  -d '{"service":"my_llm","count":3,"kind":"llm","replace":true,"llm":{"per_token_ms":2}}' >/dev/null
out=$(go run ./llm -target "eas://$addr/my_llm" -session user-42 -turns 3)
echo "$out"
grep -q '^session user-42: 3 turns, all on one instance$' <<<"$out" || { echo "examples/go/llm: unexpected output"; exit 1; }

printf '\nGo binding: all tests passed\n'
