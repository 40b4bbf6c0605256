package io.easdirect;

import java.util.List;

/**
 * One eas_client of a backend: one method per eas_* call on a client. Every method but
 * {@link #free()} takes the object that owns this client and keeps it reachable until the
 * native call returns, so that the {@link ClientCleaner} never frees a client in use.
 * Messages of failed calls come back in {@code message[0]} where an array is taken.
 */
abstract class NativeClient {
    private boolean freed; // guarded by this

    abstract int waitReady(Object owner, int timeoutMs, String[] message);

    /** Throws EasException for any status but OK. */
    abstract Instance select(Object owner, InstanceTable table);

    /** Throws EasException for any status but OK. */
    abstract Instance selectExcluding(Object owner, InstanceTable table, long[] ids);

    abstract int reportFailure(Object owner, long id);

    abstract int reportSuccess(Object owner, long id);

    /** Throws EasException for any status but OK. */
    abstract List<Instance> instances(Object owner, InstanceTable table);

    abstract int lastError(Object owner, String[] message);

    /** Throws EasException for any status but OK. */
    abstract Stats stats(Object owner);

    /** eas_client_transport: EAS_TRANSPORT_POLL (0) or EAS_TRANSPORT_PUSH (1); throws. */
    abstract int transport(Object owner);

    /** Subscribes the listener registered under {@code token}; throws EasException. */
    abstract long subscribe(Object owner, long token);

    abstract int unsubscribe(Object owner, long subscription);

    abstract void close(Object owner);

    /** eas_call_begin ({@code key} null for none); throws EasException. */
    abstract NativeCall beginCall(Object owner, byte[] key, int flags);

    /** eas_client_instance_stats, looping on BUFFER_TOO_SMALL; throws EasException. */
    abstract InstanceStats[] instanceStats(Object owner);

    /** eas_client_service: valid (and unchanged) until the client is freed. */
    abstract String service(Object owner);

    /** eas_client_target: valid (and unchanged) until the client is freed. */
    abstract String target(Object owner);

    /**
     * eas_client_metrics_text, looping on BUFFER_TOO_SMALL; throws EasException. Only on a
     * library with ABI 1.4 (see {@link Backend#requireObservability}).
     */
    abstract String metricsText(Object owner);

    /** eas_client_free: only once nothing can call this client any more. */
    abstract void free();

    final synchronized void freeOnce() {
        if (!freed) {
            freed = true;
            free();
        }
    }

    /** For the shutdown hook, which may run while the cleaner frees the client. */
    final synchronized void unsubscribeUnlessFreed(long subscription) {
        if (!freed) {
            unsubscribe(null, subscription);
        }
    }

    /** For the shutdown hook: eas_client_close, unless the cleaner has freed the client. */
    final synchronized void closeUnlessFreed() {
        if (!freed) {
            close(null);
        }
    }
}
