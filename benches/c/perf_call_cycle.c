/* A profiling loop, not a benchmark with figures: 20,000,000 unkeyed call cycles (begin, next,
 * record RESPONSE 200 with a vLLM load report, finish, free) on a static list of 100 instances,
 * for `perf record` or for timing two builds of the library against each other:
 *   gcc -O2 -g -Iinclude benches/c/perf_call_cycle.c -o /tmp/perf_call \
 *       target/release/libeasdirect.a -lpthread -ldl -lm
 *   time /tmp/perf_call; perf record -g /tmp/perf_call; perf report --no-children */
#include "easdirect.h"

#include <stdio.h>
#include <stdlib.h>

static const char *const names[] = {"endpoint-load-metrics"};
static const char *const values[] = {
    "TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=3.0"};

int main(void) {
  char target[4096];
  int p = snprintf(target, sizeof target, "static://");
  for (int i = 0; i < 100; i++)
    p += snprintf(target + p, sizeof target - (size_t)p, "%s10.0.%d.%d:80*%d", i ? "," : "",
                  i / 200, i % 200 + 1, 100 + 50 * (i % 3));
  eas_client *c = NULL;
  if (eas_client_new(target, NULL, &c, NULL) != EAS_STATUS_OK) abort();
  eas_instance out;
  unsigned long sink = 0;
  for (long i = 0; i < 20000000; i++) {
    eas_call *call = NULL;
    uint32_t retry;
    if (eas_call_begin(c, NULL, 0, 0, &call) != EAS_STATUS_OK) abort();
    if (eas_call_next(call, &out) != EAS_STATUS_OK) abort();
    eas_call_record(call, EAS_OUTCOME_RESPONSE, 200, names, values, 1, &retry);
    eas_call_finish(call, EAS_BODY_DONE);
    eas_call_free(call);
    sink += out.port;
  }
  printf("%lu\n", sink);
  eas_client_free(c);
  return 0;
}
