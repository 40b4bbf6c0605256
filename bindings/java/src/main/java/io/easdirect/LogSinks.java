package io.easdirect;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The log sinks the library holds, by token: the token is the log function's user_data (as for
 * {@link Listeners} and {@link Sources}), so that native code holds no Java reference and the
 * sink stays reachable until the library lets go of it. Its entry leaves when the library calls
 * free_user_data: once the options that carried it are freed and every client made with them is
 * freed (or at once when eas_options_set_log is refused, which takes no ownership).
 */
final class LogSinks {
    private static final Map<Long, LogSink> BY_TOKEN = new ConcurrentHashMap<>();
    private static final AtomicLong NEXT_TOKEN = new AtomicLong(1);
    /** free_user_data calls for a token not held (a second release: a bug; for tests). */
    private static final AtomicLong STRAY = new AtomicLong();

    private LogSinks() {}

    static long add(LogSink sink) {
        long token = NEXT_TOKEN.getAndIncrement();
        BY_TOKEN.put(token, sink);
        return token;
    }

    /** For a create that failed: idempotent, as free_user_data may have run already. */
    static void remove(long token) {
        BY_TOKEN.remove(token);
    }

    /** Whether the library still holds {@code sink} (for tests). */
    static boolean holds(LogSink sink) {
        return BY_TOKEN.containsValue(sink);
    }

    static long stray() {
        return STRAY.get();
    }

    /** free_user_data. Never throws. */
    static void onFree(long token) {
        if (BY_TOKEN.remove(token) == null) {
            STRAY.incrementAndGet();
        }
    }

    /** The log function, on the library's log thread. Never throws. */
    static void onLine(long token, int level, String message) {
        try {
            LogSink sink = BY_TOKEN.get(token);
            if (sink != null) {
                sink.log(LogLevel.of(level), message);
            }
        } catch (Throwable t) {
            try {
                Thread self = Thread.currentThread();
                self.getUncaughtExceptionHandler().uncaughtException(self, t);
            } catch (Throwable ignored) {
                // nothing may escape into native code
            }
        }
    }
}
