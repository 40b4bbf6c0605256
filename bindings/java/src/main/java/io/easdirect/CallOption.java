package io.easdirect;

/** Options of {@link EasClient#beginCall}. */
public enum CallOption {
    /**
     * The request is not idempotent ({@code EAS_CALL_NOT_IDEMPOTENT}): it is retried only when
     * nothing was sent ({@link Outcome#connectFailed()}), never after a 5xx, a reset or a
     * timeout.
     */
    NOT_IDEMPOTENT
}
