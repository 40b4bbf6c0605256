package io.easdirect;

import java.time.Duration;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.function.Consumer;

/**
 * A client of one PAI-EAS (or Nacos, static, DNS) service: it discovers the service's instances
 * in the background and picks one per request by smooth weighted round-robin, skipping the
 * instances reported as failing. Thread-safe: share one per service per process.
 *
 * <pre>{@code
 * try (EasClient client = EasClient.open("eas://1.2.3.4:8080/my_service")) {
 *     client.waitReady(Duration.ofSeconds(2));
 *     Instance inst = client.select();
 *     // POST http://{inst.host()}/api/predict/my_service ...
 *     client.reportSuccess(inst.id()); // or reportFailure(inst.id())
 * }
 * }</pre>
 *
 * <p>{@link #close()} stops discovery and subscriptions; it is safe to call more than once and
 * concurrently with any other call, which then fails with {@link EasStatus#CLOSED}. The native
 * client is freed once the object is unreachable.
 *
 * <p>The native library is libeasdirect, called through Panama (java.lang.foreign) on JDK 22
 * or newer and through JNI before; see {@link #backend()}.
 */
public final class EasClient implements AutoCloseable {
    /** Each native wait is at most this long, so that an interrupt is noticed soon. */
    private static final long WAIT_SLICE_MS = 50;

    /** eas_client_target and eas_client_service, read once: they never change. */
    private final String target;
    private final String service;
    private final NativeClient client;
    private final InstanceTable table = new InstanceTable();
    /** The source of a client from {@link #fromSource}, else null. It does not refer to this. */
    private final Sources.Source source;

    private EasClient(NativeClient client, Sources.Source source) {
        this.client = client;
        this.source = source;
        this.target = client.target(this);
        this.service = client.service(this);
    }

    /** {@link #open(String, Map)} with no options beyond the target's query parameters. */
    public static EasClient open(String target) {
        return open(target, Collections.<String, String>emptyMap());
    }

    /**
     * Creates a client for {@code target} and starts discovery. Returns at once: the first
     * fetch runs in the background (see {@link #waitReady}); a {@code static://} target is ready
     * on return.
     *
     * <p>Targets: {@code eas://endpoint[:port]/service} ({@code eas+https://} for TLS),
     * {@code nacos://host[:port][,host[:port]...]/service},
     * {@code nacos+endpoint://address-server[:port]/service},
     * {@code static://ip:port[*weight][,...]}, {@code dns://name:port}.
     *
     * @param options library options by key (refresh_interval_ms, request_timeout_ms,
     *     failures_before_ejection, ejection_base_ms, ejection_max_ms, max_ejection_percent,
     *     tls_ca_file, snapshot_file and the source's own keys), applied in iteration order;
     *     they win over the same keys given as query parameters of the target.
     * @throws EasException {@link EasStatus#INVALID_ARGUMENT} for a bad target, key or value,
     *     with a message naming it (also for a string holding a NUL or an unpaired surrogate,
     *     which the C ABI's NUL-terminated UTF-8 cannot carry)
     * @throws NullPointerException for a null target, options map, key or value
     * @throws UnsatisfiedLinkError when libeasdirect cannot be found or does not match
     */
    public static EasClient open(String target, Map<String, String> options) {
        return open(target, options, Logging.system());
    }

    /**
     * {@link #open(String, Map)}, with the client's log lines going where {@code logging} says
     * ({@link Logging#system()}, the default of the other overloads: the {@code System.Logger}
     * {@code "easdirect"}; {@code SystemLogging.to(logger)}; {@link Logging#to(LogSink,
     * LogLevel)}; {@link Logging#off()}).
     *
     * @throws UnsupportedOperationException when {@code logging} is not {@link Logging#off()}
     *     nor the default and the loaded libeasdirect predates ABI 1.4 (the default then logs
     *     nothing)
     */
    public static EasClient open(String target, Map<String, String> options, Logging logging) {
        Objects.requireNonNull(target, "target");
        Objects.requireNonNull(logging, "logging");
        checkString("the target", target);
        Map<String, String> copy = copyOptions(options);
        Backend backend = Backend.get();
        LogSink sink = logging.sink();
        int level = logLevel(backend, logging);
        long token = level == 0 ? 0 : LogSinks.add(sink);
        NativeClient nc;
        try {
            nc = backend.open(target, copy, token, level);
        } catch (RuntimeException | Error e) {
            LogSinks.remove(token); // the library has let go of it, or never took it
            throw e;
        }
        EasClient c = new EasClient(nc, null);
        ClientCleaner.register(c, nc);
        return c;
    }

