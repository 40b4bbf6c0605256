#!/usr/bin/env bash
# Builds the C examples (examples/c) strictly and runs them on static lists and a file source,
# checking that 8 picks over weights 3:1 give 6 and 2. Run by `make test-c` after `make build`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=tests/c/build
mkdir -p "$out"
for ex in pick source; do
  gcc -std=c99 -Wall -Wextra -Werror -pedantic -Iinclude "examples/c/$ex.c" -o "$out/example_$ex" \
    target/release/libeasdirect.a -lpthread -ldl -lm
done

expect_split() { # output, then what ran
  local a b
  a=$(grep -c '^pick .*10\.0\.0\.1:8000' <<<"$1" || true)
  b=$(grep -c '^pick .*10\.0\.0\.2:8000' <<<"$1" || true)
  if [ "$a" != 6 ] || [ "$b" != 2 ]; then
    printf '%s\n' "$1"
    echo "examples: $2 picked 10.0.0.1 $a and 10.0.0.2 $b times; expected 6 and 2" >&2
    exit 1
  fi
}

pick=$("$out/example_pick" 'static://10.0.0.1:8000*3,10.0.0.2:8000*1' 8)
expect_split "$pick" "pick"
grep -q '^stats: 2 instances, 0 ejected' <<<"$pick" || { echo "$pick"; echo "examples: pick printed no stats" >&2; exit 1; }

list=$(mktemp)
trap 'rm -f "$list"' EXIT
printf '10.0.0.1:8000*3\nnot-an-ip:1\n10.0.0.2:8000*1\n' >"$list"
expect_split "$("$out/example_source" "$list" 8 2>/dev/null)" "source"

# As a user of an installed copy builds: make install, then pkg-config (shared and static).
prefix=$(mktemp -d)
trap 'rm -f "$list"; rm -rf "$prefix"' EXIT
if ! log=$(make --no-print-directory install PREFIX="$prefix" 2>&1); then
  printf '%s\n' "$log"
  echo "examples: make install failed" >&2
  exit 1
fi
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
for pc in easdirect easdirect-static; do
  # shellcheck disable=SC2046 # pkg-config prints several words on purpose
  gcc -std=c99 -Wall -Werror examples/c/pick.c -o "$out/example_pick_$pc" $(pkg-config --cflags --libs "$pc")
done
expect_split "$(LD_LIBRARY_PATH=$prefix/lib "$out/example_pick_easdirect" 'static://10.0.0.1:8000*3,10.0.0.2:8000*1' 8)" "pick (installed, shared)"
expect_split "$("$out/example_pick_easdirect-static" 'static://10.0.0.1:8000*3,10.0.0.2:8000*1' 8)" "pick (installed, static)"

if "$out/example_pick" 'ftp://nowhere/x' 1 2>/dev/null; then
  echo "examples: pick accepted a bad target" >&2
  exit 1
fi
echo "examples: pick and source built strictly and ran (6:2 picks of weights 3:1), also from a make install through pkg-config"
