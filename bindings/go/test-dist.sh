#!/usr/bin/env bash
# The Go module as a user gets it (issue 16): after `bindings/go/dist.sh OUTDIR`, a consumer
# module in a fresh temporary directory outside the repository requires
# github.com/easdirect/libeasdirect/bindings/go vX.Y.Z (Cargo.toml's version) and builds with
# nothing but Go and a C compiler: the module comes from OUTDIR's file-based GOPROXY into a fresh
# GOPATH/GOMODCACHE, offline (no other proxy, HTTP(S)_PROXY to a dead port, so any network use
# fails), with no pkg-config (PKG_CONFIG=false), no PKG_CONFIG_PATH, no cargo or rustc on PATH.
# `go vet` is clean (the consumer and the module's package as fetched); the binary links the
# library statically (no NEEDED libeasdirect, no rpath), runs from an empty environment (no
# LD_LIBRARY_PATH), reports the library's version == the module's, and picks backends of the
# repository's emulator (target/release/easdirect emulate) and calls one through the Transport.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: bindings/go/test-dist.sh OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
outdir=$(cd "$1" && pwd)
module=github.com/easdirect/libeasdirect/bindings/go
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
v=v$version
proxy=$outdir/goproxy
[ -f "$proxy/$module/@v/$v.zip" ] || { echo "test-dist: $proxy/$module/@v/$v.zip is missing: run bindings/go/dist.sh $1 first" >&2; exit 1; }
emulator=$repo/target/release/easdirect
[ -x "$emulator" ] || { echo "test-dist: $emulator is missing: run 'make build' first" >&2; exit 1; }

work=$(mktemp -d /tmp/easdirect-go-dist.XXXXXX)
emu=""
cleanup() {
  [ -z "$emu" ] || kill "$emu" 2>/dev/null || true
  chmod -R u+w "$work" 2>/dev/null || true # the module cache is read-only
  rm -rf "$work"
}
trap cleanup EXIT

# A PATH with Go and the C toolchain only: no cargo, rustc, pkg-config or repository path.
bin=$work/bin
mkdir -p "$bin"
for tool in go gofmt; do ln -s "/usr/local/go/bin/$tool" "$bin/$tool"; done
for tool in gcc cc as ld ld.bfd; do
  p=$(command -v "$tool") || { [ "$tool" = ld.bfd ] && continue; echo "test-dist: $tool is needed" >&2; exit 1; }
  ln -s "$p" "$bin/$tool"
done
gocache=$(/usr/local/go/bin/go env GOCACHE) # compiled std only; the module builds from its own path
goenv() {
  env -i HOME="$work/home" PATH="$bin" TMPDIR="$work" \
    GOPATH="$work/gopath" GOMODCACHE="$work/gopath/pkg/mod" GOCACHE="$gocache" \
    GOPROXY="file://$proxy" GONOSUMDB=github.com/easdirect/libeasdirect GOFLAGS=-mod=mod \
    GOTOOLCHAIN=local GOTELEMETRY=off CGO_ENABLED=1 PKG_CONFIG=false \
    HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 "$@"
}
mkdir -p "$work/home" "$work/consumer"

# The consumer: the one require line of the README.
cd "$work/consumer"
cat >go.mod <<MOD
module example.com/consumer

go 1.24

require $module $v
MOD
cat >main.go <<'GO'
// Command consumer picks instances of an EAS service and calls one through the Transport.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	easdirect "github.com/easdirect/libeasdirect/bindings/go"
)

func main() {
	target := flag.String("target", "", "eas://host:port/service")
	n := flag.Int("n", 3, "picks")
	flag.Parse()
	fmt.Println("version", easdirect.Version())
	client, err := easdirect.New(*target, easdirect.WithLogger(nil))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.WaitReady(ctx); err != nil {
		log.Fatal(err)
	}
	for i := 1; i <= *n; i++ {
		inst, err := client.Select()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("pick %d: %s\n", i, inst.Host)
	}
	hc := &http.Client{Transport: client.Transport(nil), Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + client.Service() + "/api/predict/" + client.Service())
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Println("call:", resp.StatusCode)
}
GO
goenv go mod tidy >/dev/null 2>"$work/tidy.err" || { cat "$work/tidy.err"; exit 1; }
dir=$(goenv go list -m -f '{{.Dir}}' "$module")
[ "$dir" = "$work/gopath/pkg/mod/$module@$v" ] || { echo "test-dist: the module came from '$dir', not the fresh module cache" >&2; exit 1; }
[ -f "$dir/lib/linux_amd64/libeasdirect.a" ] && [ -f "$dir/include/easdirect.h" ] \
  || { echo "test-dist: the module zip lacks lib/linux_amd64/libeasdirect.a or include/easdirect.h" >&2; exit 1; }
grep -q "^$module $v h1:" go.sum || { echo "test-dist: go.sum has no hash of $module $v" >&2; exit 1; }
goenv go vet ./... "$module"
goenv go build -o consumer .
unset LD_LIBRARY_PATH
if readelf -d consumer | grep -E 'NEEDED.*libeasdirect|RPATH|RUNPATH'; then
  echo "test-dist: the binary needs libeasdirect at run time or carries a library path" >&2; exit 1
fi

# The emulator, with 3 real backends.
log=$work/emulator.log
"$emulator" emulate --listen 127.0.0.1:0 --service my_service --backends 3 --duration 60 >"$log" &
emu=$!
for _ in $(seq 100); do grep -q '^backends ' "$log" && break; sleep 0.1; done
addr=$(sed -n 's/^listening //p' "$log" | head -n1)
backends=$(sed -n 's/^backends //p' "$log" | head -n1)
[ -n "$addr" ] && [ -n "$backends" ] || { echo "test-dist: the emulator did not start"; cat "$log"; exit 1; }

cp consumer "$work/home/" && cd "$work/home" # run from elsewhere, in an empty environment
out=$(env -i ./consumer -target "eas://$addr/my_service" -n 3)
echo "$out"
[ "$(sed -n 's/^version //p' <<<"$out")" = "$version" ] || { echo "test-dist: the library's version is not $version" >&2; exit 1; }
picks=$(sed -n 's/^pick [0-9]*: //p' <<<"$out")
[ "$(wc -l <<<"$picks")" = 3 ] || { echo "test-dist: 3 picks expected" >&2; exit 1; }
while IFS= read -r p; do
  [[ ",$backends," == *",$p,"* ]] || { echo "test-dist: pick $p is not a backend of the emulator ($backends)" >&2; exit 1; }
done <<<"$picks"
grep -qx 'call: 200' <<<"$out" || { echo "test-dist: the call through the Transport did not answer 200" >&2; exit 1; }
echo "test-dist: Go module $module $v from a file GOPROXY builds outside the repository offline with only Go and cc (no pkg-config, no Rust), go vet clean, runs statically linked with no library path: version $version, 3 picks of the emulator's backends, a call through the Transport answered 200"
