package io.easdirect.http;

import java.net.http.HttpRequest;
import java.net.http.HttpRequest.BodyPublisher;
import java.net.http.HttpRequest.BodyPublishers;
import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.Arrays;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Flow;

/**
 * The body a request sends on each of its attempts. The JDK's byte-array, string, file and
 * empty publishers produce their whole content on every subscription, so they are sent as they
 * are. Any other publisher ({@code ofInputStream}, which reads a stream the caller may hand out
 * only once, {@code fromPublisher}, a custom one) cannot be known to replay: it is read once,
 * up to a bound, and the bytes are sent on every attempt. A body longer than the bound is sent
 * once, whole (what was read, then the rest), and its request gets no retry: never a truncated
 * or empty resend.
 */
final class BodyReplay {
    private static final String JDK = "jdk.internal.net.http.RequestPublishers$";

    /** The publisher of every attempt (replayable), or of the one attempt. */
    final BodyPublisher publisher;
    /** Whether {@link #publisher} gives the whole body on every subscription. */
    final boolean replayable;
    /** The one-shot body read in part, to release when it is never sent; null otherwise. */
    private final Buffering partial;

    private BodyReplay(BodyPublisher publisher, boolean replayable, Buffering partial) {
        this.publisher = publisher;
        this.replayable = replayable;
        this.partial = partial;
    }

    private static final BodyReplay NONE = new BodyReplay(BodyPublishers.noBody(), true, null);

    /**
     * The body of {@code request}, read first when it cannot be known to replay (then the
     * future completes once it is read, or once {@code limit} bytes were).
     */
    static CompletableFuture<BodyReplay> of(HttpRequest request, long limit) {
        Optional<BodyPublisher> p = request.bodyPublisher();
        if (!p.isPresent()) {
            return CompletableFuture.completedFuture(NONE);
        }
        BodyPublisher pub = p.get();
        if (replays(pub)) {
            return CompletableFuture.completedFuture(new BodyReplay(pub, true, null));
        }
        long length = pub.contentLength();
        if (length == 0) {
            return CompletableFuture.completedFuture(NONE);
        }
        if (length > limit) {
            // Known to be too long to hold: sent once as it is.
            return CompletableFuture.completedFuture(new BodyReplay(pub, false, null));
        }
        Buffering b = new Buffering(limit, length);
        b.result.whenComplete((r, e) -> {
            if (b.result.isCancelled()) {
                b.releaseUnsent(); // the caller gave up while it was being read
            }
        });
        pub.subscribe(b);
        return b.result;
    }

    /** The JDK's publishers that give their whole content on each subscription. */
    static boolean replays(BodyPublisher p) {
        String n = p.getClass().getName();
        return n.startsWith(JDK) && (n.endsWith("$ByteArrayPublisher")
                || n.endsWith("$StringPublisher") || n.endsWith("$FilePublisher")
                || n.endsWith("$EmptyPublisher"));
    }

    /** The request ends without this body having been sent: the source is let go. */
    void release() {
        if (partial != null) {
            partial.releaseUnsent();
        }
    }

    /**
     * Subscribes once to a body that may not replay: collects up to {@code limit} bytes; at
     * the end, the body is a byte array. Past the limit it stops asking for more, and becomes
     * the publisher of the one attempt: the bytes read, then the rest, with the source's own
     * demand and end.
     */
    static final class Buffering implements Flow.Subscriber<ByteBuffer>, BodyPublisher {
        final CompletableFuture<BodyReplay> result = new CompletableFuture<>();
        private final long limit;
        private final long contentLength;
        private Flow.Subscription upstream;
        private byte[] bytes;
        private int len;
        private boolean overflowed; // written before result completes, read after

        // Past the limit, guarded by this: the one attempt's subscriber and what it is owed.
        private final ArrayDeque<ByteBuffer> head = new ArrayDeque<>();
        private Flow.Subscriber<? super ByteBuffer> downstream;
        private long demand;
        private boolean draining;
        private boolean upstreamDone;
        private Throwable upstreamError;
        private boolean terminated;

        Buffering(long limit, long contentLength) {
            this.limit = limit;
            this.contentLength = contentLength;
            this.bytes = new byte[(int) Math.min(limit, contentLength > 0 ? contentLength : 8192)];
        }

        @Override
        public void onSubscribe(Flow.Subscription s) {
            upstream = s;
            s.request(1);
        }

