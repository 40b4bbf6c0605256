# Sourced by run-tests.sh, dist.sh and test-dist.sh: finds the JDKs and the version.
#   JDK_NEWEST  the newest JDK under /usr/lib/jvm (it must be 22 or newer), unless set
#   JDK17       a JDK 17 under /usr/lib/jvm, unless set
#   newest      JDK_NEWEST's feature version
#   version     Cargo.toml's [workspace.package] version, the one version: the callers pass it
#               to Maven as -Drevision (pom.xml's version is ${revision}, with no default)
# Needs $here (this directory) and $repo (the repository) and a caller name in $me.

# The feature version of the JDK at $1 (0 if it is not a JDK).
jdk_feature() {
  [ -x "$1/bin/javac" ] || { echo 0; return; }
  sed -n 's/^JAVA_VERSION="\(1\.\)\{0,1\}\([0-9]*\).*/\2/p' "$1/release" 2>/dev/null | head -n1
}

if [ -z "${JDK_NEWEST:-}" ]; then
  best=0
  for d in /usr/lib/jvm/*/; do
    d=${d%/}
    v=$(jdk_feature "$d"); v=${v:-0}
    if [ "$v" -gt "$best" ]; then best=$v; JDK_NEWEST=$d; fi
  done
fi
if [ -z "${JDK17:-}" ]; then
  for d in /usr/lib/jvm/*/; do
    d=${d%/}
    if [ "$(jdk_feature "$d")" = 17 ]; then JDK17=$d; break; fi
  done
fi
[ -n "${JDK_NEWEST:-}" ] && [ "$(jdk_feature "$JDK_NEWEST")" -ge 22 ] || {
  echo "$me: no JDK 22 or newer under /usr/lib/jvm (set JDK_NEWEST)" >&2; exit 1; }
[ -n "${JDK17:-}" ] || { echo "$me: no JDK 17 under /usr/lib/jvm (set JDK17)" >&2; exit 1; }
newest=$(jdk_feature "$JDK_NEWEST")

# The one version is Cargo.toml's; the pom takes it from -Drevision, and the pom that is installed
# (target/.flattened-pom.xml, written by flatten-maven-plugin) has it resolved.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
[ -n "$version" ] || { echo "$me: no version = \"...\" in $repo/Cargo.toml" >&2; exit 1; }
