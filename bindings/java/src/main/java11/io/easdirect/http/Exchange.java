package io.easdirect.http;

import io.easdirect.Body;
import io.easdirect.EasCall;
import io.easdirect.EasException;
import io.easdirect.Instance;
import io.easdirect.Outcome;
import java.io.IOException;
import java.net.ConnectException;
import java.net.NoRouteToHostException;
import java.net.UnknownHostException;
import java.net.http.HttpConnectTimeoutException;
import java.net.http.HttpHeaders;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpResponse.BodyHandler;
import java.net.http.HttpResponse.BodySubscriber;
import java.net.http.HttpResponse.BodySubscribers;
import java.net.http.HttpTimeoutException;
import java.nio.ByteBuffer;
import java.nio.channels.UnresolvedAddressException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.Flow;
import javax.net.ssl.SSLException;

/**
 * One request through an {@link EasHttpClient}: it drives the request's {@link EasCall}, one
 * attempt at a time, and holds nothing of the policy. It is the body handler of each attempt:
 * when response headers arrive it records them; when the core says retry, that answer's body
 * is drained and the next instance is taken at once, else the caller's own body subscriber
 * gets the body, wrapped so that the attempt stays in flight until the body ends.
 *
 * <p>Its state is guarded by its monitor (taken before the call's own).
 */
final class Exchange<T> implements BodyHandler<T> {
    /** What a sender does once an attempt's send has ended. */
    enum Step {
        /** Give the response to the caller. */
        RETURN,
        /** Send {@link #attemptRequest()} again (to the next instance). */
        RETRY,
        /** Throw {@link #failure()}. */
        FAIL
    }

    private static final String RETRY_AFTER = "retry-after";
    private static final String JDK_SUBSCRIBERS = "jdk.internal.net.http.ResponseSubscribers$";

    private final EasHttpClient owner;
    private final HttpRequest request;
    private final BodyHandler<T> handler;
    private final EasCall call;
    private final HttpHeaders headers;  // of every attempt
    private final Duration timeout;     // of every attempt
    private BodyReplay body; // set once, before the first attempt

    // Guarded by this.
    private Instance current;     // the instance of the last next()
    private boolean open;         // that attempt is not recorded yet
    private boolean sendPending;  // it was taken while a retried answer drained: not sent yet
    private boolean delivered;    // the caller's body subscriber has the answer
    private boolean wholeBody;    // ... and it is one of the JDK's that read the body whole
    private boolean cancelled;    // the caller gave up
    private boolean ended;        // the call is closed
    private int attempts;
    private Throwable failure;
    private List<Throwable> earlier = Collections.emptyList();
    private Future<?> inFlight;   // sendAsync: the base client's future of this attempt

    Exchange(EasHttpClient owner, HttpRequest request, BodyHandler<T> handler, EasCall call) {
        this.owner = owner;
        this.request = request;
        this.handler = handler;
        this.call = call;
        this.headers = owner.attemptHeaders(request);
        this.timeout = owner.attemptTimeout(request);
    }

    /** The body of every attempt: set before {@link #first()}. */
    void body(BodyReplay b) {
        this.body = b;
    }

    /**
     * The first attempt's instance.
     *
     * @throws IOException the helper's no-instance error: nothing to pick (no list yet, an
     *     empty list, every instance out) or the client closed
     */
    synchronized void first() throws IOException {
        try {
            current = call.next();
        } catch (EasException e) {
            end(Body.DONE);
            throw owner.noInstance(request, e);
        }
        open = true;
        attempts = 1;
    }

    /** The request of the current attempt, to its instance. */
    HttpRequest attemptRequest() {
        Instance inst;
        synchronized (this) {
            inst = current;
        }
        return owner.rewrite(request, inst, body.publisher, headers, timeout);
    }

    /** The attempt's future (sendAsync), cancelled at once if the caller has given up. */
    void inFlight(Future<?> f) {
        boolean cancel;
        synchronized (this) {
            inFlight = f;
            cancel = cancelled;
        }
        if (cancel) {
            f.cancel(true);
        }
    }