        @Override
        public void onNext(ByteBuffer b) {
            if (!overflowed) {
                int n = b.remaining();
                if ((long) len + n <= limit) {
                    if (len + n > bytes.length) {
                        bytes = Arrays.copyOf(bytes, (int) Math.min(limit,
                                Math.max((long) len + n, 2L * bytes.length)));
                    }
                    b.get(bytes, len, n);
                    len += n;
                    upstream.request(1);
                    return;
                }
                overflowed = true;
                synchronized (this) {
                    // Never an empty buffer: JDK 17 sends it as the chunked body's last chunk.
                    if (len > 0) {
                        head.add(ByteBuffer.wrap(bytes, 0, len));
                    }
                    head.add(b);
                }
                result.complete(new BodyReplay(this, false, this));
                return;
            }
            if (!b.hasRemaining()) {
                upstream.request(1); // dropped, see above: the demand stays whole
                return;
            }
            Flow.Subscriber<? super ByteBuffer> d;
            synchronized (this) {
                d = downstream;
            }
            if (d != null) {
                d.onNext(b);
            }
        }

        @Override
        public void onError(Throwable t) {
            if (!overflowed) {
                result.completeExceptionally(t);
                return;
            }
            synchronized (this) {
                upstreamError = t;
            }
            drain();
        }

        @Override
        public void onComplete() {
            if (!overflowed) {
                result.complete(new BodyReplay(BodyPublishers.ofByteArray(bytes, 0, len), true, null));
                return;
            }
            synchronized (this) {
                upstreamDone = true;
            }
            drain();
        }

        // The publisher of the one attempt.

        @Override
        public long contentLength() {
            return contentLength;
        }

        @Override
        public void subscribe(Flow.Subscriber<? super ByteBuffer> s) {
            boolean second;
            synchronized (this) {
                second = downstream != null;
                if (!second) {
                    downstream = s;
                }
            }
            if (second) {
                // Never happens through the helper (a one-shot body gets one attempt).
                s.onSubscribe(new Flow.Subscription() {
                    @Override
                    public void request(long n) {}

                    @Override
                    public void cancel() {}
                });
                s.onError(new IllegalStateException("a one-shot request body was sent already"));
                return;
            }
            s.onSubscribe(new Flow.Subscription() {
                @Override
                public void request(long n) {
                    if (n <= 0) {
                        upstream.cancel();
                        synchronized (Buffering.this) {
                            upstreamError = new IllegalArgumentException("non-positive request " + n);
                            head.clear();
                        }
                    } else {
                        synchronized (Buffering.this) {
                            demand = demand + n < 0 ? Long.MAX_VALUE : demand + n;
                        }
                    }
                    drain();
                }

                @Override
                public void cancel() {
                    synchronized (Buffering.this) {
                        terminated = true;
                        head.clear();
                    }
                    upstream.cancel();
                }
            });
        }

        /** Delivers the bytes read first, then passes the demand on; one thread at a time. */
        private void drain() {
            synchronized (this) {
                if (draining || downstream == null) {
                    return;
                }
                draining = true;
            }
            for (;;) {
                ByteBuffer b = null;
                long forward = 0;
                boolean complete = false;
                Throwable error = null;
                Flow.Subscriber<? super ByteBuffer> d;
                synchronized (this) {
                    d = downstream;
                    if (terminated) {
                        draining = false;
                        return;
                    }
                    if (!head.isEmpty()) {
                        if (demand == 0) {
                            draining = false;
                            return;
                        }
                        b = head.poll();
                        demand--;
                    } else if (upstreamError != null) {
                        error = upstreamError;
                        terminated = true;
                    } else if (upstreamDone) {
                        complete = true;
                        terminated = true;
                    } else {
                        forward = demand;
                        demand = 0;
                    }
                    if (b == null) {
                        draining = false;
                    }
                }
                if (b != null) {
                    d.onNext(b);
                    continue;
                }
                if (error != null) {
                    d.onError(error);
                } else if (complete) {
                    d.onComplete();
                } else if (forward > 0) {
                    upstream.request(forward);
                }
                return;
            }
        }

        void releaseUnsent() {
            boolean unsent;
            synchronized (this) {
                unsent = downstream == null;
                head.clear();
            }
            if (unsent && upstream != null) {
                upstream.cancel();
            }
        }
    }
}
