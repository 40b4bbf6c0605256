package io.easdirect;

/**
 * The level of a library log line, named as {@code System.Logger.Level}'s: the C ABI's levels
 * 1 (error) to 4 (debug).
 */
public enum LogLevel {
    /** Something is broken and will not mend by itself. */
    ERROR(1),
    /** Something failed and the client works around it (a failed fetch, a lost push stream). */
    WARNING(2),
    /** What the client did (a new list, an ejection, a recovery). */
    INFO(3),
    /** Details for a developer. */
    DEBUG(4);

    private final int code;

    LogLevel(int code) {
        this.code = code;
    }

    /** The C ABI's number: 1 error .. 4 debug. */
    public int code() {
        return code;
    }

    /** The level of a C ABI number; a number out of range is {@link #DEBUG}. */
    static LogLevel of(int code) {
        switch (code) {
            case 1:
                return ERROR;
            case 2:
                return WARNING;
            case 3:
                return INFO;
            default:
                return DEBUG;
        }
    }
}