    /** Called by the base client when an attempt's response headers are in. */
    @Override
    public BodySubscriber<T> apply(HttpResponse.ResponseInfo info) {
        synchronized (this) {
            if (open && !cancelled) {
                open = false;
                boolean retry = record(outcomeOf(info.statusCode()), loadHeaders(info))
                        && mayRetry() && takeNext();
                if (retry) {
                    sendPending = true;
                    return BodySubscribers.replacing(null); // drained: the connection stays usable
                }
            } else if (cancelled) {
                return BodySubscribers.replacing(null);
            }
            delivered = true;
        }
        BodySubscriber<T> mine;
        try {
            mine = handler.apply(info);
        } catch (RuntimeException | Error e) {
            end(Body.DROPPED);
            throw e;
        }
        if (endsWithBody(mine)) {
            // The send ends when its body does: after() ends the attempt. The JDK's subscriber
            // stays as it is (a subscriber of the caller's own would move the body's delivery
            // to the executor).
            synchronized (this) {
                wholeBody = true;
            }
            return mine;
        }
        return new Tracked(mine);
    }

    /**
     * The JDK's subscribers whose body is complete when {@code getBody()} completes
     * ({@code ofString}, {@code ofByteArray}, {@code ofFile}, {@code discarding},
     * {@code replacing}), so the send returns (its future completes) once the body is whole; a
     * cut body fails it, and the send with it.
     */
    private static boolean endsWithBody(BodySubscriber<?> s) {
        String n = s.getClass().getName();
        return n.startsWith(JDK_SUBSCRIBERS) && (n.endsWith("$ByteArraySubscriber")
                || n.endsWith("$PathSubscriber") || n.endsWith("$NullSubscriber"));
    }

    private static Outcome outcomeOf(int status) {
        return status >= 100 && status <= 599 ? Outcome.response(status) : Outcome.reset();
    }

    /** The headers the core reads: the load report (unless turned off) and Retry-After. */
    private Map<String, List<String>> loadHeaders(HttpResponse.ResponseInfo info) {
        if (owner.loadReports()) {
            return info.headers().map();
        }
        List<String> ra = info.headers().allValues(RETRY_AFTER);
        return ra.isEmpty() ? Collections.<String, List<String>>emptyMap()
                : Collections.singletonMap(RETRY_AFTER, ra);
    }

    /**
     * After an attempt's send returned {@code response} or failed with {@code error}: what the
     * sender does next.
     */
    synchronized Step after(HttpResponse<T> response, Throwable error) {
        if (cancelled) {
            failure = new CancellationException("the caller gave up");
            end(Body.DROPPED);
            return Step.FAIL;
        }
        if (sendPending) { // the answer was retried: its body is drained, whatever came of it
            sendPending = false;
            return Step.RETRY;
        }
        if (error == null) {
            if (wholeBody) {
                end(Body.DONE); // its body was read whole before the send returned
            }
            return Step.RETURN;
        }
        Throwable e = unwrap(error);
        if (delivered) { // the caller's body subscriber has seen the error (it finished BROKEN)
            end(Body.BROKEN);
            return fail(e);
        }
        if (open) {
            open = false;
            if (record(outcomeOf(e), null) && mayRetry() && takeNext()) {
                if (earlier.isEmpty()) {
                    earlier = new ArrayList<>(2);
                }
                earlier.add(e);
                return Step.RETRY;
            }
        }
        end(Body.DONE);
        return fail(e);
    }

    private Step fail(Throwable e) {
        for (Throwable t : earlier) {
            if (t != e) {
                e.addSuppressed(t);
            }
        }
        failure = e;
        return Step.FAIL;
    }

    /** The last attempt's exception, after {@link Step#FAIL}. */
    synchronized Throwable failure() {
        return failure;
    }

    /**
     * The caller gave up (an interrupt, a cancelled future): the open attempt is recorded as
     * cancelled (nothing counted against its instance), the call ends.
     */
    void cancel() {
        Future<?> f;
        synchronized (this) {
            if (ended || cancelled) {
                return;
            }
            cancelled = true;
            if (open) {
                open = false;
                record(Outcome.cancelled(), null);
            }
            f = inFlight;
            end(Body.DROPPED);
        }
        if (f != null) {
            f.cancel(true);
        }
    }

