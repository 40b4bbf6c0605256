package io.easdirect;

/**
 * Where a client's log lines go (see {@link Logging#to(LogSink, LogLevel)}): one line at a time,
 * on the library's log thread, never two at once.
 *
 * <p>Keep it quick: a slow sink delays no refresh and no pick, but it holds up the lines of
 * every client in the process (they wait in the library's queue of 1,024 lines, and are dropped
 * and counted when it is full), and {@link EasClient#close()} waits for a line of its client in
 * the sink's hands. An exception it throws goes to the log thread's uncaught-exception handler,
 * never into native code; the line is lost. It may call the client (not {@code close()}, which
 * would wait for the line being delivered: close from another thread).
 */
@FunctionalInterface
public interface LogSink {
    /**
     * One line: the client's printable target first ({@code "eas://10.0.0.1:8080/svc: ..."}),
     * no secret, no trailing newline.
     */
    void log(LogLevel level, String message);
}
