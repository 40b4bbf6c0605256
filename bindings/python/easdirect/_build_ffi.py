"""The cffi (API mode) description of libeasdirect's C ABI, compiled into ``easdirect._native``.

Used at build time only (see ``setup.py``). The declarations are read from ``easdirect.h``
itself (its comments and preprocessor lines taken out), so they cannot drift from the header;
the generated C file also includes that header.

cffi releases the GIL around every call, which is what the blocking calls need (wait_ready,
close, free, unsubscribe) and what lets a subscription callback take the GIL while such a call
waits for it. The pick path is not here: see ``_fastpick.c``. A source callback adds its whole
list with one call (``easpy_add_all``), not one call (and one GIL release) per instance: a busy
Python thread could hold each reacquisition up for a switch interval. A call's record takes its
headers as one buffer (``easpy_call_record``), and a call lives with its outputs in one
``easpy_call`` allocation.
"""

from __future__ import annotations

import re
from pathlib import Path

import cffi

# What the binding adds to the header's declarations.
EXTRA_CDEF = r"""
/* Adds n instances (ips: n NUL-terminated strings back to back); refused[k] is set to 1 for each
 * one the library refused. Returns the number added. (SOURCE below.) */
size_t easpy_add_all(eas_source_builder *builder, const char *ips, const uint16_t *ports,
                     const uint32_t *weights, size_t n, uint8_t *refused);

/* A call and its outputs in one allocation (one ffi.new per easdirect.Call, not three): the
 * easpy_call_* functions wrap the eas_call_* ones on it. */
typedef struct easpy_call {
  eas_call *call;     /* NULL before begin and after free */
  uint32_t retry;     /* eas_call_record's *retry */
  eas_instance inst;  /* eas_call_next's *out */
} easpy_call;
enum eas_status easpy_call_begin(const eas_client *c, const uint8_t *key, size_t key_len,
                                 uint32_t flags, easpy_call *s);
enum eas_status easpy_call_next(easpy_call *s);
/* eas_call_record with its n headers as 2n NUL-terminated strings back to back (name, value,
 * name, value...): one bytes object from Python instead of 2n cdata strings and two arrays. At
 * most EASPY_MAX_HEADERS are passed (the binding passes only the two the core reads). */
#define EASPY_MAX_HEADERS 16
enum eas_status easpy_call_record(easpy_call *s, int32_t outcome, uint32_t http_status,
                                  const char *headers, size_t n);
enum eas_status easpy_call_finish(easpy_call *s, int32_t body);
/* Frees s->call and sets it to NULL: a second free is a no-op. */
void easpy_call_free(easpy_call *s);

/* Callbacks implemented in Python (easdirect._client): subscriptions, a source's fetch, and
 * the log function (easdirect._log_sink). easpy_on_free ends any of them. */
extern "Python" void easpy_on_change(void *user_data, const eas_instance *instances, size_t n);
extern "Python" void easpy_on_free(void *user_data);
extern "Python" int32_t easpy_fetch(void *user_data, eas_source_builder *builder);
extern "Python" void easpy_on_log(void *user_data, int32_t level, const char *message);

/* The log function and its free_user_data as given to eas_options_set_log: easpy_on_log and
 * easpy_on_free, unless the interpreter is exiting. free_user_data may run on the library's
 * log thread (when a line of a freed client was still queued there), and a thread that takes
 * the GIL while the interpreter finalizes is ended with pthread_exit: inside the library, an
 * abort. So from easpy_log_stop on (the exit hook) neither enters Python; the hook waits for
 * the calls that entered before (easpy_log_running) with the GIL released. */
void easpy_log_line(void *user_data, int32_t level, const char *message);
void easpy_log_free(void *user_data);
/* Stops the two; returns the number of their calls running (which did not see the stop). */
int easpy_log_stop(void);
int easpy_log_running(void);
/* In a forked child: no call of the parent's threads is running there. */
void easpy_log_after_fork(void);
"""


