package io.easdirect;

/**
 * How one attempt of an {@link EasCall} went, as far as the response headers
 * ({@code eas_outcome}): what {@link EasCall#record} reports. Immutable; the factories return
 * shared instances, so recording allocates nothing for the outcome.
 *
 * <p>What each means for the instance (see the repository README's outcome table):
 * {@link #response(int)} with a 1xx-4xx status but 429 is a success; a 429, or a 503 with
 * {@code Retry-After}, backs the instance off (not a failure); another 5xx is a failure;
 * {@link #connectFailed()}, {@link #reset()} and {@link #timeout()} are failures;
 * {@link #cancelled()} counts nothing and ends the call.
 */
public final class Outcome {
    /** The kinds of outcome, numbered as the C ABI's {@code eas_outcome}. */
    public enum Kind {
        /** Response headers received, with an HTTP status (100-599). */
        RESPONSE(0),
        /** Nothing was sent: refused, unreachable, TLS failed. Retried even when not idempotent. */
        CONNECT_FAILED(1),
        /** No response headers within the attempt's deadline. */
        TIMEOUT(2),
        /** The caller gave up: not the instance's fault; it ends the call. */
        CANCELLED(3),
        /** Sent (maybe in part), then reset before the response headers. */
        RESET(4);

        final int code;

        Kind(int code) {
            this.code = code;
        }

        /** The C ABI's number for this kind. */
        public int code() {
            return code;
        }
    }

    private static final int MIN_STATUS = 100;
    private static final int MAX_STATUS = 599;
    private static final Outcome[] RESPONSES = new Outcome[MAX_STATUS - MIN_STATUS + 1];
    private static final Outcome CONNECT_FAILED = new Outcome(Kind.CONNECT_FAILED, 0);
    private static final Outcome TIMEOUT = new Outcome(Kind.TIMEOUT, 0);
    private static final Outcome CANCELLED = new Outcome(Kind.CANCELLED, 0);
    private static final Outcome RESET = new Outcome(Kind.RESET, 0);

    static {
        for (int s = MIN_STATUS; s <= MAX_STATUS; s++) {
            RESPONSES[s - MIN_STATUS] = new Outcome(Kind.RESPONSE, s);
        }
    }

    private final Kind kind;
    private final int httpStatus;

    private Outcome(Kind kind, int httpStatus) {
        this.kind = kind;
        this.httpStatus = httpStatus;
    }

    /**
     * Response headers arrived with this HTTP status.
     *
     * @throws EasException {@link EasStatus#INVALID_ARGUMENT} for a status outside 100-599
     */
    public static Outcome response(int httpStatus) {
        if (httpStatus < MIN_STATUS || httpStatus > MAX_STATUS) {
            throw new EasException(EasStatus.INVALID_ARGUMENT.code(),
                    "HTTP status " + httpStatus + " is outside 100-599");
        }
        return RESPONSES[httpStatus - MIN_STATUS];
    }

    /** Nothing was sent: the connection was refused, the host unreachable, TLS failed. */
    public static Outcome connectFailed() {
        return CONNECT_FAILED;
    }

    /** No response headers within the attempt's deadline. */
    public static Outcome timeout() {
        return TIMEOUT;
    }

    /** The caller gave up (not the instance's fault): the call ends, nothing is counted. */
    public static Outcome cancelled() {
        return CANCELLED;
    }

    /** The request was sent, maybe in part, then the connection was reset before headers. */
    public static Outcome reset() {
        return RESET;
    }

    /** What kind of outcome this is. */
    public Kind kind() {
        return kind;
    }

    /** The HTTP status of a {@link Kind#RESPONSE}; 0 for the other kinds. */
    public int httpStatus() {
        return httpStatus;
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof Outcome)) {
            return false;
        }
        Outcome other = (Outcome) o;
        return kind == other.kind && httpStatus == other.httpStatus;
    }

    @Override
    public int hashCode() {
        return kind.hashCode() * 31 + httpStatus;
    }

    /** {@code "RESPONSE 503"}, {@code "CONNECT_FAILED"}, ... */
    @Override
    public String toString() {
        return kind == Kind.RESPONSE ? "RESPONSE " + httpStatus : kind.name();
    }
}
