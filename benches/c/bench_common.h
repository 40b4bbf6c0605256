/* What the C benches share: the clock, the median, and the list every bench measures. */
#ifndef EASDIRECT_BENCH_COMMON_H
#define EASDIRECT_BENCH_COMMON_H

#include "easdirect.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The median of `n` figures (sorts them). */
static double median(double *figures, int n) {
  qsort(figures, (size_t)n, sizeof figures[0], cmp_double);
  return figures[n / 2];
}

/* A client of a static:// list of n instances with weights 100/150/200; aborts on failure. */
static eas_client *static_client(size_t n) {
  size_t cap = n * 32 + 16;
  char *target = (char *)malloc(cap);
  size_t len = (size_t)snprintf(target, cap, "static://");
  for (size_t i = 0; i < n; i++)
    len += (size_t)snprintf(target + len, cap - len, "%s10.%zu.%zu.%zu:8080*%zu", i ? "," : "",
                            i / 65536, (i / 256) % 256, i % 256, 100 + (i % 3) * 50);
  eas_client *c = NULL;
  if (eas_client_new(target, NULL, &c, NULL) != EAS_STATUS_OK) abort();
  free(target);
  return c;
}

#endif
