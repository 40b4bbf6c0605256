package io.easdirect;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * The JNI backend, for JDK 8 to 21 (and any JDK with {@code -Deasdirect.backend=jni}): native
 * methods of a small C glue (src/main/c/easdirect_jni.c) that dlopens libeasdirect.
 */
final class JniBackend extends Backend {
    /** Must match GLUE_VERSION in easdirect_jni.c. */
    private static final int GLUE_VERSION = 5;

    private final NativeLibrary library;
    private final String version;

    JniBackend() {
        NativeLibrary glue = NativeLibrary.find("easdirect_jni", "easdirect.jni.library");
        System.load(glue.path.toString());
        glue.loaded();
        int glueVersion = nGlueVersion();
        if (glueVersion != GLUE_VERSION) {
            throw new IllegalStateException("the JNI glue " + glue + " is version " + glueVersion
                    + ", this binding needs " + GLUE_VERSION + ": use the one built with it");
        }
        library = NativeLibrary.find("easdirect", "easdirect.library");
        String err = nInit(cString(library.path.toString()));
        library.loaded();
        if (err != null) {
            throw new IllegalStateException("loading libeasdirect " + library + ": " + err);
        }
        if (nInstanceSize() != Instance.SIZE) {
            throw new IllegalStateException("the JNI glue " + glue + " has sizeof(eas_instance) = "
                    + nInstanceSize() + ", not " + Instance.SIZE);
        }
        if (nInstanceStatsSize() != InstanceStats.SIZE) {
            throw new IllegalStateException("the JNI glue " + glue
                    + " has sizeof(eas_instance_stats) = " + nInstanceStatsSize() + ", not "
                    + InstanceStats.SIZE);
        }
        version = utf8(nVersion());
    }

    @Override
    String name() {
        return "jni";
    }

    @Override
    NativeLibrary library() {
        return library;
    }

    @Override
    String version() {
        return version;
    }

    @Override
    int abiVersion() {
        return nAbiVersion();
    }

    @Override
    String statusString(int status) {
        return utf8(nStatusString(status));
    }

    @Override
    NativeClient open(String target, Map<String, String> options, long logToken,
            int logLevel) {
        byte[][] msg = new byte[1][];
        long opts = 0;
        try {
            opts = options(options, logToken, logLevel, msg);
            long[] out = new long[1];
            int st = nClientNew(cString(target), opts, out, msg);
            if (st != 0) {
                throw EasException.of(st, utf8(msg[0]));
            }
            return new Client(out[0]);
        } finally {
            nOptionsFree(opts);
        }
    }

    @Override
    NativeClient openSource(long token, Map<String, String> options, long logToken,
            int logLevel) {
        byte[][] msg = new byte[1][];
        long opts = 0;
        try {
            opts = options(options, logToken, logLevel, msg);
            long[] out = new long[1];
            int st = nClientNewWithSource(token, opts, out, msg);
            if (st != 0) {
                throw EasException.of(st, utf8(msg[0]));
            }
            return new Client(out[0]);
        } finally {
            nOptionsFree(opts);
        }
    }

    /**
     * eas_options_new, _set for each option and, with {@code logLevel} 1-4, _set_log last (once
     * it has taken the token, eas_options_free lets go of it); 0 for none. Throws EasException.
     */
    private static long options(Map<String, String> options, long logToken, int logLevel,
            byte[][] msg) {
        if (options.isEmpty() && logLevel == 0) {
            return 0;
        }
        long opts = nOptionsNew();
        if (opts == 0) {
            throw new OutOfMemoryError("eas_options_new");
        }
        try {
            for (Map.Entry<String, String> e : options.entrySet()) {
                int st = nOptionsSet(opts, cString(e.getKey()), cString(e.getValue()), msg);
                if (st != 0) {
                    throw EasException.of(st, utf8(msg[0]));
                }
            }
            if (logLevel != 0) {
                int st = nSetLog(opts, logToken, logLevel);
                if (st != 0) {
                    throw EasException.of(st, "eas_options_set_log(max_level " + logLevel + ")");
                }
            }
        } catch (RuntimeException | Error e) {
            nOptionsFree(opts);
            throw e;
        }
        return opts;
    }

