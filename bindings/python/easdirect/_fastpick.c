/*
 * easdirect._fastpick: the pick path of easdirect.Client.select(), as one CPython function
 * that keeps the GIL.
 *
 * Why not through cffi like the rest of the binding: cffi releases and re-takes the GIL around
 * every C call. On one thread that is cheap, but with several Python threads picking, every
 * release wakes a waiting thread (a futex syscall) and the pick costs several times the pick
 * itself. eas_select_instance never blocks, takes no lock and makes no syscall on its common
 * path, so holding the GIL across it is safe and is the fast way; every call that can block
 * (wait_ready, close, free, unsubscribe) stays on cffi and releases the GIL.
 *
 * A pick returns a ready-made easdirect.Instance: the Python object for each id is built once
 * and kept in the client's cache dict (id -> Instance), checked against the pick's weight (the
 * only field that can change for an id: ip, port and host are what the id hashes).
 *
 * The HTTP helpers' calls are here too (easdirect._fastpick.Call, below), for the same reason.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "easdirect.h"

/* Set by init(): the Instance class and the function that raises a pick's error. */
static PyObject *instance_type = NULL;
static PyObject *raise_error = NULL;

/* The cache holds at most this many ids; when full it starts over (ids of instances that left
 * the list would otherwise accumulate). */
#define CACHE_MAX 65536

#define STACK_EXCLUDE 32

static PyObject *init(PyObject *self, PyObject *args) {
  PyObject *type, *fn;
  (void)self;
  if (!PyArg_ParseTuple(args, "OO:init", &type, &fn)) return NULL;
  Py_INCREF(type);
  Py_INCREF(fn);
  Py_XSETREF(instance_type, type);
  Py_XSETREF(raise_error, fn);
  Py_RETURN_NONE;
}

static int weight_matches(PyObject *cached, uint32_t weight) {
  if (!instance_type || Py_TYPE(cached) != (PyTypeObject *)instance_type ||
      PyTuple_GET_SIZE(cached) != 5)
    return 0;
  PyObject *w = PyTuple_GET_ITEM(cached, 3);
  if (!PyLong_CheckExact(w)) return 0;
  unsigned long v = PyLong_AsUnsignedLong(w);
  if (v == (unsigned long)-1 && PyErr_Occurred()) {
    PyErr_Clear();
    return 0;
  }
  return v == (unsigned long)weight;
}

/* The Instance for a successful pick: from the cache, or built and cached. */
static PyObject *instance_for(PyObject *cache, const eas_instance *inst) {
  PyObject *key = PyLong_FromUnsignedLongLong(inst->id);
  if (!key) return NULL;
  PyObject *hit = PyDict_GetItemWithError(cache, key); /* borrowed */
  if (hit && weight_matches(hit, inst->weight)) {
    Py_DECREF(key);
    Py_INCREF(hit);
    return hit;
  }
  if (!hit && PyErr_Occurred()) {
    Py_DECREF(key);
    return NULL;
  }
  if (!instance_type) {
    Py_DECREF(key);
    PyErr_SetString(PyExc_RuntimeError, "easdirect._fastpick.init was not called");
    return NULL;
  }
  PyObject *made = PyObject_CallFunction(instance_type, "OsHIs", key, inst->ip, inst->port,
                                         (unsigned int)inst->weight, inst->host);
  if (!made) {
    Py_DECREF(key);
    return NULL;
  }
  if (PyDict_GET_SIZE(cache) >= CACHE_MAX) PyDict_Clear(cache);
  if (PyDict_SetItem(cache, key, made) < 0) {
    Py_DECREF(key);
    Py_DECREF(made);
    return NULL;
  }
  Py_DECREF(key);
  return made;
}

