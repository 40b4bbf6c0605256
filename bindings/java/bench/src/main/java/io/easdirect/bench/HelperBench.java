package io.easdirect.bench;

import io.easdirect.EasClient;
import io.easdirect.http.EasHttpClient;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.Arrays;
import java.util.Random;

/**
 * The HTTP helper's overhead over the plain JDK client: the same GET to the same zero-delay
 * loopback backend (the emulator's echo backend), through one HTTP/1.1 {@link HttpClient}
 * configuration (HTTP/1.1, keep-alive), plainly and through {@link EasHttpClient} (host rewrite, one call per request
 * with its next/record/finish, the load-report header asked and read, the body subscriber
 * wrapped), with {@code send} and with {@code sendAsync(...).get()}.
 *
 * <p>Not JMH: the four kinds of request are interleaved, one of each per round, and every
 * request is timed, so that a shared machine's load drifts over all four alike (separate JMH
 * forks, a few seconds apart, met loads from 2 to 70 on this machine's 2 cores). Each round
 * takes the four in a new random order (a fixed seed): a request pays for what the one before
 * it left running, and on JDK 17 that differs by kind (its {@code sendAsync} completes its
 * future on a new thread per request when the common pool has one thread, as on 2 cores, and a
 * request that follows an asynchronous one runs while that thread ends: about 40 us slower
 * than one that follows a {@code send}), so a fixed order would charge that to whichever kind
 * comes after an asynchronous one. The figure is each kind's median per request; the overhead
 * is the helper's median minus the plain one's, and the median of each round's difference (the
 * helper's request minus the plain one's).
 *
 * <p>{@code java -Deasdirect.backend=panama|jni -cp ... io.easdirect.bench.HelperBench
 * HOST:PORT [WARMUP_ROUNDS] [ROUNDS]}
 */
public final class HelperBench {
    private interface Request {
        HttpResponse<String> send() throws Exception;
    }

    /** The median of {@code a[r] - b[r]}, in us: each round's two requests met the same load. */
    private static double pairedMedian(long[] a, long[] b) {
        long[] d = new long[a.length];
        for (int r = 0; r < a.length; r++) {
            d[r] = a[r] - b[r];
        }
        Arrays.sort(d);
        return d[d.length / 2] / 1e3;
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: HelperBench HOST:PORT [WARMUP_ROUNDS] [ROUNDS]");
            System.exit(2);
        }
        String echo = args[0];
        int warmup = args.length > 1 ? Integer.parseInt(args[1]) : 5000;
        int rounds = args.length > 2 ? Integer.parseInt(args[2]) : 10000;
        try (EasClient client = EasClient.open("static://" + echo)) {
            // One client (one connection pool, kept alive) per kind: a request never waits for
            // the connection that the request before it, of another kind, is handing back.
            HttpClient[] bases = new HttpClient[4];
            for (int i = 0; i < bases.length; i++) {
                bases[i] = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
            }
            EasHttpClient helper = EasHttpClient.newBuilder(client).httpClient(bases[1])
                    .hostAliases("bench.local").build();
            EasHttpClient helperAsync = EasHttpClient.newBuilder(client).httpClient(bases[3])
                    .hostAliases("bench.local").build();
            HttpRequest plainReq = HttpRequest.newBuilder(URI.create("http://" + echo + "/v1/x?y=1"))
                    .build();
            HttpRequest helperReq = HttpRequest.newBuilder(URI.create("http://bench.local/v1/x?y=1"))
                    .build();
            String[] names = {"plain send", "helper send", "plain sendAsync", "helper sendAsync"};
            Request[] kinds = {
                () -> bases[0].send(plainReq, HttpResponse.BodyHandlers.ofString()),
                () -> helper.send(helperReq, HttpResponse.BodyHandlers.ofString()),
                () -> bases[2].sendAsync(plainReq, HttpResponse.BodyHandlers.ofString()).get(),
                () -> helperAsync.sendAsync(helperReq, HttpResponse.BodyHandlers.ofString()).get(),
            };
            long[][] ns = new long[kinds.length][rounds];
            Random random = new Random(14);
            int[] order = {0, 1, 2, 3};
            for (int r = -warmup; r < rounds; r++) {
                for (int i = order.length - 1; i > 0; i--) {
                    int j = random.nextInt(i + 1);
                    int t = order[i];
                    order[i] = order[j];
                    order[j] = t;
                }
                for (int k : order) {
                    long t0 = System.nanoTime();
                    HttpResponse<String> resp = kinds[k].send();
                    long t = System.nanoTime() - t0;
                    if (resp.statusCode() != 200) {
                        throw new IllegalStateException(names[k] + ": status " + resp.statusCode());
                    }
                    if (r >= 0) {
                        ns[k][r] = t;
                    }
                }
            }
            double[] median = new double[kinds.length];
            System.out.printf("java %s, %s backend, %d cpus, %d rounds after %d: us per request%n",
                    System.getProperty("java.version"), EasClient.backend(),
                    Runtime.getRuntime().availableProcessors(), rounds, warmup);
            System.out.printf("%-18s %8s %8s %8s%n", "", "p25", "median", "p75");
            for (int k = 0; k < kinds.length; k++) {
                long[] s = ns[k].clone();
                Arrays.sort(s);
                median[k] = s[rounds / 2] / 1e3;
                System.out.printf("%-18s %8.1f %8.1f %8.1f%n", names[k], s[rounds / 4] / 1e3,
                        median[k], s[rounds * 3 / 4] / 1e3);
            }
            System.out.printf("overhead (median): send %.1f us, sendAsync %.1f us%n",
                    median[1] - median[0], median[3] - median[2]);
            System.out.printf("overhead (median of the rounds' differences): send %.1f us,"
                    + " sendAsync %.1f us%n", pairedMedian(ns[1], ns[0]), pairedMedian(ns[3], ns[2]));
        }
    }
}
