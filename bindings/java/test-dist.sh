#!/usr/bin/env bash
# The Java artifact as a user gets it: bindings/java/test-dist.sh OUTDIR, after dist.sh OUTDIR.
# A consumer Maven project, written to a temporary directory outside the repository, depends on
# io.easdirect:easdirect:VERSION and nothing else; it is built and run with `mvn -o` (offline)
# against a local repository holding OUTDIR/m2 and Maven's plugins (copied from the cache
# run-tests.sh uses in a set-up step), once on JDK 17 (JNI backend) and once on the newest JDK
# under /usr/lib/jvm (Panama), in an emptied environment (env -i: no LD_LIBRARY_PATH, no
# EASDIRECT_*, no -Djava.library.path, HOME in the temporary directory). Its Main opens a client
# on an emulated service (target/release/easdirect emulate), waits for it, picks, and checks that
# libeasdirect came out of the jar, at Cargo.toml's version, on the expected backend. Then the two
# overrides: EASDIRECT_LIBRARY (newest JDK) and -Deasdirect.library.path (JDK 17) load
# target/release's library instead.
set -euo pipefail

me=test-dist.sh
[ $# -eq 1 ] || { echo "usage: bindings/java/test-dist.sh OUTDIR (after dist.sh OUTDIR)" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
release=$repo/target/release
cache=${EASDIRECT_CACHE:-$HOME/.cache/easdirect}
# shellcheck source=jdks.sh
. "$here/jdks.sh"
outdir=$(cd "$1" && pwd)
installed=$outdir/m2/io/easdirect/easdirect/$version
[ -f "$installed/easdirect-$version.jar" ] || {
  echo "$me: $installed/easdirect-$version.jar is missing: run bindings/java/dist.sh $1 first" >&2; exit 1; }
[ -x "$release/easdirect" ] || { echo "$me: $release/easdirect is missing: run 'make build'" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/easdirect-java-dist.XXXXXX")
case "$work/" in "$repo"/*) echo "$me: $work is inside the repository" >&2; exit 1 ;; esac
emu=
cleanup() {
  [ -z "$emu" ] || kill "$emu" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Set-up (the only step that may read outside the temporary directory): the local repository,
# seeded with the installed artifact and the plugins from the cache (not the cache's own
# io/easdirect, if a build put one there).
mkdir -p "$work/m2" "$work/home"
(cd "$cache/m2" && find . -mindepth 1 -maxdepth 1 ! -name io -exec cp -a {} "$work/m2/" \;)
if [ -d "$cache/m2/io" ]; then
  mkdir -p "$work/m2/io"
  (cd "$cache/m2/io" && find . -mindepth 1 -maxdepth 1 ! -name easdirect -exec cp -a {} "$work/m2/io/" \;)
fi
cp -a "$outdir/m2/io" "$work/m2/"

# The emulator: one service of 3 instances.
log=$work/emulator.log
"$release/easdirect" emulate --listen 127.0.0.1:0 --service my_service --backends 3 --duration 120 >"$log" 2>&1 &
emu=$!
for _ in $(seq 100); do grep -q '^backends ' "$log" && break; sleep 0.1; done
addr=$(sed -n 's/^listening //p' "$log" | head -n1)
[ -n "$addr" ] || { echo "$me: the emulator did not start"; cat "$log"; exit 1; }
target=eas://$addr/my_service

# The consumer project: a pom with the one dependency (plugins pinned to what the cache holds)
# and a Main.
proj=$work/consumer
mkdir -p "$proj/src/main/java/consumer"
cat >"$proj/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>example</groupId>
  <artifactId>consumer</artifactId>
  <version>1.0</version>
  <properties>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
    <maven.compiler.release>17</maven.compiler.release>
  </properties>
  <dependencies>
    <dependency>
      <groupId>io.easdirect</groupId>
      <artifactId>easdirect</artifactId>
      <version>$version</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin><groupId>org.apache.maven.plugins</groupId><artifactId>maven-compiler-plugin</artifactId><version>3.13.0</version></plugin>
      <plugin><groupId>org.apache.maven.plugins</groupId><artifactId>maven-resources-plugin</artifactId><version>3.3.1</version></plugin>
      <plugin><groupId>org.apache.maven.plugins</groupId><artifactId>maven-surefire-plugin</artifactId><version>3.5.4</version></plugin>
      <plugin><groupId>org.apache.maven.plugins</groupId><artifactId>maven-jar-plugin</artifactId><version>3.4.2</version></plugin>
      <plugin><groupId>org.codehaus.mojo</groupId><artifactId>exec-maven-plugin</artifactId><version>3.5.0</version></plugin>
    </plugins>
  </build>
</project>
POM
cat >"$proj/src/main/java/consumer/Main.java" <<'JAVA'
package consumer;

import io.easdirect.EasClient;
import io.easdirect.Instance;
import java.io.File;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

/** Main TARGET BACKEND VERSION [LIBRARY]: LIBRARY is the override's file, else the jar's copy. */
public class Main {
    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("consumer: FAILED: " + what);
            System.exit(1);
        }
    }

    public static void main(String[] args) {
        String backend = args[1];
        String version = args[2];
        String library = args.length > 3 ? args[3] : null;
        for (String name : System.getenv().keySet()) {
            check(library != null || !name.startsWith("EASDIRECT_"), "the environment has " + name);
        }
        check(System.getenv("LD_LIBRARY_PATH") == null, "LD_LIBRARY_PATH is set");
        check(System.getProperty("easdirect.library") == null, "-Deasdirect.library is set");
        try (EasClient eas = EasClient.open(args[0])) {
            eas.waitReady(Duration.ofSeconds(10));
            List<Instance> all = eas.instances();
            check(all.size() == 3, "the emulator has 3 instances, the client lists " + all);
            Set<String> picked = new TreeSet<>();
            for (int i = 0; i < 30; i++) {
                Instance in = eas.select();
                check(all.contains(in), in + " is not one of " + all);
                picked.add(in.host());
            }
            Path loaded = Paths.get(EasClient.libraryPath());
            if (library == null) {
                // The jar's copy, extracted to java.io.tmpdir (and deleted once mapped).
                Path tmp = Paths.get(System.getProperty("java.io.tmpdir")).toAbsolutePath();
                check(loaded.getParent().equals(tmp)
                        && loaded.getFileName().toString().matches("libeasdirect-[0-9]+\\.so"),
                        "libeasdirect was loaded from " + loaded + ", not from the jar"
                        + " (java.library.path=" + System.getProperty("java.library.path") + ")");
            } else {
                check(loaded.equals(Paths.get(library)), "libeasdirect was loaded from " + loaded
                        + ", not from the override's " + library);
            }
            check(EasClient.backend().equals(backend), "backend " + EasClient.backend()
                    + ", want " + backend);
            check(EasClient.libraryVersion().equals(version), "libeasdirect "
                    + EasClient.libraryVersion() + ", want " + version);
            System.out.println("consumer: java " + System.getProperty("java.specification.version")
                    + " " + EasClient.backend() + " libeasdirect " + EasClient.libraryVersion()
                    + " from " + loaded + ": picked " + picked + " of " + all.size()
                    + " instances of " + eas.serviceName().orElse("?"));
        }
    }
}
JAVA
cd "$proj"