static PyObject *fail(eas_status status, int excluding) {
  if (!raise_error) {
    PyErr_Format(PyExc_RuntimeError, "select failed with status %d", (int)status);
    return NULL;
  }
  PyObject *r = PyObject_CallFunction(raise_error, "ii", (int)status, excluding);
  if (r) { /* it should have raised */
    Py_DECREF(r);
    PyErr_Format(PyExc_RuntimeError, "select failed with status %d", (int)status);
  }
  return NULL;
}

static int parse_head(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want,
                      const eas_client **client, PyObject **cache) {
  if (nargs != want) {
    PyErr_Format(PyExc_TypeError, "expected %zd arguments, got %zd", want, nargs);
    return -1;
  }
  void *h = PyLong_AsVoidPtr(args[0]);
  if (!h && PyErr_Occurred()) return -1;
  if (!PyDict_CheckExact(args[1])) {
    PyErr_SetString(PyExc_TypeError, "cache must be a dict");
    return -1;
  }
  *client = (const eas_client *)h;
  *cache = args[1];
  return 0;
}

/* pick(handle: int, cache: dict) -> Instance */
static PyObject *pick(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  const eas_client *client;
  PyObject *cache;
  eas_instance inst;
  (void)self;
  if (parse_head(args, nargs, 2, &client, &cache) < 0) return NULL;
  eas_status s = eas_select_instance(client, &inst);
  if (s != EAS_STATUS_OK) return fail(s, 0);
  return instance_for(cache, &inst);
}

/* pick_excluding(handle: int, cache: dict, ids: list[int]) -> Instance */
static PyObject *pick_excluding(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  const eas_client *client;
  PyObject *cache;
  eas_instance inst;
  uint64_t stack[STACK_EXCLUDE];
  uint64_t *ids = stack;
  (void)self;
  if (parse_head(args, nargs, 3, &client, &cache) < 0) return NULL;
  PyObject *seq = PySequence_Fast(args[2], "ids must be a sequence of ints");
  if (!seq) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  if (n > STACK_EXCLUDE) {
    ids = PyMem_Malloc(sizeof(uint64_t) * (size_t)n);
    if (!ids) {
      Py_DECREF(seq);
      return PyErr_NoMemory();
    }
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    ids[i] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
    if (ids[i] == (uint64_t)-1 && PyErr_Occurred()) {
      if (ids != stack) PyMem_Free(ids);
      Py_DECREF(seq);
      return NULL;
    }
  }
  eas_status s = eas_select_instance_excluding(client, n ? ids : NULL, (size_t)n, &inst);
  if (ids != stack) PyMem_Free(ids);
  Py_DECREF(seq);
  if (s != EAS_STATUS_OK) return fail(s, 1);
  return instance_for(cache, &inst);
}

/* instance(cache: dict, address: int) -> Instance: the Instance of the eas_instance at
 * `address` (an eas_call_next output the caller owns), through the same cache as a pick. */
static PyObject *instance(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
  (void)self;
  if (nargs != 2) {
    PyErr_Format(PyExc_TypeError, "expected 2 arguments, got %zd", nargs);
    return NULL;
  }
  if (!PyDict_CheckExact(args[0])) {
    PyErr_SetString(PyExc_TypeError, "cache must be a dict");
    return NULL;
  }
  void *p = PyLong_AsVoidPtr(args[1]);
  if (!p) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "NULL instance address");
    return NULL;
  }
  return instance_for(args[0], (const eas_instance *)p);
}

/* ---- The HTTP helpers' calls --------------------------------------------------------------
 *
 * easdirect._fastpick.Call: the eas_call of one helper request (easdirect.requests,
 * easdirect.httpx), driven in one C method per step instead of the public easdirect.Call's
 * Python around cffi (its lock, weakref, registry entry, header filtering and five GIL
 * releases cost tens of microseconds per request, run right after a network round trip). The
 * eas_call_* functions never block and never call back into Python (log lines go through the
 * library's queue, dropped when full), so the GIL is kept across each, as for the pick: every
 * native step of a call runs whole under the GIL, so two threads can never be inside its
 * eas_call at once. The object holds its client (a strong reference the cyclic collector does
 * not see, as this type is not tracked): the client can neither be collected nor finalized
 * (eas_client_free) before the call is freed, by close() or when the object is deallocated.
 *
 * Errors are returned, not raised: call_start() gives the begin's status or (call, the first
 * next()'s result), next() gives an Instance or the status (an int), record()
 * True/False (retry) or the status, finish() the status. The helpers turn a status into the
 * exception the public Call raises, on the rare paths only. */

