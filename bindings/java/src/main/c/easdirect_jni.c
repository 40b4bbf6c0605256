/*
 * The JNI glue of the Java binding (io.easdirect.JniBackend): one native method per eas_*
 * function, over include/easdirect.h, the same ABI surface as the Panama backend.
 *
 * libeasdirect is not linked: nInit dlopens the file the Java side found (a system property,
 * java.library.path or the copy in the jar) and binds every function once. Pointers travel as
 * jlong. Strings travel as NUL-terminated UTF-8 byte arrays both ways (JNI's own string
 * functions speak modified UTF-8). Every method that takes a client also takes the Java object
 * that owns it: the local reference keeps it reachable, so its Cleaner cannot free the client
 * while the call runs.
 *
 * Callbacks (subscriptions' change and free, sources' fetch and free, log functions' free) run
 * on the library's background threads: they attach the thread to the JVM as a daemon for the
 * call and detach it after (a thread that was attached already stays so). The log function is
 * different: its lines come on the library's one log thread, which lives as long as the process,
 * up to 10 a second per client; that thread is attached once, as the daemon "easdirect-log", and
 * stays attached (a thread-specific key detaches it, should it ever exit). The user data of all
 * is a token, a key of a Java map (Listeners, Sources, LogSinks), never a JNI reference: the
 * Java side's entry stays until free_user_data runs.
 *
 * ABI 1.4's eas_options_set_log and eas_client_metrics_text are bound only when the library's
 * ABI minor is 4 or more (the Java side refuses what needs them before that).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jni.h>

#include "easdirect.h"
#include "io_easdirect_JniBackend.h"

/* The layout the Java side reads; javac's header checks the method signatures. */
_Static_assert(sizeof(eas_instance) == 128, "eas_instance is 128 bytes");
_Static_assert(offsetof(eas_instance, ip) == 8, "ip @8");
_Static_assert(offsetof(eas_instance, port) == 54, "port @54");
_Static_assert(offsetof(eas_instance, weight) == 56, "weight @56");
_Static_assert(offsetof(eas_instance, host) == 60, "host @60");
_Static_assert(offsetof(eas_instance, reserved) == 124, "reserved @124");
_Static_assert(sizeof(eas_stats) == 40, "eas_stats is 40 bytes");
_Static_assert(sizeof(eas_instance_stats) == 64, "eas_instance_stats is 64 bytes");
_Static_assert(offsetof(eas_instance_stats, in_flight) == 8, "in_flight @8");
_Static_assert(offsetof(eas_instance_stats, reported_waiting) == 12, "reported_waiting @12");
_Static_assert(offsetof(eas_instance_stats, attempts) == 16, "attempts @16");
_Static_assert(offsetof(eas_instance_stats, failures) == 24, "failures @24");
_Static_assert(offsetof(eas_instance_stats, latency_ewma_us) == 32, "latency_ewma_us @32");
_Static_assert(offsetof(eas_instance_stats, reported_kv_permille) == 36,
               "reported_kv_permille @36");
_Static_assert(offsetof(eas_instance_stats, ejected_until_unix_ms) == 40,
               "ejected_until_unix_ms @40");
_Static_assert(offsetof(eas_instance_stats, report_unix_ms) == 48, "report_unix_ms @48");
_Static_assert(offsetof(eas_instance_stats, weight) == 56, "weight @56");
_Static_assert(offsetof(eas_instance_stats, reported_running) == 60, "reported_running @60");

/* Bumped whenever a native method of this file changes; JniBackend checks it at load. */
#define GLUE_VERSION 5

#define EXPORT __attribute__((visibility("default")))

#define FN(name) __typeof__(name) *name
static struct {
    FN(eas_version);
    FN(eas_abi_version);
    FN(eas_status_str);
    FN(eas_options_new);
    FN(eas_options_set);
    FN(eas_options_free);
    FN(eas_client_new);
    FN(eas_client_wait_ready);
    FN(eas_select_instance);
    FN(eas_select_instance_excluding);
    FN(eas_report_failure);
    FN(eas_report_success);
    FN(eas_client_instances);
    FN(eas_client_last_error);
    FN(eas_client_stats);
    FN(eas_client_subscribe);
    FN(eas_client_unsubscribe);
    FN(eas_client_close);
    FN(eas_client_free);
    FN(eas_client_new_with_source);
    FN(eas_source_builder_add);
    FN(eas_source_builder_set_error);
    FN(eas_error_code);
    FN(eas_error_message);
    FN(eas_error_free);
    FN(eas_call_begin);
    FN(eas_call_next);
    FN(eas_call_record);
    FN(eas_call_finish);
    FN(eas_call_free);
    FN(eas_client_instance_stats);
    FN(eas_client_service);
    FN(eas_client_target);
    FN(eas_client_transport);
    FN(eas_options_set_log);     /* ABI 1.4; NULL before */
    FN(eas_client_metrics_text); /* ABI 1.4; NULL before */
} lib;
#undef FN