# mvn -o in an emptied environment; "$@" are extra environment variables (NAME=value).
consumer() {
  local jdk=$1 args=$2
  shift 2
  local opts=
  [ "$(jdk_feature "$jdk")" -lt 24 ] || opts=--sun-misc-unsafe-memory-access=allow
  env -i PATH=/usr/bin:/bin HOME="$work/home" JAVA_HOME="$jdk" MAVEN_OPTS="$opts" "$@" \
    mvn -o -B -q --no-transfer-progress -Dstyle.color=never -Dmaven.repo.local="$work/m2" package exec:exec \
    -Dexec.executable="$jdk/bin/java" -Dexec.args="$args"
}
run() { # JDK BACKEND LIBRARY JVM-OPTION [NAME=value...]: LIBRARY empty for the jar's copy
  local jdk=$1 backend=$2 library=$3 opt=$4 native= out
  shift 4
  [ "$(jdk_feature "$jdk")" -lt 22 ] || native=--enable-native-access=ALL-UNNAMED
  out=$(consumer "$jdk" "$native $opt -classpath %classpath consumer.Main $target $backend $version $library" "$@") \
    || { printf '%s\n' "$out"; echo "$me: the consumer failed on $jdk" >&2; exit 1; }
  printf '%s\n' "$out" | sed 's/\x1b\[[0-9;]*m//g' | grep -v '^$' || true
  grep -q "consumer: java " <<<"$out" || { echo "$me: the consumer printed no result" >&2; exit 1; }
}
run "$JDK17" jni "" ""
run "$JDK_NEWEST" panama "" ""
run "$JDK_NEWEST" panama "$release/libeasdirect.so.1" "" EASDIRECT_LIBRARY="$release/libeasdirect.so.1"
run "$JDK17" jni "$release/libeasdirect.so" "-Deasdirect.library.path=$release"

echo "$me: io.easdirect:easdirect:$version from $outdir/m2 builds offline in a consumer project outside the repository and picks from the emulator with no library path, on JDK 17 (jni) and JDK $newest (panama), libeasdirect extracted from the jar; EASDIRECT_LIBRARY and -Deasdirect.library.path still override"