#define MAX_RECORD_HEADERS 16

typedef struct {
  PyObject_HEAD
  eas_call *call;  /* NULL once closed */
  PyObject *client; /* the easdirect.Client; holds the native client alive */
} HCall;

static PyTypeObject HCall_Type;
static PyObject *str_cache = NULL;    /* "_cache", interned */
static PyObject *load_keys[2] = {NULL}; /* load_names as interned str */

/* The two response headers the core reads, lower case. */
static const char *const load_names[2] = {"endpoint-load-metrics", "retry-after"};
static const size_t load_lens[2] = {21, 11};

/* Which of load_names `name` is (case-insensitively), or -1. */
static int load_index(const char *name, Py_ssize_t len) {
  for (int k = 0; k < 2; k++) {
    if ((size_t)len != load_lens[k]) continue;
    Py_ssize_t i = 0;
    for (; i < len; i++) {
      char c = name[i];
      if (c >= 'A' && c <= 'Z') c = (char)(c + ('a' - 'A'));
      if (c != load_names[k][i]) break;
    }
    if (i == len) return k;
  }
  return -1;
}

/* The name of a header as bytes: a str (its UTF-8) or bytes; 0 when neither (skipped). */
static int name_of(PyObject *name, const char **out, Py_ssize_t *len) {
  if (PyUnicode_Check(name)) {
    *out = PyUnicode_AsUTF8AndSize(name, len);
    if (!*out) {
      PyErr_Clear(); /* a lone surrogate: not one of the two names */
      return 0;
    }
    return 1;
  }
  if (PyBytes_Check(name)) {
    *out = PyBytes_AS_STRING(name);
    *len = PyBytes_GET_SIZE(name);
    return 1;
  }
  return 0;
}

/* A header value as the public Call passes it: bytes taken as Latin-1, a str as UTF-8 (a lone
 * surrogate replaced), anything else as its str(); NUL bytes dropped. A new NUL-terminated
 * PyMem buffer, or NULL with an exception set. */
static char *value_of(PyObject *value) {
  PyObject *owned = NULL;
  const char *src;
  Py_ssize_t len;
  int latin1 = 0;
  if (PyBytes_Check(value) || PyByteArray_Check(value)) {
    src = PyBytes_Check(value) ? PyBytes_AS_STRING(value) : PyByteArray_AS_STRING(value);
    len = PyBytes_Check(value) ? PyBytes_GET_SIZE(value) : PyByteArray_GET_SIZE(value);
    latin1 = 1;
  } else {
    if (PyUnicode_Check(value)) {
      Py_INCREF(value);
      owned = value;
    } else {
      owned = PyObject_Str(value);
      if (!owned) return NULL;
    }
    src = PyUnicode_AsUTF8AndSize(owned, &len);
    if (!src) {
      PyErr_Clear();
      PyObject *enc = PyUnicode_AsEncodedString(owned, "utf-8", "replace");
      Py_DECREF(owned);
      if (!enc) return NULL;
      owned = enc;
      src = PyBytes_AS_STRING(enc);
      len = PyBytes_GET_SIZE(enc);
    }
  }
  if (len > (PY_SSIZE_T_MAX - 1) / 2) {
    Py_XDECREF(owned);
    PyErr_NoMemory();
    return NULL;
  }
  char *buf = PyMem_Malloc((size_t)(latin1 ? 2 * len : len) + 1);
  if (!buf) {
    Py_XDECREF(owned);
    PyErr_NoMemory();
    return NULL;
  }
  size_t o = 0;
  for (Py_ssize_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)src[i];
    if (c == 0) continue;
    if (latin1 && c >= 0x80) {
      buf[o++] = (char)(0xC0 | (c >> 6));
      buf[o++] = (char)(0x80 | (c & 0x3F));
    } else {
      buf[o++] = (char)c;
    }
  }
  buf[o] = 0;
  Py_XDECREF(owned);
  return buf;
}

