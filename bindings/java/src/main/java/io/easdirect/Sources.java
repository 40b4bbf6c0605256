package io.easdirect;

import java.util.Collection;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The sources of every {@link EasClient#fromSource} client in the JVM, by token: the token is the
 * native source's user_data, so that native code holds no Java reference. Its entry leaves when
 * the library calls free_user_data (once, when the client is closed or freed), or at once when
 * the create is refused (which takes no ownership). The JVM shutdown hook of {@link Listeners}
 * closes every client that still has a source: no fetch runs during or after shutdown.
 */
final class Sources {
    /** What a backend gives {@link #fetch}: eas_source_builder_add and _set_error. */
    abstract static class Builder {
        /** eas_source_builder_add; {@code ip} holds no NUL. Returns the status. */
        abstract int add(String ip, int port, int weight);

        /** eas_source_builder_set_error. */
        abstract void setError(String message);
    }

    static final class Source {
        final EndpointSource fn;
        /** The exception of the last fetch when it threw, else null (see EasClient.lastError). */
        volatile Throwable lastFailure;
        /** Fetches that reached fn (for tests). */
        final AtomicLong calls = new AtomicLong();
        /** Set once eas_client_new_with_source has returned; for the shutdown hook. */
        volatile NativeClient client;

        Source(EndpointSource fn) {
            this.fn = fn;
        }
    }

    private static final Map<Long, Source> BY_TOKEN = new ConcurrentHashMap<>();
    private static final AtomicLong NEXT_TOKEN = new AtomicLong(1);
    /** free_user_data calls so far (for tests). */
    private static final AtomicLong RELEASED = new AtomicLong();
    /** free_user_data calls for a token not held (a second release: a bug; for tests). */
    private static final AtomicLong STRAY = new AtomicLong();

    private Sources() {}

    /** Sources whose free_user_data has not run yet (for tests). */
    static int live() {
        return BY_TOKEN.size();
    }

    static long released() {
        return RELEASED.get();
    }

    static long stray() {
        return STRAY.get();
    }

    static long add(Source s) {
        Listeners.hook();
        long token = NEXT_TOKEN.getAndIncrement();
        BY_TOKEN.put(token, s);
        return token;
    }

    /** For a refused create, which takes no ownership of the token. */
    static void remove(long token) {
        BY_TOKEN.remove(token);
    }

    /** free_user_data. Never throws. */
    static void onFree(long token) {
        if (BY_TOKEN.remove(token) != null) {
            RELEASED.incrementAndGet();
        } else {
            STRAY.incrementAndGet();
        }
    }

    /**
     * The fetch callback: calls the source and fills the builder. Returns the status for the
     * library. Never throws: nothing may unwind into native code.
     */
    static int fetch(long token, Builder b) {
        try {
            Source s = BY_TOKEN.get(token);
            if (s == null) {
                return fail(b, "the source has ended");
            }
            if (Listeners.stopping()) {
                return fail(b, "the JVM is shutting down");
            }
            s.calls.incrementAndGet();
            Collection<Endpoint> list;
            try {
                list = s.fn.fetch();
            } catch (Throwable t) {
                s.lastFailure = t;
                if (t instanceof VirtualMachineError) {
                    report(t); // the JVM is in trouble: say so, as for an uncaught error
                }
                return fail(b, "the source threw " + t);
            }
            if (list == null) {
                s.lastFailure = null;
                return fail(b, "the source returned null");
            }
            s.lastFailure = null;
            for (Endpoint e : list) {
                // Malformed ones (null, an ip with a NUL or not an address) are skipped.
                if (e != null && e.ip().indexOf('\0') < 0) {
                    b.add(e.ip(), e.port(), (int) e.weight());
                }
            }
            return EasStatus.OK.code();
        } catch (Throwable t) { // a bug here, or the collection's iterator threw
            try {
                Source s = BY_TOKEN.get(token);
                if (s != null) {
                    s.lastFailure = t;
                }
                return fail(b, "reading the source's list failed: " + t);
            } catch (Throwable ignored) {
                return EasStatus.DISCOVERY_FAILED.code();
            }
        }
    }

    private static int fail(Builder b, String message) {
        try {
            b.setError(message);
        } catch (Throwable ignored) {
            // the status alone says it failed
        }
        return EasStatus.DISCOVERY_FAILED.code();
    }

    private static void report(Throwable t) {
        try {
            Thread self = Thread.currentThread();
            self.getUncaughtExceptionHandler().uncaughtException(self, t);
        } catch (Throwable ignored) {
            // nothing may escape into native code
        }
    }

    /** For the shutdown hook: closes every client that still has a source. */
    static void closeAll() {
        for (Source s : BY_TOKEN.values()) {
            NativeClient c = s.client;
            if (c != null) {
                c.closeUnlessFreed();
            }
        }
    }
}
