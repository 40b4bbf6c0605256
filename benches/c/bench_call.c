/* Times the call cycle without network against the plain pick (eas_select_instance) of the
 * same client in one run, at 1 and 2 threads, for 100 and 10,000 instances:
 *   select:  eas_select_instance;
 *   call:    a fresh unkeyed call per iteration (lb_policy default, least_request): begin, next,
 *            record RESPONSE 200 with an endpoint-load-metrics header, finish DONE, free;
 *   keyed:   the same cycle with an affinity key per iteration, taken in turn from 1,000
 *            session ids (the ring is built by one keyed call per client before timing).
 * Each figure is the median of 5 runs (2,000,000 picks, 200,000 unkeyed and 20,000 keyed
 * cycles per thread each), in ns per iteration per thread; both threads share the client (as an application's threads would).
 * Build and run: make bench-c */
#define _GNU_SOURCE 1
#include "bench_common.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Iterations per thread and run: the plain pick, the unkeyed and the keyed cycle. */
#ifndef ITERS
#define ITERS 200000L
#endif
static const long iters[] = {10 * ITERS, ITERS, ITERS / 10};
#ifndef RUNS
#define RUNS 5
#endif
#define KEYS 1000

static char keys[KEYS][24];
static size_t key_lens[KEYS];
static const char *const hdr_names[] = {"endpoint-load-metrics"};
static const char *const hdr_values[] = {
    "TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=3.0"};

enum mode { MODE_SELECT, MODE_CALL, MODE_KEYED };

static uint64_t one(const eas_client *c, enum mode m, long i) {
  eas_instance out;
  if (m == MODE_SELECT) {
    if (eas_select_instance(c, &out) != EAS_STATUS_OK) abort();
    return out.port;
  }
  const uint8_t *key = NULL;
  size_t key_len = 0;
  if (m == MODE_KEYED) {
    key = (const uint8_t *)keys[i % KEYS];
    key_len = key_lens[i % KEYS];
  }
  eas_call *call = NULL;
  uint32_t retry = 1;
  if (eas_call_begin(c, key, key_len, 0, &call) != EAS_STATUS_OK) abort();
  if (eas_call_next(call, &out) != EAS_STATUS_OK) abort();
  if (eas_call_record(call, EAS_OUTCOME_RESPONSE, 200, hdr_names, hdr_values, 1, &retry) !=
          EAS_STATUS_OK ||
      retry != 0)
    abort();
  if (eas_call_finish(call, EAS_BODY_DONE) != EAS_STATUS_OK) abort();
  eas_call_free(call);
  return out.port;
}

struct job {
  const eas_client *c;
  enum mode m;
  long offset; /* where this thread starts in the key set */
  pthread_barrier_t *barrier;
  double ns;
};

static void *run(void *p) {
  struct job *j = (struct job *)p;
  uint64_t sink = 0;
  for (long i = 0; i < 1000; i++) sink += one(j->c, j->m, j->offset + i); /* warm this thread */
  pthread_barrier_wait(j->barrier);
  double start = now_ns();
  long n = iters[j->m];
  for (long i = 0; i < n; i++) sink += one(j->c, j->m, j->offset + i);
  j->ns = (now_ns() - start) / (double)n;
  if (sink == 42) puts("");
  return NULL;
}

/* Median over RUNS of the mean per-thread cost with `threads` threads. */
static double measure(const eas_client *c, enum mode m, int threads) {
  double results[RUNS];
  for (int r = 0; r < RUNS; r++) {
    pthread_t t[2];
    struct job jobs[2];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++) {
      jobs[i] = (struct job){c, m, (long)i * (KEYS / 2), &barrier, 0};
      pthread_create(&t[i], NULL, run, &jobs[i]);
    }
    double sum = 0;
    for (int i = 0; i < threads; i++) {
      pthread_join(t[i], NULL);
      sum += jobs[i].ns;
    }
    pthread_barrier_destroy(&barrier);
    results[r] = sum / threads;
  }
  return median(results, RUNS);
}

/* The same list as bench_select.c: n instances with weights 100/150/200. */
static eas_client *client_with(size_t n) {
  eas_client *c = static_client(n);
  (void)one(c, MODE_KEYED, 0); /* builds the affinity ring */
  return c;
}

int main(void) {
  for (int k = 0; k < KEYS; k++)
    key_lens[k] = (size_t)snprintf(keys[k], sizeof keys[k], "session-%08d", k * 7919);
  printf("%-8s %-7s %10s %10s %10s %12s %12s\n", "n", "threads", "select_ns", "call_ns",
         "keyed_ns", "call/select", "keyed/select");
  size_t sizes[] = {100, 10000};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    eas_client *c = client_with(sizes[s]);
    for (int threads = 1; threads <= 2; threads++) {
      double sel = measure(c, MODE_SELECT, threads);
      double call = measure(c, MODE_CALL, threads);
      double keyed = measure(c, MODE_KEYED, threads);
      printf("%-8zu %-7d %10.2f %10.2f %10.2f %12.2f %12.2f\n", sizes[s], threads, sel, call,
             keyed, call / sel, keyed / sel);
    }
    eas_client_free(c);
  }
  return 0;
}
