/* source: a client whose instances come from your own function, here a file of lines
 * "ip:port[*weight]" read at each refresh (what a sidecar or a config system might write).
 * Everything else (the last list kept when a fetch fails, selection, ejection) is the library's.
 *
 *   cc -std=c99 -I include examples/c/source.c target/release/libeasdirect.a -lpthread -ldl -lm -o source
 *   printf '10.0.0.1:8000*3\n10.0.0.2:8000*1\n' > /tmp/instances
 *   ./source /tmp/instances 8
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "easdirect.h"

struct file_source {
  char *path;
};

/* Called on a library thread at each refresh, never twice at once. Any status but
 * EAS_STATUS_OK is a failed fetch: the last list is kept. */
static int32_t fetch(void *user_data, eas_source_builder *b) {
  struct file_source *src = user_data;
  FILE *f = fopen(src->path, "r");
  if (f == NULL) {
    eas_source_builder_set_error(b, "cannot open the instance file");
    return EAS_STATUS_DISCOVERY_FAILED;
  }
  char line[256];
  while (fgets(line, sizeof line, f) != NULL) {
    char *colon = strrchr(line, ':');
    if (colon == NULL) {
      continue;
    }
    *colon = '\0';
    char *rest = colon + 1;
    unsigned long port = strtoul(rest, &rest, 10);
    unsigned long weight = *rest == '*' ? strtoul(rest + 1, NULL, 10) : 100;
    /* A malformed instance (not an IP address, port 0) is refused; the others are kept. */
    if (port > 65535 || eas_source_builder_add(b, line, (uint16_t)port, (uint32_t)weight) !=
                            EAS_STATUS_OK) {
      fprintf(stderr, "skipped: %s:%lu\n", line, port);
    }
  }
  fclose(f);
  return EAS_STATUS_OK;
}

/* Runs once, when the client is closed, after a fetch in progress returns. */
static void free_source(void *user_data) {
  struct file_source *src = user_data;
  free(src->path);
  free(src);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE [PICKS]\n", argv[0]);
    return 2;
  }
  int picks = argc > 2 ? atoi(argv[2]) : 8;
  struct file_source *src = malloc(sizeof *src);
  if (src == NULL || (src->path = malloc(strlen(argv[1]) + 1)) == NULL) {
    free(src);
    return 1;
  }
  strcpy(src->path, argv[1]);

  eas_options *opts = eas_options_new();
  eas_options_set(opts, "refresh_interval_ms", "1000", NULL);
  eas_client *client = NULL;
  eas_error *err = NULL;
  eas_status st = eas_client_new_with_source(fetch, src, free_source, opts, &client, &err);
  eas_options_free(opts);
  if (st != EAS_STATUS_OK) {
    /* Refused: the library took no ownership of src. */
    fprintf(stderr, "%s\n", eas_error_message(err));
    eas_error_free(err);
    free_source(src);
    return 1;
  }
  if (eas_client_wait_ready(client, 5000, &err) != EAS_STATUS_OK) {
    fprintf(stderr, "not ready: %s\n", eas_error_message(err));
    eas_error_free(err);
    eas_client_free(client);
    return 1;
  }
  for (int i = 0; i < picks; i++) {
    eas_instance inst;
    if (eas_select_instance(client, &inst) == EAS_STATUS_OK) {
      printf("pick %d: %s\n", i, inst.host);
    }
  }
  eas_client_free(client); /* closes, then runs free_source */
  return 0;
}
