package io.easdirect;

import java.util.Arrays;
import java.util.Collection;
import java.util.Map;
import java.util.Objects;

/**
 * One logical request and its attempts ({@code eas_call}), from {@link EasClient#beginCall}:
 * the library picks the instance of each attempt (by load, or by affinity for a keyed call),
 * never one this call has tried, and decides whether to retry. For users with their own HTTP
 * stack (or gRPC):
 *
 * <pre>{@code
 * try (EasCall call = client.beginCall(sessionId)) {
 *     for (;;) {
 *         Instance inst = call.next();                 // NO_INSTANCE: nothing left to try
 *         HttpResponse<String> r;
 *         try {
 *             r = http.send(requestTo(inst), BodyHandlers.ofString());
 *         } catch (ConnectException e) {
 *             if (call.record(Outcome.connectFailed())) continue;
 *             throw e;
 *         }
 *         boolean retry = call.record(Outcome.response(r.statusCode()), r.headers().map());
 *         call.finish(Body.DONE);                      // the body was read whole
 *         if (!retry) return r;
 *     }
 * }
 * }</pre>
 *
 * <p>An attempt is in flight on its instance from {@link #next()} until its body ends
 * ({@link #finish}, the next {@link #next()}, or {@link #close()}). A call may move between
 * threads but is meant for one at a time; its methods are serialised, and any of them after
 * {@link #close()} fails with {@link EasStatus#CLOSED} (never a crash).
 *
 * <p>A call keeps its {@link EasClient} reachable, so the native client is not freed while a
 * call exists. After {@link EasClient#close()}, {@link #next()} fails with
 * {@link EasStatus#CLOSED}, while {@link #record}, {@link #finish} and {@link #close()} still
 * work: a response already received is never lost. A call never closed is freed by the same
 * cleaner as clients once it is unreachable (an attempt still open ends as
 * {@link Outcome#cancelled()}).
 */
public final class EasCall implements AutoCloseable {
    /** The header names the library reads; the only ones {@link #record} passes on. */
    private static final String LOAD_METRICS = "endpoint-load-metrics";
    private static final String RETRY_AFTER = "retry-after";
    private static final String[] NO_HEADERS = new String[0];

    /** Kept reachable by this call (and by the cleaner's reference until the call is freed). */
    private final EasClient client;
    private final InstanceTable table;
    private final NativeCall call;
    private final ClientCleaner.Registration registration;
    private boolean closed; // guarded by this

    EasCall(EasClient client, InstanceTable table, NativeCall call) {
        this.client = client;
        this.table = table;
        this.call = call;
        this.registration = ClientCleaner.register(this, call, client);
    }

    private void checkOpen() {
        if (closed) {
            throw new EasException(EasStatus.CLOSED.code(), "the call is closed");
        }
    }

    /**
     * The instance for the next attempt, among the instances this call has not tried; it is
     * in flight from now. An attempt still open (no {@link #record} since the last
     * {@code next}) is recorded as {@link Outcome#cancelled()} first, which ends the call; a
     * recorded one's body is taken as {@link Body#DONE}.
     *
     * @throws EasException {@link EasStatus#NO_INSTANCE} when the attempt budget
     *     ({@code max_attempts}) is spent, no untried instance is left, or the last outcome
     *     ended the call; {@link EasStatus#CLOSED} after this call's or its client's close
     */
    public synchronized Instance next() {
        checkOpen();
        return call.next(this, table);
    }

    /**
     * {@link #record(Outcome, Map)} without response headers (for outcomes other than
     * {@link Outcome.Kind#RESPONSE}, or a response whose headers are not at hand).
     */
    public synchronized boolean record(Outcome outcome) {
        Objects.requireNonNull(outcome, "outcome");
        checkOpen();
        return call.record(this, outcome.kind().code, outcome.httpStatus(), NO_HEADERS, 0);
    }

    /**
     * Records how the open attempt went, with the response's headers: of these only
     * {@code endpoint-load-metrics} (the instance's load report) and {@code retry-after} (a
     * back-off) reach the library, names matched case-insensitively; {@code null} names (the
     * status line of {@link java.net.HttpURLConnection#getHeaderFields()}), {@code null} values
     * and values holding a NUL are skipped. {@code java.net.http.HttpHeaders#map()} and
     * {@code HttpURLConnection#getHeaderFields()} fit as they are.
     *
     * @return whether to retry: true when the caller should call {@link #next()} (the outcome
     *     is retryable, and budget and an untried instance remain); always false once the
     *     client is closed
     * @throws EasException {@link EasStatus#INVALID_ARGUMENT} when no attempt is open (no
     *     {@link #next()} since the last record); {@link EasStatus#CLOSED} after {@link #close()}
     */
    public synchronized boolean record(Outcome outcome,
            Map<String, ? extends Collection<String>> headers) {
        Objects.requireNonNull(outcome, "outcome");
        Objects.requireNonNull(headers, "headers");
        checkOpen();
        String[] kept = NO_HEADERS;
        int n = 0;
        for (Map.Entry<String, ? extends Collection<String>> e : headers.entrySet()) {
            String name = e.getKey();
            String canonical;
            if (LOAD_METRICS.equalsIgnoreCase(name)) {
                canonical = LOAD_METRICS;
            } else if (RETRY_AFTER.equalsIgnoreCase(name)) {
                canonical = RETRY_AFTER;
            } else {
                continue;
            }
            Collection<String> values = e.getValue();
            if (values == null) {
                continue;
            }
            for (String v : values) {
                if (v == null || v.indexOf('\0') >= 0) {
                    continue;
                }
                if (2 * n + 2 > kept.length) {
                    kept = Arrays.copyOf(kept, Math.max(4, kept.length * 2));
                }
                kept[2 * n] = canonical;
                kept[2 * n + 1] = v;
                n++;
            }
        }
        return call.record(this, outcome.kind().code, outcome.httpStatus(), kept, n);
    }

    /**
     * The recorded attempt's body is over: the attempt leaves in flight, and
     * {@link Body#BROKEN} counts a failure of its instance. With no recorded attempt (none
     * yet, or finished already) it does nothing.
     *
     * @throws EasException {@link EasStatus#CLOSED} after {@link #close()}
     */
    public synchronized void finish(Body body) {
        Objects.requireNonNull(body, "body");
        checkOpen();
        call.finish(this, body.code);
    }

    /**
     * Ends the call and frees it: an attempt not yet recorded ends as
     * {@link Outcome#cancelled()}, a recorded one's body as {@link Body#DONE}. Idempotent;
     * works after the client's close too.
     */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        call.freeOnce();
        registration.unregister();
    }

    /** The client this call belongs to. */
    public EasClient client() {
        return client;
    }

    @Override
    public synchronized String toString() {
        return "EasCall{" + client.target() + (closed ? ", closed}" : "}");
    }
}
