package io.easdirect;

/**
 * An error reported by libeasdirect: a status code and a message naming the key, value, URL or
 * HTTP status at fault. Unchecked: most calls fail only on a bad argument or after
 * {@link EasClient#close()}.
 */
public class EasException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final int code;

    public EasException(int code, String message) {
        super(message);
        this.code = code;
    }

    EasException(int code, String message, Throwable cause) {
        super(message, cause);
        this.code = code;
    }

    /** The C ABI's status number (see {@link EasStatus}); kept as is when it is unknown here. */
    public int code() {
        return code;
    }

    /** The status, {@link EasStatus#UNKNOWN} for a number this binding does not know. */
    public EasStatus status() {
        return EasStatus.of(code);
    }

    /** An exception for a status without a message of its own: the library's description. */
    static EasException of(int code) {
        return new EasException(code, Backend.get().statusString(code));
    }

    /** An exception with the library's message, or its description of the status if none. */
    static EasException of(int code, String message) {
        if (message == null || message.isEmpty()) {
            return of(code);
        }
        return new EasException(code, message);
    }
}
