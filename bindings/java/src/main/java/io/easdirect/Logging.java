package io.easdirect;

import java.util.concurrent.Callable;

/**
 * What a client does with the library's log lines, given when it is created
 * ({@link EasClient#open(String, java.util.Map, Logging)},
 * {@link EasClient#fromSource(EndpointSource, java.util.Map, Logging)}): the failed fetch that
 * starts a streak (warning) and the recovery (info), each new list, ejections and back-offs and
 * their end, snapshot-file trouble, a push stream up or lost; never a line per request, never a
 * secret, at most 10 lines a second per client.
 *
 * <ul>
 *   <li>{@link #system()}, the default: {@code System.getLogger("easdirect")} (JDK 9+; on JDK 8
 *       the {@code java.util.logging} logger {@code "easdirect"});</li>
 *   <li>{@code SystemLogging.to(System.Logger)} (JDK 9+): a {@code System.Logger} of one's own;</li>
 *   <li>{@link #to(LogSink, LogLevel)}: any function (SLF4J, a test's list...);</li>
 *   <li>{@link #off()}: none.</li>
 * </ul>
 *
 * <p>For a logger, the most detailed level the library sends is the most detailed one the
 * logger takes ({@code isLoggable}) when the client is created: lines it would not take are
 * never made (nor counted in the rate limit). A later change of the logger's level applies to
 * the clients created after it.
 */
public final class Logging {
    private static final Logging OFF = new Logging(null, null);

    /** Null: off. */
    private final LogSink sink;
    /** Asked at each client's creation: the most detailed level to send, null for none. */
    private final Callable<LogLevel> maxLevel;

    private Logging(LogSink sink, Callable<LogLevel> maxLevel) {
        this.sink = sink;
        this.maxLevel = maxLevel;
    }

    /** No logging: the library is given no log function. */
    public static Logging off() {
        return OFF;
    }

    /**
     * Lines up to {@code maxLevel} go to {@code sink} ({@link LogLevel#INFO} gives every event
     * the README lists; the library sends no line above the level, so none counts in its rate
     * limit).
     */
    public static Logging to(LogSink sink, LogLevel maxLevel) {
        java.util.Objects.requireNonNull(sink, "sink");
        final LogLevel max = java.util.Objects.requireNonNull(maxLevel, "maxLevel");
        return new Logging(sink, new Callable<LogLevel>() {
            @Override
            public LogLevel call() {
                return max;
            }
        });
    }

    /** For {@link SystemLogging}: a sink whose level is asked at each client's creation. */
    static Logging probed(LogSink sink, Callable<LogLevel> maxLevel) {
        return new Logging(sink, maxLevel);
    }

    /**
     * The default: {@code System.getLogger("easdirect")} on JDK 9 or newer (which goes to
     * {@code java.util.logging} unless a {@code System.LoggerFinder} routes it elsewhere, e.g.
     * SLF4J's or Log4j's bridge), the {@code java.util.logging} logger {@code "easdirect"} on
     * JDK 8. Levels: ERROR, WARNING, INFO, DEBUG ({@code java.util.logging}: SEVERE, WARNING,
     * INFO, FINE).
     */
    public static Logging system() {
        return Defaults.SYSTEM;
    }

    private static final class Defaults {
        static final Logging SYSTEM = systemLogging();
    }

    private static Logging systemLogging() {
        if (Backend.javaFeatureVersion() >= 9) {
            try {
                // Compiled with release 11 (System.Logger): loaded by name.
                return (Logging) Class.forName("io.easdirect.SystemLogging")
                        .getDeclaredMethod("named", String.class).invoke(null, "easdirect");
            } catch (ReflectiveOperationException | LinkageError e) {
                // a jar without it: java.util.logging, as on JDK 8
            }
        }
        final java.util.logging.Logger jul = java.util.logging.Logger.getLogger("easdirect");
        return probed(new LogSink() {
            @Override
            public void log(LogLevel level, String message) {
                jul.log(julLevel(level), message);
            }
        }, new Callable<LogLevel>() {
            @Override
            public LogLevel call() {
                for (LogLevel l : new LogLevel[] {LogLevel.DEBUG, LogLevel.INFO,
                    LogLevel.WARNING, LogLevel.ERROR}) {
                    if (jul.isLoggable(julLevel(l))) {
                        return l;
                    }
                }
                return null;
            }
        });
    }

    private static java.util.logging.Level julLevel(LogLevel l) {
        switch (l) {
            case ERROR:
                return java.util.logging.Level.SEVERE;
            case WARNING:
                return java.util.logging.Level.WARNING;
            case INFO:
                return java.util.logging.Level.INFO;
            default:
                return java.util.logging.Level.FINE;
        }
    }

    boolean isDefault() {
        return this == Defaults.SYSTEM;
    }

    /** The sink, null when off. */
    LogSink sink() {
        return sink;
    }

    /** The C ABI's max_level now (0: off); a probe that throws counts as off. */
    int maxLevel() {
        if (sink == null) {
            return 0;
        }
        try {
            LogLevel l = maxLevel.call();
            return l == null ? 0 : l.code();
        } catch (Exception | LinkageError e) {
            return 0;
        }
    }

    @Override
    public String toString() {
        return sink == null ? "Logging.off()" : isDefault() ? "Logging.system()"
                : "Logging(" + sink + ")";
    }
}
