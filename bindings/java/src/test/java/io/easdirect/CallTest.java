package io.easdirect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.ref.WeakReference;
import java.net.ConnectException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * EasCall against real local backends of the emulator (echo and LLM-like ones, some answering
 * 503 or 404, refusing connections): the core picks and decides, the test does the HTTP.
 */
class CallTest {
    private static final HttpClient HTTP = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(2)).build();
    private static final AtomicInteger SEQ = new AtomicInteger();
    private static final String THREE = "static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3";

    private static Emulator emu;

    @BeforeAll
    static void start() {
        emu = Emulator.start("calls-none", 0);
    }

    @AfterAll
    static void stop() {
        emu.close();
    }

    /** A service of its own with {@code n} backends, and the ports they listen on. */
    private static final class Service {
        final String name = "calls-" + SEQ.incrementAndGet();
        final List<Integer> ports;

        Service(int n, String llmJson) {
            ports = emu.addBackends(name, n, llmJson);
        }

        /** A client that follows it, ready with every backend listed. */
        EasClient client(String... options) {
            Map<String, String> opts = new LinkedHashMap<>();
            opts.put("failures_before_ejection", "1000"); // counts, not ejections, are tested
            for (int i = 0; i < options.length; i += 2) {
                opts.put(options[i], options[i + 1]);
            }
            EasClient c = EasClient.open(emu.target(name), opts);
            c.waitReady(Duration.ofSeconds(10));
            eventually("every backend listed", () -> c.instances().size() == ports.size());
            return c;
        }

        void setAll(String modeJson) {
            for (int port : ports) {
                emu.setBackendMode(port, modeJson);
            }
        }
    }

    private static void eventually(String what, BooleanSupplier cond) {
        long deadline = System.nanoTime() + 20_000_000_000L;
        while (!cond.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("not within 20 s: " + what);
            }
            System.gc();
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                throw new AssertionError(e);
            }
        }
    }

    /** One attempt over HTTP; a refused connection is {@link Outcome#connectFailed()}. */
    private static boolean attempt(EasCall call, Instance inst, boolean loadReports,
            int[] status) throws IOException, InterruptedException {
        HttpRequest.Builder req = HttpRequest.newBuilder(
                URI.create("http://" + inst.host() + "/v1/completions"))
                .header("x-tokens", "1").timeout(Duration.ofSeconds(10));
        if (loadReports) {
            req.header("endpoint-load-metrics-format", "text");
        }
        HttpResponse<String> r;
        try {
            r = HTTP.send(req.build(), HttpResponse.BodyHandlers.ofString());
        } catch (ConnectException e) {
            status[0] = 0;
            return call.record(Outcome.connectFailed());
        }
        status[0] = r.statusCode();
        boolean retry = call.record(Outcome.response(r.statusCode()), r.headers().map());
        call.finish(Body.DONE);
        return retry;
    }

    /** Drives a call to its end; returns the instances tried, in order. */
    private static List<Instance> drive(EasCall call, int[] lastStatus)
            throws IOException, InterruptedException {
        List<Instance> tried = new ArrayList<>();
        for (;;) {
            Instance inst = call.next();
            tried.add(inst);
            if (!attempt(call, inst, false, lastStatus)) {
                return tried;
            }
        }
    }

    private static long inFlight(EasClient c) {
        return c.instanceStats().stream().mapToLong(InstanceStats::inFlight).sum();
    }

    private static EasException assertStatus(EasStatus status, Runnable r) {
        EasException e = assertThrows(EasException.class, r::run);
        assertEquals(status, e.status(), e.getMessage());
        assertFalse(e.getMessage().isEmpty());
        return e;
    }

    @Test
    void a_call_never_gives_the_same_instance_twice_and_max_attempts_holds() throws Exception {
        Service svc = new Service(4, null);
        svc.setAll("{\"mode\":\"status\",\"status\":503}");
        int[] status = new int[1];
        try (EasClient c = svc.client("max_attempts", "3")) {
            for (int i = 0; i < 3; i++) {
                try (EasCall call = c.beginCall()) {
                    List<Instance> tried = drive(call, status);
                    assertEquals(3, tried.size(), tried.toString());
                    assertEquals(3, tried.stream().map(Instance::id).distinct().count());
                    assertEquals(503, status[0]);
                    assertStatus(EasStatus.NO_INSTANCE, call::next);
                }
            }
            assertEquals(0, inFlight(c));
        }
        try (EasClient c = svc.client("max_attempts", "10");
                EasCall call = c.beginCall()) {
            List<Instance> tried = drive(call, status);
            assertEquals(4, tried.size(), "never more attempts than instances");
            assertEquals(4, new HashSet<>(tried).size());
        }
    }

    @Test
    void a_503_is_retried_and_a_404_is_not() throws Exception {
        Service svc = new Service(2, null);
        int[] status = new int[1];
        try (EasClient c = svc.client()) {
            svc.setAll("{\"mode\":\"status\",\"status\":503}");
            try (EasCall call = c.beginCall()) {
                assertTrue(attempt(call, call.next(), false, status));
                assertEquals(503, status[0]);
            }
            svc.setAll("{\"mode\":\"status\",\"status\":404}");
            try (EasCall call = c.beginCall()) {
                assertFalse(attempt(call, call.next(), false, status));
                assertEquals(404, status[0]);
                assertStatus(EasStatus.NO_INSTANCE, call::next);
            }
            svc.setAll("{\"mode\":\"ok\"}");
            try (EasCall call = c.beginCall()) {
                assertEquals(1, drive(call, status).size());
                assertEquals(200, status[0]);
            }
        }
    }

    @Test
    void a_not_idempotent_call_retries_only_a_refused_connection() throws Exception {
        Service svc = new Service(3, null);
        int[] status = new int[1];
        try (EasClient c = svc.client()) {
            svc.setAll("{\"mode\":\"status\",\"status\":503}");
            try (EasCall call = c.beginCall(CallOption.NOT_IDEMPOTENT)) {
                assertFalse(attempt(call, call.next(), false, status), "a 5xx: not retried");
                assertEquals(503, status[0]);
            }
            try (EasCall call = c.beginCall("k", CallOption.NOT_IDEMPOTENT)) {
                call.next();
                assertFalse(call.record(Outcome.reset()), "sent, then reset: not retried");
                call.finish(Body.DONE);
            }
            try (EasCall call = c.beginCall(CallOption.NOT_IDEMPOTENT)) {
                call.next();
                assertFalse(call.record(Outcome.timeout()), "a timeout: not retried");
            }
            svc.setAll("{\"mode\":\"dead\"}");
            try (EasCall call = c.beginCall(CallOption.NOT_IDEMPOTENT)) {
                List<Instance> tried = drive(call, status);
                assertEquals(3, tried.size(), "every refused connection is retried");
                assertEquals(0, status[0]);
            }
            assertEquals(0, inFlight(c));
        }
    }

    @Test
    void a_keyed_call_gives_the_same_instance_for_the_same_key() throws Exception {
        Service svc = new Service(3, null);
        int[] status = new int[1];
        try (EasClient c = svc.client()) {
            Long first = null;
            for (int i = 0; i < 5; i++) {
                try (EasCall call = i % 2 == 0 ? c.beginCall("session-1")
                        : c.beginCall("session-1".getBytes(StandardCharsets.UTF_8))) {
                    Instance inst = call.next();
                    if (first == null) {
                        first = inst.id();
                    }
                    assertEquals(first.longValue(), inst.id(), "attempt " + i);
                    assertFalse(attempt(call, inst, false, status));
                    assertEquals(200, status[0]);
                }
            }
            Set<Long> spread = new HashSet<>();
            for (int k = 0; k < 30; k++) {
                try (EasCall call = c.beginCall("key-" + k)) {
                    spread.add(call.next().id());
                }
            }
            assertTrue(spread.size() > 1, "keys spread over the instances: " + spread);
            assertEquals(0, inFlight(c));
        }
    }

    /** Begins a call and opens an attempt, keeping no reference to either. */
    private static void abandonACall(EasClient c) {
        c.beginCall().next();
    }

    @Test
    void in_flight_counts_return_to_zero_on_every_path() throws Exception {
        Service svc = new Service(2, null);
        try (EasClient c = svc.client()) {
            assertEquals(0, inFlight(c));
            try (EasCall call = c.beginCall()) {
                Instance inst = call.next();
                assertEquals(1, inFlight(c));
                HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(
                        URI.create("http://" + inst.host() + "/")).build(),
                        HttpResponse.BodyHandlers.ofString());
                assertFalse(call.record(Outcome.response(r.statusCode()), r.headers().map()));
                assertEquals(1, inFlight(c), "in flight until the body is over");
                call.finish(Body.DONE);
                assertEquals(0, inFlight(c));
                call.finish(Body.DONE); // nothing left: a no-op
            }
            EasCall open = c.beginCall();
            open.next();
            assertEquals(1, inFlight(c));
            open.close(); // mid-attempt: cancelled
            assertEquals(0, inFlight(c));
            open.close();

            EasCall unfinished = c.beginCall();
            unfinished.next();
            assertFalse(unfinished.record(Outcome.response(200)));
            assertEquals(1, inFlight(c));
            unfinished.close(); // the body taken as done
            assertEquals(0, inFlight(c));

            long freed = ClientCleaner.callsFreed();
            abandonACall(c);
            assertEquals(1, inFlight(c));
            eventually("the cleaner frees the dropped call", () -> ClientCleaner.callsFreed() > freed);
            assertEquals(0, inFlight(c));
        }
    }

    @Test
    void a_client_closed_mid_call_keeps_the_response() throws Exception {
        Service svc = new Service(2, null);
        EasClient c = svc.client();
        EasCall call = c.beginCall();
        Instance inst = call.next();
        EasCall unanswered = c.beginCall();
        unanswered.next();
        assertEquals(2, inFlight(c));
        HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(
                URI.create("http://" + inst.host() + "/")).build(),
                HttpResponse.BodyHandlers.ofString());
        c.close();
        assertFalse(call.record(Outcome.response(r.statusCode()), r.headers().map()),
                "a closed client never retries, and the record still works");
        call.finish(Body.DONE);
        assertStatus(EasStatus.CLOSED, call::next);
        assertFalse(unanswered.record(Outcome.connectFailed()));
        assertStatus(EasStatus.CLOSED, unanswered::next);
        call.close();
        call.close();
        unanswered.close();
        assertStatus(EasStatus.CLOSED, c::beginCall);
        assertStatus(EasStatus.CLOSED, c::instanceStats);
        assertEquals(svc.name, c.service());
    }

    @Test
    void a_load_report_reaches_the_instance_stats() throws Exception {
        Service svc = new Service(2, "{\"slots\":2,\"speed\":1.0,\"base_ms\":1.0}");
        int[] status = new int[1];
        try (EasClient c = svc.client()) {
            long id;
            try (EasCall call = c.beginCall()) {
                Instance inst = call.next();
                id = inst.id();
                assertFalse(attempt(call, inst, true, status));
                assertEquals(200, status[0]);
            }
            InstanceStats s = c.instanceStats().stream().filter(x -> x.id() == id).findFirst()
                    .orElseThrow();
            assertTrue(s.reportUnixMs() > 0, s.toString());
            assertTrue(s.reportedRunning() > 0 || s.reportedKvPermille() > 0, s.toString());
            assertEquals(1, s.attempts(), s.toString());
            assertEquals(0, s.failures(), s.toString());
            assertTrue(s.latencyEwmaMicros() > 0, s.toString());
            assertEquals(0, s.inFlight());
            assertEquals(100, s.weight());
        }
    }

    @Test
    void only_the_two_load_headers_reach_the_core_whatever_their_case() {
        try (EasClient c = EasClient.open(THREE)) {
            List<InstanceStats> before = c.instanceStats();
            assertEquals(3, before.size());
            for (int i = 0; i < 3; i++) {
                assertEquals(c.instances().get(i).id(), before.get(i).id());
                assertEquals(0, before.get(i).reportUnixMs());
            }
            Map<String, List<String>> headers = new HashMap<>();
            headers.put(null, List.of("HTTP/1.1 200 OK")); // HttpURLConnection's status line
            headers.put("ENDPOINT-Load-Metrics",
                    List.of("TEXT named_metrics.num_requests_waiting=7.0, "
                            + "named_metrics.kv_cache_usage_perc=0.4"));
            headers.put("X-Other", List.of("ignored"));
            long id;
            try (EasCall call = c.beginCall()) {
                id = call.next().id();
                assertFalse(call.record(Outcome.response(200), headers));
                call.finish(Body.DONE);
            }
            InstanceStats s = c.instanceStats().stream().filter(x -> x.id() == id).findFirst()
                    .orElseThrow();
            assertEquals(7, s.reportedWaiting(), s.toString());
            assertEquals(400, s.reportedKvPermille(), s.toString());

            // A 429 with Retry-After backs its instance off: plain picks avoid it too.
            long backedOff;
            try (EasCall call = c.beginCall()) {
                backedOff = call.next().id();
                assertTrue(call.record(Outcome.response(429), Map.of("Retry-After", List.of("30"))));
            }
            for (int i = 0; i < 20; i++) {
                assertNotEquals(backedOff, c.select().id());
            }
        }
    }

    @Test
    void long_keys_and_many_header_lines_are_passed_whole() {
        try (EasClient c = EasClient.open(THREE)) {
            // Past the backends' stack and per-thread buffers: the allocating paths.
            byte[] key = new byte[5000];
            key[4999] = 1;
            long keyed;
            try (EasCall call = c.beginCall(key)) {
                keyed = call.next().id();
            }
            for (int i = 0; i < 3; i++) {
                try (EasCall call = c.beginCall(key.clone())) {
                    assertEquals(keyed, call.next().id());
                }
            }
            List<String> lines = new ArrayList<>();
            for (int i = 0; i < 40; i++) {
                lines.add("TEXT named_metrics.num_requests_waiting=" + (i == 39 ? 5 : 2) + ".0");
            }
            long id;
            try (EasCall call = c.beginCall()) {
                id = call.next().id();
                assertFalse(call.record(Outcome.response(200),
                        Map.of("endpoint-load-metrics", lines)));
            }
            InstanceStats s = c.instanceStats().stream().filter(x -> x.id() == id).findFirst()
                    .orElseThrow();
            assertTrue(s.reportUnixMs() > 0, s.toString());
            assertEquals(5, s.reportedWaiting(), "the last line is the last report: " + s);
        }
    }

    @Test
    void misuse_gives_the_binding_s_errors() {
        try (EasClient c = EasClient.open(THREE)) {
            EasCall call = c.beginCall();
            assertStatus(EasStatus.INVALID_ARGUMENT, () -> call.record(Outcome.response(200)));
            assertStatus(EasStatus.INVALID_ARGUMENT, () -> Outcome.response(99));
            assertStatus(EasStatus.INVALID_ARGUMENT, () -> Outcome.response(600));
            assertThrows(NullPointerException.class, () -> call.record(null));
            assertThrows(NullPointerException.class, () -> call.finish(null));
            assertThrows(NullPointerException.class,
                    () -> call.record(Outcome.response(200), null));
            call.finish(Body.BROKEN); // nothing recorded yet: a no-op
            Instance inst = call.next();
            assertNotNull(inst);
            assertFalse(call.record(Outcome.response(200)));
            assertStatus(EasStatus.INVALID_ARGUMENT, () -> call.record(Outcome.response(200)));
            call.finish(Body.DONE);
            assertStatus(EasStatus.NO_INSTANCE, call::next); // a success ends the call
            call.close();
            call.close();
            assertStatus(EasStatus.CLOSED, call::next);
            assertStatus(EasStatus.CLOSED, () -> call.record(Outcome.cancelled()));
            assertStatus(EasStatus.CLOSED, () -> call.finish(Body.DROPPED));
            assertStatus(EasStatus.INVALID_ARGUMENT, () -> c.beginCall("bad \uD800 key"));
            assertThrows(NullPointerException.class,
                    () -> c.beginCall((String) null, (CallOption) null));
            try (EasCall none = c.beginCall((String) null); EasCall empty = c.beginCall(new byte[0])) {
                none.next();
                empty.next();
            }
            assertEquals("RESPONSE 503", Outcome.response(503).toString());
            assertEquals(Outcome.Kind.CONNECT_FAILED, Outcome.connectFailed().kind());
            assertEquals(0, Outcome.cancelled().httpStatus());
            assertEquals(0, inFlight(c));
        }
    }

    /**
     * Uses a call of a client nobody else refers to, from two threads, then closes it;
     * returns a weak reference to the client.
     */
    private static WeakReference<EasClient> useACallOfAForgottenClient() throws Exception {
        EasCall call = EasClient.open(THREE).beginCall();
        WeakReference<EasClient> client = new WeakReference<>(call.client());
        ExecutorService other = Executors.newSingleThreadExecutor();
        try {
            Instance inst = other.submit(call::next).get();
            for (int i = 0; i < 3; i++) {
                System.gc();
                Thread.sleep(10);
            }
            assertNotNull(client.get(), "the call holds its client");
            assertTrue(other.submit(() -> call.record(Outcome.response(503))).get());
            call.finish(Body.DONE);
            assertNotEquals(inst.id(), call.next().id());
            assertEquals(1, inFlight(client.get()));
        } finally {
            other.shutdown();
        }
        call.close();
        return client;
    }

    @Test
    void a_call_keeps_its_client_alive_and_may_move_between_threads() throws Exception {
        WeakReference<EasClient> client = useACallOfAForgottenClient();
        eventually("the client is freed once its call is gone", () -> client.get() == null);
    }
}
