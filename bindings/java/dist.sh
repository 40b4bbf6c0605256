#!/usr/bin/env bash
# The Java artifact: bindings/java/dist.sh OUTDIR builds the jar io.easdirect:easdirect:VERSION
# (VERSION is Cargo.toml's, passed to Maven as -Drevision) from the repository's target/release
# build (run `make build` first) with the newest JDK under /usr/lib/jvm, and installs it with its
# pom (pom.xml with the version resolved) into the local Maven repository OUTDIR/m2 (a copy of
# the jar goes to OUTDIR/easdirect-VERSION.jar). The jar is multi-release: the API and the JNI
# backend in its base (release 8, the JNI backend is what JDK 17 uses), the Panama backend in
# META-INF/versions/22, and libeasdirect.so (SONAME libeasdirect.so.1) with the JNI glue under
# io/easdirect/native/linux-x86_64/, extracted and loaded on first use.
#
# Maven's plugins come from ${EASDIRECT_CACHE:-$HOME/.cache/easdirect}/m2, as for run-tests.sh.
# Override the JDK with JDK_NEWEST. Use it: mvn -Dmaven.repo.local=OUTDIR/m2 ..., or copy
# OUTDIR/m2/io/easdirect into ~/.m2/repository/io/easdirect, or deploy OUTDIR's jar.
set -euo pipefail

me=dist.sh
[ $# -eq 1 ] || { echo "usage: bindings/java/dist.sh OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
release=$repo/target/release
cache=${EASDIRECT_CACHE:-$HOME/.cache/easdirect}

[ -e "$release/libeasdirect.so" ] || { echo "$me: $release/libeasdirect.so is missing: run 'make build' first" >&2; exit 1; }
command -v mvn >/dev/null || { echo "$me: mvn is needed (apt-get install maven)" >&2; exit 1; }
command -v gcc >/dev/null || { echo "$me: gcc is needed for the JNI glue" >&2; exit 1; }
# shellcheck source=jdks.sh
. "$here/jdks.sh"

mkdir -p "$1"
outdir=$(cd "$1" && pwd)
export JAVA_HOME=$JDK_NEWEST
if [ "$newest" -ge 24 ]; then
  export MAVEN_OPTS="${MAVEN_OPTS:-} --sun-misc-unsafe-memory-access=allow"
fi
# -Drevision: the pom's version is Cargo.toml's, given here (see pom.xml).
mvn=(mvn -B -q --no-transfer-progress -Dstyle.color=never -Dmaven.repo.local="$cache/m2" -Drevision="$version" -f "$here/pom.xml")

# From scratch: no class or native file of an earlier build may reach the jar.
rm -rf "$here/target/classes" "$here/target/jni-headers" "$here/target/easdirect-$version.jar" \
  "$here/target/.flattened-pom.xml"
"${mvn[@]}" -Dmaven.test.skip=true package
jar=$here/target/easdirect-$version.jar
[ -f "$jar" ] || { echo "$me: $jar was not built" >&2; exit 1; }

# What a user's JVM relies on, checked in the jar itself.
check=$(mktemp -d)
trap 'rm -rf "$check"' EXIT
(cd "$check" && "$JDK_NEWEST/bin/jar" xf "$jar")
for f in io/easdirect/EasClient.class io/easdirect/JniBackend.class \
  META-INF/versions/22/io/easdirect/PanamaBackend.class \
  io/easdirect/native/linux-x86_64/libeasdirect.so io/easdirect/native/linux-x86_64/libeasdirect_jni.so; do
  [ -f "$check/$f" ] || { echo "$me: the jar has no $f" >&2; exit 1; }
done
[ ! -e "$check/io/easdirect/PanamaBackend.class" ] || {
  echo "$me: the Panama backend (release 22) is in the jar's base: JDK 17 would try it" >&2; exit 1; }
grep -q '^Multi-Release: true' "$check/META-INF/MANIFEST.MF" || {
  echo "$me: the manifest does not say Multi-Release: true" >&2; exit 1; }
major=$(sed -n 's/^pub const EAS_ABI_MAJOR: u32 = \([0-9]*\);/\1/p' "$repo/src/ffi/mod.rs")
soname=$(readelf -d "$check/io/easdirect/native/linux-x86_64/libeasdirect.so" \
  | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[ "$soname" = "libeasdirect.so.$major" ] || {
  echo "$me: the jar's libeasdirect.so has SONAME '$soname', want libeasdirect.so.$major" >&2; exit 1; }

# The pom to install: pom.xml with the version resolved (flatten-maven-plugin, in package).
pom=$here/target/.flattened-pom.xml
[ -f "$pom" ] || { echo "$me: $pom was not written" >&2; exit 1; }

# Into OUTDIR/m2 as `mvn install` would put it (the jar, its pom, maven-metadata-local.xml).
rm -rf "$outdir/m2/io/easdirect/easdirect/$version"
"${mvn[@]}" install:install-file -Dfile="$jar" -DpomFile="$pom" -DlocalRepositoryPath="$outdir/m2"
installed=$outdir/m2/io/easdirect/easdirect/$version
[ -f "$installed/easdirect-$version.jar" ] && [ -f "$installed/easdirect-$version.pom" ] || {
  echo "$me: the jar or its pom is missing from $installed" >&2; exit 1; }
# What a consumer's Maven reads: the concrete version, no property left to resolve.
grep -q "^  <version>$version</version>" "$installed/easdirect-$version.pom" \
  && ! grep -qF '${revision}' "$installed/easdirect-$version.pom" || {
  echo "$me: $installed/easdirect-$version.pom does not say version $version" >&2; exit 1; }
cp "$jar" "$outdir/easdirect-$version.jar"
echo "$me: io.easdirect:easdirect:$version (multi-release: JNI base, Panama for 22+; libeasdirect.so SONAME $soname) in $outdir/m2 and $outdir/easdirect-$version.jar"