    /** The response reached nobody (the caller had given up meanwhile): its body is let go. */
    void discard(HttpResponse<T> response) {
        Object b = response.body();
        if (b instanceof AutoCloseable) {
            try {
                ((AutoCloseable) b).close();
            } catch (Exception ignored) {
                // nothing to report to
            }
        }
        end(Body.DROPPED);
    }

    private boolean mayRetry() {
        return body.replayable && attempts < owner.maxAttempts() && !cancelled;
    }

    /** The next attempt's instance, in flight from now; false when none is left. */
    private boolean takeNext() {
        try {
            current = call.next();
        } catch (EasException e) {
            return false; // nothing left to try, or the client closed: the last answer stands
        }
        open = true;
        attempts++;
        return true;
    }

    /** Records the open attempt; a failing record never fails the request (it says: no retry). */
    private boolean record(Outcome o, Map<String, List<String>> headers) {
        try {
            return headers == null ? call.record(o) : call.record(o, headers);
        } catch (RuntimeException e) {
            return false;
        }
    }

    /** Ends the call once: the last attempt's body ended as {@code how}. */
    synchronized void end(Body how) {
        if (ended) {
            return;
        }
        ended = true;
        try {
            if (how != Body.DONE) {
                call.finish(how);
            }
        } catch (RuntimeException ignored) {
            // the call is closed below anyway
        }
        try {
            call.close();
        } catch (RuntimeException ignored) {
            // a response already received is never turned into an error
        }
        if (!delivered && body != null) {
            body.release();
        }
    }

    /** What an attempt's exception means for its instance. */
    static Outcome outcomeOf(Throwable e) {
        if (e instanceof HttpConnectTimeoutException) {
            return Outcome.connectFailed();
        }
        if (e instanceof HttpTimeoutException) {
            return Outcome.timeout();
        }
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof ConnectException || t instanceof NoRouteToHostException
                    || t instanceof UnknownHostException || t instanceof UnresolvedAddressException
                    || t instanceof SSLException || t instanceof HttpConnectTimeoutException) {
                return Outcome.connectFailed(); // nothing was sent
            }
            if (t.getCause() == t) {
                break;
            }
        }
        if (e instanceof IOException) {
            return Outcome.reset(); // sent, maybe in part, then cut before the headers
        }
        return Outcome.cancelled(); // not the instance's doing (a bad request, the caller's code)
    }

    static Throwable unwrap(Throwable t) {
        while ((t instanceof CompletionException || t instanceof ExecutionException)
                && t.getCause() != null) {
            t = t.getCause();
        }
        return t;
    }

    /**
     * The caller's body subscriber: the attempt ends when the body does (read to its end:
     * DONE; cut: BROKEN; the caller stopped reading: DROPPED), before the caller hears of it.
     */
    private final class Tracked implements BodySubscriber<T> {
        private final BodySubscriber<T> mine;

        Tracked(BodySubscriber<T> mine) {
            this.mine = mine;
        }

        @Override
        public void onSubscribe(Flow.Subscription s) {
            mine.onSubscribe(new Flow.Subscription() {
                @Override
                public void request(long n) {
                    s.request(n);
                }

                @Override
                public void cancel() {
                    end(Body.DROPPED);
                    s.cancel();
                }
            });
        }

        @Override
        public void onNext(List<ByteBuffer> items) {
            mine.onNext(items);
        }

        @Override
        public void onError(Throwable t) {
            boolean byCaller;
            synchronized (Exchange.this) {
                byCaller = cancelled;
            }
            end(byCaller ? Body.DROPPED : Body.BROKEN);
            mine.onError(t);
        }

        @Override
        public void onComplete() {
            end(Body.DONE);
            mine.onComplete();
        }

        @Override
        public java.util.concurrent.CompletionStage<T> getBody() {
            return mine.getBody();
        }
    }
}
