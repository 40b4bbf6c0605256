/* pick: the C API by hand. It discovers a service, picks instances, reports the outcome of each
 * (made-up) call, watches the list, and prints what the client saw.
 *
 *   cc -std=c99 -I include examples/c/pick.c target/release/libeasdirect.a -lpthread -ldl -lm -o pick
 *   ./pick eas://127.0.0.1:8080/my_service 10
 *   ./pick 'static://10.0.0.1:8000*3,10.0.0.2:8000*1' 8
 */
#include <stdio.h>
#include <stdlib.h>

#include "easdirect.h"

/* Runs on a library thread each time the list changes (and once soon after subscribing). */
static void on_change(void *user_data, const eas_instance *instances, size_t n) {
  (void)user_data;
  (void)instances;
  fprintf(stderr, "the list has %zu instances\n", n);
}

static int fail(const char *what, eas_error *err) {
  /* The message names the bad part of a target or option, or the last discovery error. */
  fprintf(stderr, "%s: %s\n", what, eas_error_message(err));
  eas_error_free(err);
  return 1;
}

int main(int argc, char **argv) {
  const char *target = argc > 1 ? argv[1] : "static://10.0.0.1:50000*3,10.0.0.2:50000*1";
  int picks = argc > 2 ? atoi(argv[2]) : 8;

  eas_options *opts = eas_options_new();
  eas_error *err = NULL;
  if (eas_options_set(opts, "request_timeout_ms", "1000", &err) != EAS_STATUS_OK) {
    eas_options_free(opts);
    return fail("option", err);
  }
  eas_client *client = NULL;
  eas_status st = eas_client_new(target, opts, &client, &err);
  eas_options_free(opts); /* the client keeps a copy */
  if (st != EAS_STATUS_OK) {
    return fail("target", err);
  }
  if (eas_client_wait_ready(client, 5000, &err) != EAS_STATUS_OK) {
    eas_client_free(client);
    return fail("not ready", err);
  }

  uint64_t subscription = 0;
  if (eas_client_subscribe(client, on_change, NULL, NULL, &subscription) != EAS_STATUS_OK) {
    fprintf(stderr, "subscribe refused\n");
  }

  for (int i = 0; i < picks; i++) {
    eas_instance inst;
    st = eas_select_instance(client, &inst);
    if (st != EAS_STATUS_OK) {
      fprintf(stderr, "select: %s\n", eas_status_str(st));
      break;
    }
    printf("pick %d: %s (id %016llx, weight %u)\n", i, inst.host, (unsigned long long)inst.id,
           (unsigned)inst.weight);
    /* Call the instance here; then say how it went: */
    eas_report_success(client, inst.id); /* or eas_report_failure(client, inst.id) */
  }

  eas_stats stats;
  if (eas_client_stats(client, &stats) == EAS_STATUS_OK) {
    printf("stats: %u instances, %u ejected, list generation %llu\n", (unsigned)stats.instances,
           (unsigned)stats.ejected, (unsigned long long)stats.generation);
  }
  eas_client_unsubscribe(client, subscription);
  eas_client_close(client); /* stops discovery; safe to race with other calls */
  eas_client_free(client);  /* once no other thread can use it */
  return 0;
}