def header_cdef(header: str) -> str:
    """The declarations of ``easdirect.h`` as cffi's ``cdef`` takes them: comments, includes,
    guards and the C++ ``extern "C"`` wrapper dropped; integer ``#define``s kept."""
    text = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            define = re.fullmatch(r"#define\s+(EAS_\w+)\s+(\d+)", stripped)
            if define:
                lines.append(f"#define {define.group(1)} {define.group(2)}")
        elif stripped not in ('extern "C" {', "}"):
            lines.append(line)
    return "\n".join(lines)


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

typedef struct easpy_call {
  eas_call *call;
  uint32_t retry;
  eas_instance inst;
} easpy_call;

static enum eas_status easpy_call_begin(const eas_client *c, const uint8_t *key, size_t key_len,
                                        uint32_t flags, easpy_call *s) {
  return eas_call_begin(c, key, key_len, flags, &s->call);
}

static enum eas_status easpy_call_next(easpy_call *s) { return eas_call_next(s->call, &s->inst); }

#define EASPY_MAX_HEADERS 16

static enum eas_status easpy_call_record(easpy_call *s, int32_t outcome, uint32_t http_status,
                                         const char *headers, size_t n) {
  const char *names[EASPY_MAX_HEADERS];
  const char *values[EASPY_MAX_HEADERS];
  if (n > EASPY_MAX_HEADERS) n = EASPY_MAX_HEADERS;
  for (size_t k = 0; k < n; k++) {
    names[k] = headers;
    headers += strlen(headers) + 1;
    values[k] = headers;
    headers += strlen(headers) + 1;
  }
  return eas_call_record(s->call, outcome, http_status, n ? names : NULL, n ? values : NULL, n,
                         &s->retry);
}

static enum eas_status easpy_call_finish(easpy_call *s, int32_t body) {
  return eas_call_finish(s->call, body);
}

static void easpy_call_free(easpy_call *s) {
  eas_call *call = s->call;
  s->call = NULL;
  eas_call_free(call);
}

/* The extern "Python" functions, defined by cffi after this code. */
static void easpy_on_log(void *user_data, int32_t level, const char *message);
static void easpy_on_free(void *user_data);

static int easpy_log_stopped = 0;
static int easpy_log_calls = 0;

/* Each call counts itself before it reads the flag, and easpy_log_stop sets the flag before it
 * reads the count (both sequentially consistent): a call the stop does not count sees it. */
static void easpy_log_line(void *user_data, int32_t level, const char *message) {
  __atomic_add_fetch(&easpy_log_calls, 1, __ATOMIC_SEQ_CST);
  if (!__atomic_load_n(&easpy_log_stopped, __ATOMIC_SEQ_CST))
    easpy_on_log(user_data, level, message);
  __atomic_sub_fetch(&easpy_log_calls, 1, __ATOMIC_SEQ_CST);
}

static void easpy_log_free(void *user_data) {
  __atomic_add_fetch(&easpy_log_calls, 1, __ATOMIC_SEQ_CST);
  if (!__atomic_load_n(&easpy_log_stopped, __ATOMIC_SEQ_CST)) easpy_on_free(user_data);
  __atomic_sub_fetch(&easpy_log_calls, 1, __ATOMIC_SEQ_CST);
}

static int easpy_log_stop(void) {
  __atomic_store_n(&easpy_log_stopped, 1, __ATOMIC_SEQ_CST);
  return __atomic_load_n(&easpy_log_calls, __ATOMIC_SEQ_CST);
}

static int easpy_log_running(void) { return __atomic_load_n(&easpy_log_calls, __ATOMIC_SEQ_CST); }

static void easpy_log_after_fork(void) { __atomic_store_n(&easpy_log_calls, 0, __ATOMIC_SEQ_CST); }
"""


def make_ffi(include_dirs: list[str], library_dirs: list[str]) -> cffi.FFI:
    """The FFI builder for ``easdirect._native``, linked against libeasdirect in
    ``library_dirs`` and found at run time next to the extension (rpath ``$ORIGIN``)."""
    headers = [Path(d) / "easdirect.h" for d in include_dirs]
    header = next(h for h in headers if h.is_file())
    ffi = cffi.FFI()
    ffi.cdef(header_cdef(header.read_text(encoding="utf-8")) + EXTRA_CDEF)
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
