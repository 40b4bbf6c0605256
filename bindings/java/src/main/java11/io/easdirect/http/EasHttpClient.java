package io.easdirect.http;

import io.easdirect.CallOption;
import io.easdirect.EasCall;
import io.easdirect.EasClient;
import io.easdirect.EasException;
import io.easdirect.Instance;
import java.io.IOException;
import java.net.Authenticator;
import java.net.CookieHandler;
import java.net.ProxySelector;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpHeaders;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpResponse.BodyHandler;
import java.net.http.HttpResponse.PushPromiseHandler;
import java.net.http.WebSocket;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CancellationException;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.function.Function;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;

/**
 * A {@link HttpClient} that sends the requests addressed to a service to its instances: each
 * request drives one call of the {@link EasClient} ({@link EasClient#beginCall}), which picks
 * the instance of each attempt (by load, or by affinity for a keyed request) and decides
 * whether to retry. A drop-in for any code that takes an {@code HttpClient}; requests to other
 * hosts go to the base client unchanged.
 *
 * <pre>{@code
 * EasClient eas = EasClient.open("eas://1.2.3.4:8080/my_service");
 * HttpClient http = EasHttpClient.newBuilder(eas).token(System.getenv("EAS_TOKEN")).build();
 * HttpResponse<String> r = http.send(
 *         HttpRequest.newBuilder(URI.create("http://my-service/api/predict/my_service"))
 *                 .POST(HttpRequest.BodyPublishers.ofString("{...}")).build(),
 *         HttpResponse.BodyHandlers.ofString());
 * }</pre>
 *
 * <p>What it does, the same in every libeasdirect binding:
 * <ul>
 *   <li>A request whose URL host is the client's service name ({@link EasClient#service()})
 *       or an alias given to the builder goes to {@code http://{instance host:port}}
 *       ({@code https} with {@link Builder#scheme}), path and query kept exactly. Names are
 *       compared case-insensitively, port ignored, with {@code _} and {@code -} alike: EAS
 *       service names hold {@code _}, which {@link URI} does not take as a host, so write
 *       {@code http://my-service/...} for {@code my_service} (a request whose URI has
 *       {@code my_service} as its authority, from an {@code HttpRequest} of your own, matches
 *       too).</li>
 *   <li>Retries follow the call: the core's {@code max_attempts} client option (default 3),
 *       never the same instance twice; a 5xx, a 429, a refused connection, a reset or a timeout
 *       move to another instance, a 1xx-4xx answer is returned at once. Every method is
 *       retried, since EAS predict calls are POSTs, unless
 *       {@link Builder#idempotentRetriesOnly}. A retry happens only before any byte of the
 *       answer reached the caller: the body of an answer that is retried is drained.</li>
 *   <li>Each attempt waits at most {@link Builder#attemptTimeout} (default 60 s) for the
 *       response headers, or the request's own {@link HttpRequest#timeout()} when shorter: a
 *       hung instance costs one attempt.</li>
 *   <li>Bodies: {@code ofByteArray}, {@code ofString}, {@code ofFile} and {@code noBody} are sent
 *       whole on every attempt. Any other publisher ({@code ofInputStream}, whose supplier may
 *       hand out the same stream twice, {@code fromPublisher}, your own) is read once, up to
 *       {@link Builder#maxBufferedBody} (default 8 MiB), and those bytes are sent on every
 *       attempt; a longer one is sent once, whole, without retry. Never a truncated or empty
 *       resend.</li>
 *   <li>The attempt that answers stays in flight on its instance until its body ends: read to
 *       its end, cut by the instance (a failure of the instance), or dropped by the caller
 *       (closing the {@code InputStream} of {@code BodyHandlers.ofInputStream()}, cancelling the
 *       subscription). A streamed LLM answer keeps its instance busy as long as it streams.</li>
 *   <li>With no answer after the last attempt, the last attempt's exception is thrown (a
 *       {@link java.net.http.HttpTimeoutException}, a {@link java.net.ConnectException}, an
 *       {@link IOException}; the earlier ones attached as suppressed); with no instance to try
 *       at all, an {@link IOException} whose cause is the {@link EasException}
 *       ({@link io.easdirect.EasStatus#NO_INSTANCE}, or {@code CLOSED}). A caller who gives up
 *       ({@link Thread#interrupt()} during {@link #send}, {@code cancel} on the future of
 *       {@link #sendAsync}) gets its {@link InterruptedException} or
 *       {@link java.util.concurrent.CancellationException}; nothing is counted against the
 *       instance. A request that got its answer is never turned into an error afterwards (the
 *       EasClient closed meanwhile, say).</li>
 * </ul>
 *
 * <p>Closing it closes neither the base client nor the EasClient. {@link #toString()} never
 * shows the token.
 */