    /** The C ABI's max_level for a new client: 0 for none. */
    private static int logLevel(Backend backend, Logging logging) {
        if (logging.sink() == null) {
            return 0;
        }
        if (!backend.hasObservability()) {
            if (logging.isDefault()) {
                return 0; // an older library: nothing to route
            }
            backend.requireObservability("logging (eas_options_set_log)");
        }
        return logging.maxLevel();
    }

    /** {@link #fromSource(EndpointSource, Map)} with no options. */
    public static EasClient fromSource(EndpointSource source) {
        return fromSource(source, Collections.<String, String>emptyMap());
    }

    /**
     * Creates a client whose instances come from {@code source} instead of a target: your own
     * registry (Consul, a file a sidecar writes, a company service...). Everything else works as
     * for any target: {@link #select()}, ejection, {@link #subscribe}, {@link #waitReady},
     * {@link #stats()}, the HTTP helper (give it {@code hostAliases}, as for a {@code static://}
     * target).
     *
     * <pre>{@code
     * try (EasClient client = EasClient.fromSource(
     *         () -> Arrays.asList(Endpoint.of("10.0.0.1", 8000), Endpoint.of("10.0.0.2", 8000)),
     *         Collections.singletonMap("refresh_interval_ms", "2000"))) {
     *     client.waitReady(Duration.ofSeconds(2));
     *     Instance inst = client.select();
     * }
     * }</pre>
     *
     * <p>{@link EndpointSource#fetch()} is called on a library background thread at each
     * refresh ({@code refresh_interval_ms}, 5 s by default, jittered; the first one soon after
     * this returns), never twice at once, never after {@link #close()} has returned. An exception
     * it throws, a {@code null} or an empty list is a failed fetch: the last list is kept and
     * {@link #lastError()} reports it (with the exception's text and, as its cause, the
     * exception); nothing reaches native code. It may call this client ({@code close()}
     * included: the source ends when that fetch returns), but not {@link #waitReady} before
     * the first list, which would wait for itself.
     *
     * <p>The source is held (strongly, without a reference to the client) until the client is
     * closed: by {@link #close()}, by the cleaner once the client is unreachable, or by the JVM
     * shutdown hook; it is released then, once, after a fetch in progress returns. A source
     * that refers to its client keeps it reachable until {@code close()}.
     *
     * @param options library options by key: the keys every target shares
     *     (refresh_interval_ms, failures_before_ejection, ejection_base_ms, ejection_max_ms,
     *     max_ejection_percent, snapshot_file...)
     * @throws EasException {@link EasStatus#INVALID_ARGUMENT} for a bad key or value (the source
     *     is then never called); {@link EasStatus#CLOSED} while the JVM shuts down
     */
    public static EasClient fromSource(EndpointSource source, Map<String, String> options) {
        return fromSource(source, options, Logging.system());
    }

