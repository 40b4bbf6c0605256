package io.easdirect;

import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A subscription to a client's instance list ({@link EasClient#subscribe}). {@link #close()}
 * ends it; closing the client ends it too.
 */
public final class Subscription implements AutoCloseable {
    private final EasClient client; // reachable as long as the subscription can be closed
    private final long id;
    private final AtomicBoolean closed = new AtomicBoolean();

    Subscription(EasClient client, long id) {
        this.client = client;
        this.id = id;
    }

    /** The library's subscription id. */
    public long id() {
        return id;
    }

    /**
     * Ends the subscription: when it returns, no call of the listener is running (when called
     * from inside the listener: once the listener returns) and none will start. Idempotent;
     * does nothing once the client is closed.
     */
    @Override
    public void close() {
        if (closed.compareAndSet(false, true)) {
            client.unsubscribe(id);
        }
    }

    @Override
    public String toString() {
        return "Subscription{id=" + id + ", closed=" + closed.get() + "}";
    }
}
