#!/usr/bin/env bash
# The Java binding's tests: builds the JNI glue and the jar with the newest JDK (22 or later)
# under /usr/lib/jvm, runs the JUnit 5 suite on it (Panama backend), runs the same suite on
# JDK 17 (JNI backend) and on the newest JDK with the JNI backend forced, then runs the examples
# in examples/java from the jar (JDK 17 and the newest).
#
# Assumes the repository's `make build` has run (target/release/libeasdirect.so and the
# `easdirect` CLI, whose emulator the suite drives). Maven downloads go to
# ${EASDIRECT_CACHE:-$HOME/.cache/easdirect}/m2. Override the JDKs with JDK_NEWEST and JDK17.
# Exits non-zero on the first failure.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
release=$repo/target/release
cache=${EASDIRECT_CACHE:-$HOME/.cache/easdirect}

for f in "$release/libeasdirect.so" "$release/easdirect"; do
  [ -e "$f" ] || { echo "run-tests.sh: $f is missing: run 'make build' first" >&2; exit 1; }
done
command -v mvn >/dev/null || { echo "run-tests.sh: mvn is needed (apt-get install maven)" >&2; exit 1; }
command -v gcc >/dev/null || { echo "run-tests.sh: gcc is needed for the JNI glue" >&2; exit 1; }

me=run-tests.sh
# shellcheck source=jdks.sh
. "$here/jdks.sh"

export JAVA_HOME=$JDK_NEWEST
# Maven 3.8 itself uses sun.misc.Unsafe, which JDK 24+ warns about on every run.
if [ "$newest" -ge 24 ]; then
  export MAVEN_OPTS="${MAVEN_OPTS:-} --sun-misc-unsafe-memory-access=allow"
fi
# -Drevision: the pom's version is Cargo.toml's, given here (see pom.xml).
mvn=(mvn -B --no-transfer-progress -Dmaven.repo.local="$cache/m2" -Drevision="$version" -f "$here/pom.xml")

step() { printf '\n== %s\n' "$*"; }

# A build from before the multi-release layout left the Panama backend in the jar's base.
rm -rf "$here/target/classes"

step "build (JDK $newest: API and JNI release 8, helper release 11, Panama release 22) and test on JDK $newest (panama)"
"${mvn[@]}" -Deasdirect.expectBackend=panama -Deasdirect.testRun="jdk$newest-panama" package

step "the same suite on JDK 17 (jni)"
"${mvn[@]}" -Djvm="$JDK17/bin/java" -Deasdirect.expectBackend=jni -Deasdirect.testRun=jdk17-jni \
  surefire:test

step "the same suite on JDK $newest with -Deasdirect.backend=jni"
"${mvn[@]}" -Deasdirect.backend=jni -Deasdirect.expectBackend=jni \
  -Deasdirect.testRun="jdk$newest-jni" surefire:test

step "examples/java from the jar (JDK 17: jni, JDK $newest: panama)"
jar=$here/target/easdirect-$version.jar
"$JDK17/bin/java" -cp "$jar" "$repo/examples/java/Pick.java" "static://127.0.0.1:8001*3,127.0.0.1:8002*1" 4
"$JDK_NEWEST/bin/java" --enable-native-access=ALL-UNNAMED -cp "$jar" \
  "$repo/examples/java/Pick.java" "static://127.0.0.1:8001*3,127.0.0.1:8002*1" 4
log=$(mktemp)
list=$(mktemp)
trap 'rm -f "$log" "$list"' EXIT
printf '# one instance a line\n127.0.0.1:8001*3\n127.0.0.1:8002\n' >"$list"
"$JDK17/bin/java" -cp "$jar" "$repo/examples/java/Source.java" "$list" 4
"$JDK_NEWEST/bin/java" --enable-native-access=ALL-UNNAMED -cp "$jar" \
  "$repo/examples/java/Source.java" "$list" 4
"$release/easdirect" emulate --listen 127.0.0.1:0 --service my_service --backends 3 --duration 60 >"$log" &
emu=$!
trap 'kill $emu 2>/dev/null || true; rm -f "$log" "$list"' EXIT
for _ in $(seq 100); do grep -q '^backends ' "$log" && break; sleep 0.1; done
addr=$(sed -n 's/^listening //p' "$log" | head -n1)
[ -n "$addr" ] || { echo "the emulator did not start"; cat "$log"; exit 1; }
"$JDK17/bin/java" -cp "$jar" "$repo/examples/java/Predict.java" "eas://$addr/my_service" 5
# Two LLM backends (server-sent events) under my_llm, for the streamed chat with a session key.
llm='{"service":"my_llm","count":2,"replace":true,"kind":"llm","llm":{"base_ms":5,"per_token_ms":2,"mean_tokens":12,"tokens_sigma":0}}'
exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}"
printf 'POST /_emulator/backends HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
  "$addr" "${#llm}" "$llm" >&3
head -n1 <&3 | grep -q ' 200 ' || { echo "the emulator did not start the LLM backends"; exit 1; }
exec 3<&-
"$JDK17/bin/java" -cp "$jar" "$repo/examples/java/StreamChat.java" "eas://$addr/my_llm" session-42 3
"$JDK_NEWEST/bin/java" --enable-native-access=ALL-UNNAMED -cp "$jar" \
  "$repo/examples/java/StreamChat.java" "eas://$addr/my_llm" session-7 2

printf '\nJava binding: all tests passed on JDK %s (panama, jni) and JDK 17 (jni)\n' "$newest"