static JavaVM *jvm;
static jclass backend_class;     /* global reference to io.easdirect.JniBackend */
static jmethodID on_change_mid;  /* static void onChange(long token, byte[] list, int n) */
static jmethodID on_free_mid;    /* static void onFree(long token) */
static jmethodID on_fetch_mid;   /* static int onFetch(long token, long builder) */
static jmethodID on_source_free_mid; /* static void onSourceFree(long token) */
static jmethodID on_log_mid;      /* static void onLog(long token, int level, byte[] message) */
static jmethodID on_log_free_mid; /* static void onLogFree(long token) */

#define CLIENT(p) ((const eas_client *)(intptr_t)(p))
#define CALL(p) ((eas_call *)(intptr_t)(p))

EXPORT jint JNI_OnLoad(JavaVM *vm, void *reserved) {
    (void)reserved;
    jvm = vm;
    return JNI_VERSION_1_6;
}

/* A NUL-terminated UTF-8 string as a Java byte[] (without the NUL), or NULL. */
static jbyteArray utf8_bytes(JNIEnv *env, const char *s) {
    if (s == NULL) {
        return NULL;
    }
    size_t n = strlen(s);
    jbyteArray a = (*env)->NewByteArray(env, (jsize)n);
    if (a != NULL) {
        (*env)->SetByteArrayRegion(env, a, 0, (jsize)n, (const jbyte *)s);
    }
    return a;
}

/* Stores the message of *e (if any) in msg_out[0] and frees e. */
static void take_error(JNIEnv *env, eas_error *e, jobjectArray msg_out) {
    if (e == NULL) {
        return;
    }
    if (msg_out != NULL) {
        jbyteArray m = utf8_bytes(env, lib.eas_error_message(e));
        if (m != NULL) {
            (*env)->SetObjectArrayElement(env, msg_out, 0, m);
            (*env)->DeleteLocalRef(env, m);
        }
    }
    lib.eas_error_free(e);
}

/* A copy of a Java byte[] holding NUL-terminated UTF-8 (the Java side appends the NUL). */
static char *c_string(JNIEnv *env, jbyteArray a) {
    jsize n = (*env)->GetArrayLength(env, a);
    char *s = malloc((size_t)n + 1);
    if (s == NULL) {
        return NULL;
    }
    (*env)->GetByteArrayRegion(env, a, 0, n, (jbyte *)s);
    s[n] = '\0';
    return s;
}