    static byte[] cString(String s) {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        byte[] z = new byte[b.length + 1];
        System.arraycopy(b, 0, z, 0, b.length);
        return z;
    }

    static String utf8(byte[] b) {
        return b == null ? null : new String(b, StandardCharsets.UTF_8);
    }

    /** A thread's out-struct for select: a direct buffer and its (8-aligned) address. */
    private static final class Slot {
        final ByteBuffer buf;
        final int base;
        final long addr;

        Slot() {
            buf = ByteBuffer.allocateDirect(Instance.SIZE + 8).order(ByteOrder.nativeOrder());
            long a = nAddress(buf);
            base = (int) ((8 - (a & 7)) & 7);
            addr = a + base;
        }
    }

    private static final ThreadLocal<Slot> SLOT = ThreadLocal.withInitial(Slot::new);

    private static final class Client extends NativeClient {
        private final long ptr;

        Client(long ptr) {
            this.ptr = ptr;
        }

        @Override
        int waitReady(Object owner, int timeoutMs, String[] message) {
            byte[][] msg = new byte[1][];
            int st = nWaitReady(ptr, timeoutMs, msg, owner);
            message[0] = utf8(msg[0]);
            return st;
        }

        private static Instance picked(int st, Slot s, InstanceTable table) {
            if (st != 0) {
                throw EasException.of(st);
            }
            ByteBuffer b = s.buf;
            int o = s.base;
            Instance x = table.find(b.getLong(o + Instance.ID),
                    b.getShort(o + Instance.PORT) & 0xffff,
                    b.getInt(o + Instance.WEIGHT) & 0xffffffffL);
            return x != null ? x : table.intern(b, o);
        }

        @Override
        Instance select(Object owner, InstanceTable table) {
            Slot s = SLOT.get();
            return picked(nSelect(ptr, s.addr, owner), s, table);
        }

        @Override
        Instance selectExcluding(Object owner, InstanceTable table, long[] ids) {
            Slot s = SLOT.get();
            return picked(nSelectExcluding(ptr, ids, ids.length, s.addr, owner), s, table);
        }

        @Override
        int reportFailure(Object owner, long id) {
            return nReportFailure(ptr, id, owner);
        }

        @Override
        int reportSuccess(Object owner, long id) {
            return nReportSuccess(ptr, id, owner);
        }

        @Override
        List<Instance> instances(Object owner, InstanceTable table) {
            long[] len = new long[1];
            ByteBuffer buf = null;
            long cap = 0;
            for (;;) {
                int st = nInstances(ptr, buf, cap, len, owner);
                if (st == 0) {
                    return len[0] == 0 ? Collections.<Instance>emptyList()
                            : table.internAll(buf, (int) len[0]);
                }
                if (st != EasStatus.BUFFER_TOO_SMALL.code()) {
                    throw EasException.of(st);
                }
                cap = len[0] + 16; // the list may grow before the next call
                buf = ByteBuffer.allocateDirect((int) cap * Instance.SIZE)
                        .order(ByteOrder.nativeOrder());
            }
        }

        @Override
        int lastError(Object owner, String[] message) {
            byte[][] msg = new byte[1][];
            int st = nLastError(ptr, msg, owner);
            message[0] = utf8(msg[0]);
            return st;
        }

        @Override
        Stats stats(Object owner) {
            long[] v = new long[6];
            int st = nStats(ptr, v, owner);
            if (st != 0) {
                throw EasException.of(st);
            }
            return new Stats(v[0], v[1], v[2], v[3], (int) v[4], (int) v[5]);
        }

        @Override
        int transport(Object owner) {
            int[] out = new int[1];
            int st = nTransport(ptr, out, owner);
            if (st != 0) {
                throw EasException.of(st);
            }
            return out[0];
        }

