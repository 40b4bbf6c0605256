package io.easdirect.http;

import io.easdirect.EasClient;
import io.easdirect.EasException;
import io.easdirect.Instance;
import java.io.IOException;
import java.net.Authenticator;
import java.net.CookieHandler;
import java.net.ProxySelector;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpResponse.BodyHandler;
import java.net.http.HttpResponse.BodySubscriber;
import java.net.http.HttpResponse.BodySubscribers;
import java.net.http.HttpResponse.PushPromiseHandler;
import java.net.http.WebSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.function.Function;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;

/**
 * A {@link HttpClient} that sends the requests addressed to a service to one of its instances,
 * picked by an {@link EasClient}, and retries on another one. A drop-in for any code that takes
 * an {@code HttpClient}; requests to other hosts go to the base client unchanged.
 *
 * <pre>{@code
 * EasClient eas = EasClient.open("eas://1.2.3.4:8080/my_service");
 * HttpClient http = EasHttpClient.newBuilder(eas).build();
 * HttpResponse<String> r = http.send(
 *         HttpRequest.newBuilder(URI.create("http://my-service/api/predict/my_service"))
 *                 .POST(HttpRequest.BodyPublishers.ofString("{...}")).build(),
 *         HttpResponse.BodyHandlers.ofString());
 * }</pre>
 *
 * <p>It follows the one policy of every libeasdirect binding:
 * <ul>
 *   <li>A request whose URL host is the client's service name, or an alias given to the
 *       builder (compared case-insensitively, port ignored), goes to
 *       {@code http://{instance.host}} (https with {@link Builder#scheme}) with the same path
 *       and query. A name with {@code _} is not a valid URI host, so the name with each
 *       {@code _} replaced by {@code -} matches too ({@code my_service} as
 *       {@code http://my-service/...}). A {@code static://} target has no name: give an
 *       alias.</li>
 *   <li>A connection error, a timeout (the request's own {@link HttpRequest#timeout()}, which
 *       bounds each attempt), a 5xx or a 429 is reported with
 *       {@link EasClient#reportFailure} and retried on a different instance (exclusion); any
 *       other answer, a 4xx included, is reported with {@link EasClient#reportSuccess} and
 *       returned at once.</li>
 *   <li>3 attempts in all by default ({@link Builder#maxAttempts}), never more than the
 *       number of instances; every method is retried, since EAS predict calls are POSTs,
 *       unless {@link Builder#idempotentRetriesOnly}.</li>
 *   <li>The body publisher is subscribed again for each attempt: the publishers of
 *       {@link HttpRequest.BodyPublishers} (ofString, ofByteArray, ofFile, ofInputStream with a
 *       supplier of new streams) replay the body.</li>
 *   <li>When every attempt failed, the last answer (a 5xx or 429 response, its body read by
 *       the caller's handler) is returned, or the last exception thrown, with the earlier
 *       ones attached as suppressed. An interrupt is not retried and reports nothing.</li>
 * </ul>
 *
 * <p>Closing it closes neither the base client nor the EasClient.
 */
public final class EasHttpClient extends HttpClient {
    private final EasClient client;
    private final HttpClient base;
    private final Set<String> hosts;
    private final String scheme;
    private final int maxAttempts;
    private final boolean idempotentOnly;

    private EasHttpClient(Builder b) {
        this.client = b.client;
        this.base = b.base != null ? b.base
                : HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
        Set<String> h = new HashSet<>();
        client.serviceName().ifPresent(s -> {
            h.add(s.toLowerCase(Locale.ROOT));
            h.add(s.replace('_', '-').toLowerCase(Locale.ROOT));
        });
        for (String alias : b.aliases) {
            h.add(alias.toLowerCase(Locale.ROOT));
        }
        this.hosts = h;
        this.scheme = b.scheme;
        this.maxAttempts = b.maxAttempts;
        this.idempotentOnly = b.idempotentOnly;
    }

    /** A builder of a client that picks instances with {@code client}. */
    public static Builder newBuilder(EasClient client) {
        return new Builder(Objects.requireNonNull(client, "client"));
    }

    /** Options of an {@link EasHttpClient}. */
    public static final class Builder {
        private final EasClient client;
        private HttpClient base;
        private final List<String> aliases = new ArrayList<>();
        private String scheme = "http";
        private int maxAttempts = 3;
        private boolean idempotentOnly;

        private Builder(EasClient client) {
            this.client = client;
        }

        /**
         * The client that sends the requests (its timeouts, proxy, TLS and executor apply).
         * Default: a new HTTP/1.1 client.
         */
        public Builder httpClient(HttpClient base) {
            this.base = Objects.requireNonNull(base, "base");
            return this;
        }

        /** More URL hosts to send to the service, besides its name. */
        public Builder hostAliases(String... hosts) {
            for (String h : Objects.requireNonNull(hosts, "hosts")) {
                aliases.add(Objects.requireNonNull(h, "host alias"));
            }
            return this;
        }

