#!/usr/bin/env bash
# JMH benchmarks of the Java binding, with short settings (a few minutes on 2 cores):
#   - EasClient.select() on the Panama and JNI backends at 3, 100 and 1000 instances, 1 and 2
#     threads, on the newest JDK under /usr/lib/jvm;
#   - a call cycle (beginCall, next, record with a load report, finish, close) beside a plain
#     select on the same static:// client of 100 instances, on both backends (CallBench);
#   - in the same run, nacos-client 2.x's selectOneHealthyInstance on the same 100 instances,
#     registered in rnacos (libeasdirect reads them from rnacos too, through nacos:// targets);
#   - then JNI and nacos-client again on JDK 17;
#   - the HTTP helper's overhead over the plain JDK client to the emulator's zero-delay echo
#     backend on loopback, median per request, send and sendAsync, on both backends
#     (HelperBench, interleaved requests rather than JMH).
# `run-bench.sh helper` runs HelperBench alone (newest JDK, both backends; about a minute).
# HELPER_BENCH_ROUNDS="WARMUP ROUNDS" (default "5000 10000") sets its rounds.
# Prints the JMH tables and, per JDK, the medians and the nacos-client/easdirect ratios.
#
# Assumes the repository's `make build` has run; rnacos is taken from
# ${EASDIRECT_CACHE:-$HOME/.cache/easdirect}/tools/rnacos-0.8.8/bin/rnacos (or $EASDIRECT_RNACOS;
# `make test` installs it). Without it, only the easdirect benchmarks run, on static:// lists.
# JMH_ARGS replaces the default settings; JDK_NEWEST and JDK17 override the JDKs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${EASDIRECT_CACHE:-$HOME/.cache/easdirect}
rnacos=${EASDIRECT_RNACOS:-$cache/tools/rnacos-0.8.8/bin/rnacos}
mode=${1:-all}
case $mode in
  all) jmh_args=${JMH_ARGS:--f 1 -wi 2 -w 1s -i 5 -r 1s} ;;
  helper) jmh_args=${JMH_ARGS:--f 1 -wi 2 -w 1s -i 3 -r 1s} ;;
  *) echo "usage: run-bench.sh [helper]" >&2; exit 2 ;;
esac

[ -e "$repo/target/release/libeasdirect.so" ] || {
  echo "run-bench.sh: target/release/libeasdirect.so is missing: run 'make build' first" >&2; exit 1; }

jdk_feature() {
  [ -x "$1/bin/javac" ] || { echo 0; return; }
  sed -n 's/^JAVA_VERSION="\(1\.\)\{0,1\}\([0-9]*\).*/\2/p' "$1/release" 2>/dev/null | head -n1
}
if [ -z "${JDK_NEWEST:-}" ]; then
  best=0
  for d in /usr/lib/jvm/*/; do
    d=${d%/}; v=$(jdk_feature "$d"); v=${v:-0}
    if [ "$v" -gt "$best" ]; then best=$v; JDK_NEWEST=$d; fi
  done
fi
if [ -z "${JDK17:-}" ]; then
  for d in /usr/lib/jvm/*/; do
    d=${d%/}; if [ "$(jdk_feature "$d")" = 17 ]; then JDK17=$d; break; fi
  done
fi
[ -n "${JDK_NEWEST:-}" ] && [ "$(jdk_feature "$JDK_NEWEST")" -ge 22 ] || {
  echo "run-bench.sh: no JDK 22 or newer under /usr/lib/jvm (set JDK_NEWEST)" >&2; exit 1; }
newest=$(jdk_feature "$JDK_NEWEST")
# The one version, Cargo.toml's: both poms take it as -Drevision.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
[ -n "$version" ] || { echo "run-bench.sh: no version = \"...\" in $repo/Cargo.toml" >&2; exit 1; }

export JAVA_HOME=$JDK_NEWEST
if [ "$newest" -ge 24 ]; then
  export MAVEN_OPTS="${MAVEN_OPTS:-} --sun-misc-unsafe-memory-access=allow"
fi
mvn=(mvn -B -q --no-transfer-progress -Dmaven.repo.local="$cache/m2" -Drevision="$version")

echo "== building the binding and the benchmarks (JDK $newest)"
"${mvn[@]}" -f "$here/pom.xml" -DskipTests install
"${mvn[@]}" -f "$here/bench/pom.xml" package
cp="$here/bench/target/classes:$(cat "$here/bench/target/classpath.txt")"

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

jvm_args="--enable-native-access=ALL-UNNAMED -DJM.LOG.PATH=$work/nacos-logs -DJM.SNAPSHOT.PATH=$work/nacos-cache"

