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

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS, "init(instance_type, raise_error): set once at import."},
    {"pick", (PyCFunction)(void (*)(void))pick, METH_FASTCALL,
     "pick(handle, cache) -> Instance: eas_select_instance, keeping the GIL."},
    {"pick_excluding", (PyCFunction)(void (*)(void))pick_excluding, METH_FASTCALL,
     "pick_excluding(handle, cache, ids) -> Instance: eas_select_instance_excluding."},
    {"instance", (PyCFunction)(void (*)(void))instance, METH_FASTCALL,
     "instance(cache, address) -> Instance: the cached Instance of an eas_instance."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "easdirect._fastpick",
    "The GIL-holding pick path of easdirect.Client.select().", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpick(void) { return PyModule_Create(&module); }