typedef struct {
  const char *names[MAX_RECORD_HEADERS];
  char *values[MAX_RECORD_HEADERS];
  size_t n;
} picked;

static void picked_free(picked *p) {
  for (size_t k = 0; k < p->n; k++) PyMem_Free(p->values[k]);
  p->n = 0;
}

static int picked_add(picked *p, int which, PyObject *value) {
  if (p->n == MAX_RECORD_HEADERS) return 0;
  char *v = value_of(value);
  if (!v) return -1;
  p->names[p->n] = load_names[which];
  p->values[p->n] = v;
  p->n++;
  return 0;
}

/* The load headers of `headers`: None; a dict of lower-case names to values or to (name,
 * value) pairs (requests' CaseInsensitiveDict keeps that in its _store); or a list or tuple
 * of (name, value) or (name, lower-case name, value) tuples (httpx.Headers' _list), names in
 * any case. Items of other shapes are skipped. 0, or -1 with an exception set. */
static int pick_headers(PyObject *headers, picked *p) {
  p->n = 0;
  if (headers == Py_None) return 0;
  if (PyDict_Check(headers)) {
    for (int k = 0; k < 2; k++) {
      PyObject *item = PyDict_GetItemWithError(headers, load_keys[k]); /* borrowed */
      if (!item) {
        if (PyErr_Occurred()) goto fail;
        continue;
      }
      PyObject *v = item;
      if (PyTuple_Check(item)) {
        if (PyTuple_GET_SIZE(item) != 2) continue;
        v = PyTuple_GET_ITEM(item, 1);
      }
      Py_INCREF(item); /* a value's str() may run Python that changes the dict */
      int r = picked_add(p, k, v);
      Py_DECREF(item);
      if (r < 0) goto fail;
    }
    return 0;
  }
  if (!PyList_Check(headers) && !PyTuple_Check(headers)) {
    PyErr_SetString(PyExc_TypeError, "headers must be None, a dict, a list or a tuple");
    return -1;
  }
  /* A list may change while a value's str() runs Python: index it afresh each time. */
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(headers); i++) {
    PyObject *item = PySequence_Fast_GET_ITEM(headers, i);
    if (!PyTuple_Check(item)) continue;
    Py_ssize_t size = PyTuple_GET_SIZE(item);
    if (size != 2 && size != 3) continue;
    const char *name;
    Py_ssize_t len;
    if (!name_of(PyTuple_GET_ITEM(item, size - 2), &name, &len)) continue;
    int which = load_index(name, len);
    if (which < 0) continue;
    Py_INCREF(item);
    int r = picked_add(p, which, PyTuple_GET_ITEM(item, size - 1));
    Py_DECREF(item);
    if (r < 0) goto fail;
  }
  return 0;
fail:
  picked_free(p);
  return -1;
}

static void HCall_free_call(HCall *self) {
  eas_call *call = self->call;
  self->call = NULL;
  eas_call_free(call); /* NULL is a no-op */
}

static void HCall_dealloc(HCall *self) {
  HCall_free_call(self); /* before the client's reference goes */
  Py_CLEAR(self->client);
  PyObject_Free(self);
}

static PyObject *HCall_next(HCall *self, PyObject *unused);

/* call_start(client, handle: int, key: bytes | None, flags: int) -> (Call, Instance | int) | int:
 * eas_call_begin (its status when it fails) and the first eas_call_next (its status in place of
 * the Instance when it fails: the caller closes the call). */