        @Override
        long subscribe(Object owner, long token) {
            long[] out = new long[1];
            int st = nSubscribe(ptr, token, out, owner);
            if (st != 0) {
                throw EasException.of(st);
            }
            return out[0];
        }

        @Override
        int unsubscribe(Object owner, long subscription) {
            return nUnsubscribe(ptr, subscription, owner);
        }

        @Override
        void close(Object owner) {
            nClose(ptr, owner);
        }

        @Override
        NativeCall beginCall(Object owner, byte[] key, int flags) {
            long[] out = new long[1];
            int st = nCallBegin(ptr, key, key == null ? 0 : key.length, flags, out, owner);
            if (st != 0) {
                throw EasException.of(st);
            }
            return new Call(out[0]);
        }

        @Override
        InstanceStats[] instanceStats(Object owner) {
            long[] len = new long[1];
            ByteBuffer buf = null;
            long cap = 0;
            for (;;) {
                int st = nInstanceStats(ptr, buf, cap, len, owner);
                if (st == 0) {
                    return len[0] == 0 ? new InstanceStats[0]
                            : InstanceStats.readAll(buf, (int) len[0]);
                }
                if (st != EasStatus.BUFFER_TOO_SMALL.code()) {
                    throw EasException.of(st);
                }
                cap = len[0] + 16; // the list may grow before the next call
                buf = ByteBuffer.allocateDirect((int) cap * InstanceStats.SIZE)
                        .order(ByteOrder.nativeOrder());
            }
        }

        @Override
        String metricsText(Object owner) {
            byte[][] out = new byte[1][];
            int st = nMetricsText(ptr, out, owner);
            if (st != 0) {
                throw EasException.of(st);
            }
            return utf8(out[0]);
        }

        @Override
        String service(Object owner) {
            return utf8(nClientService(ptr, owner));
        }

        @Override
        String target(Object owner) {
            return utf8(nClientTarget(ptr, owner));
        }

        @Override
        void free() {
            nFree(ptr);
        }
    }

    private static final class Call extends NativeCall {
        private final long ptr;

        Call(long ptr) {
            this.ptr = ptr;
        }

        @Override
        Instance next(Object owner, InstanceTable table) {
            Slot s = SLOT.get();
            return Client.picked(nCallNext(ptr, s.addr, owner), s, table);
        }

        @Override
        boolean record(Object owner, int outcome, int httpStatus, String[] headers, int n) {
            byte[] packed = null;
            if (n > 0) {
                // name NUL value NUL, n times: one array for the glue to copy.
                byte[][] parts = new byte[2 * n][];
                int size = 0;
                for (int i = 0; i < 2 * n; i++) {
                    parts[i] = headers[i].getBytes(StandardCharsets.UTF_8);
                    size += parts[i].length + 1;
                }
                packed = new byte[size];
                int at = 0;
                for (byte[] p : parts) {
                    System.arraycopy(p, 0, packed, at, p.length);
                    at += p.length + 1; // the NUL: arrays start zeroed
                }
            }
            int r = nCallRecord(ptr, outcome, httpStatus, packed, n, owner);
            if (r < 0) {
                throw EasException.of(-r);
            }
            return r == 1;
        }

        @Override
        void finish(Object owner, int body) {
            int st = nCallFinish(ptr, body, owner);
            if (st != 0) {
                throw EasException.of(st);
            }
        }

        @Override
        void free() {
            nCallFree(ptr);
        }
    }

    // Called by the glue on a library thread (attached for the call). Never throw.

    static void onChange(long token, byte[] list, int n) {
        Listeners.onChange(token, ByteBuffer.wrap(list).order(ByteOrder.nativeOrder()), n);
    }

    static void onFree(long token) {
        Listeners.onFree(token);
    }

    /** The builder of the running fetch: a pointer valid only during the call. */
    private static final class Builder extends Sources.Builder {
        private final long ptr;

        Builder(long ptr) {
            this.ptr = ptr;
        }

