package io.easdirect;

import java.lang.ref.PhantomReference;
import java.lang.ref.ReferenceQueue;
import java.util.Collections;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Calls eas_client_free once an EasClient is unreachable: no call on it can be running then.
 * What java.lang.ref.Cleaner does (JDK 9+), written out so that it also runs on JDK 8: a
 * phantom reference per client and one daemon thread, started with the first client.
 */
final class ClientCleaner {
    private static final ReferenceQueue<Object> QUEUE = new ReferenceQueue<>();
    /** Keeps the references themselves reachable until they are processed. */
    private static final Set<Ref> PENDING = Collections.newSetFromMap(new ConcurrentHashMap<>());
    private static volatile boolean started;
    private static final java.util.concurrent.atomic.AtomicLong FREED =
            new java.util.concurrent.atomic.AtomicLong();

    private static final class Ref extends PhantomReference<Object> {
        final NativeClient client;

        Ref(Object owner, NativeClient client) {
            super(owner, QUEUE);
            this.client = client;
        }
    }

    private ClientCleaner() {}

    /** Clients freed so far (for tests). */
    static long freed() {
        return FREED.get();
    }

    static void register(Object owner, NativeClient client) {
        PENDING.add(new Ref(owner, client));
        if (!started) {
            start();
        }
    }

    private static synchronized void start() {
        if (started) {
            return;
        }
        Thread t = new Thread(ClientCleaner::run, "easdirect-cleaner");
        t.setDaemon(true);
        t.start();
        started = true;
    }

    private static void run() {
        for (;;) {
            try {
                Ref r = (Ref) QUEUE.remove();
                PENDING.remove(r);
                r.client.freeOnce();
                FREED.incrementAndGet();
            } catch (InterruptedException e) {
                // keep cleaning: this thread only ends with the JVM
            } catch (Throwable t) {
                Thread.currentThread().getUncaughtExceptionHandler()
                        .uncaughtException(Thread.currentThread(), t);
            }
        }
    }
}