public final class EasHttpClient extends HttpClient {
    /** Default of {@link Builder#maxBufferedBody}. */
    public static final long DEFAULT_MAX_BUFFERED_BODY = 8L << 20;
    /** The connect timeout of the default base client (the attempt timeout when shorter). */
    private static final Duration DEFAULT_CONNECT_TIMEOUT = Duration.ofSeconds(10);
    private static final String AUTHORIZATION = "Authorization";
    private static final String LOAD_FORMAT = "endpoint-load-metrics-format";
    private static final List<String> LOAD_FORMAT_TEXT = Collections.singletonList("text");
    private static final String IDEMPOTENCY_KEY = "Idempotency-Key";
    private static final int MAX_LAST_URIS = 4096;
    private static final CallOption[] IDEMPOTENT = new CallOption[0];
    private static final CallOption[] NOT_IDEMPOTENT = {CallOption.NOT_IDEMPOTENT};

    private final EasClient client;
    private final HttpClient base;
    private final Set<String> hosts; // lower case, '_' as '-'
    private final String scheme;
    private final String token; // never printed
    private final boolean loadReports;
    private final Duration attemptTimeout;
    private final boolean idempotentOnly;
    private final String affinityHeader;
    private final Function<HttpRequest, byte[]> affinityKey;
    private final int maxAttempts;
    private final long maxBufferedBody;
    private final HttpHeaders noHeaders; // the attempt headers of a request without headers
    /** Per instance address, the URI of its last attempt: the next one to the same path reuses it. */
    private final ConcurrentHashMap<String, LastUri> lastUris = new ConcurrentHashMap<>();

    private EasHttpClient(Builder b) {
        this.client = b.client;
        this.base = b.base != null ? b.base : HttpClient.newBuilder()
                .version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(b.attemptTimeout.compareTo(DEFAULT_CONNECT_TIMEOUT) < 0
                        ? b.attemptTimeout : DEFAULT_CONNECT_TIMEOUT)
                .build();
        Set<String> h = new HashSet<>();
        if (!client.service().isEmpty()) {
            h.add(normalize(client.service()));
        }
        for (String alias : b.aliases) {
            h.add(normalize(alias));
        }
        this.hosts = h;
        this.scheme = b.scheme;
        this.token = b.token;
        this.loadReports = b.loadReports;
        this.attemptTimeout = b.attemptTimeout;
        this.idempotentOnly = b.idempotentOnly;
        this.affinityHeader = b.affinityHeader;
        this.affinityKey = b.affinityKey;
        this.maxAttempts = b.maxAttempts;
        this.maxBufferedBody = b.maxBufferedBody;
        this.noHeaders = attemptHeaders(HttpHeaders.of(Collections.emptyMap(), (n, v) -> true));
    }

    /** A builder of a client that sends to the instances of {@code client}. */
    public static Builder newBuilder(EasClient client) {
        return new Builder(Objects.requireNonNull(client, "client"));
    }

    /** Options of an {@link EasHttpClient}. */
    public static final class Builder {
        private final EasClient client;
        private HttpClient base;
        private final List<String> aliases = new ArrayList<>();
        private String scheme = "http";
        private String token;
        private boolean loadReports = true;
        private Duration attemptTimeout = Duration.ofSeconds(60);
        private boolean idempotentOnly;
        private String affinityHeader;
        private Function<HttpRequest, byte[]> affinityKey;
        private int maxAttempts = Integer.MAX_VALUE;
        private long maxBufferedBody = DEFAULT_MAX_BUFFERED_BODY;