        /** The scheme of rewritten URLs: "http" (the default) or "https". */
        public Builder scheme(String scheme) {
            if (!"http".equals(scheme) && !"https".equals(scheme)) {
                throw new IllegalArgumentException("scheme must be http or https, not " + scheme);
            }
            this.scheme = scheme;
            return this;
        }

        /** Instances one request may try in all (default 3; at least 1: no retry). */
        public Builder maxAttempts(int n) {
            if (n < 1) {
                throw new IllegalArgumentException("maxAttempts must be at least 1, not " + n);
            }
            this.maxAttempts = n;
            return this;
        }

        /**
         * Retries only idempotent requests: GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or any
         * request with an Idempotency-Key or X-Idempotency-Key header. Off by default.
         */
        public Builder idempotentRetriesOnly(boolean on) {
            this.idempotentOnly = on;
            return this;
        }

        public EasHttpClient build() {
            return new EasHttpClient(this);
        }
    }

    /** The EasClient that picks the instances. */
    public EasClient easClient() {
        return client;
    }

    /** Whether a request goes to an instance (its host is the service's name or an alias). */
    public boolean handles(URI uri) {
        String host = uri.getHost();
        return host != null && hosts.contains(host.toLowerCase(Locale.ROOT));
    }

    private int attemptsFor(HttpRequest req) {
        return idempotentOnly && !idempotent(req) ? 1 : maxAttempts;
    }

    private static boolean idempotent(HttpRequest req) {
        switch (req.method()) {
            case "GET":
            case "HEAD":
            case "OPTIONS":
            case "TRACE":
            case "PUT":
            case "DELETE":
                return true;
            default:
                return req.headers().firstValue("Idempotency-Key").isPresent()
                        || req.headers().firstValue("X-Idempotency-Key").isPresent();
        }
    }

    // Reports never fail a request: a closed client only stops the bookkeeping.

    private void failed(Instance inst) {
        try {
            client.reportFailure(inst.id());
        } catch (EasException ignored) {
            // closed meanwhile
        }
    }

    private void answered(Instance inst) {
        try {
            client.reportSuccess(inst.id());
        } catch (EasException ignored) {
            // closed meanwhile
        }
    }

    /** Statuses that call for a failure report and another instance. */
    static boolean retryable(int status) {
        return status >= 500 || status == 429;
    }

    /** The request sent to {@code inst}: same method, headers, body, timeout, version. */
    private HttpRequest rewrite(HttpRequest req, Instance inst) {
        URI u = req.uri();
        String path = u.getRawPath() == null ? "" : u.getRawPath();
        String query = u.getRawQuery() == null ? "" : "?" + u.getRawQuery();
        HttpRequest.Builder b = HttpRequest.newBuilder(
                URI.create(scheme + "://" + inst.host() + path + query));
        b.method(req.method(), req.bodyPublisher().orElse(HttpRequest.BodyPublishers.noBody()));
        for (Map.Entry<String, List<String>> h : req.headers().map().entrySet()) {
            for (String v : h.getValue()) {
                b.header(h.getKey(), v);
            }
        }
        req.timeout().ifPresent(b::timeout);
        req.version().ifPresent(b::version);
        b.expectContinue(req.expectContinue());
        return b.build();
    }

    private IOException noInstance(HttpRequest req, EasException e) {
        return new IOException("easdirect: cannot pick an instance of " + req.uri().getHost()
                + " for " + req.method() + " " + req.uri().getRawPath() + ": " + e.getMessage(), e);
    }

    /** The instances tried so far, and the next one. */
    private final class Attempts {
        final HttpRequest req;
        final int limit;
        long[] tried = new long[0];
        Instance current;
        int number = 1;
        final List<Throwable> failures = new ArrayList<>();

        Attempts(HttpRequest req) {
            this.req = req;
            this.limit = attemptsFor(req);
        }

        boolean mayRetry() {
            return number < limit;
        }

        /** Another instance, not one tried so far nor the current one; null if none. */
        Instance next() {
            long[] ex = Arrays.copyOf(tried, tried.length + 1);
            ex[tried.length] = current.id();
            try {
                return client.selectExcluding(ex);
            } catch (EasException e) {
                return null; // every instance has been tried (or the client was closed)
            }
        }

        void moveTo(Instance next) {
            tried = Arrays.copyOf(tried, tried.length + 1);
            tried[tried.length - 1] = current.id();
            current = next;
            number++;
        }

        <X extends Throwable> X withEarlier(X last) {
            for (Throwable t : failures) {
                if (t != last) {
                    last.addSuppressed(t);
                }
            }
            return last;
        }
    }

    /**
     * The caller's body handler, except for an answer that will be retried: that body is
     * discarded (the connection stays usable) and the next instance is chosen right then, so
     * that the last answer, when no instance is left, reaches the caller's handler whole.
     */
    private static final class RetryingHandler<T> implements BodyHandler<T> {
        private final BodyHandler<T> handler;
        private final Attempts attempts;
        volatile Instance next;

