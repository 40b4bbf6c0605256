package io.easdirect;

import java.util.Objects;

/**
 * Logging to a {@code System.Logger} (JDK 9 or newer): {@link Logging#system()} is
 * {@code SystemLogging.to(System.getLogger("easdirect"))}.
 *
 * <pre>{@code
 * EasClient client = EasClient.open(target, options,
 *         SystemLogging.to(System.getLogger("my.app.discovery")));
 * }</pre>
 *
 * <p>The library sends lines up to the most detailed level the logger takes
 * ({@code isLoggable}: DEBUG, INFO, WARNING, ERROR) when each client is created; a logger that
 * takes none of them means no logging for that client.
 */
public final class SystemLogging {
    private SystemLogging() {}

    /** Lines go to {@code logger}, at the level of each (ERROR, WARNING, INFO, DEBUG). */
    public static Logging to(System.Logger logger) {
        Objects.requireNonNull(logger, "logger");
        return Logging.probed(new Library(logger), () -> maxLevel(logger));
    }

    /**
     * The sink (a named class rather than a lambda: java.util.logging prints the frame that
     * called the logger as the record's source, "io.easdirect.SystemLogging$Library log").
     */
    private static final class Library implements LogSink {
        private final System.Logger logger;

        Library(System.Logger logger) {
            this.logger = logger;
        }

        @Override
        public void log(LogLevel level, String message) {
            logger.log(level(level), message);
        }

        @Override
        public String toString() {
            return "System.Logger " + logger.getName();
        }
    }

    /** For {@link Logging#system()}, which cannot name System.Logger (release 8). */
    static Logging named(String name) {
        return to(System.getLogger(name));
    }

    static System.Logger.Level level(LogLevel l) {
        switch (l) {
            case ERROR:
                return System.Logger.Level.ERROR;
            case WARNING:
                return System.Logger.Level.WARNING;
            case INFO:
                return System.Logger.Level.INFO;
            default:
                return System.Logger.Level.DEBUG;
        }
    }

    private static LogLevel maxLevel(System.Logger logger) {
        for (LogLevel l : new LogLevel[] {LogLevel.DEBUG, LogLevel.INFO, LogLevel.WARNING,
            LogLevel.ERROR}) {
            if (logger.isLoggable(level(l))) {
                return l;
            }
        }
        return null;
    }
}
