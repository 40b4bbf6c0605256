package io.easdirect;

import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;

/**
 * The listeners of every subscription in the JVM, by token: the token is the subscription's
 * user_data, so that native code holds no Java reference. Its entry leaves when the library
 * calls free_user_data. A JVM shutdown hook ends every subscription (and closes every client with
 * a source) before the JVM goes away: no callback runs during or after shutdown.
 */
final class Listeners {
    /** How long the shutdown hook waits for running callbacks to return. */
    private static final long SHUTDOWN_WAIT_MS = 5000;

    static final class Listener {
        final Consumer<? super List<Instance>> fn;
        final InstanceTable table;
        final NativeClient client;
        /** The library's subscription id, once eas_client_subscribe has returned; else 0. */
        volatile long subscription;

        Listener(Consumer<? super List<Instance>> fn, InstanceTable table, NativeClient client) {
            this.fn = fn;
            this.table = table;
            this.client = client;
        }
    }

    private static final Map<Long, Listener> BY_TOKEN = new ConcurrentHashMap<>();
    private static final AtomicLong NEXT_TOKEN = new AtomicLong(1);
    private static volatile boolean stopping;
    private static boolean hooked; // guarded by Listeners.class

    private Listeners() {}

    /** Subscriptions whose free_user_data has not run yet (for tests). */
    static int live() {
        return BY_TOKEN.size();
    }

    static boolean stopping() {
        return stopping;
    }

    static long add(Listener l) {
        hook();
        long token = NEXT_TOKEN.getAndIncrement();
        BY_TOKEN.put(token, l);
        return token;
    }

    /** For a refused subscribe, which takes no ownership of the token. */
    static void remove(long token) {
        BY_TOKEN.remove(token);
    }

    /** free_user_data. */
    static void onFree(long token) {
        BY_TOKEN.remove(token);
    }

    /** The change callback: {@code n} eas_instance records in {@code list}. Never throws. */
    static void onChange(long token, ByteBuffer list, int n) {
        Listener l = BY_TOKEN.get(token);
        if (l == null || stopping) {
            return;
        }
        try {
            l.fn.accept(l.table.internAll(list, n));
        } catch (Throwable t) {
            Thread self = Thread.currentThread();
            try {
                self.getUncaughtExceptionHandler().uncaughtException(self, t);
            } catch (Throwable ignored) {
                // nothing may escape into native code
            }
        }
    }

    /** Registers the shutdown hook (once); also for {@link Sources}. */
    static synchronized void hook() {
        if (hooked) {
            return;
        }
        hooked = true;
        Runtime.getRuntime().addShutdownHook(new Thread(Listeners::stopAll, "easdirect-shutdown"));
    }

    /**
     * Ends every subscription and closes every client with a source ({@link Sources}); waits at
     * most SHUTDOWN_WAIT_MS for running callbacks.
     */
    private static void stopAll() {
        stopping = true;
        Thread worker = new Thread(() -> {
            for (Listener l : BY_TOKEN.values()) {
                long sub = l.subscription;
                if (sub != 0) {
                    l.client.unsubscribeUnlessFreed(sub);
                }
            }
            Sources.closeAll();
        }, "easdirect-unsubscribe");
        worker.setDaemon(true);
        worker.start();
        try {
            worker.join(SHUTDOWN_WAIT_MS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
