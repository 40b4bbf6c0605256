package io.easdirect.bench;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

/**
 * Waits for rnacos at 127.0.0.1:PORT, then registers the benchmark's instances over Nacos's
 * HTTP API: {@code Register PORT N...} registers service bench-N with N instances for each N.
 */
public final class Register {
    public static void main(String[] args) throws Exception {
        String base = "http://127.0.0.1:" + args[0] + "/nacos";
        HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(Duration.ofSeconds(1)).build();
        long deadline = System.nanoTime() + 30_000_000_000L;
        for (;;) {
            try {
                http.send(HttpRequest.newBuilder(URI.create(base
                        + "/v1/ns/instance/list?serviceName=probe")).build(),
                        HttpResponse.BodyHandlers.discarding());
                break;
            } catch (java.io.IOException e) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("rnacos did not come up at " + base, e);
                }
                Thread.sleep(100);
            }
        }
        for (int a = 1; a < args.length; a++) {
            int n = Integer.parseInt(args[a]);
            List<CompletableFuture<HttpResponse<String>>> batch = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                String q = "namespaceId=public&groupName=" + Targets.GROUP + "&serviceName="
                        + Targets.service(n) + "&clusterName=DEFAULT&ip=" + Targets.ip(i)
                        + "&port=50000&weight=1.0&ephemeral=true&enabled=true&healthy=true";
                batch.add(http.sendAsync(HttpRequest.newBuilder(URI.create(base
                        + "/v1/ns/instance?" + q)).POST(HttpRequest.BodyPublishers.noBody())
                        .timeout(Duration.ofSeconds(10)).build(),
                        HttpResponse.BodyHandlers.ofString()));
                if (batch.size() == 32 || i == n - 1) {
                    for (CompletableFuture<HttpResponse<String>> f : batch) {
                        HttpResponse<String> r = f.get();
                        if (r.statusCode() != 200) {
                            throw new IllegalStateException("registering: " + r.statusCode()
                                    + " " + r.body());
                        }
                    }
                    batch.clear();
                }
            }
            System.out.println("registered " + n + " instances as " + Targets.service(n));
        }
    }
}
