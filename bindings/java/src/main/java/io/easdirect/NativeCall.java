package io.easdirect;

/**
 * One eas_call of a backend: one method per eas_call_* function. Every method but
 * {@link #free()} takes the {@link EasCall} that owns this call and keeps it reachable until
 * the native call returns, so that the {@link ClientCleaner} never frees a call in use. The
 * owner serialises the calls (an eas_call is used by one thread at a time).
 */
abstract class NativeCall {
    private boolean freed; // guarded by this

    /** eas_call_next; throws EasException for any status but OK. */
    abstract Instance next(Object owner, InstanceTable table);

    /**
     * eas_call_record with the {@code n} header lines of {@code headers} (name at 2i, value
     * at 2i+1); returns whether to retry, throws EasException for any status but OK.
     */
    abstract boolean record(Object owner, int outcome, int httpStatus, String[] headers, int n);

    /** eas_call_finish; throws EasException for any status but OK. */
    abstract void finish(Object owner, int body);

    /** eas_call_free: only once nothing can use this call any more. */
    abstract void free();

    final synchronized void freeOnce() {
        if (!freed) {
            freed = true;
            free();
        }
    }
}
