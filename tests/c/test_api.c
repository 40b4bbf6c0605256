/* Exercises every function of include/easdirect.h, including NULL and misuse paths.
 * Built as C99 and as C++17 with -Wall -Wextra -Werror; run under valgrind by `make test-c`. */
#define _DEFAULT_SOURCE 1 /* usleep under -std=c99 */
#include "easdirect.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* GCC/Clang atomic builtins: the same code compiles as C99 and as C++17. */
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_SEQ_CST)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_SEQ_CST)
#define ADD(x, v) __atomic_fetch_add(&(x), (v), __ATOMIC_SEQ_CST)

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                                 \
  do {                                                                              \
    checks++;                                                                       \
    if (!(cond)) {                                                                  \
      failures++;                                                                   \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
    }                                                                               \
  } while (0)

#define CHECK_STATUS(call, want)                                                    \
  do {                                                                              \
    eas_status got_ = (call);                                                       \
    checks++;                                                                       \
    if (got_ != (want)) {                                                           \
      failures++;                                                                   \
      fprintf(stderr, "%s:%d: %s returned %s, want %s\n", __FILE__, __LINE__,       \
              #call, eas_status_str((int32_t)got_), eas_status_str((int32_t)(want))); \
    }                                                                               \
  } while (0)

static void test_version_and_status_strings(void) {
  CHECK((eas_abi_version() >> 16) == EAS_ABI_MAJOR);
  CHECK((eas_abi_version() & 0xffff) == EAS_ABI_MINOR);
  CHECK(EAS_ABI_MINOR >= 1); /* eas_client_new_with_source */
  CHECK(EAS_ABI_MINOR >= 2); /* eas_call_* */
  CHECK(EAS_ABI_MINOR >= 3); /* eas_client_transport */
  CHECK(EAS_ABI_MINOR >= 4); /* eas_options_set_log, eas_client_metrics_text */
  CHECK(strcmp(eas_version(), EAS_VERSION) == 0);
  CHECK(strcmp(eas_status_str(EAS_STATUS_OK), "ok") == 0);
  CHECK(strcmp(eas_status_str(EAS_STATUS_NO_INSTANCE), "no instance") == 0);
  CHECK(strcmp(eas_status_str(EAS_STATUS_PANIC), "panic") == 0);
  CHECK(strcmp(eas_status_str(12345), "unknown status") == 0);
  CHECK(strcmp(eas_status_str(-1), "unknown status") == 0);
  CHECK(sizeof(eas_instance) == 128);
  CHECK(offsetof(eas_instance, ip) == 8);
  CHECK(offsetof(eas_instance, port) == 54);
  CHECK(offsetof(eas_instance, weight) == 56);
  CHECK(offsetof(eas_instance, host) == 60);
  CHECK(offsetof(eas_instance, reserved) == 124);
  CHECK(sizeof(eas_instance_stats) == 64);
  CHECK(offsetof(eas_instance_stats, id) == 0);
  CHECK(offsetof(eas_instance_stats, in_flight) == 8);
  CHECK(offsetof(eas_instance_stats, reported_waiting) == 12);
  CHECK(offsetof(eas_instance_stats, attempts) == 16);
  CHECK(offsetof(eas_instance_stats, failures) == 24);
  CHECK(offsetof(eas_instance_stats, latency_ewma_us) == 32);
  CHECK(offsetof(eas_instance_stats, reported_kv_permille) == 36);
  CHECK(offsetof(eas_instance_stats, ejected_until_unix_ms) == 40);
  CHECK(offsetof(eas_instance_stats, report_unix_ms) == 48);
  CHECK(offsetof(eas_instance_stats, weight) == 56);
  CHECK(offsetof(eas_instance_stats, reported_running) == 60);
}

static void test_options(void) {
  eas_options *o = eas_options_new();
  eas_error *err = NULL;
  CHECK(o != NULL);
  CHECK_STATUS(eas_options_set(o, "refresh_interval_ms", "1000", &err), EAS_STATUS_OK);
  CHECK(err == NULL);
  CHECK_STATUS(eas_options_set(o, "no_such_key", "1", &err), EAS_STATUS_INVALID_ARGUMENT);
  CHECK(err != NULL);
  CHECK(eas_error_code(err) == EAS_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(eas_error_message(err), "no_such_key") != NULL);
  eas_error_free(err);
  err = NULL;
  CHECK_STATUS(eas_options_set(o, "refresh_interval_ms", "9", &err), EAS_STATUS_INVALID_ARGUMENT);
  CHECK(err != NULL && strstr(eas_error_message(err), "refresh_interval_ms") != NULL);
  eas_error_free(err);
  err = NULL;
  CHECK_STATUS(eas_options_set(o, "password", "", &err), EAS_STATUS_INVALID_ARGUMENT);
  eas_error_free(err);
  /* Not UTF-8. */
  CHECK_STATUS(eas_options_set(o, "ab\xff\xfe", "1", &err), EAS_STATUS_INVALID_ARGUMENT);
  CHECK(err != NULL && strstr(eas_error_message(err), "option key \"ab") != NULL);
  eas_error_free(err);
  err = NULL;
  CHECK_STATUS(eas_options_set(o, "refresh_interval_ms", "\xc3\x28", &err),
               EAS_STATUS_INVALID_ARGUMENT);
  CHECK(err != NULL && strstr(eas_error_message(err), "refresh_interval_ms") != NULL);
  eas_error_free(err);
  err = NULL;
  CHECK_STATUS(eas_options_set(NULL, "k", "v", NULL), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_options_set(o, NULL, "v", NULL), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_options_set(o, "refresh_interval_ms", NULL, NULL), EAS_STATUS_NULL_PARAMETER);
  eas_options_free(o);
  eas_options_free(NULL);
  eas_error_free(NULL);
  CHECK(eas_error_code(NULL) == EAS_STATUS_NULL_PARAMETER);
  CHECK(strcmp(eas_error_message(NULL), "") == 0);
}

static void test_client_new_errors(void) {
  eas_client *c = (eas_client *)0x1; /* must stay untouched on failure */
  eas_error *err = NULL;
  CHECK_STATUS(eas_client_new("ftp://x/y", NULL, &c, &err), EAS_STATUS_INVALID_ARGUMENT);
  CHECK(c == (eas_client *)0x1);
  CHECK(err != NULL && strstr(eas_error_message(err), "ftp") != NULL);
  eas_error_free(err);
  err = NULL;
  CHECK_STATUS(eas_client_new("eas://host/../etc", NULL, &c, NULL), EAS_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(eas_client_new("eas://u:secret@host/svc", NULL, &c, &err),
               EAS_STATUS_INVALID_ARGUMENT);
  CHECK(err != NULL && strstr(eas_error_message(err), "secret") == NULL);
  eas_error_free(err);
  err = NULL;
  /* Whatever the shape: a password holding '/' or '?', no scheme, a static item. */
  static const char *const leaky[] = {
      "eas://user:t0psecret@127.0.0.1:1", "nacos://user:t0p/secret@h/svc",
      "eas://user:t0p?secret@h/svc",      "user:t0psecret@127.0.0.1:80",
      "static://user:t0psecret@1.2.3.4:80",
  };
  for (size_t i = 0; i < sizeof leaky / sizeof leaky[0]; i++) {
    CHECK_STATUS(eas_client_new(leaky[i], NULL, &c, &err), EAS_STATUS_INVALID_ARGUMENT);
    CHECK(err != NULL && strstr(eas_error_message(err), "t0p") == NULL &&
          strstr(eas_error_message(err), "secret") == NULL);
    eas_error_free(err);
    err = NULL;
  }
  eas_options *o = eas_options_new();
  CHECK_STATUS(eas_options_set(o, "group", "pai-eas", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_client_new("eas://127.0.0.1:1/svc", o, &c, &err), EAS_STATUS_INVALID_ARGUMENT);
  CHECK(err != NULL && strstr(eas_error_message(err), "group") != NULL);
  eas_error_free(err);
  eas_options_free(o);
  CHECK_STATUS(eas_client_new(NULL, NULL, &c, NULL), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_client_new("static://127.0.0.1:1", NULL, NULL, NULL), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_client_new("static://\xff", NULL, &c, NULL), EAS_STATUS_INVALID_ARGUMENT);
  CHECK(c == (eas_client *)0x1);
}

static void test_static_select_and_instances(void) {
  eas_client *c = NULL;
  CHECK_STATUS(eas_client_new("static://10.0.0.1:8080*500,10.0.0.2:8080,[fd00::3]:9090,10.0.0.4:1*0",
                              NULL, &c, NULL),
               EAS_STATUS_OK);
  CHECK_STATUS(eas_client_wait_ready(c, 0, NULL), EAS_STATUS_OK);

  size_t len = 0;
  CHECK_STATUS(eas_client_instances(c, NULL, 0, &len), EAS_STATUS_BUFFER_TOO_SMALL);
  CHECK(len == 4);
  eas_instance small[2];
  memset(small, 0xAB, sizeof small);
  CHECK_STATUS(eas_client_instances(c, small, 2, &len), EAS_STATUS_BUFFER_TOO_SMALL);
  CHECK(small[0].port == 0xABAB); /* untouched */
  eas_instance all[8];
  CHECK_STATUS(eas_client_instances(c, all, 8, &len), EAS_STATUS_OK);
  CHECK(len == 4);
  int saw_v6 = 0, saw_zero = 0;
  for (size_t i = 0; i < len; i++) {
    CHECK(all[i].id != 0);
    CHECK(all[i].reserved[0] == 0 && all[i].reserved[3] == 0);
    if (strcmp(all[i].host, "[fd00::3]:9090") == 0) {
      saw_v6 = 1;
      CHECK(strcmp(all[i].ip, "fd00::3") == 0);
      CHECK(all[i].weight == 100);
    }
    if (all[i].weight == 0) saw_zero = 1;
  }
  CHECK(saw_v6 && saw_zero);
  CHECK_STATUS(eas_client_instances(c, NULL, 0, NULL), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_client_instances(NULL, all, 8, &len), EAS_STATUS_NULL_PARAMETER);

  /* Weights 500,100,100 (and 0), reduced to 5,1,1: exact proportions over whole cycles, the weight-0 one never. */
  int heavy = 0, light = 0, zero = 0;
  for (int i = 0; i < 7 * 100; i++) {
    eas_instance out;
    CHECK_STATUS(eas_select_instance(c, &out), EAS_STATUS_OK);
    if (strcmp(out.host, "10.0.0.1:8080") == 0) heavy++;
    else if (out.weight == 0) zero++;
    else light++;
  }
  CHECK(heavy == 500 && light == 200 && zero == 0);

  eas_instance out;
  CHECK_STATUS(eas_select_instance(NULL, &out), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_select_instance(c, NULL), EAS_STATUS_NULL_PARAMETER);

  /* Exclusion. */
  uint64_t ids[4];
  for (size_t i = 0; i < 4; i++) ids[i] = all[i].id;
  CHECK_STATUS(eas_select_instance_excluding(c, NULL, 0, &out), EAS_STATUS_OK);
  CHECK_STATUS(eas_select_instance_excluding(c, NULL, 1, &out), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_select_instance_excluding(c, ids, 4, &out), EAS_STATUS_NO_INSTANCE);
  for (int i = 0; i < 20; i++) {
    CHECK_STATUS(eas_select_instance_excluding(c, ids, 1, &out), EAS_STATUS_OK);
    CHECK(out.id != ids[0]);
  }

  /* Reports. */
  CHECK_STATUS(eas_report_failure(c, 42), EAS_STATUS_UNKNOWN_INSTANCE);
  CHECK_STATUS(eas_report_success(c, 42), EAS_STATUS_UNKNOWN_INSTANCE);
  CHECK_STATUS(eas_report_failure(NULL, 42), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_report_success(NULL, 42), EAS_STATUS_NULL_PARAMETER);
  uint64_t heavy_id = 0;
  for (size_t i = 0; i < len; i++)
    if (all[i].weight == 500) heavy_id = all[i].id;
  CHECK_STATUS(eas_report_failure(c, heavy_id), EAS_STATUS_OK);
  for (int i = 0; i < 50; i++) {
    CHECK_STATUS(eas_select_instance(c, &out), EAS_STATUS_OK);
    CHECK(out.id != heavy_id);
  }
  CHECK_STATUS(eas_report_success(c, heavy_id), EAS_STATUS_OK);

  eas_stats st;
  CHECK_STATUS(eas_client_stats(c, &st), EAS_STATUS_OK);
  CHECK(st.generation == 1 && st.instances == 4 && st.ejected == 1 && st.refresh_ok == 1);
  CHECK(st.last_ok_unix_ms > 0);
  CHECK_STATUS(eas_client_stats(c, NULL), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_client_stats(NULL, &st), EAS_STATUS_NULL_PARAMETER);

  eas_error *err = (eas_error *)0x1;
  CHECK_STATUS(eas_client_last_error(c, &err), EAS_STATUS_OK);
  CHECK(err == (eas_error *)0x1);
  CHECK_STATUS(eas_client_last_error(NULL, NULL), EAS_STATUS_NULL_PARAMETER);

  eas_client_close(c);
  eas_client_close(c); /* idempotent */
  CHECK_STATUS(eas_select_instance(c, &out), EAS_STATUS_CLOSED);
  CHECK_STATUS(eas_report_failure(c, heavy_id), EAS_STATUS_CLOSED);
  CHECK_STATUS(eas_client_stats(c, &st), EAS_STATUS_CLOSED);
  CHECK_STATUS(eas_client_wait_ready(c, 0, NULL), EAS_STATUS_CLOSED);
  CHECK_STATUS(eas_client_instances(c, all, 8, &len), EAS_STATUS_CLOSED);
  eas_client_free(c);
  eas_client_close(NULL);
  eas_client_free(NULL);
}

static void test_unreachable_upstream(void) {
  eas_options *o = eas_options_new();
  CHECK_STATUS(eas_options_set(o, "request_timeout_ms", "200", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_options_set(o, "refresh_interval_ms", "20", NULL), EAS_STATUS_OK);
  eas_client *c = NULL;
  /* Port 1 on loopback: connection refused. */
  CHECK_STATUS(eas_client_new("eas://127.0.0.1:1/svc", o, &c, NULL), EAS_STATUS_OK);
  eas_options_free(o); /* copied by eas_client_new */
  eas_instance out;
  CHECK_STATUS(eas_select_instance(c, &out), EAS_STATUS_NO_INSTANCE);
  eas_error *err = NULL;
  CHECK_STATUS(eas_client_wait_ready(c, 300, &err), EAS_STATUS_TIMEOUT);
  CHECK(err != NULL && strstr(eas_error_message(err), "127.0.0.1:1") != NULL);
  eas_error_free(err);
  err = NULL;
  /* The first refused fetch may not be over yet on a slow machine (valgrind, load): wait for
   * it, up to 10 s. */
  for (int i = 0; i < 1000 && eas_client_last_error(c, NULL) == EAS_STATUS_OK; i++) usleep(10000);
  CHECK_STATUS(eas_client_last_error(c, &err), EAS_STATUS_DISCOVERY_FAILED);
  CHECK(err != NULL && eas_error_code(err) == EAS_STATUS_DISCOVERY_FAILED);
  CHECK(err != NULL && strstr(eas_error_message(err), "/upstreams/svc") != NULL);
  eas_error_free(err);
  size_t len = 99;
  CHECK_STATUS(eas_client_instances(c, NULL, 0, &len), EAS_STATUS_OK);
  CHECK(len == 0);
  eas_stats st;
  CHECK_STATUS(eas_client_stats(c, &st), EAS_STATUS_OK);
  CHECK(st.generation == 0 && st.refresh_failed >= 1 && st.last_ok_unix_ms == 0);
  eas_client_free(c); /* without close: free closes */
}

struct sub_state {
  int calls;
  int freed;
  size_t last_n;
  const eas_client *client;
  uint64_t id;
  int unsubscribe_inside;
};

static void on_change(void *user_data, const eas_instance *instances, size_t n) {
  struct sub_state *s = (struct sub_state *)user_data;
  (void)instances;
  STORE(s->last_n, n);
  ADD(s->calls, 1);
  if (s->unsubscribe_inside) {
    while (LOAD(s->id) == 0) usleep(100);
    eas_status st = eas_client_unsubscribe(s->client, LOAD(s->id));
    if (st != EAS_STATUS_OK) ADD(s->freed, 100); /* flags a failure */
  }
}

static void on_free(void *user_data) {
  struct sub_state *s = (struct sub_state *)user_data;
  ADD(s->freed, 1);
}

static void wait_calls(struct sub_state *s, int n) {
  for (int i = 0; i < 500 && LOAD(s->calls) < n; i++) usleep(2000);
}

static void test_subscribe(void) {
  eas_client *c = NULL;
  CHECK_STATUS(eas_client_new("static://10.0.0.1:1,10.0.0.2:2", NULL, &c, NULL), EAS_STATUS_OK);
  static struct sub_state a, b, d;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  memset(&d, 0, sizeof d);
  uint64_t id = 0;
  CHECK_STATUS(eas_client_subscribe(c, on_change, &a, on_free, &id), EAS_STATUS_OK);
  wait_calls(&a, 1);
  CHECK(LOAD(a.calls) == 1 && LOAD(a.last_n) == 2);
  CHECK_STATUS(eas_client_unsubscribe(c, id), EAS_STATUS_OK);
  CHECK(LOAD(a.freed) == 1);
  CHECK_STATUS(eas_client_unsubscribe(c, id), EAS_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(eas_client_unsubscribe(c, 987654), EAS_STATUS_INVALID_ARGUMENT);

  /* A callback that unsubscribes itself: freed once, after it returns. */
  b.client = c;
  b.unsubscribe_inside = 1;
  uint64_t b_id = 0;
  CHECK_STATUS(eas_client_subscribe(c, on_change, &b, on_free, &b_id), EAS_STATUS_OK);
  STORE(b.id, b_id); /* the callback may already be waiting for it */
  for (int i = 0; i < 500 && LOAD(b.freed) == 0; i++) usleep(2000);
  CHECK(LOAD(b.calls) == 1 && LOAD(b.freed) == 1);

  CHECK_STATUS(eas_client_subscribe(c, NULL, &d, on_free, &id), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_client_subscribe(c, on_change, &d, on_free, NULL), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_client_subscribe(NULL, on_change, &d, on_free, &id), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_client_unsubscribe(NULL, 1), EAS_STATUS_NULL_PARAMETER);

  /* Close ends the remaining subscription; a later subscribe is refused and owns nothing. */
  CHECK_STATUS(eas_client_subscribe(c, on_change, &d, on_free, &id), EAS_STATUS_OK);
  eas_client_close(c);
  CHECK(LOAD(d.freed) == 1);
  struct sub_state refused;
  memset(&refused, 0, sizeof refused);
  CHECK_STATUS(eas_client_subscribe(c, on_change, &refused, on_free, &id), EAS_STATUS_CLOSED);
  CHECK(LOAD(refused.freed) == 0);
  eas_client_free(c);
  CHECK(LOAD(d.freed) == 1);
  /* A subscription without a free function. */
  CHECK_STATUS(eas_client_new("static://10.0.0.1:1", NULL, &c, NULL), EAS_STATUS_OK);
  struct sub_state e;
  memset(&e, 0, sizeof e);
  CHECK_STATUS(eas_client_subscribe(c, on_change, &e, NULL, &id), EAS_STATUS_OK);
  wait_calls(&e, 1);
  CHECK(LOAD(e.calls) == 1);
  eas_client_free(c);
}

struct race {
  const eas_client *c;
  int closed_seen;
};

static void *picker(void *arg) {
  struct race *r = (struct race *)arg;
  eas_instance out;
  for (;;) {
    eas_status st = eas_select_instance(r->c, &out);
    if (st == EAS_STATUS_CLOSED) {
      ADD(r->closed_seen, 1);
      return NULL;
    }
    if (st != EAS_STATUS_OK) return (void *)1;
    eas_report_failure(r->c, out.id);
    eas_report_success(r->c, out.id);
  }
}

static void test_close_races_with_picks(void) {
  for (int round = 0; round < 10; round++) {
    eas_client *c = NULL;
    CHECK_STATUS(eas_client_new("static://10.0.0.1:1,10.0.0.2:2,10.0.0.3:3", NULL, &c, NULL),
                 EAS_STATUS_OK);
    struct race r;
    r.c = c;
    STORE(r.closed_seen, 0);
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, picker, &r);
    usleep(1000);
    eas_client_close(c);
    for (int i = 0; i < 3; i++) {
      void *ret = NULL;
      pthread_join(t[i], &ret);
      CHECK(ret == NULL);
    }
    CHECK(LOAD(r.closed_seen) == 3);
    eas_client_free(c);
  }
}

struct storm {
  const eas_client *c;
  uint64_t ids[8];
  int reports; /* per thread: EASDIRECT_STORM_REPORTS, 20000 by default (fewer under valgrind,
                  which runs one thread at a time) */
  int bad;
};

static void *report_storm(void *arg) {
  struct storm *st = (struct storm *)arg;
  eas_instance out;
  for (int i = 0; i < st->reports; i++) {
    uint64_t id = st->ids[i % 8];
    eas_status s1 = (i % 3) ? eas_report_failure(st->c, id) : eas_report_success(st->c, id);
    eas_status s2 = eas_select_instance(st->c, &out);
    if (s1 != EAS_STATUS_OK || s2 != EAS_STATUS_OK) ADD(st->bad, 1);
  }
  return NULL;
}

/* Many threads reporting failures at once: every call succeeds, and never more than the allowed
 * share of instances is ejected. */
static void test_report_failure_storm(void) {
  eas_client *c = NULL;
  CHECK_STATUS(eas_client_new("static://10.7.0.1:1,10.7.0.2:1,10.7.0.3:1,10.7.0.4:1,10.7.0.5:1,"
                              "10.7.0.6:1,10.7.0.7:1,10.7.0.8:1?ejection_base_ms=1",
                              NULL, &c, NULL),
               EAS_STATUS_OK);
  eas_instance all[8];
  size_t len = 0;
  CHECK_STATUS(eas_client_instances(c, all, 8, &len), EAS_STATUS_OK);
  static struct storm st;
  memset(&st, 0, sizeof st);
  st.c = c;
  st.reports = getenv("EASDIRECT_STORM_REPORTS") ? atoi(getenv("EASDIRECT_STORM_REPORTS")) : 20000;
  for (size_t i = 0; i < 8; i++) st.ids[i] = all[i].id;
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, report_storm, &st);
  int over = 0;
  for (int i = 0; i < 200; i++) {
    eas_stats stats;
    if (eas_client_stats(c, &stats) == EAS_STATUS_OK && stats.ejected > 4) over++;
    usleep(100);
  }
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  CHECK(LOAD(st.bad) == 0);
  CHECK(over == 0);
  eas_client_free(c);
}

struct source_state {
  int n;          /* instances to list: 10.9.0.1:80 .. 10.9.0.n:80 */
  int fail;       /* return this status instead (0: succeed) */
  int calls;
  int freed;
  int bad_add_refused;
};

static int32_t fetch_list(void *user_data, eas_source_builder *b) {
  struct source_state *s = (struct source_state *)user_data;
  ADD(s->calls, 1);
  if (LOAD(s->fail) != 0) {
    eas_source_builder_set_error(b, "registry unreachable");
    return LOAD(s->fail);
  }
  int n = LOAD(s->n);
  for (int i = 1; i <= n; i++) {
    char ip[32];
    snprintf(ip, sizeof ip, "10.9.0.%d", i);
    if (eas_source_builder_add(b, ip, 80, 100) != EAS_STATUS_OK) return 2;
  }
  if (eas_source_builder_add(b, "not-an-ip", 80, 100) == EAS_STATUS_INVALID_ARGUMENT &&
      eas_source_builder_add(b, "10.9.9.9", 0, 100) == EAS_STATUS_INVALID_ARGUMENT)
    STORE(s->bad_add_refused, 1);
  return EAS_STATUS_OK;
}

static void free_source(void *user_data) {
  struct source_state *s = (struct source_state *)user_data;
  ADD(s->freed, 1);
}

static size_t count_instances(const eas_client *c) {
  size_t len = 0;
  eas_client_instances(c, NULL, 0, &len);
  return len;
}

static void wait_until_count(const eas_client *c, size_t n) {
  for (int i = 0; i < 1000 && count_instances(c) != n; i++) usleep(2000);
}

static void test_callback_source(void) {
  static struct source_state s;
  memset(&s, 0, sizeof s);
  s.n = 2;
  eas_options *o = eas_options_new();
  CHECK_STATUS(eas_options_set(o, "refresh_interval_ms", "10", NULL), EAS_STATUS_OK);
  eas_client *c = NULL;
  CHECK_STATUS(eas_client_new_with_source(fetch_list, &s, free_source, o, &c, NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_client_wait_ready(c, 5000, NULL), EAS_STATUS_OK);
  CHECK(count_instances(c) == 2);
  CHECK(LOAD(s.bad_add_refused) == 1);
  STORE(s.n, 5);
  wait_until_count(c, 5);
  CHECK(count_instances(c) == 5);
  /* A failing fetch and an empty list keep the cache. */
  STORE(s.fail, 5);
  int calls = LOAD(s.calls);
  for (int i = 0; i < 500 && LOAD(s.calls) < calls + 3; i++) usleep(2000);
  CHECK(count_instances(c) == 5);
  eas_error *err = NULL;
  CHECK_STATUS(eas_client_last_error(c, &err), EAS_STATUS_DISCOVERY_FAILED);
  CHECK(err != NULL && strstr(eas_error_message(err), "status 5") != NULL);
  CHECK(err != NULL && strstr(eas_error_message(err), "registry unreachable") != NULL);
  eas_error_free(err);
  STORE(s.fail, 0);
  STORE(s.n, 0);
  calls = LOAD(s.calls);
  for (int i = 0; i < 500 && LOAD(s.calls) < calls + 3; i++) usleep(2000);
  CHECK(count_instances(c) == 5);
  eas_instance out;
  CHECK_STATUS(eas_select_instance(c, &out), EAS_STATUS_OK);
  CHECK(LOAD(s.freed) == 0);
  eas_client_free(c);
  CHECK(LOAD(s.freed) == 1);
  calls = LOAD(s.calls);
  usleep(50000);
  CHECK(LOAD(s.calls) == calls); /* never called after free */

  /* Refusals take no ownership. */
  static struct source_state r;
  memset(&r, 0, sizeof r);
  CHECK_STATUS(eas_client_new_with_source(NULL, &r, free_source, NULL, &c, NULL),
               EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_client_new_with_source(fetch_list, &r, free_source, NULL, NULL, NULL),
               EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_options_set(o, "tls_ca_file", "/etc/ca.pem", NULL), EAS_STATUS_OK);
  err = NULL;
  CHECK_STATUS(eas_client_new_with_source(fetch_list, &r, free_source, o, &c, &err),
               EAS_STATUS_INVALID_ARGUMENT);
  CHECK(err != NULL && strstr(eas_error_message(err), "tls_ca_file") != NULL);
  eas_error_free(err);
  CHECK(LOAD(r.freed) == 0 && LOAD(r.calls) == 0);
  CHECK_STATUS(eas_source_builder_add(NULL, "10.0.0.1", 80, 1), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_source_builder_set_error(NULL, "x"), EAS_STATUS_NULL_PARAMETER);
  eas_options_free(o);
}

struct server_list_state {
  int calls;
  int freed;
};

static int32_t list_servers(void *user_data, eas_server_list *list) {
  struct server_list_state *s = (struct server_list_state *)user_data;
  ADD(s->calls, 1);
  if (eas_server_list_add(list, "") != EAS_STATUS_INVALID_ARGUMENT) return 2;
  return eas_server_list_add(list, "127.0.0.1:1");
}

static void free_server_list(void *user_data) {
  struct server_list_state *s = (struct server_list_state *)user_data;
  ADD(s->freed, 1);
}

static void test_nacos_server_list_callback(void) {
  static struct server_list_state s;
  memset(&s, 0, sizeof s);
  eas_options *o = eas_options_new();
  CHECK_STATUS(eas_options_set_nacos_server_list(NULL, list_servers, &s, free_server_list),
               EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_options_set_nacos_server_list(o, NULL, &s, free_server_list),
               EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_options_set_nacos_server_list(o, list_servers, &s, free_server_list),
               EAS_STATUS_OK);
  CHECK_STATUS(eas_options_set(o, "refresh_interval_ms", "10", NULL), EAS_STATUS_OK);
  eas_client *c = NULL;
  eas_error *err = NULL;
  CHECK_STATUS(eas_client_new("static://10.0.0.1:80", o, &c, &err), EAS_STATUS_INVALID_ARGUMENT);
  CHECK(err != NULL && strstr(eas_error_message(err), "server-list") != NULL);
  eas_error_free(err);
  /* The target's server is never asked: the callback wins. */
  CHECK_STATUS(eas_client_new("nacos://127.0.0.2:1/svc", o, &c, NULL), EAS_STATUS_OK);
  eas_options_free(o);
  CHECK(LOAD(s.freed) == 0); /* the client still holds it */
  for (int i = 0; i < 500 && LOAD(s.calls) < 2; i++) usleep(2000);
  CHECK(LOAD(s.calls) >= 2);
  err = NULL;
  CHECK_STATUS(eas_client_last_error(c, &err), EAS_STATUS_DISCOVERY_FAILED);
  CHECK(err != NULL && strstr(eas_error_message(err), "127.0.0.1:1") != NULL);
  eas_error_free(err);
  eas_client_free(c);
  for (int i = 0; i < 500 && LOAD(s.freed) == 0; i++) usleep(2000);
  CHECK(LOAD(s.freed) == 1);
  CHECK_STATUS(eas_server_list_add(NULL, "h"), EAS_STATUS_NULL_PARAMETER);
}

/* The stats record of `id`, or NULL. */
static const eas_instance_stats *stats_of(const eas_instance_stats *all, size_t n, uint64_t id) {
  for (size_t i = 0; i < n; i++)
    if (all[i].id == id) return &all[i];
  return NULL;
}

static uint32_t total_in_flight(const eas_client *c) {
  eas_instance_stats all[8];
  size_t len = 0;
  uint32_t sum = 0;
  if (eas_client_instance_stats(c, all, 8, &len) != EAS_STATUS_OK) return 9999;
  for (size_t i = 0; i < len; i++) sum += all[i].in_flight;
  return sum;
}

static void test_calls(void) {
  eas_client *c = NULL;
  eas_options *o = eas_options_new();
  CHECK_STATUS(eas_options_set(o, "lb_policy", "least_request", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_options_set(o, "max_attempts", "2", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_options_set(o, "affinity_load_factor", "1.5", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_options_set(o, "ewma_decay_ms", "1000", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_options_set(o, "load_report_ttl_ms", "5000", NULL), EAS_STATUS_OK);
  eas_error *err = NULL;
  CHECK_STATUS(eas_options_set(o, "lb_policy", "fastest", &err), EAS_STATUS_INVALID_ARGUMENT);
  CHECK(err != NULL && strstr(eas_error_message(err), "lb_policy") != NULL);
  eas_error_free(err);
  err = NULL;
  CHECK_STATUS(eas_options_set(o, "affinity_load_factor", "0.5", &err), EAS_STATUS_INVALID_ARGUMENT);
  CHECK(err != NULL && strstr(eas_error_message(err), "affinity_load_factor") != NULL);
  eas_error_free(err);
  CHECK_STATUS(eas_client_new("static://10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080?failures_before_ejection=1000",
                              o, &c, NULL),
               EAS_STATUS_OK);
  eas_options_free(o);
  CHECK(strcmp(eas_client_service(c), "") == 0);
  CHECK(strcmp(eas_client_target(c), "static://10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080") == 0);
  CHECK(strcmp(eas_client_service(NULL), "") == 0);
  CHECK(strcmp(eas_client_target(NULL), "") == 0);
  int32_t transport = -1;
  CHECK_STATUS(eas_client_transport(c, &transport), EAS_STATUS_OK);
  CHECK(transport == EAS_TRANSPORT_POLL); /* only Nacos pushes */
  CHECK_STATUS(eas_client_transport(NULL, &transport), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_client_transport(c, NULL), EAS_STATUS_NULL_PARAMETER);

  /* Stats before any call: one per instance, all zero counts. */
  size_t len = 0;
  CHECK_STATUS(eas_client_instance_stats(c, NULL, 0, &len), EAS_STATUS_BUFFER_TOO_SMALL);
  CHECK(len == 3);
  eas_instance_stats st[8];
  memset(st, 0xAB, sizeof st);
  CHECK_STATUS(eas_client_instance_stats(c, st, 2, &len), EAS_STATUS_BUFFER_TOO_SMALL);
  CHECK(st[0].weight == 0xABABABABu); /* untouched */
  CHECK_STATUS(eas_client_instance_stats(c, st, 8, &len), EAS_STATUS_OK);
  CHECK(len == 3 && st[0].in_flight == 0 && st[0].attempts == 0 && st[0].weight == 100);
  CHECK_STATUS(eas_client_instance_stats(NULL, st, 8, &len), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_client_instance_stats(c, st, 8, NULL), EAS_STATUS_NULL_PARAMETER);

  /* Misuse. */
  eas_call *call = (eas_call *)0x1;
  CHECK_STATUS(eas_call_begin(NULL, NULL, 0, 0, &call), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_call_begin(c, NULL, 0, 0, NULL), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_call_begin(c, NULL, 3, 0, &call), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_call_begin(c, NULL, 0, 0x80, &call), EAS_STATUS_INVALID_ARGUMENT);
  CHECK(call == (eas_call *)0x1); /* untouched */
  eas_instance inst;
  uint32_t retry = 7;
  CHECK_STATUS(eas_call_next(NULL, &inst), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_call_record(NULL, EAS_OUTCOME_RESPONSE, 200, NULL, NULL, 0, &retry),
               EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_call_finish(NULL, EAS_BODY_DONE), EAS_STATUS_NULL_PARAMETER);
  eas_call_free(NULL);

  /* One attempt, answered with a load report: in flight until its body is over. */
  CHECK_STATUS(eas_call_begin(c, NULL, 0, 0, &call), EAS_STATUS_OK);
  CHECK_STATUS(eas_call_record(call, EAS_OUTCOME_RESPONSE, 200, NULL, NULL, 0, &retry),
               EAS_STATUS_INVALID_ARGUMENT); /* no attempt open */
  CHECK_STATUS(eas_call_next(call, NULL), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_call_next(call, &inst), EAS_STATUS_OK);
  CHECK(inst.id != 0 && inst.weight == 100);
  CHECK(total_in_flight(c) == 1);
  CHECK_STATUS(eas_call_record(call, 7, 200, NULL, NULL, 0, &retry), EAS_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(eas_call_record(call, EAS_OUTCOME_RESPONSE, 99, NULL, NULL, 0, &retry),
               EAS_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(eas_call_record(call, EAS_OUTCOME_RESPONSE, 600, NULL, NULL, 0, &retry),
               EAS_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(eas_call_record(call, EAS_OUTCOME_RESPONSE, 200, NULL, NULL, 1, &retry),
               EAS_STATUS_NULL_PARAMETER);
  CHECK(retry == 7); /* written only on OK */
  const char *names[] = {"Endpoint-Load-Metrics", "X-Other", NULL};
  const char *values[] = {
      "TEXT named_metrics.kv_cache_usage_perc=0.25, named_metrics.num_requests_waiting=3.0, "
      "named_metrics.num_requests_running=2.0",
      "ignored", "skipped"};
  CHECK_STATUS(eas_call_record(call, EAS_OUTCOME_RESPONSE, 200, names, values, 3, &retry),
               EAS_STATUS_OK);
  CHECK(retry == 0);
  CHECK(total_in_flight(c) == 1);
  CHECK_STATUS(eas_call_finish(call, 5), EAS_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(eas_call_finish(call, EAS_BODY_DONE), EAS_STATUS_OK);
  CHECK_STATUS(eas_call_finish(call, EAS_BODY_DONE), EAS_STATUS_OK); /* nothing left: no-op */
  CHECK(total_in_flight(c) == 0);
  CHECK_STATUS(eas_call_next(call, &inst), EAS_STATUS_NO_INSTANCE); /* a success ends it */
  eas_call_free(call);
  CHECK_STATUS(eas_client_instance_stats(c, st, 8, &len), EAS_STATUS_OK);
  const eas_instance_stats *s = stats_of(st, len, inst.id);
  CHECK(s != NULL && s->attempts == 1 && s->reported_waiting == 3 && s->reported_running == 2 &&
        s->reported_kv_permille == 250 && s->report_unix_ms > 0 && s->latency_ewma_us > 0 &&
        s->failures == 0 && s->ejected_until_unix_ms == 0);

  /* Retries: never the same instance twice, max_attempts 2 caps them. */
  CHECK_STATUS(eas_call_begin(c, NULL, 0, 0, &call), EAS_STATUS_OK);
  eas_instance first, second;
  CHECK_STATUS(eas_call_next(call, &first), EAS_STATUS_OK);
  CHECK_STATUS(eas_call_record(call, EAS_OUTCOME_CONNECT_FAILED, 0, NULL, NULL, 0, &retry),
               EAS_STATUS_OK);
  CHECK(retry == 1);
  CHECK_STATUS(eas_call_next(call, &second), EAS_STATUS_OK);
  CHECK(second.id != first.id);
  CHECK_STATUS(eas_call_record(call, EAS_OUTCOME_RESPONSE, 502, NULL, NULL, 0, &retry),
               EAS_STATUS_OK);
  CHECK(retry == 0); /* budget spent */
  CHECK_STATUS(eas_call_next(call, &inst), EAS_STATUS_NO_INSTANCE);
  CHECK(total_in_flight(c) == 0); /* next ended the recorded attempt's body */
  eas_call_free(call);

  /* Not idempotent: a 5xx is not retried, a refused connection is. */
  CHECK_STATUS(eas_call_begin(c, (const uint8_t *)"k", 0, EAS_CALL_NOT_IDEMPOTENT, &call),
               EAS_STATUS_OK);
  CHECK_STATUS(eas_call_next(call, &inst), EAS_STATUS_OK);
  CHECK_STATUS(eas_call_record(call, EAS_OUTCOME_RESET, 0, NULL, NULL, 0, &retry), EAS_STATUS_OK);
  CHECK(retry == 0);
  eas_call_free(call);

  /* A 429 with Retry-After keeps its instance out of plain picks too; not a failure. */
  CHECK_STATUS(eas_call_begin(c, NULL, 0, 0, &call), EAS_STATUS_OK);
  CHECK_STATUS(eas_call_next(call, &first), EAS_STATUS_OK);
  const char *ra_name[] = {"retry-after"};
  const char *ra_value[] = {"30"};
  CHECK_STATUS(eas_call_record(call, EAS_OUTCOME_RESPONSE, 429, ra_name, ra_value, 1, NULL),
               EAS_STATUS_OK);
  eas_call_free(call); /* ends the recorded attempt */
  for (int i = 0; i < 50; i++) {
    CHECK_STATUS(eas_select_instance(c, &inst), EAS_STATUS_OK);
    CHECK(inst.id != first.id);
  }
  CHECK_STATUS(eas_client_instance_stats(c, st, 8, &len), EAS_STATUS_OK);
  s = stats_of(st, len, first.id);
  CHECK(s != NULL && s->ejected_until_unix_ms > 0);

  /* A keyed call: the same key picks the same instance (nothing in flight in between). */
  const uint8_t key[] = {'s', 'e', 's', 's', '-', '1'};
  uint64_t keyed = 0;
  for (int i = 0; i < 5; i++) {
    CHECK_STATUS(eas_call_begin(c, key, sizeof key, 0, &call), EAS_STATUS_OK);
    CHECK_STATUS(eas_call_next(call, &inst), EAS_STATUS_OK);
    if (i == 0) keyed = inst.id;
    CHECK(inst.id == keyed);
    eas_call_free(call); /* an open attempt ends as cancelled */
  }
  CHECK(total_in_flight(c) == 0);

  /* Closed: next is CLOSED; record, finish and free still work. */
  eas_call *open = NULL, *recorded = NULL;
  CHECK_STATUS(eas_call_begin(c, NULL, 0, 0, &open), EAS_STATUS_OK);
  CHECK_STATUS(eas_call_next(open, &inst), EAS_STATUS_OK);
  CHECK_STATUS(eas_call_begin(c, NULL, 0, 0, &recorded), EAS_STATUS_OK);
  CHECK_STATUS(eas_call_next(recorded, &inst), EAS_STATUS_OK);
  CHECK_STATUS(eas_call_record(recorded, EAS_OUTCOME_RESPONSE, 200, NULL, NULL, 0, NULL),
               EAS_STATUS_OK);
  eas_client_close(c);
  retry = 7;
  CHECK_STATUS(eas_call_record(open, EAS_OUTCOME_CONNECT_FAILED, 0, NULL, NULL, 0, &retry),
               EAS_STATUS_OK);
  CHECK(retry == 0);
  CHECK_STATUS(eas_call_next(open, &inst), EAS_STATUS_CLOSED);
  CHECK_STATUS(eas_call_finish(recorded, EAS_BODY_BROKEN), EAS_STATUS_OK);
  CHECK_STATUS(eas_call_begin(c, NULL, 0, 0, &call), EAS_STATUS_CLOSED);
  CHECK_STATUS(eas_client_instance_stats(c, st, 8, &len), EAS_STATUS_CLOSED);
  CHECK_STATUS(eas_client_transport(c, &transport), EAS_STATUS_CLOSED);
  CHECK(strcmp(eas_client_service(c), "") == 0); /* still valid until free */
  eas_call_free(open);
  eas_call_free(recorded);
  eas_client_free(c);

  /* The service a target names. */
  CHECK_STATUS(eas_client_new("eas://127.0.0.1:1/my_service?request_timeout_ms=50", NULL, &c, NULL),
               EAS_STATUS_OK);
  CHECK(strcmp(eas_client_service(c), "my_service") == 0);
  CHECK(strcmp(eas_client_target(c), "eas://127.0.0.1:1/my_service") == 0);
  eas_client_free(c);
}

struct log_state {
  int lines;
  int warnings;
  int freed;
  int bad;
};

static void on_log(void *user_data, int32_t level, const char *message) {
  struct log_state *s = (struct log_state *)user_data;
  if (level < 1 || level > 4 || message == NULL || strchr(message, '\n') != NULL) ADD(s->bad, 1);
  if (level == 2 && strstr(message, "discovery failed") != NULL &&
      strstr(message, "127.0.0.1:1") != NULL)
    ADD(s->warnings, 1);
  ADD(s->lines, 1);
}

static void on_log_free(void *user_data) {
  struct log_state *s = (struct log_state *)user_data;
  ADD(s->freed, 1);
}

/* Collects log lines (copies) for the checks below. */
struct log_lines {
  pthread_mutex_t lock;
  char lines[64][512];
  int n;
  int total;
};

static void collect_log(void *user_data, int32_t level, const char *message) {
  struct log_lines *l = (struct log_lines *)user_data;
  (void)level;
  pthread_mutex_lock(&l->lock);
  if (l->n < 64) snprintf(l->lines[l->n++], sizeof l->lines[0], "%s", message);
  l->total++;
  pthread_mutex_unlock(&l->lock);
}

static int lines_with(struct log_lines *l, const char *needle) {
  int found = 0;
  pthread_mutex_lock(&l->lock);
  for (int i = 0; i < l->n; i++)
    if (strstr(l->lines[i], needle) != NULL) found++;
  pthread_mutex_unlock(&l->lock);
  return found;
}

/* A source whose list changes at every fetch: a list line each time. */
static int32_t flipping_list(void *user_data, eas_source_builder *b) {
  int *calls = (int *)user_data;
  int k = ADD(*calls, 1);
  eas_source_builder_add(b, (k & 1) ? "10.0.0.1" : "10.0.0.2", 80, 1);
  return EAS_STATUS_OK;
}

static void test_log_events_rate_and_secrets(void) {
  static struct log_lines l;
  memset(&l, 0, sizeof l);
  pthread_mutex_init(&l.lock, NULL);
  /* An ejection names the instance. */
  eas_options *o = eas_options_new();
  CHECK_STATUS(eas_options_set_log(o, collect_log, &l, NULL, 4), EAS_STATUS_OK);
  eas_client *c = NULL;
  CHECK_STATUS(eas_client_new("static://10.0.0.1:80,10.0.0.2:80,10.0.0.3:80", o, &c, NULL),
               EAS_STATUS_OK);
  eas_instance inst;
  CHECK_STATUS(eas_select_instance(c, &inst), EAS_STATUS_OK);
  CHECK_STATUS(eas_report_failure(c, inst.id), EAS_STATUS_OK);
  char want[96];
  snprintf(want, sizeof want, "instance %s ejected for", inst.host);
  for (int i = 0; i < 1000 && lines_with(&l, want) == 0; i++) usleep(2000);
  CHECK(lines_with(&l, want) == 1);
  eas_client_free(c);

  /* At most 10 lines a second: a list that changes every 10 ms. */
  memset(l.lines, 0, sizeof l.lines);
  l.n = 0;
  l.total = 0;
  static int calls = 0;
  CHECK_STATUS(eas_options_set(o, "refresh_interval_ms", "10", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_client_new_with_source(flipping_list, &calls, NULL, o, &c, NULL),
               EAS_STATUS_OK);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < 2000 && LOAD(calls) < 40; i++) usleep(2000);
  size_t len = 0;
  char text[16384];
  CHECK_STATUS(eas_client_metrics_text(c, text, sizeof text, &len), EAS_STATUS_OK);
  CHECK(strstr(text, "easdirect_log_lines_dropped_total{target=\"source callback\"} 0\n") == NULL);
  eas_client_close(c);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  int changes = LOAD(calls);
  pthread_mutex_lock(&l.lock);
  int total = l.total;
  pthread_mutex_unlock(&l.lock);
  CHECK(changes >= 40);
  CHECK(total < changes); /* lines were dropped */
  CHECK(total <= 10 * ((int)(t1.tv_sec - t0.tv_sec) + 2)); /* at most 10 in any second */
  eas_client_free(c);

  /* No secret of the options reaches a line. */
  memset(l.lines, 0, sizeof l.lines);
  l.n = 0;
  CHECK_STATUS(eas_options_set(o, "nacos_transport", "http", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_options_set(o, "username", "nacos-user", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_options_set(o, "password", "pw-c-secret-9", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_options_set(o, "access_key", "ak-c", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_options_set(o, "secret_key", "sk-c-secret-7", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_client_new("nacos://127.0.0.1:1/svc", o, &c, NULL), EAS_STATUS_OK);
  for (int i = 0; i < 1000 && lines_with(&l, "discovery failed") == 0; i++) usleep(2000);
  CHECK(lines_with(&l, "discovery failed") == 1);
  CHECK(lines_with(&l, "pw-c-secret-9") == 0 && lines_with(&l, "sk-c-secret-7") == 0);
  CHECK_STATUS(eas_client_metrics_text(c, text, sizeof text, &len), EAS_STATUS_OK);
  CHECK(strstr(text, "pw-c-secret-9") == NULL && strstr(text, "sk-c-secret-7") == NULL);
  eas_client_free(c);
  eas_options_free(o);
  pthread_mutex_destroy(&l.lock);
}

static void test_log_and_metrics(void) {
  static struct log_state s;
  memset(&s, 0, sizeof s);
  eas_options *o = eas_options_new();
  CHECK_STATUS(eas_options_set_log(NULL, on_log, &s, on_log_free, 3), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_options_set_log(o, on_log, &s, on_log_free, 5), EAS_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(eas_options_set_log(o, on_log, &s, on_log_free, -1), EAS_STATUS_INVALID_ARGUMENT);
  CHECK(LOAD(s.freed) == 0); /* refused: no ownership taken */
  CHECK_STATUS(eas_options_set_log(o, on_log, &s, on_log_free, 3), EAS_STATUS_OK);
  CHECK_STATUS(eas_options_set(o, "refresh_interval_ms", "10", NULL), EAS_STATUS_OK);
  CHECK_STATUS(eas_options_set(o, "request_timeout_ms", "200", NULL), EAS_STATUS_OK);
  eas_client *c = NULL;
  CHECK_STATUS(eas_client_new("eas://127.0.0.1:1/svc", o, &c, NULL), EAS_STATUS_OK);
  eas_options_free(o);
  CHECK(LOAD(s.freed) == 0); /* the client still holds it */
  for (int i = 0; i < 1000 && LOAD(s.warnings) == 0; i++) usleep(2000);
  eas_stats st;
  for (int i = 0; i < 1000; i++) {
    CHECK_STATUS(eas_client_stats(c, &st), EAS_STATUS_OK);
    if (st.refresh_failed >= 5) break;
    usleep(2000);
  }
  usleep(50000);
  CHECK(LOAD(s.warnings) == 1); /* one per streak, however many fetches failed */
  CHECK(LOAD(s.bad) == 0);

  size_t len = 0;
  CHECK_STATUS(eas_client_metrics_text(NULL, NULL, 0, &len), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_client_metrics_text(c, NULL, 0, NULL), EAS_STATUS_NULL_PARAMETER);
  CHECK_STATUS(eas_client_metrics_text(c, NULL, 0, &len), EAS_STATUS_BUFFER_TOO_SMALL);
  CHECK(len > 100);
  size_t cap = len + 256;
  char *buf = (char *)malloc(cap);
  size_t small = 0;
  CHECK_STATUS(eas_client_metrics_text(c, buf, 10, &small), EAS_STATUS_BUFFER_TOO_SMALL);
  CHECK_STATUS(eas_client_metrics_text(c, buf, cap, &len), EAS_STATUS_OK);
  CHECK(strlen(buf) == len);
  CHECK(strstr(buf, "# TYPE easdirect_discovery_fetches_total counter\n") != NULL);
  CHECK(strstr(buf, "easdirect_instances{target=\"eas://127.0.0.1:1/svc\"} 0\n") != NULL);
  free(buf);

  eas_client_close(c);
  int after_close = LOAD(s.lines);
  usleep(50000);
  CHECK(LOAD(s.lines) == after_close); /* nothing delivered after close returned */
  CHECK_STATUS(eas_client_metrics_text(c, NULL, 0, &len), EAS_STATUS_CLOSED);
  eas_client_free(c);
  for (int i = 0; i < 500 && LOAD(s.freed) == 0; i++) usleep(2000);
  CHECK(LOAD(s.freed) == 1);

  /* NULL function: no logging, no ownership. */
  o = eas_options_new();
  CHECK_STATUS(eas_options_set_log(o, NULL, &s, on_log_free, 3), EAS_STATUS_OK);
  eas_options_free(o);
  CHECK(LOAD(s.freed) == 1);
}

int main(void) {
  test_version_and_status_strings();
  test_options();
  test_client_new_errors();
  test_static_select_and_instances();
  test_unreachable_upstream();
  test_subscribe();
  test_close_races_with_picks();
  test_callback_source();
  test_report_failure_storm();
  test_nacos_server_list_callback();
  test_calls();
  test_log_and_metrics();
  test_log_events_rate_and_secrets();
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