        private Builder(EasClient client) {
            this.client = client;
        }

        /**
         * The client that sends the requests (its connect timeout, proxy, TLS, redirects and
         * executor apply). Default: a new HTTP/1.1 client with a connect timeout of 10 s (the
         * attempt timeout when shorter), so that an instance that never accepts counts as a
         * connect failure (nothing sent: retried whatever the method).
         */
        public Builder httpClient(HttpClient base) {
            this.base = Objects.requireNonNull(base, "base");
            return this;
        }

        /**
         * More URL hosts to send to the service, besides its name (needed for a
         * {@code static://} target, which names none); matched like the name.
         */
        public Builder hostAliases(String... hosts) {
            for (String h : Objects.requireNonNull(hosts, "hosts")) {
                if (Objects.requireNonNull(h, "host alias").isEmpty()) {
                    throw new IllegalArgumentException("a host alias is empty");
                }
                aliases.add(h);
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

        /**
         * The EAS service token, sent as the {@code Authorization} header of requests to the
         * service that carry none. Never printed. {@code null}: none (the default).
         *
         * @throws IllegalArgumentException when it is empty or holds a character a header
         *     value cannot (the message does not show it)
         */
        public Builder token(String token) {
            if (token != null) {
                if (token.isEmpty()) {
                    throw new IllegalArgumentException("the token is empty");
                }
                for (int i = 0; i < token.length(); i++) {
                    char c = token.charAt(i);
                    if (c < 0x20 && c != '\t' || c >= 0x7f) {
                        throw new IllegalArgumentException("the token holds a character at index "
                                + i + " that a header value cannot hold");
                    }
                }
            }
            this.token = token;
            return this;
        }

        /**
         * Whether to ask each instance for its load ({@code endpoint-load-metrics-format: text},
         * as vLLM and Triton answer) and pass the answer's {@code endpoint-load-metrics} to the
         * core, which balances on it. Default true.
         */
        public Builder loadReports(boolean on) {
            this.loadReports = on;
            return this;
        }

        /**
         * How long each attempt waits for the response headers (default 60 s); a request's own
         * {@link HttpRequest#timeout()} applies to each attempt when it is shorter. A timed-out
         * attempt counts against its instance and moves to another one.
         */
        public Builder attemptTimeout(Duration timeout) {
            Objects.requireNonNull(timeout, "timeout");
            if (timeout.isZero() || timeout.isNegative()) {
                throw new IllegalArgumentException("attemptTimeout must be positive, not " + timeout);
            }
            this.attemptTimeout = timeout;
            return this;
        }

        /**
         * Retries only idempotent requests after they were sent: GET, HEAD, OPTIONS, PUT,
         * DELETE, and any request with an {@code Idempotency-Key} header; the others are
         * retried only when nothing was sent (a refused connection). Off by default.
         */
        public Builder idempotentRetriesOnly(boolean on) {
            this.idempotentOnly = on;
            return this;
        }

        /**
         * Affinity by a request header (e.g. {@code X-Session-Id}): its value's UTF-8 bytes are
         * the call's key, so requests with one value go to one instance while its load allows;
         * a request without it is not keyed. Replaces {@link #affinityKey}.
         */
        public Builder affinityHeader(String name) {
            if (Objects.requireNonNull(name, "name").isEmpty()) {
                throw new IllegalArgumentException("the affinity header name is empty");
            }
            this.affinityHeader = name;
            this.affinityKey = null;
            return this;
        }

        /**
         * Affinity by a function of the request (a session id, a prompt-prefix hash): its bytes
         * are the call's key; {@code null} or empty: no key. It runs on the sending thread and
         * must not throw. Replaces {@link #affinityHeader}.
         */
        public Builder affinityKey(Function<HttpRequest, byte[]> key) {
            this.affinityKey = Objects.requireNonNull(key, "key");
            this.affinityHeader = null;
            return this;
        }

        /**
         * An extra cap on the attempts of one request, on top of the core's
         * {@code max_attempts} client option (which applies anyway; the lower wins). Default: no
         * extra cap. Prefer the client option: it applies to every helper of the client.
         */
        public Builder maxAttempts(int n) {
            if (n < 1) {
                throw new IllegalArgumentException("maxAttempts must be at least 1, not " + n);
            }
            this.maxAttempts = n;
            return this;
        }

        /**
         * The most bytes of a body that cannot be known to replay (not {@code ofByteArray},
         * {@code ofString}, {@code ofFile}) read into memory to send on each attempt; a longer
         * body is sent once without retry. Default {@link #DEFAULT_MAX_BUFFERED_BODY} (8 MiB);
         * 0: such bodies are never held, and never retried.
         */
        public Builder maxBufferedBody(long bytes) {
            if (bytes < 0 || bytes > Integer.MAX_VALUE - 8) {
                throw new IllegalArgumentException(
                        "maxBufferedBody must be 0 to " + (Integer.MAX_VALUE - 8) + ", not " + bytes);
            }
            this.maxBufferedBody = bytes;
            return this;
        }

        /** The client. */
        public EasHttpClient build() {
            return new EasHttpClient(this);
        }
    }

    /** The EasClient that picks the instances. */
    public EasClient easClient() {
        return client;
    }

    boolean loadReports() {
        return loadReports;
    }

    int maxAttempts() {
        return maxAttempts;
    }

    /**
     * Whether a request to {@code uri} goes to an instance: its host (or, for a name that
     * {@link URI} does not take as a host, such as {@code my_service}, its authority without
     * user info and port) is the service's name or an alias, case-insensitively, with
     * {@code _} and {@code -} alike.
     */
    public boolean handles(URI uri) {
        String host = hostOf(uri);
        return host != null && hosts.contains(normalize(host));
    }

    static String hostOf(URI uri) {
        String host = uri.getHost();
        if (host != null) {
            return host;
        }
        String a = uri.getRawAuthority();
        if (a == null) {
            return null;
        }
        int at = a.lastIndexOf('@');
        if (at >= 0) {
            a = a.substring(at + 1);
        }
        int colon = a.lastIndexOf(':');
        if (colon >= 0 && a.indexOf(']') < colon) {
            a = a.substring(0, colon);
        }
        return a;
    }

    private static String normalize(String host) {
        return host.toLowerCase(Locale.ROOT).replace('_', '-');
    }

    /** Whether {@code req} is idempotent under {@link Builder#idempotentRetriesOnly}. */
    static boolean idempotent(HttpRequest req) {
        switch (req.method()) {
            case "GET":
            case "HEAD":
            case "OPTIONS":
            case "PUT":
            case "DELETE":
                return true;
            default:
                return req.headers().firstValue(IDEMPOTENCY_KEY).isPresent();
        }
    }

    private byte[] keyOf(HttpRequest req) {
        if (affinityKey != null) {
            return affinityKey.apply(req);
        }
        if (affinityHeader != null) {
            Optional<String> v = req.headers().firstValue(affinityHeader);
            if (v.isPresent()) {
                return v.get().getBytes(StandardCharsets.UTF_8);
            }
        }
        return null;
    }

    /**
     * The headers of every attempt of {@code req}: its own, with the token and the load-report
     * request added unless it has them (its own object when nothing is added).
     */
    HttpHeaders attemptHeaders(HttpRequest req) {
        HttpHeaders own = req.headers();
        if (own.map().isEmpty()) {
            return noHeaders; // the same for every request without headers of its own
        }
        return attemptHeaders(own);
    }

    private HttpHeaders attemptHeaders(HttpHeaders own) {
        boolean addToken = token != null && !own.firstValue(AUTHORIZATION).isPresent();
        boolean addFormat = loadReports && !own.firstValue(LOAD_FORMAT).isPresent();
        if (!addToken && !addFormat) {
            return own;
        }
        Map<String, List<String>> h = new TreeMap<>(String.CASE_INSENSITIVE_ORDER);
        h.putAll(own.map());
        if (addToken) {
            h.put(AUTHORIZATION, Collections.singletonList(token));
        }
        if (addFormat) {
            h.put(LOAD_FORMAT, LOAD_FORMAT_TEXT);
        }
        return HttpHeaders.of(h, (name, value) -> true);
    }

    /** The timeout of each attempt of {@code req}: the attempt timeout, or its own if shorter. */
    Duration attemptTimeout(HttpRequest req) {
        Optional<Duration> own = req.timeout();
        return own.isPresent() && own.get().compareTo(attemptTimeout) < 0 ? own.get()
                : attemptTimeout;
    }

    /**
     * The request sent to {@code inst}: same method, version and expect-continue, path and
     * query kept exactly; {@code headers} and {@code timeout} from {@link #attemptHeaders} and
     * {@link #attemptTimeout}.
     */
    HttpRequest rewrite(HttpRequest req, Instance inst, HttpRequest.BodyPublisher body,
            HttpHeaders headers, Duration timeout) {
        URI u = req.uri();
        String path = u.getRawPath();
        String query = u.getRawQuery();
        String host = inst.host();
        LastUri last = lastUris.get(host);
        if (last == null || !Objects.equals(last.path, path) || !Objects.equals(last.query, query)) {
            StringBuilder url = new StringBuilder(64).append(scheme).append("://").append(host);
            if (path != null) {
                url.append(path);
            }
            if (query != null) {
                url.append('?').append(query);
            }
            last = new LastUri(path, query, URI.create(url.toString()));
            if (lastUris.size() >= MAX_LAST_URIS) {
                lastUris.clear(); // instances come and go: forget the ones of long ago
            }
            lastUris.put(host, last);
        }
        return new AttemptRequest(req, last.uri, headers, body, timeout);
    }

    /** The URI of an attempt to one instance, for the raw path and query it was made of. */
    private static final class LastUri {
        final String path;
        final String query;
        final URI uri;

        LastUri(String path, String query, URI uri) {
            this.path = path;
            this.query = query;
            this.uri = uri;
        }
    }

    IOException noInstance(HttpRequest req, EasException e) {
        return new IOException("easdirect: cannot pick an instance of " + client.target()
                + " for " + req.method() + " " + req.uri().getRawPath() + ": " + e.getMessage(), e);
    }

    /** Begins the request's call. */
    private <T> Exchange<T> begin(HttpRequest req, BodyHandler<T> handler) throws IOException {
        Objects.requireNonNull(handler, "handler");
        CallOption[] opts = idempotentOnly && !idempotent(req) ? NOT_IDEMPOTENT : IDEMPOTENT;
        EasCall call;
        try {
            call = client.beginCall(keyOf(req), opts);
        } catch (EasException e) {
            throw noInstance(req, e);
        }
        return new Exchange<>(this, req, handler, call);
    }

    /**
     * Sends {@code req} and waits for its answer; a request to the service goes to its
     * instances, as the class says. An interrupt gives up (the call records it as cancelled).
     */
    @Override
    public <T> HttpResponse<T> send(HttpRequest req, BodyHandler<T> handler)
            throws IOException, InterruptedException {
        if (!handles(req.uri())) {
            return base.send(req, handler);
        }
        Exchange<T> x = begin(req, handler);
        CompletableFuture<BodyReplay> body = BodyReplay.of(req, maxBufferedBody);
        try {
            x.body(body.get());
        } catch (InterruptedException e) {
            body.cancel(true);
            x.end(io.easdirect.Body.DROPPED);
            throw e;
        } catch (ExecutionException e) {
            x.end(io.easdirect.Body.DROPPED);
            throw new IOException("easdirect: reading the request body failed: " + e.getCause(),
                    e.getCause());
        }
        x.first();
        for (;;) {
            HttpResponse<T> r = null;
            Throwable err = null;
            try {
                r = base.send(x.attemptRequest(), x);
            } catch (InterruptedException e) {
                x.cancel();
                throw e;
            } catch (IOException | RuntimeException e) {
                err = e;
            }
            switch (x.after(r, err)) {
                case RETURN:
                    return r;
                case RETRY:
                    continue;
                default:
                    Throwable f = x.failure();
                    if (f instanceof IOException) {
                        throw (IOException) f;
                    }
                    if (f instanceof RuntimeException) {
                        throw (RuntimeException) f;
                    }
                    if (f instanceof Error) {
                        throw (Error) f;
                    }
                    throw new IOException(f);
            }
        }
    }

    /**
     * Sends {@code req} asynchronously, as {@link #send}; cancelling the returned future gives
     * up (the attempt in progress is cancelled, the call records it as cancelled, the future
     * completes with a {@link java.util.concurrent.CancellationException}).
     */
    @Override
    public <T> CompletableFuture<HttpResponse<T>> sendAsync(HttpRequest req,
            BodyHandler<T> handler) {
        return sendAsync(req, handler, null);
    }

    /** {@link #sendAsync(HttpRequest, BodyHandler)}, with push promises for the base client. */
    @Override
    public <T> CompletableFuture<HttpResponse<T>> sendAsync(HttpRequest req,
            BodyHandler<T> handler, PushPromiseHandler<T> push) {
        if (!handles(req.uri())) {
            return base.sendAsync(req, handler, push);
        }
        Exchange<T> x;
        try {
            x = begin(req, handler);
        } catch (IOException | RuntimeException e) {
            return CompletableFuture.failedFuture(e);
        }
        CompletableFuture<BodyReplay> body = BodyReplay.of(req, maxBufferedBody);
        CompletableFuture<HttpResponse<T>> result = new CallFuture<>(x, body);
        body.whenComplete((b, e) -> {
            if (e != null) {
                x.end(io.easdirect.Body.DROPPED);
                Throwable cause = Exchange.unwrap(e);
                result.completeExceptionally(cause instanceof CancellationException ? cause
                        : new IOException("easdirect: reading the request body failed: " + cause,
                                cause));
                return;
            }
            x.body(b);
            try {
                x.first();
            } catch (IOException ioe) {
                result.completeExceptionally(ioe);
                return;
            }
            attemptAsync(x, result, push);
        });
        return result;
    }

    /**
     * The future of a {@link #sendAsync}: cancelling it records the cancellation before the
     * future completes, so whoever waits on it sees the call ended.
     */
    private static final class CallFuture<T> extends CompletableFuture<T> {
        private final Exchange<?> exchange;
        private final CompletableFuture<BodyReplay> body;

        CallFuture(Exchange<?> exchange, CompletableFuture<BodyReplay> body) {
            this.exchange = exchange;
            this.body = body;
        }

        @Override
        public boolean cancel(boolean mayInterruptIfRunning) {
            if (isDone()) {
                return false;
            }
            body.cancel(mayInterruptIfRunning);
            exchange.cancel();
            return super.cancel(mayInterruptIfRunning) || isCancelled();
        }
    }

    private <T> void attemptAsync(Exchange<T> x, CompletableFuture<HttpResponse<T>> result,
            PushPromiseHandler<T> push) {
        CompletableFuture<HttpResponse<T>> f;
        try {
            f = base.sendAsync(x.attemptRequest(), x, push);
        } catch (RuntimeException e) {
            f = CompletableFuture.failedFuture(e);
        }
        x.inFlight(f);
        f.whenComplete((r, err) -> {
            switch (x.after(r, err)) {
                case RETURN:
                    if (!result.complete(r)) {
                        x.discard(r);
                    }
                    break;
                case RETRY:
                    attemptAsync(x, result, push);
                    break;
                default:
                    result.completeExceptionally(x.failure());
            }
        });
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
        return "EasHttpClient{" + client + ", hosts=" + hosts + ", scheme=" + scheme
                + (token != null ? ", token=<set>" : "") + "}";
    }
}
