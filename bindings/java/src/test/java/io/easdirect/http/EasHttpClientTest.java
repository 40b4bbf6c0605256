package io.easdirect.http;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.easdirect.EasClient;
import io.easdirect.Emulator;
import java.io.IOException;
import java.net.ConnectException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;

/** The java.net.http helper against real local backends, some failing. */
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
        for (int p : ports) {
            emu.setBackendMode(p, "{\"mode\":\"ok\"}");
        }
        clients.forEach(EasClient::close);
    }

    /** A ready client of a service of the test's own that lists these ports. */
    private EasClient client(List<Integer> listed) {
        emu.list(service, listed);
        EasClient c = EasClient.open(emu.target(service));
        clients.add(c);
        c.waitReady(Duration.ofSeconds(5));
        return c;
    }

    private HttpRequest post(String body) {
        return HttpRequest.newBuilder(URI.create("http://" + service + "/api/predict/m?x=1"))
                .POST(HttpRequest.BodyPublishers.ofString(body)).timeout(Duration.ofSeconds(5))
                .build();
    }

    private static int backendOf(HttpResponse<String> r) {
        Matcher m = Pattern.compile("\"backend\":\"127\\.0\\.0\\.1:(\\d+)\"").matcher(r.body());
        assertTrue(m.find(), r.body());
        return Integer.parseInt(m.group(1));
    }

    private static Map<Integer, Long> delta(Map<Integer, Long> before, Map<Integer, Long> after) {
        Map<Integer, Long> d = new HashMap<>();
        after.forEach((p, n) -> d.put(p, n - before.getOrDefault(p, 0L)));
        return d;
    }

    @Test
    void requests_to_the_service_go_to_its_instances_with_path_query_and_body()
            throws Exception {
        EasClient c = client(ports);
        HttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        Map<Integer, Long> before = emu.hits();
        for (int i = 0; i < 30; i++) {
            HttpResponse<String> r = http.send(post("hello"), HttpResponse.BodyHandlers.ofString());
            assertEquals(200, r.statusCode());
            assertTrue(r.body().contains("\"path\":\"/api/predict/m?x=1\""), r.body());
            assertTrue(r.body().contains("\"method\":\"POST\""), r.body());
            assertTrue(r.body().contains("\"body_len\":5"), r.body());
            assertTrue(ports.contains(backendOf(r)));
        }
        Map<Integer, Long> d = delta(before, emu.hits());
        for (int p : ports) {
            assertEquals(10L, d.get(p), "round-robin over equal weights: " + d);
        }
    }

    @Test
    void a_failing_instance_is_retried_elsewhere_and_ejected() throws Exception {
        EasClient c = client(ports);
        int bad = ports.get(1);
        emu.setBackendMode(bad, "{\"mode\":\"status\",\"status\":503}");
        HttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        Map<Integer, Long> before = emu.hits();
        for (int i = 0; i < 30; i++) {
            HttpResponse<String> r = http.send(post("x".repeat(1000)),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(200, r.statusCode(), r.body());
            assertNotEquals(bad, backendOf(r));
            assertTrue(r.body().contains("\"body_len\":1000"), "the body is replayed: " + r.body());
        }
        Map<Integer, Long> d = delta(before, emu.hits());
        assertEquals(1L, d.get(bad), "one failure ejects it: " + d);
        assertEquals(31L, d.values().stream().mapToLong(Long::longValue).sum(), d.toString());
        assertEquals(1, c.stats().ejected());
    }

    @Test
    void a_dead_instance_and_a_hung_one_are_retried_elsewhere() throws Exception {
        int dead;
        try (ServerSocket s = new ServerSocket(0)) {
            dead = s.getLocalPort(); // closed at once: connections are refused
        }
        int hung = ports.get(0);
        emu.setBackendMode(hung, "{\"mode\":\"hang\"}");
        EasClient c = client(List.of(dead, hung, ports.get(1), ports.get(2)));
        HttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        for (int i = 0; i < 12; i++) {
            HttpRequest req = HttpRequest.newBuilder(URI.create("http://" + service + "/p"))
                    .timeout(Duration.ofMillis(500)).GET().build();
            HttpResponse<String> r = http.send(req, HttpResponse.BodyHandlers.ofString());
            assertEquals(200, r.statusCode());
            int to = backendOf(r);
            assertTrue(to == ports.get(1) || to == ports.get(2), r.body());
        }
        assertEquals(2, c.stats().ejected());
    }

    @Test
    void a_4xx_is_returned_at_once_and_counts_as_an_answer() throws Exception {
        EasClient c = client(ports);
        for (int p : ports) {
            emu.setBackendMode(p, "{\"mode\":\"status\",\"status\":404}");
        }
        HttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        Map<Integer, Long> before = emu.hits();
        HttpResponse<String> r = http.send(post("a"), HttpResponse.BodyHandlers.ofString());
        assertEquals(404, r.statusCode());
        assertTrue(r.body().contains("\"status\":404"), r.body());
        long total = delta(before, emu.hits()).values().stream().mapToLong(Long::longValue).sum();
        assertEquals(1, total);
        assertEquals(0, c.stats().ejected());
    }

    @Test
    void when_every_attempt_fails_the_last_answer_is_returned_whole() throws Exception {
        EasClient c = client(ports);
        for (int p : ports) {
            emu.setBackendMode(p, "{\"mode\":\"status\",\"status\":429}");
        }
        HttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        Map<Integer, Long> before = emu.hits();
        HttpResponse<String> r = http.send(post("a"), HttpResponse.BodyHandlers.ofString());
        assertEquals(429, r.statusCode());
        assertTrue(r.body().contains("\"status\":429"), "the caller's handler read it: " + r.body());
        Map<Integer, Long> d = delta(before, emu.hits());
        for (int p : ports) {
            assertEquals(1L, d.get(p), "3 attempts on 3 different instances: " + d);
        }
    }

    @Test
    void attempts_never_exceed_the_instances() throws Exception {
        EasClient c = client(ports.subList(0, 2));
        for (int p : ports) {
            emu.setBackendMode(p, "{\"mode\":\"status\",\"status\":500}");
        }
        HttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).maxAttempts(5).build();
        Map<Integer, Long> before = emu.hits();
        assertEquals(500, http.send(post("a"), HttpResponse.BodyHandlers.ofString()).statusCode());
        long total = delta(before, emu.hits()).values().stream().mapToLong(Long::longValue).sum();
        assertEquals(2, total);
    }

    @Test
    void idempotent_retries_only_sends_a_post_once() throws Exception {
        EasClient c = client(ports);
        for (int p : ports) {
            emu.setBackendMode(p, "{\"mode\":\"status\",\"status\":503}");
        }
        HttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE)
                .idempotentRetriesOnly(true).build();
        Map<Integer, Long> before = emu.hits();
        assertEquals(503, http.send(post("a"), HttpResponse.BodyHandlers.ofString()).statusCode());
        assertEquals(1, delta(before, emu.hits()).values().stream().mapToLong(Long::longValue).sum());
        // A GET is idempotent, and so is a POST with an idempotency key.
        before = emu.hits();
        HttpRequest keyed = HttpRequest.newBuilder(URI.create("http://" + service + "/p"))
                .header("Idempotency-Key", "k1").POST(HttpRequest.BodyPublishers.ofString("a"))
                .build();
        assertEquals(503, http.send(keyed, HttpResponse.BodyHandlers.ofString()).statusCode());
        assertEquals(3, delta(before, emu.hits()).values().stream().mapToLong(Long::longValue).sum());
    }

    @Test
    void connection_errors_on_every_instance_throw_the_last_with_the_others_attached()
            throws Exception {
        List<Integer> closed = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            try (ServerSocket s = new ServerSocket(0)) {
                closed.add(s.getLocalPort());
            }
        }
        EasClient c = client(closed);
        HttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        IOException e = assertThrows(IOException.class,
                () -> http.send(post("a"), HttpResponse.BodyHandlers.ofString()));
        assertTrue(e instanceof ConnectException, e.toString());
        assertEquals(1, e.getSuppressed().length);
    }

    @Test
    void a_timeout_is_a_failure_and_is_retried() throws Exception {
        EasClient c = client(ports.subList(0, 1));
        emu.setBackendMode(ports.get(0), "{\"mode\":\"hang\"}");
        HttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://" + service + "/p"))
                .timeout(Duration.ofMillis(300)).build();
        assertThrows(HttpTimeoutException.class,
                () -> http.send(req, HttpResponse.BodyHandlers.ofString()));
        assertEquals(1, c.stats().ejected());
    }

    @Test
    void send_async_follows_the_same_policy() throws Exception {
        EasClient c = client(ports);
        int bad = ports.get(2);
        emu.setBackendMode(bad, "{\"mode\":\"status\",\"status\":502}");
        HttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).build();
        List<CompletableFuture<HttpResponse<String>>> futures = new ArrayList<>();
        for (int i = 0; i < 20; i++) {
            futures.add(http.sendAsync(post("async"), HttpResponse.BodyHandlers.ofString()));
        }
        for (CompletableFuture<HttpResponse<String>> f : futures) {
            HttpResponse<String> r = f.get();
            assertEquals(200, r.statusCode(), r.body());
            assertNotEquals(bad, backendOf(r));
            assertTrue(r.body().contains("\"body_len\":5"), r.body());
        }
        assertEquals(1, c.stats().ejected());
        for (int p : ports) {
            emu.setBackendMode(p, "{\"mode\":\"status\",\"status\":503}");
        }
        HttpResponse<String> last = http.sendAsync(post("a"), HttpResponse.BodyHandlers.ofString())
                .get();
        assertEquals(503, last.statusCode());
    }

    @Test
    void other_hosts_pass_through_and_aliases_and_dashed_names_match() throws Exception {
        service = "my_service";
        EasClient c = client(ports);
        EasHttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE)
                .hostAliases("Model.Internal").build();
        assertTrue(http.handles(URI.create("http://my-service/x")));
        assertTrue(http.handles(URI.create("http://MY-SERVICE:8080/x")));
        assertTrue(http.handles(URI.create("http://model.internal/x")));
        assertFalse(http.handles(URI.create("http://other/x")));
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(
                URI.create("http://model.internal/a")).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode());
        int direct = ports.get(0);
        Map<Integer, Long> before = emu.hits();
        r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + direct + "/direct"))
                .build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(direct, backendOf(r));
        assertEquals(1L, delta(before, emu.hits()).get(direct));
        assertEquals(BASE.version(), http.version());
        assertEquals(c, http.easClient());
    }

    @Test
    void a_static_target_needs_an_alias_and_no_instance_is_an_io_error() throws Exception {
        EasClient c = EasClient.open("static://127.0.0.1:" + ports.get(0));
        clients.add(c);
        EasHttpClient http = EasHttpClient.newBuilder(c).httpClient(BASE).hostAliases("svc.local")
                .maxAttempts(1).build();
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://svc.local/z"))
                .build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(ports.get(0), backendOf(r));
        c.close();
        IOException e = assertThrows(IOException.class, () -> http.send(HttpRequest.newBuilder(
                URI.create("http://svc.local/z")).build(), HttpResponse.BodyHandlers.ofString()));
        assertTrue(e.getMessage().contains("cannot pick an instance"), e.getMessage());
        assertThrows(IllegalArgumentException.class,
                () -> EasHttpClient.newBuilder(c).maxAttempts(0));
        assertThrows(IllegalArgumentException.class, () -> EasHttpClient.newBuilder(c).scheme("ftp"));
    }
}
