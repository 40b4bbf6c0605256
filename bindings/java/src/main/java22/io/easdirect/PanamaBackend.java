package io.easdirect;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.lang.ref.Reference;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * The Panama backend (java.lang.foreign, final since JDK 22): downcall handles bound once, in
 * static finals so that the JIT inlines them. A pick writes into the calling thread's own
 * segment and is a critical downcall (no thread-state transition: it never blocks or calls
 * back). Compiled with release 22; loaded by name only on JDK 22 or newer.
 */
final class PanamaBackend extends Backend {
    /** eas_instance: id @0, ip @8, port @54, weight @56, host @60, reserved @124. */
    static final StructLayout INSTANCE = MemoryLayout.structLayout(
            JAVA_LONG.withName("id"),
            MemoryLayout.sequenceLayout(46, JAVA_BYTE).withName("ip"),
            JAVA_SHORT.withName("port"),
            JAVA_INT.withName("weight"),
            MemoryLayout.sequenceLayout(64, JAVA_BYTE).withName("host"),
            MemoryLayout.sequenceLayout(4, JAVA_BYTE).withName("reserved"));

    /** eas_stats: four uint64_t then two uint32_t. */
    static final StructLayout STATS = MemoryLayout.structLayout(
            JAVA_LONG.withName("generation"),
            JAVA_LONG.withName("refresh_ok"),
            JAVA_LONG.withName("refresh_failed"),
            JAVA_LONG.withName("last_ok_unix_ms"),
            JAVA_INT.withName("instances"),
            JAVA_INT.withName("ejected"));

    /** eas_instance_stats: 64 bytes, offsets as {@link InstanceStats} reads them. */
    static final StructLayout INSTANCE_STATS = MemoryLayout.structLayout(
            JAVA_LONG.withName("id"),
            JAVA_INT.withName("in_flight"),
            JAVA_INT.withName("reported_waiting"),
            JAVA_LONG.withName("attempts"),
            JAVA_LONG.withName("failures"),
            JAVA_INT.withName("latency_ewma_us"),
            JAVA_INT.withName("reported_kv_permille"),
            JAVA_LONG.withName("ejected_until_unix_ms"),
            JAVA_LONG.withName("report_unix_ms"),
            JAVA_INT.withName("weight"),
            JAVA_INT.withName("reported_running"));

    private static final NativeLibrary LIBRARY;
    private static final MethodHandle VERSION;
    private static final MethodHandle ABI_VERSION;
    private static final MethodHandle STATUS_STR;
    private static final MethodHandle OPTIONS_NEW;
    private static final MethodHandle OPTIONS_SET;
    private static final MethodHandle OPTIONS_FREE;
    private static final MethodHandle CLIENT_NEW;
    private static final MethodHandle WAIT_READY;
    private static final MethodHandle SELECT;
    private static final MethodHandle SELECT_EXCLUDING;
    private static final MethodHandle REPORT_FAILURE;
    private static final MethodHandle REPORT_SUCCESS;
    private static final MethodHandle INSTANCES;
    private static final MethodHandle LAST_ERROR;
    private static final MethodHandle STATS_FN;
    private static final MethodHandle TRANSPORT_FN;
    private static final MethodHandle SUBSCRIBE;
    private static final MethodHandle UNSUBSCRIBE;
    private static final MethodHandle CLOSE;
    private static final MethodHandle FREE;
    private static final MethodHandle ERROR_MESSAGE;
    private static final MethodHandle ERROR_FREE;
    private static final MethodHandle CLIENT_NEW_WITH_SOURCE;
    private static final MethodHandle BUILDER_ADD;
    private static final MethodHandle BUILDER_SET_ERROR;
    private static final MethodHandle CALL_BEGIN;
    private static final MethodHandle CALL_NEXT;
    private static final MethodHandle CALL_RECORD;
    private static final MethodHandle CALL_FINISH;
    private static final MethodHandle CALL_FREE;
    private static final MethodHandle INSTANCE_STATS_FN;
    private static final MethodHandle CLIENT_SERVICE;
    private static final MethodHandle CLIENT_TARGET;
    /** ABI 1.4 (eas_options_set_log, eas_client_metrics_text): null on an older library. */
    private static final MethodHandle SET_LOG;
    private static final MethodHandle METRICS_TEXT;
    /** The upcall stubs of every subscription: the listener is found by its token. */
    private static final MemorySegment ON_CHANGE;
    private static final MemorySegment ON_FREE;
    /**
     * The upcall stubs of every source (fetch, free_user_data): the source is found by its
     * token. In the global arena: alive as long as any client may call them, and never freed
     * while one of them runs (free_user_data included).
     */
    private static final MemorySegment ON_FETCH;
    private static final MemorySegment ON_SOURCE_FREE;
    /**
     * The upcall stubs of every log function (the line, free_user_data): the sink is found by
     * its token ({@link LogSinks}), which stays until free_user_data runs. In the global arena,
     * as the others: never freed, so alive for as long as the library may call them.
     */
    private static final MemorySegment ON_LOG;
    private static final MemorySegment ON_LOG_FREE;