    /**
     * {@link #fromSource(EndpointSource, Map)}, with the client's log lines going where
     * {@code logging} says (see {@link #open(String, Map, Logging)}).
     *
     * @throws UnsupportedOperationException as for {@link #open(String, Map, Logging)}
     */
    public static EasClient fromSource(EndpointSource source, Map<String, String> options,
            Logging logging) {
        Objects.requireNonNull(source, "source");
        Objects.requireNonNull(logging, "logging");
        Map<String, String> copy = copyOptions(options);
        Backend backend = Backend.get();
        if (Listeners.stopping()) {
            throw new EasException(EasStatus.CLOSED.code(), "the JVM is shutting down");
        }
        int level = logLevel(backend, logging);
        Sources.Source s = new Sources.Source(source);
        long token = Sources.add(s);
        long logToken = level == 0 ? 0 : LogSinks.add(logging.sink());
        NativeClient nc;
        try {
            nc = backend.openSource(token, copy, logToken, level);
        } catch (RuntimeException | Error e) {
            Sources.remove(token); // a refused create takes no ownership
            LogSinks.remove(logToken);
            throw e;
        }
        s.client = nc;
        EasClient c = new EasClient(nc, s);
        ClientCleaner.register(c, nc);
        if (Listeners.stopping()) { // the shutdown hook may have missed it
            nc.closeUnlessFreed();
        }
        return c;
    }

    private static Map<String, String> copyOptions(Map<String, String> options) {
        Objects.requireNonNull(options, "options");
        Map<String, String> copy = new LinkedHashMap<>();
        for (Map.Entry<String, String> e : options.entrySet()) {
            String key = Objects.requireNonNull(e.getKey(), "option key");
            String value = Objects.requireNonNull(e.getValue(), "option value of " + quoted(key));
            checkString("option key " + quoted(key), key);
            checkString("the value of option " + quoted(key), value);
            copy.put(key, value);
        }
        return copy;
    }

    /**
     * Refuses what the C ABI's NUL-terminated UTF-8 cannot carry, naming {@code what}: a NUL (C
     * would read the string only up to it) and an unpaired surrogate, which has no UTF-8 form
     * (both backends' encoders would silently put a '?' in its place).
     */
    private static void checkString(String what, String s) {
        int nul = s.indexOf('\0');
        if (nul >= 0) {
            throw new EasException(EasStatus.INVALID_ARGUMENT.code(),
                    what + " contains a NUL character (at index " + nul + ")");
        }
        checkSurrogates(what, s);
    }

    /** Refuses an unpaired surrogate, which has no UTF-8 form, naming {@code what}. */
    private static void checkSurrogates(String what, String s) {
        for (int i = 0; i < s.length(); i++) {
            char ch = s.charAt(i);
            if (Character.isHighSurrogate(ch) && i + 1 < s.length()
                    && Character.isLowSurrogate(s.charAt(i + 1))) {
                i++; // a pair: one character
            } else if (Character.isSurrogate(ch)) {
                throw new EasException(EasStatus.INVALID_ARGUMENT.code(), what
                        + " contains an unpaired surrogate U+" + hex4(ch) + " (at index " + i
                        + "), which has no UTF-8 form");
            }
        }
    }

