package io.easdirect.http;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

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
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Flow;
import java.util.concurrent.SubmissionPublisher;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;

/**
 * The java.net.http helper beyond the shared case table ({@link HelperCasesTest}): the failure
 * scenario, one-shot bodies past the buffer, bodies dropped by the caller, options.
 */
class EasHttpClientTest {
    private static Emulator emu;
    private static List<Integer> ports;
    private static final HttpClient BASE = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(2)).build();

    private String service;
    private final List<EasClient> clients = new ArrayList<>();

    @BeforeAll
    static void start() {
        emu = Emulator.start("svc", 3);
        ports = emu.backends;
    }

    @AfterAll
    static void stop() {
        emu.close();
    }

    @BeforeEach
    void name(TestInfo info) {
        service = info.getTestMethod().get().getName().replace('_', '-');
    }

    @AfterEach
    void reset() {
        emu.setFault("{\"fault\":\"none\"}");
        for (int p : ports) {
            emu.setBackendMode(p, "{\"mode\":\"ok\"}");
        }
        clients.forEach(EasClient::close);
    }

    /** A ready client of a service of the test's own that lists these ports. */
    private EasClient client(List<Integer> listed) {
        return client(emu, listed);
    }

    /**
     * The same on another emulator: tests that kill a backend run on one of their own, since
     * the port of a dead backend may come back for a later one, whose mode the emulator would
     * then set on the dead one.
     */
    private EasClient client(Emulator on, List<Integer> listed) {
        on.list(service, listed);
        EasClient c = EasClient.open(on.target(service));
        clients.add(c);
        c.waitReady(Duration.ofSeconds(5));
        return c;
    }

    private HttpRequest post(byte[] body) {
        return HttpRequest.newBuilder(URI.create("http://" + service + "/api/predict/m?x=1"))
                .POST(HttpRequest.BodyPublishers.ofByteArray(body)).timeout(Duration.ofSeconds(5))
                .build();
    }

    private static long inFlight(EasClient c) {
        return c.instanceStats().stream().mapToLong(InstanceStats::inFlight).sum();
    }

    private static int backendOf(String body) {
        Matcher m = Pattern.compile("\"backend\":\"127\\.0\\.0\\.1:(\\d+)\"").matcher(body);
        assertTrue(m.find(), body);
        return Integer.parseInt(m.group(1));
    }

    private static long total(Map<Integer, Long> before, Map<Integer, Long> after) {
        long n = 0;
        for (Map.Entry<Integer, Long> e : after.entrySet()) {
            n += e.getValue() - before.getOrDefault(e.getKey(), 0L);
        }
        return n;
    }

    /** Sends through send or sendAsync. */
    private static HttpResponse<String> send(EasHttpClient http, HttpRequest req, boolean async)
            throws Exception {
        return async ? http.sendAsync(req, HttpResponse.BodyHandlers.ofString()).get(20, TimeUnit.SECONDS)
                : http.send(req, HttpResponse.BodyHandlers.ofString());
    }

    /**
     * The failure scenario: one of three instances answers 503, then dies (refused, still
     * listed), then discovery answers an empty list; not one request fails.
     */
    private void failureScenario(boolean async) throws Exception {
        try (Emulator own = Emulator.start(service, 3)) {
            failureScenario(own, async);
        }
    }

    private void failureScenario(Emulator emu, boolean async) throws Exception {
        List<Integer> mine = emu.backends; // one of them dies
        EasClient c = client(emu, mine);
        EasHttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        int bad = mine.get(0);
        int failed = 0;
        for (String phase : List.of("503", "dead", "empty")) {
            if (phase.equals("503")) {
                emu.setBackendMode(bad, "{\"mode\":\"status\",\"status\":503}");
            } else if (phase.equals("dead")) {
                emu.setBackendMode(bad, "{\"mode\":\"dead\"}");
            } else {
                long before = c.stats().refreshFailed();
                emu.setFault("{\"fault\":\"empty_list\"}");
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
                while (c.stats().refreshFailed() < before + 2) {
                    assertTrue(System.nanoTime() < deadline, "discovery never answered empty");
                    Thread.sleep(20);
                }
            }
            for (int i = 0; i < 30; i++) {
                try {
                    HttpResponse<String> r = send(http, post("payload".getBytes()), async);
                    if (r.statusCode() != 200) {
                        failed++;
                    }
                } catch (Exception e) {
                    failed++;
                }
            }
            assertEquals(0, failed, "failed requests after phase " + phase);
        }
        assertEquals(0, inFlight(c));
    }

    @Test
    void failure_scenario_loses_no_request_with_send() throws Exception {
        failureScenario(false);
    }

    @Test
    void failure_scenario_loses_no_request_with_send_async() throws Exception {
        failureScenario(true);
    }

    private void oneShotPastTheBuffer(boolean async) throws Exception {
        EasClient c = client(ports.subList(0, 2));
        for (int p : ports) {
            emu.setBackendMode(p, "{\"mode\":\"status\",\"status\":503}");
        }
        EasHttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).maxBufferedBody(100)
                .build();
        byte[] body = new byte[5000];
        Arrays.fill(body, (byte) 'y');
        InputStream same = new ByteArrayInputStream(body);
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://" + service + "/upload"))
                .POST(HttpRequest.BodyPublishers.ofInputStream(() -> same)).build();
        Map<Integer, Long> before = emu.hits();
        HttpResponse<String> r = send(http, req, async);
        assertEquals(503, r.statusCode(), "no retry: the last answer");
        assertTrue(r.body().contains("\"body_len\":5000"), "sent whole, once: " + r.body());
        assertEquals(1, total(before, emu.hits()));
        assertEquals(0, inFlight(c));
    }

    @Test
    void a_one_shot_body_past_the_buffer_is_sent_once_whole_with_send() throws Exception {
        oneShotPastTheBuffer(false);
    }

    @Test
    void a_one_shot_body_past_the_buffer_is_sent_once_whole_with_send_async() throws Exception {
        oneShotPastTheBuffer(true);
    }

    @Test
    void a_publisher_of_unknown_kind_is_buffered_and_replayed() throws Exception {
        EasClient c = client(ports.subList(0, 2));
        emu.setBackendMode(ports.get(0), "{\"mode\":\"status\",\"status\":503}");
        emu.setBackendMode(ports.get(1), "{\"mode\":\"status\",\"status\":503}");
        EasHttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        // A publisher that gives its items once: the second subscription would get nothing.
        SubmissionPublisher<ByteBuffer> once = new SubmissionPublisher<>();
        Flow.Publisher<ByteBuffer> pub = s -> {
            once.subscribe(s);
            new Thread(() -> {
                for (int i = 0; i < 10; i++) {
                    once.submit(ByteBuffer.wrap(new byte[100]));
                }
                once.close();
            }).start();
        };
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://" + service + "/upload"))
                .POST(HttpRequest.BodyPublishers.fromPublisher(pub)).build();
        Map<Integer, Long> before = emu.hits();
        HttpResponse<String> r = http.send(req, HttpResponse.BodyHandlers.ofString());
        assertEquals(503, r.statusCode());
        assertTrue(r.body().contains("\"body_len\":1000"), r.body());
        assertEquals(2, total(before, emu.hits()), "buffered, so retried");
    }

    @Test
    void a_streamed_answer_dropped_by_the_caller_leaves_in_flight_and_counts_nothing()
            throws Exception {
        List<Integer> llm = emu.addBackends(service, 1,
                "{\"base_ms\":5,\"per_token_ms\":20,\"tokens_sigma\":0,\"mean_tokens\":50}");
        EasClient c = client(llm);
        EasHttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://" + service + "/v1/completions"))
                .header("x-stream", "true").header("x-tokens", "50")
                .POST(HttpRequest.BodyPublishers.ofString("{}")).build();
        HttpResponse<InputStream> r = http.send(req, HttpResponse.BodyHandlers.ofInputStream());
        assertEquals(200, r.statusCode());
        assertEquals(1, inFlight(c), "streaming: in flight");
        try (InputStream in = r.body()) {
            byte[] first = new byte[16];
            assertTrue(in.read(first) > 0);
        } // closed early
        assertEquals(0, inFlight(c), "dropped: out of flight");
        assertEquals(0, c.instanceStats().get(0).failures(), "a drop is not a failure");
    }

    /** A streamed answer that its instance cuts (it dies mid-stream): a failure of it. */
    private void cutMidBody(boolean streamed) throws Exception {
        try (Emulator own = Emulator.start(service, 0)) {
            cutMidBody(own, streamed);
        }
    }

    private void cutMidBody(Emulator emu, boolean streamed) throws Exception {
        List<Integer> llm = emu.addBackends(service, 1,
                "{\"base_ms\":5,\"per_token_ms\":20,\"tokens_sigma\":0,\"mean_tokens\":100}");
        EasClient c = client(emu, llm);
        EasHttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://" + service + "/v1/completions"))
                .header("x-stream", "true").header("x-tokens", "100")
                .POST(HttpRequest.BodyPublishers.ofString("{}")).build();
        Thread killer = new Thread(() -> {
            try {
                Thread.sleep(300);
            } catch (InterruptedException e) {
                return;
            }
            emu.setBackendMode(llm.get(0), "{\"mode\":\"dead\"}");
        });
        killer.start();
        try {
            if (streamed) {
                HttpResponse<InputStream> r = http.send(req, HttpResponse.BodyHandlers.ofInputStream());
                assertEquals(200, r.statusCode());
                try (InputStream in = r.body()) {
                    assertThrows(IOException.class, in::readAllBytes);
                }
            } else {
                assertThrows(IOException.class,
                        () -> http.send(req, HttpResponse.BodyHandlers.ofString()));
            }
        } finally {
            killer.join();
        }
        assertEquals(0, inFlight(c));
        assertEquals(1, c.instanceStats().get(0).failures(), "a body cut is a failure");
    }

    @Test
    void a_streamed_answer_cut_by_the_instance_counts_a_failure() throws Exception {
        cutMidBody(true);
    }

    @Test
    void a_whole_answer_cut_by_the_instance_is_an_error_and_a_failure() throws Exception {
        cutMidBody(false);
    }

    @Test
    void affinity_by_a_function_keeps_one_instance() throws Exception {
        EasClient c = client(ports);
        EasHttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE)
                .affinityKey(r -> r.uri().getRawQuery().getBytes(StandardCharsets.UTF_8)).build();
        int first = -1;
        for (int i = 0; i < 10; i++) {
            HttpResponse<String> r = http.send(post(new byte[1]), HttpResponse.BodyHandlers.ofString());
            int b = backendOf(r.body());
            if (first < 0) {
                first = b;
            }
            assertEquals(first, b, "same key, same instance");
        }
    }

    @Test
    void max_attempts_is_an_extra_cap() throws Exception {
        EasClient c = client(ports);
        for (int p : ports) {
            emu.setBackendMode(p, "{\"mode\":\"status\",\"status\":500}");
        }
        EasHttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).maxAttempts(2).build();
        Map<Integer, Long> before = emu.hits();
        assertEquals(500, http.send(post(new byte[1]), HttpResponse.BodyHandlers.ofString())
                .statusCode());
        assertEquals(2, total(before, emu.hits()), "2, below the core's 3");
    }

    @Test
    void the_request_timeout_bounds_each_attempt_when_shorter() throws Exception {
        EasClient c = client(ports.subList(0, 1));
        emu.setBackendMode(ports.get(0), "{\"mode\":\"hang\"}");
        EasHttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build(); // 60 s default
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://" + service + "/p"))
                .timeout(Duration.ofMillis(300)).build();
        assertThrows(java.net.http.HttpTimeoutException.class,
                () -> http.send(req, HttpResponse.BodyHandlers.ofString()));
        assertEquals(1, c.instanceStats().get(0).failures());
        assertEquals(0, inFlight(c));
    }

    @Test
    void hosts_match_case_insensitively_with_dash_and_underscore_alike() {
        EasClient c = EasClient.open("eas://127.0.0.1:1/my_service");
        clients.add(c);
        EasHttpClient http = EasHttpClient.newBuilder(c).hostAliases("Model.Internal").build();
        assertTrue(http.handles(URI.create("http://my-service/x")));
        assertTrue(http.handles(URI.create("http://MY-SERVICE:8080/x")));
        assertTrue(http.handles(URI.create("http://my_service/x")), "authority, no URI host");
        assertTrue(http.handles(URI.create("http://user@My_Service:80/x")));
        assertTrue(http.handles(URI.create("http://model.internal/x")));
        assertFalse(http.handles(URI.create("http://my-service2/x")));
        assertFalse(http.handles(URI.create("http://other/x")));
        assertFalse(http.handles(URI.create("http://my-service.other/x")));
    }

    @Test
    void no_instance_and_a_closed_client_are_io_errors_with_the_cause() throws Exception {
        EasClient c = client(ports.subList(0, 1));
        EasHttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        c.close();
        IOException e = assertThrows(IOException.class,
                () -> http.send(post(new byte[1]), HttpResponse.BodyHandlers.ofString()));
        assertTrue(e.getMessage().contains("cannot pick an instance"), e.getMessage());
        assertTrue(e.getCause() instanceof EasException, e.toString());
        assertEquals(EasStatus.CLOSED, ((EasException) e.getCause()).status());
        Exception async = assertThrows(Exception.class, () -> http.sendAsync(post(new byte[1]),
                HttpResponse.BodyHandlers.ofString()).get());
        assertTrue(async.getCause() instanceof IOException, async.toString());
    }

    @Test
    void options_are_checked_and_the_token_never_shown() {
        EasClient c = EasClient.open("static://127.0.0.1:1");
        clients.add(c);
        EasHttpClient.Builder b = EasHttpClient.newBuilder(c);
        assertThrows(IllegalArgumentException.class, () -> b.scheme("ftp"));
        assertThrows(IllegalArgumentException.class, () -> b.maxAttempts(0));
        assertThrows(IllegalArgumentException.class, () -> b.attemptTimeout(Duration.ZERO));
        assertThrows(IllegalArgumentException.class, () -> b.maxBufferedBody(-1));
        assertThrows(IllegalArgumentException.class, () -> b.affinityHeader(""));
        assertThrows(IllegalArgumentException.class, () -> b.hostAliases(""));
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class,
                () -> b.token("sec\nret-xyz"));
        assertFalse(bad.getMessage().contains("ret-xyz"), bad.getMessage());
        EasHttpClient http = b.token("secret-token-123").hostAliases("a.local").build();
        assertFalse(http.toString().contains("secret-token-123"), http.toString());
        assertTrue(http.toString().contains("token=<set>"), http.toString());
        assertEquals(c, http.easClient());
        assertEquals(HttpClient.Version.HTTP_1_1, http.version());
    }

    @Test
    void other_hosts_pass_through_untouched() throws Exception {
        EasClient c = client(ports);
        EasHttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).token("t").build();
        int direct = ports.get(0);
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(
                URI.create("http://127.0.0.1:" + direct + "/direct")).build(),
                HttpResponse.BodyHandlers.ofString());
        assertEquals(direct, backendOf(r.body()));
        assertEquals(0, c.instanceStats().stream().mapToLong(InstanceStats::attempts).sum());
    }
}