    static {
        if (INSTANCE.byteSize() != Instance.SIZE
                || INSTANCE.byteOffset(MemoryLayout.PathElement.groupElement("host")) != Instance.HOST
                || STATS.byteSize() != 40) {
            throw new IllegalStateException("eas_instance must be 128 bytes and eas_stats 40");
        }
        checkStatsLayout();
        LIBRARY = NativeLibrary.find("easdirect", "easdirect.library");
        SymbolLookup lib = SymbolLookup.libraryLookup(LIBRARY.path, Arena.global());
        LIBRARY.loaded();
        Linker linker = Linker.nativeLinker();
        Binder b = new Binder(linker, lib);
        VERSION = b.bind("eas_version", FunctionDescriptor.of(ADDRESS));
        ABI_VERSION = b.bind("eas_abi_version", FunctionDescriptor.of(JAVA_INT));
        STATUS_STR = b.bind("eas_status_str", FunctionDescriptor.of(ADDRESS, JAVA_INT));
        OPTIONS_NEW = b.bind("eas_options_new", FunctionDescriptor.of(ADDRESS));
        OPTIONS_SET = b.bind("eas_options_set",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS));
        OPTIONS_FREE = b.bind("eas_options_free", FunctionDescriptor.ofVoid(ADDRESS));
        CLIENT_NEW = b.bind("eas_client_new",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS));
        WAIT_READY = b.bind("eas_client_wait_ready",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS));
        // A pick takes no lock, never blocks and never calls back: critical downcalls. The
        // excluded ids may be a heap array.
        SELECT = b.bind("eas_select_instance", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS),
                Linker.Option.critical(false));
        SELECT_EXCLUDING = b.bind("eas_select_instance_excluding",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG, ADDRESS),
                Linker.Option.critical(true));
        REPORT_FAILURE = b.bind("eas_report_failure",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG));
        REPORT_SUCCESS = b.bind("eas_report_success",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG));
        INSTANCES = b.bind("eas_client_instances",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG, ADDRESS));
        LAST_ERROR = b.bind("eas_client_last_error",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        STATS_FN = b.bind("eas_client_stats", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        TRANSPORT_FN = b.bind("eas_client_transport",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        SUBSCRIBE = b.bind("eas_client_subscribe",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS));
        UNSUBSCRIBE = b.bind("eas_client_unsubscribe",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG));
        CLOSE = b.bind("eas_client_close", FunctionDescriptor.ofVoid(ADDRESS));
        FREE = b.bind("eas_client_free", FunctionDescriptor.ofVoid(ADDRESS));
        ERROR_MESSAGE = b.bind("eas_error_message", FunctionDescriptor.of(ADDRESS, ADDRESS));
        ERROR_FREE = b.bind("eas_error_free", FunctionDescriptor.ofVoid(ADDRESS));
        CLIENT_NEW_WITH_SOURCE = b.bind("eas_client_new_with_source", FunctionDescriptor.of(
                JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS, ADDRESS));
        BUILDER_ADD = b.bind("eas_source_builder_add",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_SHORT, JAVA_INT));
        BUILDER_SET_ERROR = b.bind("eas_source_builder_set_error",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        // Calls write the client's shared counters and may take its lock briefly: ordinary
        // (not critical) downcalls.
        CALL_BEGIN = b.bind("eas_call_begin",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG, JAVA_INT, ADDRESS));
        CALL_NEXT = b.bind("eas_call_next", FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS));
        CALL_RECORD = b.bind("eas_call_record", FunctionDescriptor.of(JAVA_INT, ADDRESS,
                JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG, ADDRESS));
        CALL_FINISH = b.bind("eas_call_finish", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
        CALL_FREE = b.bind("eas_call_free", FunctionDescriptor.ofVoid(ADDRESS));
        INSTANCE_STATS_FN = b.bind("eas_client_instance_stats",
                FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG, ADDRESS));
        CLIENT_SERVICE = b.bind("eas_client_service", FunctionDescriptor.of(ADDRESS, ADDRESS));
        CLIENT_TARGET = b.bind("eas_client_target", FunctionDescriptor.of(ADDRESS, ADDRESS));
        int abi;
        try {
            abi = (int) ABI_VERSION.invokeExact();
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
        if ((abi >>> 16) == ABI_MAJOR && (abi & 0xffff) >= OBSERVABILITY_MINOR) {
            SET_LOG = b.bind("eas_options_set_log",
                    FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, ADDRESS, JAVA_INT));
            METRICS_TEXT = b.bind("eas_client_metrics_text",
                    FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, JAVA_LONG, ADDRESS));
        } else {
            SET_LOG = null; // Backend.requireObservability refuses what needs them
            METRICS_TEXT = null;
        }
        try {
            MethodHandles.Lookup lookup = MethodHandles.lookup();
            ON_CHANGE = linker.upcallStub(
                    lookup.findStatic(PanamaBackend.class, "onChange", MethodType.methodType(
                            void.class, MemorySegment.class, MemorySegment.class, long.class)),
                    FunctionDescriptor.ofVoid(ADDRESS, ADDRESS, JAVA_LONG), Arena.global());
            ON_FREE = linker.upcallStub(
                    lookup.findStatic(PanamaBackend.class, "onFree",
                            MethodType.methodType(void.class, MemorySegment.class)),
                    FunctionDescriptor.ofVoid(ADDRESS), Arena.global());
            ON_FETCH = linker.upcallStub(
                    lookup.findStatic(PanamaBackend.class, "onFetch", MethodType.methodType(
                            int.class, MemorySegment.class, MemorySegment.class)),
                    FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), Arena.global());
            ON_SOURCE_FREE = linker.upcallStub(
                    lookup.findStatic(PanamaBackend.class, "onSourceFree",
                            MethodType.methodType(void.class, MemorySegment.class)),
                    FunctionDescriptor.ofVoid(ADDRESS), Arena.global());
            ON_LOG = linker.upcallStub(
                    lookup.findStatic(PanamaBackend.class, "onLog", MethodType.methodType(
                            void.class, MemorySegment.class, int.class, MemorySegment.class)),
                    FunctionDescriptor.ofVoid(ADDRESS, JAVA_INT, ADDRESS), Arena.global());
            ON_LOG_FREE = linker.upcallStub(
                    lookup.findStatic(PanamaBackend.class, "onLogFree",
                            MethodType.methodType(void.class, MemorySegment.class)),
                    FunctionDescriptor.ofVoid(ADDRESS), Arena.global());
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The layout {@link InstanceStats} reads: the C ABI's, field by field. */
    private static void checkStatsLayout() {
        String[] names = {"in_flight", "reported_waiting", "attempts", "failures",
            "latency_ewma_us", "reported_kv_permille", "ejected_until_unix_ms", "report_unix_ms",
            "weight", "reported_running"};
        int[] offsets = {InstanceStats.IN_FLIGHT, InstanceStats.REPORTED_WAITING,
            InstanceStats.ATTEMPTS, InstanceStats.FAILURES, InstanceStats.LATENCY_EWMA_US,
            InstanceStats.REPORTED_KV_PERMILLE, InstanceStats.EJECTED_UNTIL_UNIX_MS,
            InstanceStats.REPORT_UNIX_MS, InstanceStats.WEIGHT, InstanceStats.REPORTED_RUNNING};
        if (INSTANCE_STATS.byteSize() != InstanceStats.SIZE) {
            throw new IllegalStateException("eas_instance_stats must be 64 bytes");
        }
        for (int i = 0; i < names.length; i++) {
            long at = INSTANCE_STATS.byteOffset(MemoryLayout.PathElement.groupElement(names[i]));
            if (at != offsets[i]) {
                throw new IllegalStateException("eas_instance_stats." + names[i] + " is @" + at
                        + ", InstanceStats reads it @" + offsets[i]);
            }
        }
    }

    private static final class Binder {
        private final Linker linker;
        private final SymbolLookup lib;

        Binder(Linker linker, SymbolLookup lib) {
            this.linker = linker;
            this.lib = lib;
        }

        MethodHandle bind(String name, FunctionDescriptor fd, Linker.Option... options) {
            MemorySegment fn = lib.find(name).orElseThrow(() -> new IllegalStateException(
                    "libeasdirect at " + LIBRARY + " has no function " + name));
            return linker.downcallHandle(fn, fd, options);
        }
    }

    private final String version;

    PanamaBackend() {
        try {
            version = string((MemorySegment) VERSION.invokeExact());
        } catch (Throwable t) {
            throw unexpected(t);
        }
    }

    @Override
    String name() {
        return "panama";
    }

    @Override
    NativeLibrary library() {
        return LIBRARY;
    }

    @Override
    String version() {
        return version;
    }

    @Override
    int abiVersion() {
        try {
            return (int) ABI_VERSION.invokeExact();
        } catch (Throwable t) {
            throw unexpected(t);
        }
    }

    @Override
    String statusString(int status) {
        try {
            return string((MemorySegment) STATUS_STR.invokeExact(status));
        } catch (Throwable t) {
            throw unexpected(t);
        }
    }

    @Override
    NativeClient open(String target, Map<String, String> options, long logToken,
            int logLevel) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment err = arena.allocate(ADDRESS);
            MemorySegment opts = options(options, logToken, logLevel, arena, err);
            try {
                MemorySegment out = arena.allocate(ADDRESS);
                int st = (int) CLIENT_NEW.invokeExact(arena.allocateFrom(target), opts, out, err);
                check(st, err);
                return new Client(out.get(ADDRESS, 0));
            } finally {
                OPTIONS_FREE.invokeExact(opts);
            }
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected(t);
        }
    }

    @Override
    NativeClient openSource(long token, Map<String, String> options, long logToken,
            int logLevel) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment err = arena.allocate(ADDRESS);
            MemorySegment opts = options(options, logToken, logLevel, arena, err);
            try {
                MemorySegment out = arena.allocate(ADDRESS);
                // A refused create takes no ownership of the token: ON_SOURCE_FREE never runs.
                int st = (int) CLIENT_NEW_WITH_SOURCE.invokeExact(ON_FETCH,
                        MemorySegment.ofAddress(token), ON_SOURCE_FREE, opts, out, err);
                check(st, err);
                return new Client(out.get(ADDRESS, 0));
            } finally {
                OPTIONS_FREE.invokeExact(opts);
            }
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected(t);
        }
    }

    /**
     * eas_options_new, _set for each option and, with {@code logLevel} 1-4, _set_log last (once
     * it has taken the token, eas_options_free lets go of it); NULL for none. Throws
     * EasException.
     */
    private static MemorySegment options(Map<String, String> options, long logToken,
            int logLevel, Arena arena, MemorySegment err) throws Throwable {
        if (options.isEmpty() && logLevel == 0) {
            return MemorySegment.NULL;
        }
        MemorySegment opts = (MemorySegment) OPTIONS_NEW.invokeExact();
        if (opts.equals(MemorySegment.NULL)) {
            throw new OutOfMemoryError("eas_options_new");
        }
        try {
            for (Map.Entry<String, String> e : options.entrySet()) {
                int st = (int) OPTIONS_SET.invokeExact(opts, arena.allocateFrom(e.getKey()),
                        arena.allocateFrom(e.getValue()), err);
                check(st, err);
            }
            if (logLevel != 0) {
                int st = (int) SET_LOG.invokeExact(opts, ON_LOG, MemorySegment.ofAddress(logToken),
                        ON_LOG_FREE, logLevel);
                if (st != 0) {
                    throw EasException.of(st, "eas_options_set_log(max_level " + logLevel + ")");
                }
            }
        } catch (Throwable t) {
            OPTIONS_FREE.invokeExact(opts);
            throw t;
        }
        return opts;
    }

    /** Throws for a status other than OK, with the message of the eas_error in *err. */
    private static void check(int st, MemorySegment err) throws Throwable {
        if (st != 0) {
            throw EasException.of(st, takeError(err));
        }
    }

    /** The message of the eas_error in *err (null if none), freeing it. */
    private static String takeError(MemorySegment errSlot) throws Throwable {
        MemorySegment e = errSlot.get(ADDRESS, 0);
        if (e.equals(MemorySegment.NULL)) {
            return null;
        }
        try {
            return string((MemorySegment) ERROR_MESSAGE.invokeExact(e));
        } finally {
            ERROR_FREE.invokeExact(e);
            errSlot.set(ADDRESS, 0, MemorySegment.NULL);
        }
    }

    private static String string(MemorySegment cstr) {
        return cstr.equals(MemorySegment.NULL) ? null
                : cstr.reinterpret(Long.MAX_VALUE).getString(0);
    }

    private static RuntimeException unexpected(Throwable t) {
        if (t instanceof RuntimeException r) {
            return r;
        }
        if (t instanceof Error e) {
            throw e;
        }
        return new IllegalStateException(t);
    }

    /** A thread's out-struct for select; freed by the GC with the thread's map entry. */
    private static final ThreadLocal<MemorySegment> OUT =
            ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(INSTANCE));

    private static final class Client extends NativeClient {
        private final MemorySegment ptr;

        Client(MemorySegment ptr) {
            this.ptr = ptr;
        }

        @Override
        int waitReady(Object owner, int timeoutMs, String[] message) {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment err = arena.allocate(ADDRESS);
                int st = (int) WAIT_READY.invokeExact(ptr, timeoutMs, err);
                message[0] = st == 0 ? null : takeError(err);
                return st;
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        private static Instance picked(int st, MemorySegment out, InstanceTable table) {
            if (st != 0) {
                throw EasException.of(st);
            }
            Instance x = table.find(out.get(JAVA_LONG, Instance.ID),
                    Short.toUnsignedInt(out.get(JAVA_SHORT, Instance.PORT)),
                    Integer.toUnsignedLong(out.get(JAVA_INT, Instance.WEIGHT)));
            return x != null ? x : table.intern(out.asByteBuffer().order(ByteOrder.nativeOrder()), 0);
        }

        @Override
        Instance select(Object owner, InstanceTable table) {
            MemorySegment out = OUT.get();
            int st;
            try {
                st = (int) SELECT.invokeExact(ptr, out);
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
            return picked(st, out, table);
        }

        @Override
        Instance selectExcluding(Object owner, InstanceTable table, long[] ids) {
            MemorySegment out = OUT.get();
            MemorySegment excluded = ids.length == 0 ? MemorySegment.NULL : MemorySegment.ofArray(ids);
            int st;
            try {
                st = (int) SELECT_EXCLUDING.invokeExact(ptr, excluded, (long) ids.length, out);
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
            return picked(st, out, table);
        }

        @Override
        int reportFailure(Object owner, long id) {
            try {
                return (int) REPORT_FAILURE.invokeExact(ptr, id);
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        int reportSuccess(Object owner, long id) {
            try {
                return (int) REPORT_SUCCESS.invokeExact(ptr, id);
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        List<Instance> instances(Object owner, InstanceTable table) {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment len = arena.allocate(JAVA_LONG);
                MemorySegment buf = MemorySegment.NULL;
                long cap = 0;
                for (;;) {
                    int st = (int) INSTANCES.invokeExact(ptr, buf, cap, len);
                    long n = len.get(JAVA_LONG, 0);
                    if (st == 0) {
                        if (n == 0) {
                            return Collections.emptyList();
                        }
                        ByteBuffer bb = buf.asSlice(0, n * Instance.SIZE).asByteBuffer()
                                .order(ByteOrder.nativeOrder());
                        return table.internAll(bb, (int) n);
                    }
                    if (st != EasStatus.BUFFER_TOO_SMALL.code()) {
                        throw EasException.of(st);
                    }
                    cap = n + 16; // the list may grow before the next call
                    buf = arena.allocate(INSTANCE, cap);
                }
            } catch (RuntimeException | Error e) {
                throw e;
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        int lastError(Object owner, String[] message) {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment err = arena.allocate(ADDRESS);
                int st = (int) LAST_ERROR.invokeExact(ptr, err);
                message[0] = st == 0 ? null : takeError(err);
                return st;
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        int transport(Object owner) {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment out = arena.allocate(JAVA_INT);
                int st = (int) TRANSPORT_FN.invokeExact(ptr, out);
                if (st != 0) {
                    throw EasException.of(st);
                }
                return out.get(JAVA_INT, 0);
            } catch (RuntimeException | Error e) {
                throw e;
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        Stats stats(Object owner) {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment s = arena.allocate(STATS);
                int st = (int) STATS_FN.invokeExact(ptr, s);
                if (st != 0) {
                    throw EasException.of(st);
                }
                return new Stats(s.get(JAVA_LONG, 0), s.get(JAVA_LONG, 8), s.get(JAVA_LONG, 16),
                        s.get(JAVA_LONG, 24), s.get(JAVA_INT, 32), s.get(JAVA_INT, 36));
            } catch (RuntimeException | Error e) {
                throw e;
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        long subscribe(Object owner, long token) {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment out = arena.allocate(JAVA_LONG);
                int st = (int) SUBSCRIBE.invokeExact(ptr, ON_CHANGE,
                        MemorySegment.ofAddress(token), ON_FREE, out);
                if (st != 0) {
                    throw EasException.of(st);
                }
                return out.get(JAVA_LONG, 0);
            } catch (RuntimeException | Error e) {
                throw e;
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        int unsubscribe(Object owner, long subscription) {
            try {
                return (int) UNSUBSCRIBE.invokeExact(ptr, subscription);
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        void close(Object owner) {
            try {
                CLOSE.invokeExact(ptr);
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        void free() {
            try {
                FREE.invokeExact(ptr);
            } catch (Throwable t) {
                throw unexpected(t);
            }
        }

        @Override
        NativeCall beginCall(Object owner, byte[] key, int flags) {
            MemorySegment scratch = SCRATCH.get();
            try {
                MemorySegment k = MemorySegment.NULL;
                Arena arena = null;
                if (key != null) {
                    if (key.length <= SCRATCH_BYTES - 8) {
                        k = scratch.asSlice(8, key.length);
                    } else {
                        arena = Arena.ofConfined();
                        k = arena.allocate(key.length);
                    }
                    MemorySegment.copy(key, 0, k, JAVA_BYTE, 0, key.length);
                }
                try {
                    int st = (int) CALL_BEGIN.invokeExact(ptr, k, (long) (key == null ? 0
                            : key.length), flags, scratch);
                    if (st != 0) {
                        throw EasException.of(st);
                    }
                    return new Call(scratch.get(ADDRESS, 0));
                } finally {
                    if (arena != null) {
                        arena.close();
                    }
                }
            } catch (RuntimeException | Error e) {
                throw e;
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        InstanceStats[] instanceStats(Object owner) {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment len = arena.allocate(JAVA_LONG);
                MemorySegment buf = MemorySegment.NULL;
                long cap = 0;
                for (;;) {
                    int st = (int) INSTANCE_STATS_FN.invokeExact(ptr, buf, cap, len);
                    long n = len.get(JAVA_LONG, 0);
                    if (st == 0) {
                        if (n == 0) {
                            return new InstanceStats[0];
                        }
                        return InstanceStats.readAll(buf.asSlice(0, n * InstanceStats.SIZE)
                                .asByteBuffer().order(ByteOrder.nativeOrder()), (int) n);
                    }
                    if (st != EasStatus.BUFFER_TOO_SMALL.code()) {
                        throw EasException.of(st);
                    }
                    cap = n + 16; // the list may grow before the next call
                    buf = arena.allocate(INSTANCE_STATS, cap);
                }
            } catch (RuntimeException | Error e) {
                throw e;
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        String metricsText(Object owner) {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment len = arena.allocate(JAVA_LONG);
                MemorySegment buf = MemorySegment.NULL;
                long cap = 0;
                for (;;) {
                    int st = (int) METRICS_TEXT.invokeExact(ptr, buf, cap, len);
                    long n = len.get(JAVA_LONG, 0);
                    if (st == 0) {
                        return n == 0 ? "" : new String(buf.asSlice(0, n).toArray(JAVA_BYTE),
                                java.nio.charset.StandardCharsets.UTF_8);
                    }
                    if (st != EasStatus.BUFFER_TOO_SMALL.code()) {
                        throw EasException.of(st);
                    }
                    cap = n + 1 + n / 8; // the NUL, and room for a list that grows meanwhile
                    buf = arena.allocate(cap);
                }
            } catch (RuntimeException | Error e) {
                throw e;
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        String service(Object owner) {
            try {
                return string((MemorySegment) CLIENT_SERVICE.invokeExact(ptr));
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        String target(Object owner) {
            try {
                return string((MemorySegment) CLIENT_TARGET.invokeExact(ptr));
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
        }
    }

    /** Bytes of a thread's scratch segment for call arguments (key, headers, out-values). */
    private static final int SCRATCH_BYTES = 2048;

    /**
     * A thread's scratch memory for the arguments of a call's functions (none calls back into
     * Java, so one per thread suffices); freed by the GC with the thread's map entry. What does
     * not fit goes into a confined arena.
     */
    private static final ThreadLocal<MemorySegment> SCRATCH =
            ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(SCRATCH_BYTES, 8));

    private static final class Call extends NativeCall {
        private final MemorySegment ptr;

        Call(MemorySegment ptr) {
            this.ptr = ptr;
        }

        @Override
        Instance next(Object owner, InstanceTable table) {
            MemorySegment out = OUT.get();
            int st;
            try {
                st = (int) CALL_NEXT.invokeExact(ptr, out);
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
            return Client.picked(st, out, table);
        }

        @Override
        boolean record(Object owner, int outcome, int httpStatus, String[] headers, int n) {
            MemorySegment scratch = SCRATCH.get();
            Arena arena = null;
            try {
                MemorySegment names = MemorySegment.NULL;
                MemorySegment values = MemorySegment.NULL;
                if (n > 0) {
                    // [retry u32, pad][names n][values n][strings...], in scratch if it fits.
                    long size = 8 + 16L * n;
                    byte[][] bytes = new byte[2 * n][];
                    for (int i = 0; i < 2 * n; i++) {
                        bytes[i] = headers[i].getBytes(java.nio.charset.StandardCharsets.UTF_8);
                        size += bytes[i].length + 1;
                    }
                    MemorySegment mem = scratch;
                    if (size > SCRATCH_BYTES) {
                        arena = Arena.ofConfined();
                        mem = arena.allocate(size, 8);
                    }
                    names = mem.asSlice(8, 8L * n);
                    values = mem.asSlice(8 + 8L * n, 8L * n);
                    long at = 8 + 16L * n;
                    for (int i = 0; i < 2 * n; i++) {
                        MemorySegment str = mem.asSlice(at, bytes[i].length + 1);
                        MemorySegment.copy(bytes[i], 0, str, JAVA_BYTE, 0, bytes[i].length);
                        str.set(JAVA_BYTE, bytes[i].length, (byte) 0);
                        (i % 2 == 0 ? names : values).setAtIndex(ADDRESS, i / 2, str);
                        at += bytes[i].length + 1;
                    }
                    scratch = mem;
                }
                int st = (int) CALL_RECORD.invokeExact(ptr, outcome, httpStatus, names, values,
                        (long) n, scratch);
                if (st != 0) {
                    throw EasException.of(st);
                }
                return scratch.get(JAVA_INT, 0) != 0;
            } catch (RuntimeException | Error e) {
                throw e;
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                if (arena != null) {
                    arena.close();
                }
                Reference.reachabilityFence(owner);
            }
        }

        @Override
        void finish(Object owner, int body) {
            int st;
            try {
                st = (int) CALL_FINISH.invokeExact(ptr, body);
            } catch (Throwable t) {
                throw unexpected(t);
            } finally {
                Reference.reachabilityFence(owner);
            }
            if (st != 0) {
                throw EasException.of(st);
            }
        }

        @Override
        void free() {
            try {
                CALL_FREE.invokeExact(ptr);
            } catch (Throwable t) {
                throw unexpected(t);
            }
        }
    }

    // Upcalls, on a library thread. An exception escaping an upcall would end the JVM: none do.

    private static void onChange(MemorySegment userData, MemorySegment list, long n) {
        try {
            ByteBuffer bb = list.reinterpret(n * Instance.SIZE).asByteBuffer()
                    .order(ByteOrder.nativeOrder());
            Listeners.onChange(userData.address(), bb, (int) n);
        } catch (Throwable ignored) {
            // Listeners.onChange catches the listener's exceptions; nothing else throws
        }
    }

    private static void onFree(MemorySegment userData) {
        try {
            Listeners.onFree(userData.address());
        } catch (Throwable ignored) {
            // nothing to report to
        }
    }

    /** The builder of the running fetch, and an arena for the strings given to it. */
    private static final class Builder extends Sources.Builder {
        private final MemorySegment ptr;
        private final Arena arena;

        Builder(MemorySegment ptr, Arena arena) {
            this.ptr = ptr;
            this.arena = arena;
        }

        @Override
        int add(String ip, int port, int weight) {
            try {
                return (int) BUILDER_ADD.invokeExact(ptr, arena.allocateFrom(ip), (short) port,
                        weight);
            } catch (Throwable t) {
                throw unexpected(t);
            }
        }

        @Override
        void setError(String message) {
            try {
                int unused = (int) BUILDER_SET_ERROR.invokeExact(ptr, arena.allocateFrom(message));
            } catch (Throwable t) {
                throw unexpected(t);
            }
        }
    }

    /** A source's fetch. Sources.fetch catches everything; so does this, as a safety net. */
    private static int onFetch(MemorySegment userData, MemorySegment builder) {
        try (Arena arena = Arena.ofConfined()) {
            return Sources.fetch(userData.address(), new Builder(builder, arena));
        } catch (Throwable ignored) {
            return EasStatus.DISCOVERY_FAILED.code();
        }
    }

    private static void onSourceFree(MemorySegment userData) {
        try {
            Sources.onFree(userData.address());
        } catch (Throwable ignored) {
            // nothing to report to
        }
    }

    /**
     * A log line, on the library's log thread (attached by the JVM at its first upcall and kept
     * so: named here, as the JNI glue names it). LogSinks.onLine catches everything; so does
     * this.
     */
    private static void onLog(MemorySegment userData, int level, MemorySegment message) {
        try {
            Thread self = Thread.currentThread();
            if (!LOG_THREAD_NAME.equals(self.getName())) {
                self.setName(LOG_THREAD_NAME);
            }
            LogSinks.onLine(userData.address(), level, string(message));
        } catch (Throwable ignored) {
            // nothing may escape into native code
        }
    }

    private static final String LOG_THREAD_NAME = "easdirect-log";

    private static void onLogFree(MemorySegment userData) {
        try {
            LogSinks.onFree(userData.address());
        } catch (Throwable ignored) {
            // nothing to report to
        }
    }
}
