package io.easdirect.bench;

import io.easdirect.EasClient;
import io.easdirect.Instance;
import java.time.Duration;
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
 * EasClient.select() through each backend: the whole public call, native pick plus the
 * Instance returned (a cached object once an instance has been seen).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class SelectBench {
    @Param({"panama", "jni"})
    public String backend;

    @Param({"3", "100", "1000"})
    public int instances;

    private EasClient client;

    @Setup(Level.Trial)
    public void open() {
        // Each trial runs in a fork of its own: the backend is chosen on the first open.
        System.setProperty("easdirect.backend", backend);
        client = EasClient.open(Targets.target(instances));
        client.waitReady(Duration.ofSeconds(30));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (client.instances().size() != instances && System.nanoTime() < deadline) {
            Thread.onSpinWait();
        }
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
    @Threads(2)
    public Instance select_2threads() {
        return client.select();
    }
}
