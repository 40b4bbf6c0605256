/* Times eas_select_instance against two references in one run, at 1 and 2 threads:
 *   floor:     a non-inlined function that bumps a thread-local counter and writes the same
 *              128-byte eas_instance (the least any pick can cost);
 *   shared_rr: round-robin over a shared atomic counter, writing the same struct (what gRPC's
 *              round_robin does).
 * Each figure is the median of 9 runs of 2,000,000 picks per thread, in ns per pick per thread.
 * Build and run: make bench-c */
#define _GNU_SOURCE 1
#include "bench_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PICKS 2000000L
#define RUNS 9

static eas_instance table[10000];
static size_t table_len = 3;
static _Thread_local uint64_t tl_counter;
static _Atomic uint64_t shared_counter;

__attribute__((noinline)) static eas_status floor_pick(const void *unused, eas_instance *out) {
  (void)unused;
  *out = table[tl_counter++ % table_len];
  return EAS_STATUS_OK;
}

__attribute__((noinline)) static eas_status shared_rr_pick(const void *unused, eas_instance *out) {
  (void)unused;
  uint64_t n = atomic_fetch_add_explicit(&shared_counter, 1, memory_order_relaxed);
  *out = table[n % table_len];
  return EAS_STATUS_OK;
}

static eas_status lib_pick(const void *client, eas_instance *out) {
  return eas_select_instance((const eas_client *)client, out);
}

typedef eas_status (*pick_fn)(const void *, eas_instance *);

struct job {
  pick_fn fn;
  const void *arg;
  pthread_barrier_t *barrier;
  double ns_per_pick;
};

static void *run(void *p) {
  struct job *j = (struct job *)p;
  eas_instance out;
  uint64_t sink = 0;
  for (long i = 0; i < 10000; i++) j->fn(j->arg, &out); /* warm this thread's cursor */
  pthread_barrier_wait(j->barrier);
  double start = now_ns();
  for (long i = 0; i < PICKS; i++) {
    if (j->fn(j->arg, &out) != EAS_STATUS_OK) abort();
    sink += out.port;
  }
  j->ns_per_pick = (now_ns() - start) / PICKS;
  if (sink == 42) puts("");
  return NULL;
}

/* Median over RUNS of the mean per-thread cost with `threads` threads. */
static double measure(pick_fn fn, const void *arg, int threads) {
  double results[RUNS];
  for (int r = 0; r < RUNS; r++) {
    pthread_t t[2];
    struct job jobs[2];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++) {
      jobs[i] = (struct job){fn, arg, &barrier, 0};
      pthread_create(&t[i], NULL, run, &jobs[i]);
    }
    double sum = 0;
    for (int i = 0; i < threads; i++) {
      pthread_join(t[i], NULL);
      sum += jobs[i].ns_per_pick;
    }
    pthread_barrier_destroy(&barrier);
    results[r] = sum / threads;
  }
  return median(results, RUNS);
}

static eas_client *client_with(size_t n) {
  eas_client *c = static_client(n);
  size_t got = 0;
  eas_client_instances(c, table, sizeof table / sizeof table[0], &got);
  table_len = got;
  return c;
}

int main(void) {
  printf("%-8s %-7s %10s %10s %10s %12s\n", "n", "threads", "floor_ns", "shared_rr", "select_ns",
         "select/floor");
  size_t sizes[] = {3, 100, 10000};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    eas_client *c = client_with(sizes[s]);
    for (int threads = 1; threads <= 2; threads++) {
      double fl = measure(floor_pick, NULL, threads);
      double rr = measure(shared_rr_pick, NULL, threads);
      double sel = measure(lib_pick, c, threads);
      printf("%-8zu %-7d %10.2f %10.2f %10.2f %12.2f\n", sizes[s], threads, fl, rr, sel, sel / fl);
    }
    eas_client_free(c);
  }
  return 0;
}
