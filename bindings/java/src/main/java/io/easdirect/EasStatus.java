package io.easdirect;

/**
 * The status codes of libeasdirect's C ABI ({@code eas_status}). The numbers are stable and never
 * reused; a code this binding does not know (from a newer library) is {@link #UNKNOWN}.
 */
public enum EasStatus {
    OK(0),
    /** A required argument was null. */
    NULL_PARAMETER(1),
    /** A bad target, option key or value, or a string that is not UTF-8. */
    INVALID_ARGUMENT(2),
    /** Nothing selectable: no list known yet, or every instance excluded. */
    NO_INSTANCE(3),
    /** {@link EasClient#waitReady} reached its deadline. */
    TIMEOUT(4),
    /** A discovery fetch failed (see {@link EasClient#lastError}). */
    DISCOVERY_FAILED(5),
    BUFFER_TOO_SMALL(6),
    /** The instance id is not in the current list: harmless. */
    UNKNOWN_INSTANCE(7),
    /** The client was closed. */
    CLOSED(8),
    /** A bug in the library was contained; the call had no effect or an incomplete one. */
    PANIC(99),
    /** A code this binding does not know. */
    UNKNOWN(-1);

    private final int code;

    EasStatus(int code) {
        this.code = code;
    }

    /** The C ABI's number for this status. */
    public int code() {
        return code;
    }

    /** The status with this number, or {@link #UNKNOWN}. */
    public static EasStatus of(int code) {
        switch (code) {
            case 0: return OK;
            case 1: return NULL_PARAMETER;
            case 2: return INVALID_ARGUMENT;
            case 3: return NO_INSTANCE;
            case 4: return TIMEOUT;
            case 5: return DISCOVERY_FAILED;
            case 6: return BUFFER_TOO_SMALL;
            case 7: return UNKNOWN_INSTANCE;
            case 8: return CLOSED;
            case 99: return PANIC;
            default: return UNKNOWN;
        }
    }
}
