#!/usr/bin/env bash
# The C package as a user gets it: `make dist`, the tarball unpacked in a fresh directory, a
# program built against it with nothing but pkg-config (no rpath into it, no repository path),
# run with the shared library found through its SONAME (libeasdirect.so.ABI_MAJOR: the
# unversioned link is removed first), and against the static archive. Run by `make test-c`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
major=$(sed -n 's/^pub const EAS_ABI_MAJOR: u32 = \([0-9]*\);/\1/p' src/ffi/mod.rs)
tarball=dist/easdirect-$version-linux-x86_64.tar.gz
make --no-print-directory dist >/dev/null
[ -f "$tarball" ] || { echo "dist: $tarball was not made" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xzf "$tarball"
root=$work/easdirect-$version
soname=$(readelf -d "$root/lib/libeasdirect.so.$version" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[ "$soname" = "libeasdirect.so.$major" ] || { echo "dist: SONAME is '$soname', want libeasdirect.so.$major" >&2; exit 1; }

cat >"$work/check.c" <<'C'
#include <easdirect.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  if (strcmp(eas_version(), EAS_VERSION) != 0) { fprintf(stderr, "version %s, header %s\n", eas_version(), EAS_VERSION); return 1; }
  if (eas_abi_version() >> 16 != EAS_ABI_MAJOR) { fprintf(stderr, "ABI major mismatch\n"); return 1; }
  eas_client *c = NULL;
  eas_instance out;
  if (eas_client_new("static://10.0.0.1:8000", NULL, &c, NULL) != EAS_STATUS_OK) return 1;
  if (eas_select_instance(c, &out) != EAS_STATUS_OK || strcmp(out.host, "10.0.0.1:8000") != 0) return 1;
  eas_client_free(c);
  printf("ok %s\n", eas_version());
  return 0;
}
C
# Built from outside the repository, as a user would.
cd "$work"
export PKG_CONFIG_PATH=$root/lib/pkgconfig PKG_CONFIG_LIBDIR=$root/lib/pkgconfig
[ "$(pkg-config --modversion easdirect)" = "$version" ] || { echo "dist: pkg-config version differs" >&2; exit 1; }
# shellcheck disable=SC2046 # pkg-config prints several words on purpose
gcc -std=c99 -Wall -Werror check.c -o check_shared $(pkg-config --cflags --libs easdirect)
# shellcheck disable=SC2046
gcc -std=c99 -Wall -Werror check.c -o check_static $(pkg-config --cflags --libs easdirect-static)
readelf -d check_shared | grep -q "NEEDED.*\[libeasdirect.so.$major\]" \
  || { echo "dist: the program does not name libeasdirect.so.$major" >&2; exit 1; }
rm "$root/lib/libeasdirect.so" # only the SONAME link is left for the loader
out_shared=$(LD_LIBRARY_PATH=$root/lib ./check_shared)
out_static=$(./check_static)
[ "$out_shared" = "ok $version" ] && [ "$out_static" = "ok $version" ] \
  || { echo "dist: got '$out_shared' / '$out_static'" >&2; exit 1; }
echo "dist: $tarball builds a program with pkg-config alone; it runs through SONAME libeasdirect.so.$major and statically"
