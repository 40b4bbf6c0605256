/* A profiling loop, not a benchmark with figures: N call cycles (begin, next, record RESPONSE
 * 200 with a vLLM load report, finish, free; N = argv[1], default 20,000,000) on a static list
 * of M instances (argv[2], default 100), unkeyed, or keyed by 1,000 session ids in turn when
 * argv[3] is "keyed", for `perf record` or `valgrind --tool=callgrind`, or for
 * timing two builds of the library against each other on a busy machine: it prints the
 * fastest of its chunks of 100,000 cycles in ns per cycle (the least disturbed by others).
 *   gcc -O2 -g -Iinclude benches/c/perf_call_cycle.c -o /tmp/perf_call \
 *       target/release/libeasdirect.a -lpthread -ldl -lm
 *   /tmp/perf_call; perf record -g /tmp/perf_call; perf report --no-children */
#include "easdirect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const names[] = {"endpoint-load-metrics"};
static const char *const values[] = {
    "TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=3.0"};

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 20000000;
  int m = argc > 2 ? atoi(argv[2]) : 100;
  int keyed = argc > 3 && strcmp(argv[3], "keyed") == 0;
  if (m < 1 || m > 40000) abort();
  static char target[40000 * 24];
  static char keys[1000][24];
  int p = snprintf(target, sizeof target, "static://");
  for (int k = 0; k < 1000; k++) snprintf(keys[k], sizeof keys[k], "session-%08d", k * 7919);
  for (int i = 0; i < m; i++)
    p += snprintf(target + p, sizeof target - (size_t)p, "%s10.0.%d.%d:80*%d", i ? "," : "",
                  i / 200 % 256, i % 200 + 1, 100 + 50 * (i % 3));
  eas_client *c = NULL;
  if (eas_client_new(target, NULL, &c, NULL) != EAS_STATUS_OK) abort();
  eas_instance out;
  unsigned long sink = 0;
  const long chunk = 100000;
  double best = 0, started = now_ns();
  for (long i = 0; i < n; i++) {
    eas_call *call = NULL;
    uint32_t retry;
    const char *key = keyed ? keys[i % 1000] : NULL;
    if (eas_call_begin(c, (const uint8_t *)key, key ? strlen(key) : 0, 0, &call) != EAS_STATUS_OK)
      abort();
    if (eas_call_next(call, &out) != EAS_STATUS_OK) abort();
    eas_call_record(call, EAS_OUTCOME_RESPONSE, 200, names, values, 1, &retry);
    eas_call_finish(call, EAS_BODY_DONE);
    eas_call_free(call);
    sink += out.port;
    if ((i + 1) % chunk == 0) {
      double t = now_ns(), per = (t - started) / (double)chunk;
      if (best == 0 || per < best) best = per;
      started = t;
    }
  }
  printf("%.1f ns per cycle at best (sink %lu)\n", best, sink);
  eas_client_free(c);
  return 0;
}