    /** {@code s} in double quotes, with control characters and surrogates as \\uXXXX escapes. */
    private static String quoted(String s) {
        StringBuilder b = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char ch = s.charAt(i);
            if (ch < 0x20 || ch == 0x7f || Character.isSurrogate(ch)) {
                b.append("\\u").append(hex4(ch));
            } else {
                b.append(ch);
            }
        }
        return b.append('"').toString();
    }

    private static String hex4(char ch) {
        String h = Integer.toHexString(ch).toUpperCase(java.util.Locale.ROOT);
        return "0000".substring(h.length()) + h;
    }

    /**
     * The target, as the library prints it: secrets removed (no userinfo, no query
     * parameters), e.g. {@code "nacos://h:8848/svc"} for
     * {@code "nacos://h:8848/svc?username=u&password=secret"}; {@code "source callback"} for a
     * client from {@link #fromSource}. Still answers after {@link #close()}.
     */
    public String target() {
        return target;
    }

    /**
     * The service the target names (eas_client_service): the service of an {@code eas://} or
     * {@code nacos://} target, the name of a {@code dns://} one; {@code ""} for a
     * {@code static://} target and a client from {@link #fromSource}. Still answers after
     * {@link #close()}.
     */
    public String service() {
        return service;
    }

    /** {@link #service()}, empty when the target names none. */
    public Optional<String> serviceName() {
        return service.isEmpty() ? Optional.<String>empty() : Optional.of(service);
    }

    /**
     * Waits until an instance list is known (fetched, or loaded from {@code snapshot_file}), at
     * most {@code timeout}. It does not return early on a failed fetch.
     *
     * @throws EasException {@link EasStatus#TIMEOUT} at the deadline (or on an interrupt, which
     *     stays set), with the last fetch error in the message; {@link EasStatus#CLOSED}
     */
    public void waitReady(Duration timeout) {
        Objects.requireNonNull(timeout, "timeout");
        long start = System.nanoTime();
        long deadline = start + Math.max(0, saturatedNanos(timeout));
        String[] msg = new String[1];
        for (;;) {
            long left = Math.max(0, (deadline - System.nanoTime()) / 1_000_000);
            boolean interrupted = Thread.currentThread().isInterrupted();
            int st = client.waitReady(this, (int) (interrupted ? 0 : Math.min(left, WAIT_SLICE_MS)), msg);
            if (st == 0) {
                return;
            }
            if (st != EasStatus.TIMEOUT.code() || left <= WAIT_SLICE_MS || interrupted) {
                String m = msg[0];
                if (st == EasStatus.TIMEOUT.code()) {
                    // The library's message is about the last slice of the wait: say the whole.
                    m = (interrupted
                                    ? "interrupted after " + (System.nanoTime() - start) / 1_000_000
                                            + " ms of waiting for the instance list"
                                    : "no instance list within " + timeout.toMillis() + " ms")
                            + (m == null ? "" : "; last check: " + m);
                }
                throw EasException.of(st, m);
            }
        }
    }

    private static long saturatedNanos(Duration d) {
        try {
            return d.toNanos();
        } catch (ArithmeticException e) {
            return d.isNegative() ? 0 : Long.MAX_VALUE / 2;
        }
    }

    /** Whether an instance list is known (a {@link #waitReady} that does not wait). */
    public boolean isReady() {
        String[] msg = new String[1];
        int st = client.waitReady(this, 0, msg);
        if (st == 0) {
            return true;
        }
        if (st == EasStatus.TIMEOUT.code()) {
            return false;
        }
        throw EasException.of(st, msg[0]);
    }

    /**
     * Picks one instance by smooth weighted round-robin, skipping ejected ones (when all are
     * ejected, picks among them rather than fail). No lock; once an instance has been seen, no
     * allocation.
     *
     * @throws EasException {@link EasStatus#NO_INSTANCE} before the first list is known;
     *     {@link EasStatus#CLOSED}
     */
    public Instance select() {
        return client.select(this, table);
    }

    /**
     * As {@link #select()}, but never one of {@code ids} (for a retry on another instance).
     *
     * @throws EasException {@link EasStatus#NO_INSTANCE} when every instance is excluded
     */
    public Instance selectExcluding(long... ids) {
        return client.selectExcluding(this, table, ids == null ? new long[0] : ids);
    }

    /**
     * Reports a failed call to instance {@code id}: after {@code failures_before_ejection}
     * consecutive failures it is ejected for {@code ejection_base_ms}, doubling on each
     * re-ejection up to {@code ejection_max_ms}.
     *
     * @return false when {@code id} is not in the current list (harmless)
     * @throws EasException {@link EasStatus#CLOSED}
     */
    public boolean reportFailure(long id) {
        return reported(client.reportFailure(this, id));
    }

    /**
     * Reports a successful call to instance {@code id}: resets its failure count and ejection
     * doubling (an ejection in force runs its course).
     *
     * @return false when {@code id} is not in the current list (harmless)
     * @throws EasException {@link EasStatus#CLOSED}
     */
    public boolean reportSuccess(long id) {
        return reported(client.reportSuccess(this, id));
    }

    private static boolean reported(int st) {
        if (st == 0) {
            return true;
        }
        if (st == EasStatus.UNKNOWN_INSTANCE.code()) {
            return false;
        }
        throw EasException.of(st);
    }

    /**
     * Every known instance, ejected or not, weight 0 included; empty before the first list.
     * Unmodifiable.
     */
    public List<Instance> instances() {
        return client.instances(this, table);
    }

    /** The client's counters. */
    public Stats stats() {
        return client.stats(this);
    }

    /**
     * The client's stats and every instance's stats in the Prometheus text format 0.0.4
     * ({@code text/plain; version=0.0.4}), one family per metric the README lists
     * ({@code easdirect_instances}, {@code easdirect_instance_attempts_total}...), every sample
     * labelled {@code target} (secrets removed) and, per instance, {@code instance="host:port"}.
     * Serve it from your metrics endpoint, after your own registry's text (the names do not
     * clash). It takes the client's lock briefly: not for the request path.
     *
     * @throws EasException {@link EasStatus#CLOSED}
     * @throws UnsupportedOperationException when the loaded libeasdirect predates ABI 1.4
     */
    public String metricsText() {
        Backend.get().requireObservability("metricsText (eas_client_metrics_text)");
        return client.metricsText(this);
    }

    /**
     * What delivers the list now: {@link Transport#PUSH} while a Nacos push stream (gRPC) is
     * up, {@link Transport#POLL} otherwise (every other source, and Nacos while its stream is
     * down; the {@code nacos_transport} option decides whether a Nacos client subscribes).
     *
     * @throws EasException {@link EasStatus#CLOSED}
     */
    public Transport transport() {
        return client.transport(this) == 1 ? Transport.PUSH : Transport.POLL;
    }

    /**
     * The last discovery fetch's error ({@link EasStatus#DISCOVERY_FAILED}, naming the URL and
     * the HTTP status), or empty when the last fetch succeeded or none has finished. For a
     * client from {@link #fromSource} whose source threw, the message carries the exception's
     * text and the cause is the exception.
     *
     * @throws EasException {@link EasStatus#CLOSED}
     */
    public Optional<EasException> lastError() {
        String[] msg = new String[1];
        Throwable failure = source == null ? null : source.lastFailure;
        int st = client.lastError(this, msg);
        if (st == 0) {
            return Optional.empty();
        }
        if (st == EasStatus.DISCOVERY_FAILED.code()) {
            if (failure != null && failure == source.lastFailure) {
                String m = msg[0] == null ? Backend.get().statusString(st) : msg[0];
                return Optional.of(new EasException(st, m, failure));
            }
            return Optional.of(EasException.of(st, msg[0]));
        }
        throw EasException.of(st, msg[0]);
    }

    /**
     * Calls {@code listener} on a background thread with the whole instance list (unmodifiable)
     * each time it changes, and once soon after subscribing when a list is already known.
     * The listener may call this client (unsubscribing included). An exception it throws goes
     * to its thread's uncaught-exception handler. Calls stop when the subscription or the
     * client is closed, and before the JVM shuts down (a shutdown hook ends every
     * subscription).
     *
     * @throws EasException {@link EasStatus#CLOSED}, also while the JVM is shutting down
     */
    public Subscription subscribe(Consumer<? super List<Instance>> listener) {
        Objects.requireNonNull(listener, "listener");
        if (Listeners.stopping()) {
            throw new EasException(EasStatus.CLOSED.code(), "the JVM is shutting down");
        }
        Listeners.Listener l = new Listeners.Listener(listener, table, client);
        long token = Listeners.add(l);
        long id;
        try {
            id = client.subscribe(this, token);
        } catch (RuntimeException e) {
            Listeners.remove(token); // a refused subscribe takes no ownership
            throw e;
        }
        l.subscription = id;
        Subscription s = new Subscription(this, id);
        if (Listeners.stopping()) { // the shutdown hook may have missed it
            s.close();
        }
        return s;
    }

    void unsubscribe(long subscription) {
        int st = client.unsubscribe(this, subscription);
        // INVALID_ARGUMENT: it has ended already (the client was closed); CLOSED: likewise.
        if (st != 0 && st != EasStatus.INVALID_ARGUMENT.code() && st != EasStatus.CLOSED.code()) {
            throw EasException.of(st);
        }
    }

    /**
     * Begins a call with no affinity key: its instances are picked by {@code lb_policy}
     * (default {@code least_request}: the less loaded of two, by in-flight attempts and the
     * instances' load reports). See {@link EasCall}.
     *
     * @throws EasException {@link EasStatus#CLOSED}
     */
    public EasCall beginCall(CallOption... options) {
        return begin(null, options);
    }

    /**
     * Begins a call with an affinity key (a session id, a conversation id, a prompt-prefix
     * hash; copied): a keyed call picks by affinity, whatever {@code lb_policy} says, and the
     * same key, list and loads give the same instance in every process (bounded by load:
     * {@code affinity_load_factor}). A {@code null} or empty key is no key.
     *
     * @throws EasException {@link EasStatus#CLOSED}
     */
    public EasCall beginCall(byte[] key, CallOption... options) {
        return begin(key == null || key.length == 0 ? null : key.clone(), options);
    }

    /**
     * {@link #beginCall(byte[], CallOption...)} with the key's UTF-8 bytes.
     *
     * @throws EasException {@link EasStatus#INVALID_ARGUMENT} for a key holding an unpaired
     *     surrogate (it has no UTF-8 form); {@link EasStatus#CLOSED}
     */
    public EasCall beginCall(String key, CallOption... options) {
        byte[] bytes = null;
        if (key != null && !key.isEmpty()) {
            checkSurrogates("the call's key", key);
            bytes = key.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        }
        return begin(bytes, options);
    }

    private EasCall begin(byte[] key, CallOption[] options) {
        int flags = 0;
        if (options != null) {
            for (CallOption o : options) {
                switch (Objects.requireNonNull(o, "option")) {
                    case NOT_IDEMPOTENT:
                        flags |= CALL_NOT_IDEMPOTENT;
                        break;
                    default:
                        throw new AssertionError(o);
                }
            }
        }
        return new EasCall(this, table, client.beginCall(this, key, flags));
    }

    /** EAS_CALL_NOT_IDEMPOTENT. */
    private static final int CALL_NOT_IDEMPOTENT = 1;

    /**
     * The figures of every instance of the current list (in the order of {@link #instances()}):
     * this client's attempts in flight, attempts, failures, latency EWMA, and the instance's
     * last load report. Unmodifiable; empty before the first list. It takes the client's lock
     * briefly: not for the request path.
     *
     * @throws EasException {@link EasStatus#CLOSED}
     */
    public List<InstanceStats> instanceStats() {
        InstanceStats[] all = client.instanceStats(this);
        return all.length == 0 ? Collections.<InstanceStats>emptyList()
                : Collections.unmodifiableList(java.util.Arrays.asList(all));
    }

    /**
     * Stops discovery and ends subscriptions (their listeners have returned when this returns;
     * when called from a listener, once it returns). Every later call fails with
     * {@link EasStatus#CLOSED}. Idempotent and safe to race with any other call.
     */
    @Override
    public void close() {
        client.close(this);
    }

    /** {@code EasClient{TARGET}} with {@link #target()}: no secrets. */
    @Override
    public String toString() {
        return "EasClient{" + target + "}";
    }

    /** The backend in use: "panama" or "jni". */
    public static String backend() {
        return Backend.get().name();
    }

    /** The loaded libeasdirect's version, e.g. "0.1.0". */
    public static String libraryVersion() {
        return Backend.get().version();
    }

    /** The loaded libeasdirect's ABI version: major &lt;&lt; 16 | minor. */
    public static int abiVersion() {
        return Backend.get().abiVersion();
    }

    /** Where libeasdirect was loaded from. */
    public static String libraryPath() {
        return Backend.get().library().path.toString();
    }
}
