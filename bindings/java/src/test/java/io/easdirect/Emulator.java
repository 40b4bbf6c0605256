package io.easdirect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

/**
 * The repository's EAS emulator (`easdirect emulate`) as a subprocess: an EAS discovery API on
 * loopback and real local HTTP backends, driven over its control API.
 */
public final class Emulator implements AutoCloseable {
    private static final HttpClient HTTP = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(2)).build();

    private final Process process;
    /** "127.0.0.1:PORT" of the discovery and control API. */
    public final String addr;
    /** The ports of the backends started with it, listed under its service. */
    public final List<Integer> backends;

    private Emulator(Process process, String addr, List<Integer> backends) {
        this.process = process;
        this.addr = addr;
        this.backends = backends;
    }

    static Path binary() {
        String p = System.getProperty("easdirect.emulator");
        if (p == null || p.isEmpty()) {
            p = "../../target/release/easdirect";
        }
        Path path = Path.of(p);
        if (!Files.isExecutable(path)) {
            throw new IllegalStateException("the easdirect CLI is missing at " + path
                    + ": run `make build` in the repository first");
        }
        return path;
    }

    /** Starts it with {@code backends} real backends listed under {@code service}. */
    public static Emulator start(String service, int backends) {
        ProcessBuilder pb = new ProcessBuilder(binary().toString(), "emulate", "--listen",
                "127.0.0.1:0", "--service", service, "--backends", Integer.toString(backends),
                "--duration", "600");
        pb.redirectErrorStream(true);
        Process p;
        try {
            p = pb.start();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        CompletableFuture<String[]> started = new CompletableFuture<>();
        Thread reader = new Thread(() -> {
            String listening = null;
            try (BufferedReader r = new BufferedReader(
                    new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    if (line.startsWith("listening ")) {
                        listening = line.substring("listening ".length()).trim();
                    } else if (line.startsWith("backends ")) {
                        started.complete(new String[] {listening, line.substring(9).trim()});
                    } else if (line.startsWith("try:") && backends == 0) {
                        started.complete(new String[] {listening, ""});
                    }
                }
            } catch (IOException ignored) {
                // the process ended
            }
            started.completeExceptionally(new IllegalStateException("the emulator ended early"));
        }, "emulator-output");
        reader.setDaemon(true);
        reader.start();
        String[] got;
        try {
            got = started.get(20, TimeUnit.SECONDS);
        } catch (Exception e) {
            p.destroyForcibly();
            throw new IllegalStateException("the emulator did not start", e);
        }
        assertNotNull(got[0], "listening line");
        List<Integer> ports = new ArrayList<>();
        for (String hp : got[1].split(",")) {
            if (!hp.isEmpty()) {
                ports.add(Integer.parseInt(hp.substring(hp.lastIndexOf(':') + 1)));
            }
        }
        return new Emulator(p, got[0], ports);
    }

    /** An eas:// target of {@code service} that refreshes every 50 ms. */
    public String target(String service) {
        return "eas://" + addr + "/" + service + "?refresh_interval_ms=50";
    }

    /** Lists these backend ports (weight 100) under {@code service}. */
    public void list(String service, List<Integer> ports) {
        setItems(service, ports.stream()
                .map(p -> "{\"ip\":\"127.0.0.1\",\"port\":" + p + ",\"weight\":100}")
                .collect(Collectors.joining(",", "[", "]")));
    }

    /** Lists these items (a JSON array, sent verbatim) under {@code service}. */
    public void setItems(String service, String jsonArray) {
        put("/_emulator/services/" + service, jsonArray);
    }

    /** {"fault":"none"} and so on. */
    public void setFault(String json) {
        put("/_emulator/fault", json);
    }

    /** mode: ok, status (with a status), hang or dead. */
    public void setBackendMode(int port, String json) {
        put("/_emulator/backends/" + port, json);
    }

    /**
     * Starts {@code count} real backends ({@code POST /_emulator/backends}) and appends them
     * (weight 100) to {@code service}'s items; {@code llmJson} non-null makes them LLM-like
     * ({@code {"slots":2,...}}). Returns their ports.
     */
    public List<Integer> addBackends(String service, int count, String llmJson) {
        String body = "{\"service\":\"" + service + "\",\"count\":" + count
                + (llmJson == null ? "" : ",\"kind\":\"llm\",\"llm\":" + llmJson) + "}";
        String answer = call("POST", "/_emulator/backends", body);
        List<Integer> ports = new ArrayList<>();
        Matcher m = Pattern.compile("\"port\":(\\d+)").matcher(answer);
        while (m.find()) {
            ports.add(Integer.parseInt(m.group(1)));
        }
        assertEquals(count, ports.size(), answer);
        return ports;
    }

    /** Requests each backend has received, by port. */
    public Map<Integer, Long> hits() {
        String body = call("GET", "/_emulator/backends", null);
        Map<Integer, Long> hits = new HashMap<>();
        for (String obj : body.split("\\}")) {
            Matcher port = Pattern.compile("\"port\":(\\d+)").matcher(obj);
            Matcher h = Pattern.compile("\"hits\":(\\d+)").matcher(obj);
            if (port.find() && h.find()) {
                hits.put(Integer.parseInt(port.group(1)), Long.parseLong(h.group(1)));
            }
        }
        return hits;
    }

    private void put(String path, String body) {
        call("PUT", path, body);
    }

    /**
     * A control API request ({@code body} JSON, or null); asserts 204 for a PUT, else 200, and
     * returns the answer's body.
     */
    public String call(String method, String path, String body) {
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://" + addr + path))
                .method(method, body == null ? HttpRequest.BodyPublishers.noBody()
                        : HttpRequest.BodyPublishers.ofString(body))
                .timeout(Duration.ofSeconds(5)).build();
        try {
            HttpResponse<String> r = HTTP.send(req, HttpResponse.BodyHandlers.ofString());
            assertEquals(method.equals("PUT") ? 204 : 200, r.statusCode(),
                    method + " " + path + ": " + r.body());
            return r.body();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    @Override
    public void close() {
        process.destroy();
        try {
            if (!process.waitFor(5, TimeUnit.SECONDS)) {
                process.destroyForcibly();
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        }
    }
}