        @Override
        int add(String ip, int port, int weight) {
            return nBuilderAdd(ptr, cString(ip), port, weight);
        }

        @Override
        void setError(String message) {
            nBuilderSetError(ptr, cString(message));
        }
    }

    /** The source's fetch: returns the status. */
    static int onFetch(long token, long builder) {
        return Sources.fetch(token, new Builder(builder));
    }

    static void onSourceFree(long token) {
        Sources.onFree(token);
    }

    /** A log line, on the library's log thread; {@code message} UTF-8 without the NUL. */
    static void onLog(long token, int level, byte[] message) {
        try {
            LogSinks.onLine(token, level, utf8(message));
        } catch (Throwable ignored) {
            // nothing may escape into native code
        }
    }

    static void onLogFree(long token) {
        try {
            LogSinks.onFree(token);
        } catch (Throwable ignored) {
            // nothing to report to
        }
    }

    // The glue. Strings are NUL-terminated UTF-8 byte arrays; `owner` keeps the client's owner
    // reachable during the call; messages come back in msg[0].

    private static native String nInit(byte[] libraryPath);

    private static native int nGlueVersion();

    private static native int nInstanceSize();

    private static native byte[] nVersion();

    private static native int nAbiVersion();

    private static native byte[] nStatusString(int status);

    private static native long nOptionsNew();

    private static native int nOptionsSet(long opts, byte[] key, byte[] value, byte[][] msg);

    private static native void nOptionsFree(long opts);

    private static native int nClientNew(byte[] target, long opts, long[] out, byte[][] msg);

    private static native int nClientNewWithSource(long token, long opts, long[] out,
            byte[][] msg);

    private static native int nBuilderAdd(long builder, byte[] ip, int port, int weight);

    private static native int nBuilderSetError(long builder, byte[] message);

    private static native int nWaitReady(long client, int timeoutMs, byte[][] msg, Object owner);

    private static native long nAddress(ByteBuffer buffer);

    private static native int nSelect(long client, long outAddr, Object owner);

    private static native int nSelectExcluding(long client, long[] ids, int n, long outAddr,
            Object owner);

    private static native int nReportFailure(long client, long id, Object owner);

    private static native int nReportSuccess(long client, long id, Object owner);

    private static native int nInstances(long client, ByteBuffer buf, long cap, long[] len,
            Object owner);

    private static native int nLastError(long client, byte[][] msg, Object owner);

    private static native int nStats(long client, long[] out, Object owner);

    private static native int nTransport(long client, int[] out, Object owner);

    private static native int nSubscribe(long client, long token, long[] out, Object owner);

    private static native int nUnsubscribe(long client, long subscription, Object owner);

    private static native void nClose(long client, Object owner);

    private static native void nFree(long client);

    private static native int nInstanceStatsSize();

    private static native int nCallBegin(long client, byte[] key, int keyLen, int flags,
            long[] out, Object owner);

    private static native int nCallNext(long call, long outAddr, Object owner);

    /**
     * eas_call_record with {@code n} header lines packed as name NUL value NUL...; returns
     * 1 (retry) or 0 on OK, else minus the status.
     */
    private static native int nCallRecord(long call, int outcome, int httpStatus, byte[] packed,
            int n, Object owner);

    private static native int nCallFinish(long call, int body, Object owner);

    private static native void nCallFree(long call);

    private static native int nInstanceStats(long client, ByteBuffer buf, long cap, long[] len,
            Object owner);

    private static native byte[] nClientService(long client, Object owner);

    private static native byte[] nClientTarget(long client, Object owner);

    /**
     * eas_options_set_log with the glue's log functions and {@code token} as user_data (ABI
     * 1.4; EAS_STATUS_NULL_PARAMETER when the library has no such function).
     */
    private static native int nSetLog(long opts, long token, int maxLevel);

    /** eas_client_metrics_text, looping in the glue; the text in out[0] on OK (ABI 1.4). */
    private static native int nMetricsText(long client, byte[][] out, Object owner);
}
