"""The cffi (API mode) description of libeasdirect's C ABI, compiled into ``easdirect._native``.

Used at build time only (see ``setup.py``). The declarations mirror ``include/easdirect.h``;
the generated C file includes that header, so a signature that drifted from it fails to
compile instead of misbehaving.

cffi releases the GIL around every call, which is what the blocking calls need (wait_ready,
close, free, unsubscribe) and what lets a subscription callback take the GIL while such a call
waits for it. The pick path is not here: see ``_fastpick.c``. A source callback adds its whole
list with one call (``easpy_add_all``), not one call (and one GIL release) per instance: a busy
Python thread could hold each reacquisition up for a switch interval.
"""

from __future__ import annotations

import cffi

CDEF = r"""
#define EAS_ABI_MAJOR ...
#define EAS_ABI_MINOR ...

typedef enum eas_status {
  EAS_STATUS_OK = 0,
  EAS_STATUS_NULL_PARAMETER = 1,
  EAS_STATUS_INVALID_ARGUMENT = 2,
  EAS_STATUS_NO_INSTANCE = 3,
  EAS_STATUS_TIMEOUT = 4,
  EAS_STATUS_DISCOVERY_FAILED = 5,
  EAS_STATUS_BUFFER_TOO_SMALL = 6,
  EAS_STATUS_UNKNOWN_INSTANCE = 7,
  EAS_STATUS_CLOSED = 8,
  EAS_STATUS_PANIC = 99,
  ...
} eas_status;

typedef struct eas_client eas_client;
typedef struct eas_error eas_error;
typedef struct eas_options eas_options;

typedef struct eas_instance {
  uint64_t id;
  char ip[46];
  uint16_t port;
  uint32_t weight;
  char host[64];
  uint8_t reserved[4];
} eas_instance;

typedef struct eas_stats {
  uint64_t generation;
  uint64_t refresh_ok;
  uint64_t refresh_failed;
  uint64_t last_ok_unix_ms;
  uint32_t instances;
  uint32_t ejected;
} eas_stats;

typedef void (*eas_change_fn)(void *user_data, const struct eas_instance *instances, size_t n);
typedef void (*eas_free_fn)(void *user_data);
typedef struct ListBuilder eas_source_builder;
typedef int32_t (*eas_source_fetch_fn)(void *user_data, eas_source_builder *builder);

const char *eas_version(void);
uint32_t eas_abi_version(void);
eas_status eas_client_new(const char *target, const eas_options *opts, eas_client **out,
                          eas_error **err);
eas_status eas_client_wait_ready(const eas_client *c, uint32_t timeout_ms, eas_error **err);
eas_status eas_select_instance(const eas_client *c, eas_instance *out);
eas_status eas_select_instance_excluding(const eas_client *c, const uint64_t *exclude,
                                         size_t n_exclude, eas_instance *out);
eas_status eas_report_failure(const eas_client *c, uint64_t id);
eas_status eas_report_success(const eas_client *c, uint64_t id);
eas_status eas_client_instances(const eas_client *c, eas_instance *buf, size_t cap, size_t *len);
eas_status eas_client_last_error(const eas_client *c, eas_error **err);
eas_status eas_client_stats(const eas_client *c, eas_stats *out);
eas_status eas_client_subscribe(const eas_client *c, eas_change_fn callback, void *user_data,
                                eas_free_fn free_user_data, uint64_t *out_subscription);
eas_status eas_client_unsubscribe(const eas_client *c, uint64_t subscription);
void eas_client_close(const eas_client *c);
void eas_client_free(eas_client *c);
eas_status eas_error_code(const eas_error *e);
const char *eas_error_message(const eas_error *e);
void eas_error_free(eas_error *e);
eas_options *eas_options_new(void);
eas_status eas_options_set(eas_options *o, const char *key, const char *value, eas_error **err);
void eas_options_free(eas_options *o);
const char *eas_status_str(int32_t status);
eas_status eas_source_builder_add(eas_source_builder *builder, const char *ip, uint16_t port,
                                  uint32_t weight);
eas_status eas_client_new_with_source(eas_source_fetch_fn fetch, void *user_data,
                                      eas_free_fn free_user_data, const eas_options *opts,
                                      eas_client **out, eas_error **err);

/* Adds n instances (ips: n NUL-terminated strings back to back); refused[k] is set to 1 for each
 * one the library refused. Returns the number added. (SOURCE below.) */
size_t easpy_add_all(eas_source_builder *builder, const char *ips, const uint16_t *ports,
                     const uint32_t *weights, size_t n, uint8_t *refused);

/* Callbacks implemented in Python (easdirect._client): subscriptions, and a source's fetch.
 * easpy_on_free ends either kind. */
extern "Python" void easpy_on_change(void *user_data, const eas_instance *instances, size_t n);
extern "Python" void easpy_on_free(void *user_data);
extern "Python" int32_t easpy_fetch(void *user_data, eas_source_builder *builder);
"""

SOURCE = r"""
#include <string.h>
#include "easdirect.h"

static size_t easpy_add_all(eas_source_builder *builder, const char *ips, const uint16_t *ports,
                            const uint32_t *weights, size_t n, uint8_t *refused) {
  size_t added = 0;
  for (size_t k = 0; k < n; k++) {
    enum eas_status st = eas_source_builder_add(builder, ips, ports[k], weights[k]);
    refused[k] = st != EAS_STATUS_OK;
    added += st == EAS_STATUS_OK;
    ips += strlen(ips) + 1;
  }
  return added;
}
"""


def make_ffi(include_dirs: list[str], library_dirs: list[str]) -> cffi.FFI:
    """The FFI builder for ``easdirect._native``, linked against libeasdirect in
    ``library_dirs`` and found at run time next to the extension (rpath ``$ORIGIN``)."""
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        "easdirect._native",
        SOURCE,
        include_dirs=include_dirs,
        library_dirs=library_dirs,
        libraries=["easdirect"],
        extra_link_args=["-Wl,-rpath,$ORIGIN"],
        extra_compile_args=["-O2"],
    )
    return ffi