static PyObject *call_start(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
  (void)mod;
  if (nargs != 4) {
    PyErr_Format(PyExc_TypeError, "expected 4 arguments, got %zd", nargs);
    return NULL;
  }
  void *h = PyLong_AsVoidPtr(args[1]);
  if (!h && PyErr_Occurred()) return NULL;
  const uint8_t *key = NULL;
  size_t key_len = 0;
  if (args[2] != Py_None) {
    if (!PyBytes_Check(args[2])) {
      PyErr_SetString(PyExc_TypeError, "key must be bytes or None");
      return NULL;
    }
    key_len = (size_t)PyBytes_GET_SIZE(args[2]);
    key = key_len ? (const uint8_t *)PyBytes_AS_STRING(args[2]) : NULL;
  }
  unsigned long flags = PyLong_AsUnsignedLong(args[3]);
  if (flags == (unsigned long)-1 && PyErr_Occurred()) return NULL;
  if (flags > UINT32_MAX) flags = UINT32_MAX; /* refused by the library */
  HCall *self = PyObject_New(HCall, &HCall_Type);
  if (!self) return NULL;
  self->call = NULL;
  Py_INCREF(args[0]);
  self->client = args[0];
  eas_status st = eas_call_begin((const eas_client *)h, key, key_len, (uint32_t)flags, &self->call);
  if (st != EAS_STATUS_OK) {
    self->call = NULL;
    Py_DECREF(self);
    return PyLong_FromLong((long)st);
  }
  PyObject *first = HCall_next(self, NULL);
  if (!first) {
    Py_DECREF(self); /* frees the call */
    return NULL;
  }
  PyObject *pair = PyTuple_New(2);
  if (!pair) {
    Py_DECREF(first);
    Py_DECREF(self);
    return NULL;
  }
  PyTuple_SET_ITEM(pair, 0, (PyObject *)self);
  PyTuple_SET_ITEM(pair, 1, first);
  return pair;
}

/* next() -> Instance | int: eas_call_next, the Instance from the client's cache. */
static PyObject *HCall_next(HCall *self, PyObject *unused) {
  (void)unused;
  eas_instance inst;
  if (!self->call) return PyLong_FromLong((long)EAS_STATUS_CLOSED);
  eas_status st = eas_call_next(self->call, &inst);
  if (st != EAS_STATUS_OK) return PyLong_FromLong((long)st);
  PyObject *cache = PyObject_GetAttr(self->client, str_cache);
  if (!cache) return NULL;
  if (!PyDict_CheckExact(cache)) {
    Py_DECREF(cache);
    PyErr_SetString(PyExc_TypeError, "the client's cache must be a dict");
    return NULL;
  }
  PyObject *r = instance_for(cache, &inst);
  Py_DECREF(cache);
  return r;
}

/* record(outcome: int, status: int, headers) -> bool | int: eas_call_record with the load
 * headers of `headers` (see pick_headers); True when the caller should try again. */
static PyObject *HCall_record(HCall *self, PyObject *const *args, Py_ssize_t nargs) {
  if (nargs != 3) {
    PyErr_Format(PyExc_TypeError, "expected 3 arguments, got %zd", nargs);
    return NULL;
  }
  long outcome = PyLong_AsLong(args[0]);
  if (outcome == -1 && PyErr_Occurred()) return NULL;
  long status = PyLong_AsLong(args[1]);
  if (status == -1 && PyErr_Occurred()) return NULL;
  if (outcome < INT32_MIN || outcome > INT32_MAX) outcome = -1; /* refused by the library */
  if (status < 0 || status > 0xFFFF) status = 0;                /* likewise, for a RESPONSE */
  picked p;
  if (pick_headers(args[2], &p) < 0) return NULL;
  if (!self->call) { /* after the headers: a value's str() may have run Python */
    picked_free(&p);
    return PyLong_FromLong((long)EAS_STATUS_CLOSED);
  }
  uint32_t retry = 0;
  eas_status st =
      eas_call_record(self->call, (int32_t)outcome, (uint32_t)status, p.n ? p.names : NULL,
                      p.n ? (const char *const *)p.values : NULL, p.n, &retry);
  picked_free(&p);
  if (st != EAS_STATUS_OK) return PyLong_FromLong((long)st);
  return PyBool_FromLong(retry != 0);
}