# The emulator's echo backend for HelperBench (zero delay, loopback).
"$repo/target/release/easdirect" emulate --listen 127.0.0.1:0 --service bench --backends 1 \
  >"$work/emulator.log" 2>&1 &
emu=$!
trap 'kill $emu 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 100); do grep -q '^backends ' "$work/emulator.log" && break; sleep 0.1; done
echo_backend=$(sed -n 's/^backends //p' "$work/emulator.log" | head -n1)
[ -n "$echo_backend" ] || { echo "run-bench.sh: the emulator did not start"; cat "$work/emulator.log"; exit 1; }

benches='io.easdirect.bench.(SelectBench|NacosBench|CallBench)'
# HelperBench: interleaved plain and helper requests, medians (not JMH: see its doc comment).
helper_bench() {
  local java=$1 backend=$2
  shift 2
  "$java" "$@" -Deasdirect.backend="$backend" -cp "$cp" io.easdirect.bench.HelperBench \
    "$echo_backend" "${HELPER_BENCH_ROUNDS[@]}"
}
HELPER_BENCH_ROUNDS=(${HELPER_BENCH_ROUNDS:-5000 10000})
if [ "$mode" = helper ]; then
  echo
  echo "== JDK $newest: HelperBench, panama and jni; load: $(cut -d' ' -f1-3 /proc/loadavg)"
  helper_bench "$JDK_NEWEST/bin/java" panama --enable-native-access=ALL-UNNAMED
  helper_bench "$JDK_NEWEST/bin/java" jni
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
  exit 0
fi
if [ -x "$rnacos" ]; then
  port=
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 20000))
    if free "$p" && free $((p + 1000)) && free $((p + 2000)); then port=$p; break; fi
  done
  [ -n "$port" ] || { echo "run-bench.sh: no free port triple for rnacos" >&2; exit 1; }
  mkdir -p "$work/rnacos"
  # The instances live as long as the run: no heartbeats needed.
  (cd "$work/rnacos" && exec env RNACOS_HTTP_PORT=$port RNACOS_GRPC_PORT=$((port + 1000)) \
    RNACOS_HTTP_CONSOLE_PORT=$((port + 2000)) RNACOS_SDK_HOST=127.0.0.1 \
    RNACOS_CONSOLE_HOST=127.0.0.1 RNACOS_RAFT_NODE_ADDR=127.0.0.1:$((port + 1000)) \
    RNACOS_DATA_DIR="$work/rnacos/data" RNACOS_NAMING_HEALTH_TIMEOUT_SECOND=3600 \
    RNACOS_NAMING_INSTANCE_TIMEOUT_SECOND=7200 RUST_LOG=error \
    "$rnacos" >/dev/null 2>&1) &
  pid=$!
  "$JAVA_HOME/bin/java" -cp "$cp" io.easdirect.bench.Register "$port" 3 100 1000
  jvm_args="$jvm_args -Deasdirect.bench.nacos=127.0.0.1:$port"
else
  echo "run-bench.sh: no rnacos at $rnacos: nacos-client is not measured, easdirect uses static:// lists" >&2
  benches='io.easdirect.bench.(SelectBench|CallBench)'
fi

# JMH itself uses sun.misc.Unsafe, which JDK 24+ warns about (forks inherit the host's flags).
newest_args=()
if [ "$newest" -ge 24 ]; then
  newest_args=(--sun-misc-unsafe-memory-access=allow)
fi

echo
echo "== JDK $newest: panama, jni, nacos-client ($jmh_args)"
# shellcheck disable=SC2086
"$JDK_NEWEST/bin/java" "${newest_args[@]}" -cp "$cp" io.easdirect.bench.Summary -foe true \
  $jmh_args -jvmArgsAppend "$jvm_args" "$benches"

if [ -n "${JDK17:-}" ]; then
  echo
  echo "== JDK 17: jni, nacos-client ($jmh_args)"
  # shellcheck disable=SC2086
  "$JDK17/bin/java" -cp "$cp" io.easdirect.bench.Summary -foe true $jmh_args -p backend=jni \
    -jvmArgsAppend "$jvm_args" "$benches"
fi

echo
echo "== HelperBench: JDK $newest (panama, jni)${JDK17:+ and JDK 17 (jni)}"
helper_bench "$JDK_NEWEST/bin/java" panama --enable-native-access=ALL-UNNAMED
helper_bench "$JDK_NEWEST/bin/java" jni
if [ -n "${JDK17:-}" ]; then
  helper_bench "$JDK17/bin/java" jni
fi
