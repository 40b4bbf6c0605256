package io.easdirect;

import java.lang.ref.PhantomReference;
import java.lang.ref.ReferenceQueue;
import java.util.Collections;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Calls eas_client_free once an EasClient is unreachable, and eas_call_free once an EasCall is:
 * no call on either can be running then. What java.lang.ref.Cleaner does (JDK 9+), written out
 * so that it also runs on JDK 8: a phantom reference per object and one daemon thread, started
 * with the first registration.
 *
 * <p>Order: a call's reference holds its EasClient strongly, so the client stays reachable
 * (and its native client unfreed) until the call has been freed, by {@link EasCall#close()}
 * (which unregisters it) or here.
 */
final class ClientCleaner {
    private static final ReferenceQueue<Object> QUEUE = new ReferenceQueue<>();
    /** Keeps the references themselves reachable until they are processed. */
    private static final Set<Ref> PENDING = Collections.newSetFromMap(new ConcurrentHashMap<>());
    private static volatile boolean started;
    private static final AtomicLong FREED = new AtomicLong();
    private static final AtomicLong CALLS_FREED = new AtomicLong();

    private abstract static class Ref extends PhantomReference<Object> {
        Ref(Object owner) {
            super(owner, QUEUE);
        }

        abstract void free();
    }

    private static final class ClientRef extends Ref {
        final NativeClient client;

        ClientRef(Object owner, NativeClient client) {
            super(owner);
            this.client = client;
        }

        @Override
        void free() {
            client.freeOnce();
            FREED.incrementAndGet();
        }
    }

    private static final class CallRef extends Ref implements Registration {
        final NativeCall call;
        /** Strong: the client outlives the native call. Cleared once the call is freed. */
        Object client;

        CallRef(Object owner, NativeCall call, Object client) {
            super(owner);
            this.call = call;
            this.client = client;
        }

        @Override
        void free() {
            call.freeOnce();
            client = null;
            CALLS_FREED.incrementAndGet();
        }

        @Override
        public void unregister() {
            PENDING.remove(this);
            clear();
            client = null;
        }
    }

    /** A registration that its owner ends itself once it has freed its native object. */
    interface Registration {
        /** The object was freed by its owner: nothing left for the cleaner to do. */
        void unregister();
    }

    private ClientCleaner() {}

    /** Clients freed so far (for tests). */
    static long freed() {
        return FREED.get();
    }

    /** Calls freed so far by the cleaner, not by {@link EasCall#close()} (for tests). */
    static long callsFreed() {
        return CALLS_FREED.get();
    }

    static void register(Object owner, NativeClient client) {
        add(new ClientRef(owner, client));
    }

    /** Frees {@code call} once {@code owner} is unreachable; keeps {@code client} until then. */
    static Registration register(Object owner, NativeCall call, Object client) {
        CallRef r = new CallRef(owner, call, client);
        add(r);
        return r;
    }

    private static void add(Ref r) {
        PENDING.add(r);
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
                if (PENDING.remove(r)) {
                    r.free();
                }
            } catch (InterruptedException e) {
                // keep cleaning: this thread only ends with the JVM
            } catch (Throwable t) {
                Thread.currentThread().getUncaughtExceptionHandler()
                        .uncaughtException(Thread.currentThread(), t);
            }
        }
    }
}