/* finish(body: int) -> int: eas_call_finish's status. */
static PyObject *HCall_finish(HCall *self, PyObject *arg) {
  long body = PyLong_AsLong(arg);
  if (body == -1 && PyErr_Occurred()) return NULL;
  if (body < INT32_MIN || body > INT32_MAX) body = -1;
  if (!self->call) return PyLong_FromLong((long)EAS_STATUS_CLOSED);
  return PyLong_FromLong((long)eas_call_finish(self->call, (int32_t)body));
}

/* close(): eas_call_free; idempotent. */
static PyObject *HCall_close(HCall *self, PyObject *unused) {
  (void)unused;
  HCall_free_call(self);
  Py_RETURN_NONE;
}

static PyObject *HCall_get_closed(HCall *self, void *unused) {
  (void)unused;
  return PyBool_FromLong(self->call == NULL);
}

static PyObject *HCall_repr(HCall *self) {
  return PyUnicode_FromFormat("<easdirect helper call %s>", self->call ? "open" : "closed");
}

static PyMethodDef HCall_methods[] = {
    {"next", (PyCFunction)HCall_next, METH_NOARGS,
     "next() -> Instance | int: the next attempt's instance, or the status."},
    {"record", (PyCFunction)(void (*)(void))HCall_record, METH_FASTCALL,
     "record(outcome, status, headers) -> bool | int: retry, or the status."},
    {"finish", (PyCFunction)HCall_finish, METH_O, "finish(body) -> int: the status."},
    {"close", (PyCFunction)HCall_close, METH_NOARGS, "close(): frees the call; idempotent."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef HCall_getset[] = {
    {"closed", (getter)HCall_get_closed, NULL, "True once closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject HCall_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "easdirect._fastpick.Call",
    .tp_basicsize = sizeof(HCall),
    .tp_dealloc = (destructor)HCall_dealloc,
    .tp_repr = (reprfunc)HCall_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The eas_call of one HTTP helper request (made by call_start).",
    .tp_methods = HCall_methods,
    .tp_getset = HCall_getset,
};

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS, "init(instance_type, raise_error): set once at import."},
    {"pick", (PyCFunction)(void (*)(void))pick, METH_FASTCALL,
     "pick(handle, cache) -> Instance: eas_select_instance, keeping the GIL."},
    {"pick_excluding", (PyCFunction)(void (*)(void))pick_excluding, METH_FASTCALL,
     "pick_excluding(handle, cache, ids) -> Instance: eas_select_instance_excluding."},
    {"instance", (PyCFunction)(void (*)(void))instance, METH_FASTCALL,
     "instance(cache, address) -> Instance: the cached Instance of an eas_instance."},
    {"call_start", (PyCFunction)(void (*)(void))call_start, METH_FASTCALL,
     "call_start(client, handle, key, flags) -> (Call, Instance | int) | int: eas_call_begin "
     "and the first eas_call_next, or their status."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "easdirect._fastpick",
    "The GIL-holding pick path of easdirect.Client.select().", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpick(void) {
  if (PyType_Ready(&HCall_Type) < 0) return NULL;
  str_cache = PyUnicode_InternFromString("_cache");
  if (!str_cache) return NULL;
  for (int k = 0; k < 2; k++) {
    load_keys[k] = PyUnicode_InternFromString(load_names[k]);
    if (!load_keys[k]) return NULL;
  }
  PyObject *m = PyModule_Create(&module);
  if (!m) return NULL;
  Py_INCREF(&HCall_Type);
  if (PyModule_AddObject(m, "Call", (PyObject *)&HCall_Type) < 0) {
    Py_DECREF(&HCall_Type);
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
