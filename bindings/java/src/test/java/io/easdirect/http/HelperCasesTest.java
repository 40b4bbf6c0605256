package io.easdirect.http;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.easdirect.EasClient;
import io.easdirect.EasException;
import io.easdirect.EasStatus;
import io.easdirect.Emulator;
import io.easdirect.InstanceStats;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpConnectTimeoutException;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * The repository's case table of the HTTP helpers ({@code tests/helpers/cases.json}, schema in
 * its README), run for {@link EasHttpClient#send} ({@code java_sync}) and
 * {@link EasHttpClient#sendAsync} ({@code java_async}) against the emulator's backends. Every
 * case and every form runs for each runner, or is skipped with the reason the table gives.
 */
class HelperCasesTest {
    private static final String[] RUNNERS = {"java_sync", "java_async"};
    private static final HttpClient BASE = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(1)).build();
    private static final Pattern BACKEND = Pattern.compile("\"backend\":\"([^\"]+)\"");

    private static Emulator emu;
    private static Map<String, Object> table;
    private static String passthrough; // 127.0.0.1:P of a backend outside the service
    private static ScheduledExecutorService timer;

    @BeforeAll
    static void start() throws IOException {
        String p = System.getProperty("easdirect.helperCases", "../../tests/helpers/cases.json");
        table = map(Json.parse(Files.readString(Path.of(p))));
        assertEquals(1L, table.get("schema"), "the case table's schema");
        emu = Emulator.start("unused", 0);
        passthrough = "127.0.0.1:" + startBackends("passthrough", List.of(Map.of("mode", "ok")),
                true).get(0);
        timer = Executors.newScheduledThreadPool(2);
    }

    @AfterAll
    static void stop() {
        if (timer != null) {
            timer.shutdownNow();
        }
        if (emu != null) {
            emu.close();
        }
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> map(Object o) {
        return o == null ? Map.of() : (Map<String, Object>) o;
    }

    @SuppressWarnings("unchecked")
    static List<Object> list(Object o) {
        return o == null ? List.of() : (List<Object>) o;
    }

    private static String service() {
        return (String) table.get("service");
    }

    /** Every port a backend of this emulator has had (a dead one's port may come again). */
    private static final Set<Integer> USED_PORTS = new HashSet<>();

    /**
     * Starts one backend per spec, then lists them (in order, weight 100) as the service's
     * items; their ports. A backend on a port that an earlier, dead backend had is left aside:
     * the emulator would apply its mode to the dead one (the first of that port in its list).
     */
    static List<Integer> startBackends(String service, List<Object> specs, boolean replace) {
        List<Integer> ports = new ArrayList<>();
        for (Object o : specs) {
            Map<String, Object> spec = map(o);
            Map<String, Object> req = new LinkedHashMap<>();
            req.put("service", "unlisted-" + service);
            req.put("count", 1);
            if (spec.containsKey("llm")) {
                req.put("kind", "llm");
                req.put("llm", spec.get("llm"));
            }
            int port;
            do {
                String answer = emu.call("POST", "/_emulator/backends", Json.write(req));
                port = ((Number) map(list(Json.parse(answer)).get(0)).get("port")).intValue();
            } while (!USED_PORTS.add(port));
            ports.add(port);
            setMode(port, spec);
        }
        if (replace) {
            emu.list(service, ports);
        }
        return ports;
    }

    static void setMode(int port, Map<String, Object> spec) {
        Map<String, Object> mode = new LinkedHashMap<>(spec);
        mode.remove("llm");
        emu.setBackendMode(port, Json.write(mode));
    }

    /** What the emulator lists of these backends, by port. */
    static Map<Integer, Map<String, Object>> backends(List<Integer> ports) {
        Map<Integer, Map<String, Object>> out = new HashMap<>();
        for (Object o : list(Json.parse(emu.call("GET", "/_emulator/backends", null)))) {
            Map<String, Object> b = map(o);
            int port = ((Number) b.get("port")).intValue();
            if (ports.contains(port)) {
                assertNull(out.put(port, b), "one backend of port " + port);
            }
        }
        return out;
    }

    @TestFactory
    Stream<DynamicTest> forms() {
        List<DynamicTest> tests = new ArrayList<>();
        for (String runner : RUNNERS) {
            for (Object f : list(table.get("forms"))) {
                Map<String, Object> form = map(f);
                String target = (String) form.get("target");
                tests.add(DynamicTest.dynamicTest(runner + " " + target,
                        () -> runForm(runner, form)));
            }
        }
        return tests.stream();
    }

    private void runForm(String runner, Map<String, Object> form) throws Exception {
        try (EasClient c = EasClient.open((String) form.get("target"))) {
            assertEquals(form.get("service"), c.service(), "the core's service name");
            EasHttpClient.Builder b = EasHttpClient.newBuilder(c).httpClient(BASE);
            for (Object a : list(form.get("aliases"))) {
                b.hostAliases((String) a);
            }
            EasHttpClient http = b.build();
            for (Object h : list(form.get("rewrite"))) {
                String url = "http://" + h + "/v1/x";
                HttpRequest req = NamedRequest.of(HttpRequest.newBuilder().GET()
                        .timeout(Duration.ofSeconds(5)), url);
                assertTrue(http.handles(req.uri()), url);
                Throwable e = sendExpectingError(runner, http, req);
                if (c.instances().isEmpty()) {
                    assertTrue(isNoInstance(e), url + " is rewritten, so it fails with the"
                            + " no-instance error, not: " + e);
                } else {
                    // static://127.0.0.1:1 lists an instance (that refuses): the request reached
                    // the call, which tried it, instead of a connection to the host named.
                    assertTrue(e instanceof java.net.ConnectException, url + ": " + e);
                    assertTrue(c.instanceStats().stream().mapToLong(InstanceStats::attempts).sum()
                            > 0, url + " is rewritten: the call made an attempt");
                }
                assertEquals(0, c.instanceStats().stream().mapToLong(InstanceStats::inFlight).sum());
            }
        }
    }

    private static Throwable sendExpectingError(String runner, EasHttpClient http,
            HttpRequest req) throws InterruptedException {
        try {
            if (runner.equals("java_sync")) {
                http.send(req, HttpResponse.BodyHandlers.ofString());
            } else {
                http.sendAsync(req, HttpResponse.BodyHandlers.ofString()).get(10, TimeUnit.SECONDS);
            }
        } catch (ExecutionException e) {
            return e.getCause();
        } catch (InterruptedException e) {
            throw e;
        } catch (Exception e) {
            return e;
        }
        return fail("no error");
    }

    static boolean isNoInstance(Throwable e) {
        return e instanceof IOException && e.getCause() instanceof EasException
                && ((EasException) e.getCause()).status() == EasStatus.NO_INSTANCE;
    }

    @TestFactory
    Stream<DynamicTest> cases() {
        List<DynamicTest> tests = new ArrayList<>();
        Set<String> names = new HashSet<>();
        for (String runner : RUNNERS) {
            for (Object o : list(table.get("cases"))) {
                Map<String, Object> c = map(o);
                String name = (String) c.get("name");
                assertTrue(names.add(runner + name), "case names are unique: " + name);
                tests.add(DynamicTest.dynamicTest(runner + " " + name, () -> {
                    Object reason = map(c.get("skip")).get(runner);
                    Assumptions.assumeTrue(reason == null, () -> "skipped: " + reason);
                    new Case(runner, c).run();
                }));
            }
        }
        return tests.stream();
    }

    /** What one send gave. */
    static final class Result {
        HttpResponse<?> response;
        Throwable error;
        String body;
    }

    /** One case, for one runner. */
    static final class Case {
        final String runner;
        final Map<String, Object> spec;
        final Map<String, Object> req;
        final Map<String, Object> expect;
        List<Integer> ports;
        EasClient client;
        boolean clientClosed;
        Path file;

        Case(String runner, Map<String, Object> spec) {
            this.runner = runner;
            this.spec = spec;
            this.req = map(spec.get("request"));
            this.expect = map(spec.get("expect"));
        }

        void run() throws Exception {
            List<Object> specs = list(spec.get("backends"));
            ports = startBackends(service(), specs, true);
            try {
                openClient();
                EasHttpClient http = helper();
                int repeat = spec.containsKey("repeat") ? ((Number) spec.get("repeat")).intValue() : 1;
                Result last = null;
                for (int i = 0; i < repeat; i++) {
                    last = send(http, i == 0);
                    if (i < repeat - 1 && last.error == null) {
                        assertEquals(expected("status"), (long) last.response.statusCode(),
                                "request " + i + ": " + last.body);
                    }
                }
                check(last);
            } finally {
                if (client != null) {
                    client.close();
                }
                for (int p : ports) {
                    // Parked requests end; the port stays taken (a dead backend frees it).
                    emu.setBackendMode(p, "{\"mode\":\"ok\"}");
                }
                if (file != null) {
                    Files.deleteIfExists(file);
                }
            }
        }

        private Object expected(String key) {
            return expect.get(key);
        }

        private void openClient() {
            Map<String, String> options = new HashMap<>();
            map(spec.get("client_options")).forEach((k, v) -> options.put(k, (String) v));
            String target;
            if ("static".equals(spec.getOrDefault("client", "eas"))) {
                StringBuilder t = new StringBuilder("static://");
                for (int i = 0; i < ports.size(); i++) {
                    t.append(i == 0 ? "" : ",").append("127.0.0.1:").append(ports.get(i));
                }
                target = t.toString();
            } else {
                target = "eas://" + emu.addr + "/" + service();
                options.put("refresh_interval_ms", "50");
            }
            client = EasClient.open(target, options);
            client.waitReady(Duration.ofSeconds(5));
            Set<Integer> want = new HashSet<>(ports);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
            for (;;) {
                Set<Integer> got = new HashSet<>();
                client.instances().forEach(i -> got.add(i.port()));
                if (got.equals(want)) {
                    return;
                }
                assertTrue(System.nanoTime() < deadline, "the list " + got + " is not " + want);
                sleep(20);
            }
        }

        private EasHttpClient helper() {
            Map<String, Object> h = map(spec.get("helper"));
            EasHttpClient.Builder b = EasHttpClient.newBuilder(client).httpClient(BASE);
            for (Map.Entry<String, Object> e : h.entrySet()) {
                Object v = e.getValue();
                switch (e.getKey()) {
                    case "scheme":
                        b.scheme((String) v);
                        break;
                    case "token":
                        b.token((String) v);
                        break;
                    case "load_reports":
                        b.loadReports((Boolean) v);
                        break;
                    case "attempt_timeout_ms":
                        b.attemptTimeout(Duration.ofMillis(((Number) v).longValue()));
                        break;
                    case "idempotent_retries_only":
                        b.idempotentRetriesOnly((Boolean) v);
                        break;
                    case "affinity_header":
                        b.affinityHeader((String) v);
                        break;
                    case "aliases":
                        for (Object a : list(v)) {
                            b.hostAliases((String) a);
                        }
                        break;
                    default:
                        fail("unknown helper option " + e.getKey());
                }
            }
            EasHttpClient http = b.build();
            if (h.containsKey("token")) {
                assertFalse(http.toString().contains((String) h.get("token")), http.toString());
            }
            return http;
        }

        private HttpRequest request() throws IOException {
            String host = ((String) req.get("host"))
                    .replace("{service}", service())
                    .replace("{passthrough_named}", "localhost" + passthrough.substring(9))
                    .replace("{passthrough}", passthrough);
            HttpRequest.Builder b = HttpRequest.newBuilder().timeout(Duration.ofSeconds(20));
            map(req.get("headers")).forEach((k, v) -> b.header(k, (String) v));
            Map<String, Object> body = map(req.get("body"));
            String method = (String) req.get("method");
            if (body.isEmpty()) {
                b.method(method, HttpRequest.BodyPublishers.noBody());
            } else {
                byte[] bytes = new byte[((Number) body.get("size")).intValue()];
                Arrays.fill(bytes, (byte) 'x');
                switch ((String) body.get("kind")) {
                    case "bytes":
                        b.method(method, HttpRequest.BodyPublishers.ofByteArray(bytes));
                        break;
                    case "file":
                        if (file == null) {
                            file = Files.createTempFile("easdirect-case", ".bin");
                            Files.write(file, bytes);
                        }
                        b.method(method, HttpRequest.BodyPublishers.ofFile(file));
                        break;
                    case "stream":
                        // The one-shot body: the supplier hands out the same stream.
                        InputStream same = new ByteArrayInputStream(bytes);
                        b.method(method, HttpRequest.BodyPublishers.ofInputStream(() -> same));
                        break;
                    default:
                        fail("unknown body kind " + body.get("kind"));
                }
            }
            return NamedRequest.of(b, "http://" + host + req.get("path"));
        }

        private Result send(EasHttpClient http, boolean first) throws Exception {
            HttpRequest r = request();
            boolean stream = Boolean.TRUE.equals(req.get("stream"));
            HttpResponse.BodyHandler<?> handler = stream ? HttpResponse.BodyHandlers.ofInputStream()
                    : HttpResponse.BodyHandlers.ofString();
            Result out = new Result();
            AtomicReference<Thread> sender = new AtomicReference<>();
            AtomicReference<CompletableFuture<?>> future = new AtomicReference<>();
            List<java.util.concurrent.ScheduledFuture<?>> actions = new ArrayList<>();
            CompletableFuture<Void> done = new CompletableFuture<>();
            Runnable sending = () -> {
                try {
                    if (runner.equals("java_sync")) {
                        out.response = http.send(r, handler);
                    } else {
                        CompletableFuture<? extends HttpResponse<?>> f = http.sendAsync(r, handler);
                        future.set(f);
                        done.complete(null); // the future is set: actions may start
                        out.response = f.get(30, TimeUnit.SECONDS);
                    }
                } catch (ExecutionException e) {
                    out.error = e.getCause();
                } catch (Throwable e) {
                    out.error = e;
                }
            };
            Thread t = new Thread(sending, "case-sender");
            sender.set(t);
            if (runner.equals("java_sync")) {
                done.complete(null);
            }
            t.start();
            if (first) {
                done.get(10, TimeUnit.SECONDS);
                for (Object a : list(spec.get("during"))) {
                    Map<String, Object> action = map(a);
                    long after = ((Number) action.get("after_ms")).longValue();
                    actions.add(timer.schedule(() -> act(action, sender.get(), future.get()),
                            after, TimeUnit.MILLISECONDS));
                }
            }
            t.join(40_000);
            assertFalse(t.isAlive(), "the request did not end");
            for (java.util.concurrent.ScheduledFuture<?> a : actions) {
                a.get(10, TimeUnit.SECONDS); // every action ran, and did not fail
            }
            if (out.response != null) {
                if (stream) {
                    if (expect.containsKey("in_flight_during_body")) {
                        assertEquals(((Number) expect.get("in_flight_during_body")).longValue(),
                                inFlight(), "in flight after the headers, before the body is read");
                    }
                    try (InputStream in = (InputStream) out.response.body()) {
                        out.body = new String(in.readAllBytes(), StandardCharsets.UTF_8);
                    }
                } else {
                    out.body = (String) out.response.body();
                }
            }
            if (!clientClosed) {
                assertEquals(0, inFlight(), "an attempt never leaks");
            }
            return out;
        }

        private void act(Map<String, Object> action, Thread sender, CompletableFuture<?> f) {
            switch ((String) action.get("do")) {
                case "close_client":
                    clientClosed = true;
                    client.close();
                    break;
                case "cancel":
                    if (runner.equals("java_sync")) {
                        sender.interrupt();
                    } else {
                        f.cancel(true);
                    }
                    break;
                case "set_backends":
                    List<Object> modes = list(action.get("modes"));
                    for (int i = 0; i < modes.size(); i++) {
                        setMode(ports.get(i), map(modes.get(i)));
                    }
                    break;
                default:
                    fail("unknown action " + action.get("do"));
            }
        }

        private long inFlight() {
            return client.instanceStats().stream().mapToLong(InstanceStats::inFlight).sum();
        }

        private void check(Result last) {
            String what = runner + " " + spec.get("name") + ": "
                    + (last.error != null ? "error " + last.error : "status "
                            + last.response.statusCode() + " " + last.body);
            if (expect.containsKey("status")) {
                assertNull(last.error, what);
                assertEquals(((Number) expect.get("status")).longValue(),
                        (long) last.response.statusCode(), what);
            }
            if (expect.containsKey("error")) {
                assertNotNull(last.error, what);
                assertTrue(errorIs((String) expect.get("error"), last.error), what);
            }
            Map<Integer, Map<String, Object>> seen = backends(ports);
            long hits = 0;
            int distinct = 0;
            for (int p : ports) {
                long h = ((Number) seen.get(p).get("hits")).longValue();
                hits += h;
                distinct += h > 0 ? 1 : 0;
            }
            Object wantHits = expect.get("hits");
            if (wantHits instanceof Number) {
                assertEquals(((Number) wantHits).longValue(), hits, what + " (hits)");
            } else if (wantHits != null) {
                List<Object> range = list(wantHits);
                assertTrue(hits >= ((Number) range.get(0)).longValue()
                        && hits <= ((Number) range.get(1)).longValue(), what + " (hits " + hits + ")");
            }
            if (expect.containsKey("distinct_backends")) {
                assertEquals(((Number) expect.get("distinct_backends")).longValue(), distinct,
                        what + " (distinct backends)");
            }
            if (expect.containsKey("distinct_backends_min")) {
                assertTrue(distinct >= ((Number) expect.get("distinct_backends_min")).longValue(),
                        what + " (distinct backends " + distinct + ")");
            }
            if (expect.containsKey("received")) {
                checkReceived(map(expect.get("received")), seen, what);
            }
            if (Boolean.TRUE.equals(expect.get("passthrough"))) {
                assertEquals(passthrough, backendOf(last.body), what);
            }
            if (expect.containsKey("from_backend")) {
                int i = ((Number) expect.get("from_backend")).intValue();
                assertEquals("127.0.0.1:" + ports.get(i), backendOf(last.body), what);
            }
            if (expect.containsKey("body_contains")) {
                assertTrue(last.body.contains((String) expect.get("body_contains")), what);
            }
            if (clientClosed) {
                return;
            }
            List<InstanceStats> stats = client.instanceStats();
            long now = System.currentTimeMillis();
            if (expect.containsKey("backing_off")) {
                long n = stats.stream().filter(s -> s.ejectedUntilUnixMs() > now).count();
                assertEquals(((Number) expect.get("backing_off")).longValue(), n,
                        what + " (backing off: " + stats + ")");
            }
            if (expect.containsKey("backoff_s")) {
                List<Object> range = list(expect.get("backoff_s"));
                for (InstanceStats s : stats) {
                    if (s.ejectedUntilUnixMs() > now) {
                        double secs = (s.ejectedUntilUnixMs() - now) / 1000.0;
                        assertTrue(secs >= ((Number) range.get(0)).doubleValue()
                                && secs <= ((Number) range.get(1)).doubleValue(),
                                what + " (back-off " + secs + " s)");
                    }
                }
            }
            if (expect.containsKey("load_report_seen")) {
                boolean seenReport = stats.stream().anyMatch(s -> s.reportUnixMs() != 0);
                assertEquals(expect.get("load_report_seen"), seenReport, what + " " + stats);
            }
        }

        private boolean errorIs(String kind, Throwable e) {
            switch (kind) {
                case "any":
                    return true;
                case "no_instance":
                    return isNoInstance(e);
                case "timeout":
                    return e instanceof HttpTimeoutException
                            && !(e instanceof HttpConnectTimeoutException);
                case "cancelled":
                    return runner.equals("java_sync") ? e instanceof InterruptedException
                            : e instanceof CancellationException;
                case "transport":
                    // A connect timeout (a TLS handshake that never ends) is a connection error.
                    return e instanceof IOException && !isNoInstance(e)
                            && (!(e instanceof HttpTimeoutException)
                                    || e instanceof HttpConnectTimeoutException);
                default:
                    return fail("unknown error kind " + kind);
            }
        }

        private void checkReceived(Map<String, Object> want,
                Map<Integer, Map<String, Object>> seen, String what) {
            int n = 0;
            for (int p : ports) {
                for (Object o : list(seen.get(p).get("requests"))) {
                    Map<String, Object> got = map(o);
                    n++;
                    for (String k : List.of("method", "path", "body_len")) {
                        if (want.containsKey(k)) {
                            assertEquals(want.get(k), got.get(k), what + " (received " + got + ")");
                        }
                    }
                    Map<String, Object> headers = map(got.get("headers"));
                    map(want.get("headers")).forEach((k, v) ->
                            assertEquals(v, headers.get(k), what + " (header " + k + ")"));
                    for (Object h : list(want.get("absent_headers"))) {
                        assertFalse(headers.containsKey(h), what + " (header " + h + " present)");
                    }
                }
            }
            assertTrue(n > 0, what + ": no request received to check");
        }
    }

    static String backendOf(String body) {
        assertNotNull(body);
        Matcher m = BACKEND.matcher(body);
        assertTrue(m.find(), body);
        return m.group(1);
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    static URI uri(String s) {
        return URI.create(s);
    }
}