        RetryingHandler(BodyHandler<T> handler, Attempts attempts) {
            this.handler = handler;
            this.attempts = attempts;
        }

        @Override
        public BodySubscriber<T> apply(HttpResponse.ResponseInfo info) {
            if (retryable(info.statusCode()) && attempts.mayRetry()) {
                Instance n = attempts.next();
                if (n != null) {
                    next = n;
                    return BodySubscribers.replacing(null);
                }
            }
            return handler.apply(info);
        }
    }

    @Override
    public <T> HttpResponse<T> send(HttpRequest req, BodyHandler<T> handler)
            throws IOException, InterruptedException {
        if (!handles(req.uri())) {
            return base.send(req, handler);
        }
        Attempts a = new Attempts(req);
        try {
            a.current = client.select();
        } catch (EasException e) {
            throw noInstance(req, e);
        }
        for (;;) {
            RetryingHandler<T> h = new RetryingHandler<>(handler, a);
            HttpResponse<T> resp;
            try {
                resp = base.send(rewrite(req, a.current), h);
            } catch (IOException e) {
                failed(a.current);
                a.failures.add(e);
                Instance next = a.mayRetry() ? a.next() : null;
                if (next == null) {
                    throw a.withEarlier(e);
                }
                a.moveTo(next);
                continue;
            }
            if (retryable(resp.statusCode())) {
                failed(a.current);
                if (h.next != null) {
                    a.moveTo(h.next);
                    continue;
                }
                return resp;
            }
            answered(a.current);
            return resp;
        }
    }

    @Override
    public <T> CompletableFuture<HttpResponse<T>> sendAsync(HttpRequest req,
            BodyHandler<T> handler) {
        return sendAsync(req, handler, null);
    }

    @Override
    public <T> CompletableFuture<HttpResponse<T>> sendAsync(HttpRequest req,
            BodyHandler<T> handler, PushPromiseHandler<T> push) {
        if (!handles(req.uri())) {
            return base.sendAsync(req, handler, push);
        }
        Attempts a = new Attempts(req);
        try {
            a.current = client.select();
        } catch (EasException e) {
            return CompletableFuture.failedFuture(noInstance(req, e));
        }
        return attemptAsync(a, handler, push);
    }

    private <T> CompletableFuture<HttpResponse<T>> attemptAsync(Attempts a,
            BodyHandler<T> handler, PushPromiseHandler<T> push) {
        RetryingHandler<T> h = new RetryingHandler<>(handler, a);
        CompletableFuture<HttpResponse<T>> sent;
        try {
            sent = base.sendAsync(rewrite(a.req, a.current), h, push);
        } catch (RuntimeException e) {
            return CompletableFuture.failedFuture(e);
        }
        return sent.handle((resp, err) -> {
            if (err != null) {
                Throwable cause = unwrap(err);
                if (!(cause instanceof IOException)) {
                    return CompletableFuture.<HttpResponse<T>>failedFuture(cause);
                }
                failed(a.current);
                a.failures.add(cause);
                Instance next = a.mayRetry() ? a.next() : null;
                if (next == null) {
                    return CompletableFuture.<HttpResponse<T>>failedFuture(a.withEarlier(cause));
                }
                a.moveTo(next);
                return attemptAsync(a, handler, push);
            }
            if (retryable(resp.statusCode())) {
                failed(a.current);
                if (h.next != null) {
                    a.moveTo(h.next);
                    return attemptAsync(a, handler, push);
                }
                return CompletableFuture.completedFuture(resp);
            }
            answered(a.current);
            return CompletableFuture.completedFuture(resp);
        }).thenCompose(Function.identity());
    }

    private static Throwable unwrap(Throwable t) {
        while ((t instanceof CompletionException || t instanceof ExecutionException)
                && t.getCause() != null) {
            t = t.getCause();
        }
        return t;
    }

    // The base client's settings.

    @Override
    public Optional<CookieHandler> cookieHandler() {
        return base.cookieHandler();
    }

    @Override
    public Optional<Duration> connectTimeout() {
        return base.connectTimeout();
    }

    @Override
    public Redirect followRedirects() {
        return base.followRedirects();
    }

    @Override
    public Optional<ProxySelector> proxy() {
        return base.proxy();
    }

    @Override
    public SSLContext sslContext() {
        return base.sslContext();
    }

    @Override
    public SSLParameters sslParameters() {
        return base.sslParameters();
    }

    @Override
    public Optional<Authenticator> authenticator() {
        return base.authenticator();
    }

    @Override
    public Version version() {
        return base.version();
    }

    @Override
    public Optional<Executor> executor() {
        return base.executor();
    }

    @Override
    public WebSocket.Builder newWebSocketBuilder() {
        return base.newWebSocketBuilder();
    }

    @Override
    public String toString() {
        return "EasHttpClient{" + client + ", hosts=" + hosts + "}";
    }
}