JNIEXPORT jstring JNICALL Java_io_easdirect_JniBackend_nInit(JNIEnv *env, jclass cls,
                                                             jbyteArray path) {
    static char msg[1024];
    char *p = c_string(env, path);
    if (p == NULL) {
        return (*env)->NewStringUTF(env, "out of memory");
    }
    void *h = dlopen(p, RTLD_NOW | RTLD_LOCAL);
    free(p);
    if (h == NULL) {
        snprintf(msg, sizeof msg, "dlopen: %s", dlerror());
        return (*env)->NewStringUTF(env, msg);
    }
#define BIND(name)                                                                 \
    do {                                                                           \
        *(void **)&lib.name = dlsym(h, #name);                                     \
        if (lib.name == NULL) {                                                    \
            snprintf(msg, sizeof msg, "the library has no function %s", #name);    \
            return (*env)->NewStringUTF(env, msg);                                 \
        }                                                                          \
    } while (0)
    BIND(eas_version);
    BIND(eas_abi_version);
    BIND(eas_status_str);
    BIND(eas_options_new);
    BIND(eas_options_set);
    BIND(eas_options_free);
    BIND(eas_client_new);
    BIND(eas_client_wait_ready);
    BIND(eas_select_instance);
    BIND(eas_select_instance_excluding);
    BIND(eas_report_failure);
    BIND(eas_report_success);
    BIND(eas_client_instances);
    BIND(eas_client_last_error);
    BIND(eas_client_stats);
    BIND(eas_client_subscribe);
    BIND(eas_client_unsubscribe);
    BIND(eas_client_close);
    BIND(eas_client_free);
    BIND(eas_client_new_with_source);
    BIND(eas_source_builder_add);
    BIND(eas_source_builder_set_error);
    BIND(eas_error_code);
    BIND(eas_error_message);
    BIND(eas_error_free);
    BIND(eas_call_begin);
    BIND(eas_call_next);
    BIND(eas_call_record);
    BIND(eas_call_finish);
    BIND(eas_call_free);
    BIND(eas_client_instance_stats);
    BIND(eas_client_service);
    BIND(eas_client_target);
    BIND(eas_client_transport);
    uint32_t abi = lib.eas_abi_version();
    if ((abi >> 16) == 1 && (abi & 0xffff) >= 4) {
        BIND(eas_options_set_log);
        BIND(eas_client_metrics_text);
    }
#undef BIND
    backend_class = (*env)->NewGlobalRef(env, cls);
    on_change_mid = (*env)->GetStaticMethodID(env, cls, "onChange", "(J[BI)V");
    on_free_mid = (*env)->GetStaticMethodID(env, cls, "onFree", "(J)V");
    on_fetch_mid = (*env)->GetStaticMethodID(env, cls, "onFetch", "(JJ)I");
    on_source_free_mid = (*env)->GetStaticMethodID(env, cls, "onSourceFree", "(J)V");
    on_log_mid = (*env)->GetStaticMethodID(env, cls, "onLog", "(JI[B)V");
    on_log_free_mid = (*env)->GetStaticMethodID(env, cls, "onLogFree", "(J)V");
    if (backend_class == NULL || on_change_mid == NULL || on_free_mid == NULL
        || on_fetch_mid == NULL || on_source_free_mid == NULL || on_log_mid == NULL
        || on_log_free_mid == NULL) {
        (*env)->ExceptionClear(env);
        return (*env)->NewStringUTF(
            env, "JniBackend.onChange/onFree/onFetch/onSourceFree/onLog/onLogFree not found");
    }
    return NULL;
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nGlueVersion(JNIEnv *env, jclass cls) {
    (void)env, (void)cls;
    return GLUE_VERSION;
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nInstanceSize(JNIEnv *env, jclass cls) {
    (void)env, (void)cls;
    return (jint)sizeof(eas_instance);
}

JNIEXPORT jbyteArray JNICALL Java_io_easdirect_JniBackend_nVersion(JNIEnv *env, jclass cls) {
    (void)cls;
    return utf8_bytes(env, lib.eas_version());
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nAbiVersion(JNIEnv *env, jclass cls) {
    (void)env, (void)cls;
    return (jint)lib.eas_abi_version();
}

JNIEXPORT jbyteArray JNICALL Java_io_easdirect_JniBackend_nStatusString(JNIEnv *env, jclass cls,
                                                                        jint status) {
    (void)cls;
    return utf8_bytes(env, lib.eas_status_str(status));
}

JNIEXPORT jlong JNICALL Java_io_easdirect_JniBackend_nOptionsNew(JNIEnv *env, jclass cls) {
    (void)env, (void)cls;
    return (jlong)(intptr_t)lib.eas_options_new();
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nOptionsSet(JNIEnv *env, jclass cls,
                                                                jlong opts, jbyteArray key,
                                                                jbyteArray value,
                                                                jobjectArray msg_out) {
    (void)cls;
    jbyte *k = (*env)->GetByteArrayElements(env, key, NULL);
    jbyte *v = (*env)->GetByteArrayElements(env, value, NULL);
    jint st = EAS_STATUS_NULL_PARAMETER;
    if (k != NULL && v != NULL) {
        eas_error *e = NULL;
        st = lib.eas_options_set((eas_options *)(intptr_t)opts, (const char *)k, (const char *)v,
                                 &e);
        take_error(env, e, msg_out);
    }
    if (k != NULL) (*env)->ReleaseByteArrayElements(env, key, k, JNI_ABORT);
    if (v != NULL) (*env)->ReleaseByteArrayElements(env, value, v, JNI_ABORT);
    return st;
}

JNIEXPORT void JNICALL Java_io_easdirect_JniBackend_nOptionsFree(JNIEnv *env, jclass cls,
                                                                 jlong opts) {
    (void)env, (void)cls;
    lib.eas_options_free((eas_options *)(intptr_t)opts);
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nClientNew(JNIEnv *env, jclass cls,
                                                               jbyteArray target, jlong opts,
                                                               jlongArray out,
                                                               jobjectArray msg_out) {
    (void)cls;
    jbyte *t = (*env)->GetByteArrayElements(env, target, NULL);
    if (t == NULL) {
        return EAS_STATUS_NULL_PARAMETER;
    }
    eas_client *c = NULL;
    eas_error *e = NULL;
    jint st = lib.eas_client_new((const char *)t, (const eas_options *)(intptr_t)opts, &c, &e);
    (*env)->ReleaseByteArrayElements(env, target, t, JNI_ABORT);
    if (st == EAS_STATUS_OK) {
        jlong p = (jlong)(intptr_t)c;
        (*env)->SetLongArrayRegion(env, out, 0, 1, &p);
    } else {
        take_error(env, e, msg_out);
    }
    return st;
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nWaitReady(JNIEnv *env, jclass cls,
                                                               jlong c, jint timeout_ms,
                                                               jobjectArray msg_out,
                                                               jobject owner) {
    (void)cls, (void)owner;
    eas_error *e = NULL;
    jint st = lib.eas_client_wait_ready(CLIENT(c), (uint32_t)timeout_ms, &e);
    if (st != EAS_STATUS_OK) {
        take_error(env, e, msg_out);
    }
    return st;
}

JNIEXPORT jlong JNICALL Java_io_easdirect_JniBackend_nAddress(JNIEnv *env, jclass cls,
                                                              jobject buffer) {
    (void)cls;
    return (jlong)(intptr_t)(*env)->GetDirectBufferAddress(env, buffer);
}

/* The hot path: the instance goes into the calling thread's direct buffer at out_addr. */
JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nSelect(JNIEnv *env, jclass cls, jlong c,
                                                            jlong out_addr, jobject owner) {
    (void)env, (void)cls, (void)owner;
    return lib.eas_select_instance(CLIENT(c), (eas_instance *)(intptr_t)out_addr);
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nSelectExcluding(JNIEnv *env, jclass cls,
                                                                     jlong c, jlongArray ids,
                                                                     jint n, jlong out_addr,
                                                                     jobject owner) {
    (void)cls, (void)owner;
    if (n == 0) {
        return lib.eas_select_instance_excluding(CLIENT(c), NULL, 0,
                                                 (eas_instance *)(intptr_t)out_addr);
    }
    /* No JNI call and no blocking between Get and Release: the pick is a few nanoseconds. */
    jlong *p = (*env)->GetPrimitiveArrayCritical(env, ids, NULL);
    if (p == NULL) {
        return EAS_STATUS_NULL_PARAMETER;
    }
    jint st = lib.eas_select_instance_excluding(CLIENT(c), (const uint64_t *)p, (size_t)n,
                                                (eas_instance *)(intptr_t)out_addr);
    (*env)->ReleasePrimitiveArrayCritical(env, ids, p, JNI_ABORT);
    return st;
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nReportFailure(JNIEnv *env, jclass cls,
                                                                   jlong c, jlong id,
                                                                   jobject owner) {
    (void)env, (void)cls, (void)owner;
    return lib.eas_report_failure(CLIENT(c), (uint64_t)id);
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nReportSuccess(JNIEnv *env, jclass cls,
                                                                   jlong c, jlong id,
                                                                   jobject owner) {
    (void)env, (void)cls, (void)owner;
    return lib.eas_report_success(CLIENT(c), (uint64_t)id);
}

/* buffer: a direct ByteBuffer of cap instances, or NULL with cap 0 to ask for the count. */
JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nInstances(JNIEnv *env, jclass cls, jlong c,
                                                               jobject buffer, jlong cap,
                                                               jlongArray len_out,
                                                               jobject owner) {
    (void)cls, (void)owner;
    eas_instance *buf = NULL;
    if (buffer != NULL) {
        buf = (*env)->GetDirectBufferAddress(env, buffer);
        if (buf == NULL) {
            return EAS_STATUS_NULL_PARAMETER;
        }
    }
    size_t len = 0;
    jint st = lib.eas_client_instances(CLIENT(c), buf, (size_t)cap, &len);
    if (st == EAS_STATUS_OK || st == EAS_STATUS_BUFFER_TOO_SMALL) {
        jlong l = (jlong)len;
        (*env)->SetLongArrayRegion(env, len_out, 0, 1, &l);
    }
    return st;
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nLastError(JNIEnv *env, jclass cls, jlong c,
                                                               jobjectArray msg_out,
                                                               jobject owner) {
    (void)cls, (void)owner;
    eas_error *e = NULL;
    jint st = lib.eas_client_last_error(CLIENT(c), &e);
    if (st != EAS_STATUS_OK) {
        take_error(env, e, msg_out);
    }
    return st;
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nStats(JNIEnv *env, jclass cls, jlong c,
                                                           jlongArray out, jobject owner) {
    (void)cls, (void)owner;
    eas_stats s;
    jint st = lib.eas_client_stats(CLIENT(c), &s);
    if (st == EAS_STATUS_OK) {
        jlong v[6] = {(jlong)s.generation,      (jlong)s.refresh_ok, (jlong)s.refresh_failed,
                      (jlong)s.last_ok_unix_ms, (jlong)s.instances,  (jlong)s.ejected};
        (*env)->SetLongArrayRegion(env, out, 0, 6, v);
    }
    return st;
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nTransport(JNIEnv *env, jclass cls, jlong c,
                                                               jintArray out, jobject owner) {
    (void)cls, (void)owner;
    int32_t t = 0;
    jint st = lib.eas_client_transport(CLIENT(c), &t);
    if (st == EAS_STATUS_OK) {
        jint v = (jint)t;
        (*env)->SetIntArrayRegion(env, out, 0, 1, &v);
    }
    return st;
}

/* The JNIEnv of this thread, attaching it (as a daemon) if needed; *attached says to detach. */
static JNIEnv *callback_env(int *attached) {
    JNIEnv *env = NULL;
    *attached = 0;
    jint r = (*jvm)->GetEnv(jvm, (void **)&env, JNI_VERSION_1_6);
    if (r == JNI_OK) {
        return env;
    }
    if (r != JNI_EDETACHED) {
        return NULL;
    }
    JavaVMAttachArgs args = {JNI_VERSION_1_6, "easdirect-callback", NULL};
    if ((*jvm)->AttachCurrentThreadAsDaemon(jvm, (void **)&env, &args) != JNI_OK) {
        return NULL; /* the JVM is going away: drop the call */
    }
    *attached = 1;
    return env;
}

static void callback_done(JNIEnv *env, int attached) {
    if ((*env)->ExceptionCheck(env)) {
        /* JniBackend catches everything; this is only a safety net. */
        (*env)->ExceptionDescribe(env);
        (*env)->ExceptionClear(env);
    }
    if (attached) {
        (*jvm)->DetachCurrentThread(jvm);
    }
}

static void on_change(void *user_data, const eas_instance *list, size_t n) {
    int attached;
    JNIEnv *env = callback_env(&attached);
    if (env == NULL) {
        return;
    }
    size_t bytes = n * sizeof(eas_instance);
    if (n <= (size_t)INT32_MAX / sizeof(eas_instance)) {
        jbyteArray a = (*env)->NewByteArray(env, (jsize)bytes);
        if (a != NULL) {
            (*env)->SetByteArrayRegion(env, a, 0, (jsize)bytes, (const jbyte *)list);
            (*env)->CallStaticVoidMethod(env, backend_class, on_change_mid,
                                         (jlong)(uintptr_t)user_data, a, (jint)n);
            (*env)->DeleteLocalRef(env, a);
        }
    }
    callback_done(env, attached);
}

static void on_free(void *user_data) {
    int attached;
    JNIEnv *env = callback_env(&attached);
    if (env == NULL) {
        return;
    }
    (*env)->CallStaticVoidMethod(env, backend_class, on_free_mid, (jlong)(uintptr_t)user_data);
    callback_done(env, attached);
}

/* token: the Java side's key of the listener; it travels as the subscription's user_data. */
JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nSubscribe(JNIEnv *env, jclass cls, jlong c,
                                                               jlong token, jlongArray out,
                                                               jobject owner) {
    (void)cls, (void)owner;
    uint64_t sub = 0;
    jint st = lib.eas_client_subscribe(CLIENT(c), on_change, (void *)(uintptr_t)token, on_free,
                                       &sub);
    if (st == EAS_STATUS_OK) {
        jlong s = (jlong)sub;
        (*env)->SetLongArrayRegion(env, out, 0, 1, &s);
    }
    return st;
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nUnsubscribe(JNIEnv *env, jclass cls,
                                                                 jlong c, jlong sub,
                                                                 jobject owner) {
    (void)env, (void)cls, (void)owner;
    return lib.eas_client_unsubscribe(CLIENT(c), (uint64_t)sub);
}

JNIEXPORT void JNICALL Java_io_easdirect_JniBackend_nClose(JNIEnv *env, jclass cls, jlong c,
                                                           jobject owner) {
    (void)env, (void)cls, (void)owner;
    lib.eas_client_close(CLIENT(c));
}

JNIEXPORT void JNICALL Java_io_easdirect_JniBackend_nFree(JNIEnv *env, jclass cls, jlong c) {
    (void)env, (void)cls;
    lib.eas_client_free((eas_client *)(intptr_t)c);
}

/* The fetch of a source (EasClient.fromSource), on a library thread: the token is the Java
 * side's key of the source; JniBackend.onFetch fills the builder through nBuilderAdd and returns
 * the status. It catches everything; a pending exception (only a safety net) fails the fetch. */
static int32_t source_fetch(void *user_data, eas_source_builder *builder) {
    int attached;
    JNIEnv *env = callback_env(&attached);
    if (env == NULL) {
        lib.eas_source_builder_set_error(builder, "the JVM is not available");
        return EAS_STATUS_DISCOVERY_FAILED;
    }
    jint st = (*env)->CallStaticIntMethod(env, backend_class, on_fetch_mid,
                                          (jlong)(uintptr_t)user_data,
                                          (jlong)(intptr_t)builder);
    if ((*env)->ExceptionCheck(env)) {
        st = EAS_STATUS_DISCOVERY_FAILED;
    }
    callback_done(env, attached);
    return st;
}

/* The source's free_user_data: once, when the client is closed or freed. */
static void source_free(void *user_data) {
    int attached;
    JNIEnv *env = callback_env(&attached);
    if (env == NULL) {
        return;
    }
    (*env)->CallStaticVoidMethod(env, backend_class, on_source_free_mid,
                                 (jlong)(uintptr_t)user_data);
    callback_done(env, attached);
}

/* token: the Java side's key of the source; it travels as the source's user_data. A refused
 * create takes no ownership of it (source_free does not run). */
JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nClientNewWithSource(JNIEnv *env, jclass cls,
                                                                         jlong token, jlong opts,
                                                                         jlongArray out,
                                                                         jobjectArray msg_out) {
    (void)cls;
    eas_client *c = NULL;
    eas_error *e = NULL;
    jint st = lib.eas_client_new_with_source(source_fetch, (void *)(uintptr_t)token, source_free,
                                             (const eas_options *)(intptr_t)opts, &c, &e);
    if (st == EAS_STATUS_OK) {
        jlong p = (jlong)(intptr_t)c;
        (*env)->SetLongArrayRegion(env, out, 0, 1, &p);
    } else {
        take_error(env, e, msg_out);
    }
    return st;
}

/* Called by JniBackend.onFetch, on the fetching thread, during source_fetch. */
JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nBuilderAdd(JNIEnv *env, jclass cls,
                                                                jlong builder, jbyteArray ip,
                                                                jint port, jint weight) {
    (void)cls;
    if (port < 1 || port > 65535) {
        return EAS_STATUS_INVALID_ARGUMENT;
    }
    jbyte *p = (*env)->GetByteArrayElements(env, ip, NULL);
    if (p == NULL) {
        return EAS_STATUS_NULL_PARAMETER;
    }
    jint st = lib.eas_source_builder_add((eas_source_builder *)(intptr_t)builder,
                                         (const char *)p, (uint16_t)port, (uint32_t)weight);
    (*env)->ReleaseByteArrayElements(env, ip, p, JNI_ABORT);
    return st;
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nBuilderSetError(JNIEnv *env, jclass cls,
                                                                     jlong builder,
                                                                     jbyteArray message) {
    (void)cls;
    jbyte *m = (*env)->GetByteArrayElements(env, message, NULL);
    if (m == NULL) {
        return EAS_STATUS_NULL_PARAMETER;
    }
    jint st = lib.eas_source_builder_set_error((eas_source_builder *)(intptr_t)builder,
                                               (const char *)m);
    (*env)->ReleaseByteArrayElements(env, message, m, JNI_ABORT);
    return st;
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nInstanceStatsSize(JNIEnv *env, jclass cls) {
    (void)env, (void)cls;
    return (jint)sizeof(eas_instance_stats);
}

/* Calls. An eas_call is used by one thread at a time: EasCall serialises its methods, and the
 * owner argument keeps the EasCall (and so the call) reachable during each. */

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nCallBegin(JNIEnv *env, jclass cls, jlong c,
                                                               jbyteArray key, jint key_len,
                                                               jint flags, jlongArray out,
                                                               jobject owner) {
    (void)cls, (void)owner;
    uint8_t small[256];
    uint8_t *k = NULL;
    if (key != NULL && key_len > 0) {
        k = (size_t)key_len <= sizeof small ? small : malloc((size_t)key_len);
        if (k == NULL) {
            return EAS_STATUS_NULL_PARAMETER;
        }
        (*env)->GetByteArrayRegion(env, key, 0, key_len, (jbyte *)k);
    }
    eas_call *call = NULL;
    jint st = lib.eas_call_begin(CLIENT(c), k, k == NULL ? 0 : (size_t)key_len, (uint32_t)flags,
                                 &call);
    if (k != NULL && k != small) {
        free(k);
    }
    if (st == EAS_STATUS_OK) {
        jlong p = (jlong)(intptr_t)call;
        (*env)->SetLongArrayRegion(env, out, 0, 1, &p);
    }
    return st;
}

/* The instance goes into the calling thread's direct buffer at out_addr, as for nSelect. */
JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nCallNext(JNIEnv *env, jclass cls,
                                                              jlong call, jlong out_addr,
                                                              jobject owner) {
    (void)env, (void)cls, (void)owner;
    return lib.eas_call_next(CALL(call), (eas_instance *)(intptr_t)out_addr);
}

/* packed: n header lines as name NUL value NUL ..., or NULL with n 0. Returns 1 (retry) or 0
 * on EAS_STATUS_OK, else minus the status. */
JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nCallRecord(JNIEnv *env, jclass cls,
                                                                jlong call, jint outcome,
                                                                jint http_status,
                                                                jbyteArray packed, jint n,
                                                                jobject owner) {
    (void)cls, (void)owner;
    enum { SMALL_BYTES = 1024, SMALL_LINES = 8 };
    char small[SMALL_BYTES];
    const char *small_names[SMALL_LINES], *small_values[SMALL_LINES];
    char *bytes = NULL;
    const char **names = NULL, **values = NULL;
    jsize size = 0;
    jint result;
    if (packed != NULL && n > 0) {
        size = (*env)->GetArrayLength(env, packed);
        bytes = size <= SMALL_BYTES ? small : malloc((size_t)size);
        names = n <= SMALL_LINES ? small_names : malloc((size_t)n * sizeof *names);
        values = n <= SMALL_LINES ? small_values : malloc((size_t)n * sizeof *values);
        if (bytes == NULL || names == NULL || values == NULL) {
            result = -EAS_STATUS_NULL_PARAMETER;
            goto done;
        }
        (*env)->GetByteArrayRegion(env, packed, 0, size, (jbyte *)bytes);
        /* The Java side ends every string with a NUL; count them rather than trust n. */
        jsize at = 0;
        jint lines = 0;
        while (lines < n && at < size) {
            names[lines] = bytes + at;
            at += (jsize)strnlen(bytes + at, (size_t)(size - at)) + 1;
            if (at >= size) {
                break;
            }
            values[lines] = bytes + at;
            at += (jsize)strnlen(bytes + at, (size_t)(size - at)) + 1;
            if (at > size || bytes[at - 1] != '\0') {
                break;
            }
            lines++;
        }
        n = lines;
    } else {
        n = 0;
    }
    uint32_t retry = 0;
    jint st = lib.eas_call_record(CALL(call), outcome, (uint32_t)http_status, names, values,
                                  (size_t)n, &retry);
    result = st == EAS_STATUS_OK ? (retry ? 1 : 0) : -st;
done:
    if (bytes != NULL && bytes != small) free(bytes);
    if (names != NULL && names != small_names) free(names);
    if (values != NULL && values != small_values) free(values);
    return result;
}

JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nCallFinish(JNIEnv *env, jclass cls,
                                                                jlong call, jint body,
                                                                jobject owner) {
    (void)env, (void)cls, (void)owner;
    return lib.eas_call_finish(CALL(call), body);
}

JNIEXPORT void JNICALL Java_io_easdirect_JniBackend_nCallFree(JNIEnv *env, jclass cls,
                                                              jlong call) {
    (void)env, (void)cls;
    lib.eas_call_free(CALL(call));
}

/* buffer: a direct ByteBuffer of cap records, or NULL with cap 0 to ask for the count. */
JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nInstanceStats(JNIEnv *env, jclass cls,
                                                                   jlong c, jobject buffer,
                                                                   jlong cap, jlongArray len_out,
                                                                   jobject owner) {
    (void)cls, (void)owner;
    eas_instance_stats *buf = NULL;
    if (buffer != NULL) {
        buf = (*env)->GetDirectBufferAddress(env, buffer);
        if (buf == NULL) {
            return EAS_STATUS_NULL_PARAMETER;
        }
    }
    size_t len = 0;
    jint st = lib.eas_client_instance_stats(CLIENT(c), buf, (size_t)cap, &len);
    if (st == EAS_STATUS_OK || st == EAS_STATUS_BUFFER_TOO_SMALL) {
        jlong l = (jlong)len;
        (*env)->SetLongArrayRegion(env, len_out, 0, 1, &l);
    }
    return st;
}

JNIEXPORT jbyteArray JNICALL Java_io_easdirect_JniBackend_nClientService(JNIEnv *env, jclass cls,
                                                                         jlong c, jobject owner) {
    (void)cls, (void)owner;
    return utf8_bytes(env, lib.eas_client_service(CLIENT(c)));
}

JNIEXPORT jbyteArray JNICALL Java_io_easdirect_JniBackend_nClientTarget(JNIEnv *env, jclass cls,
                                                                        jlong c, jobject owner) {
    (void)cls, (void)owner;
    return utf8_bytes(env, lib.eas_client_target(CLIENT(c)));
}

/* Logging and metrics (ABI 1.4). */

static pthread_key_t log_thread_key;
static pthread_once_t log_thread_once = PTHREAD_ONCE_INIT;
static int log_thread_key_ok;

/* Runs if a thread this glue attached for logging exits (the log thread never does). */
static void log_thread_exit(void *attached) {
    if (attached != NULL && jvm != NULL) {
        (*jvm)->DetachCurrentThread(jvm);
    }
}

static void make_log_thread_key(void) {
    log_thread_key_ok = pthread_key_create(&log_thread_key, log_thread_exit) == 0;
}

/* The JNIEnv of the log thread: attached once, as a daemon, and kept attached. */
static JNIEnv *log_env(void) {
    JNIEnv *env = NULL;
    jint r = (*jvm)->GetEnv(jvm, (void **)&env, JNI_VERSION_1_6);
    if (r == JNI_OK) {
        return env;
    }
    if (r != JNI_EDETACHED) {
        return NULL;
    }
    JavaVMAttachArgs args = {JNI_VERSION_1_6, "easdirect-log", NULL};
    if ((*jvm)->AttachCurrentThreadAsDaemon(jvm, (void **)&env, &args) != JNI_OK) {
        return NULL; /* the JVM is going away: drop the line */
    }
    pthread_once(&log_thread_once, make_log_thread_key);
    if (log_thread_key_ok) {
        pthread_setspecific(log_thread_key, (void *)1);
    }
    return env;
}

/* The log function: JniBackend.onLog catches everything; the local frame keeps a thread that
 * never returns to Java from gathering local references. */
static void on_log(void *user_data, int32_t level, const char *message) {
    JNIEnv *env = log_env();
    if (env == NULL) {
        return;
    }
    if ((*env)->PushLocalFrame(env, 4) != 0) {
        (*env)->ExceptionClear(env);
        return;
    }
    jbyteArray m = utf8_bytes(env, message);
    if (m != NULL) {
        (*env)->CallStaticVoidMethod(env, backend_class, on_log_mid, (jlong)(uintptr_t)user_data,
                                     (jint)level, m);
    }
    if ((*env)->ExceptionCheck(env)) {
        (*env)->ExceptionClear(env); /* only a safety net (an OutOfMemoryError here) */
    }
    (*env)->PopLocalFrame(env, NULL);
}

/* The log function's free_user_data: once, on whichever thread lets go last. */
static void on_log_free(void *user_data) {
    int attached;
    JNIEnv *env = callback_env(&attached);
    if (env == NULL) {
        return;
    }
    (*env)->CallStaticVoidMethod(env, backend_class, on_log_free_mid,
                                 (jlong)(uintptr_t)user_data);
    callback_done(env, attached);
}

/* token: the Java side's key of the sink (LogSinks). A refused call takes no ownership. */
JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nSetLog(JNIEnv *env, jclass cls, jlong opts,
                                                            jlong token, jint max_level) {
    (void)env, (void)cls;
    if (lib.eas_options_set_log == NULL) {
        return EAS_STATUS_NULL_PARAMETER;
    }
    return lib.eas_options_set_log((eas_options *)(intptr_t)opts, on_log,
                                   (void *)(uintptr_t)token, on_log_free, (int32_t)max_level);
}

/* The whole text in out[0]; loops while it grows between the length and the copy. */
JNIEXPORT jint JNICALL Java_io_easdirect_JniBackend_nMetricsText(JNIEnv *env, jclass cls,
                                                                 jlong c, jobjectArray out,
                                                                 jobject owner) {
    (void)cls, (void)owner;
    if (lib.eas_client_metrics_text == NULL) {
        return EAS_STATUS_NULL_PARAMETER;
    }
    char *buf = NULL;
    size_t cap = 0, len = 0;
    jint st;
    for (;;) {
        st = lib.eas_client_metrics_text(CLIENT(c), buf, cap, &len);
        if (st != EAS_STATUS_BUFFER_TOO_SMALL) {
            break;
        }
        free(buf);
        cap = len + 1 + len / 8; /* the NUL, and room for a list that grows meanwhile */
        buf = malloc(cap);
        if (buf == NULL) {
            return EAS_STATUS_NULL_PARAMETER;
        }
    }
    if (st == EAS_STATUS_OK) {
        if (len > (size_t)INT32_MAX) {
            st = EAS_STATUS_BUFFER_TOO_SMALL;
        } else {
            jbyteArray a = (*env)->NewByteArray(env, (jsize)len);
            if (a == NULL) {
                free(buf);
                return EAS_STATUS_NULL_PARAMETER; /* OutOfMemoryError pending */
            }
            if (len > 0) {
                (*env)->SetByteArrayRegion(env, a, 0, (jsize)len, (const jbyte *)buf);
            }
            (*env)->SetObjectArrayElement(env, out, 0, a);
            (*env)->DeleteLocalRef(env, a);
        }
    }
    free(buf);
    return st;
}
