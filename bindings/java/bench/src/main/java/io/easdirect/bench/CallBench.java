package io.easdirect.bench;

import io.easdirect.Body;
import io.easdirect.EasCall;
import io.easdirect.EasClient;
import io.easdirect.Instance;
import io.easdirect.Outcome;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Threads;

/**
 * A whole call cycle without network, beside a plain select on the same client (a static://
 * list of 100 instances), through each backend: begin an unkeyed call, next, record a 200 with
 * vLLM's load-report header, finish DONE, close (eas_call_free).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class CallBench {
    /** What vLLM sends when asked with {@code endpoint-load-metrics-format: text}. */
    private static final Map<String, List<String>> HEADERS = Collections.singletonMap(
            "endpoint-load-metrics", Collections.singletonList(
                    "TEXT named_metrics.kv_cache_usage_perc=0.4, "
                            + "named_metrics.num_requests_waiting=3.0"));
    private static final Outcome OK = Outcome.response(200);

    @Param({"panama", "jni"})
    public String backend;

    @Param({"100"})
    public int instances;

    private EasClient client;

    @Setup(Level.Trial)
    public void open() {
        // Each trial runs in a fork of its own: the backend is chosen on the first open.
        System.setProperty("easdirect.backend", backend);
        client = EasClient.open(Targets.staticTarget(instances));
        if (client.instances().size() != instances || !EasClient.backend().equals(backend)) {
            throw new IllegalStateException(client.instances().size() + " instances on "
                    + EasClient.backend() + ", expected " + instances + " on " + backend);
        }
    }

    @TearDown(Level.Trial)
    public void close() {
        client.close();
    }

    @Benchmark
    @Threads(1)
    public Instance select_1thread() {
        return client.select();
    }

    @Benchmark
    @Threads(1)
    public boolean call_cycle_1thread() {
        try (EasCall call = client.beginCall()) {
            call.next();
            boolean retry = call.record(OK, HEADERS);
            call.finish(Body.DONE);
            return retry;
        }
    }
}
