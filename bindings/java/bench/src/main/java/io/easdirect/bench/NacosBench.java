package io.easdirect.bench;

import com.alibaba.nacos.api.PropertyKeyConst;
import com.alibaba.nacos.api.exception.NacosException;
import com.alibaba.nacos.api.naming.NamingFactory;
import com.alibaba.nacos.api.naming.NamingService;
import com.alibaba.nacos.api.naming.pojo.Instance;
import java.util.Properties;
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
 * nacos-client 2.x's selectOneHealthyInstance (subscribed: the list comes from its local cache,
 * kept by gRPC pushes from rnacos) on the same instances SelectBench picks from.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class NacosBench {
    @Param({"100"})
    public int instances;

    private NamingService naming;
    private String service;

    @Setup(Level.Trial)
    public void open() throws Exception {
        if (Targets.NACOS.isEmpty()) {
            throw new IllegalStateException("no rnacos: run ../run-bench.sh");
        }
        Properties p = new Properties();
        p.setProperty(PropertyKeyConst.SERVER_ADDR, Targets.NACOS);
        p.setProperty(PropertyKeyConst.NAMESPACE, "public");
        naming = NamingFactory.createNamingService(p);
        service = Targets.service(instances);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        for (;;) {
            int n = naming.selectInstances(service, Targets.GROUP, true).size();
            if (n == instances) {
                break;
            }
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("nacos-client sees " + n + " of " + instances);
            }
            Thread.sleep(100);
        }
    }

    @TearDown(Level.Trial)
    public void close() throws NacosException {
        naming.shutDown();
    }

    @Benchmark
    @Threads(1)
    public Instance select_1thread() throws NacosException {
        return naming.selectOneHealthyInstance(service, Targets.GROUP);
    }

    @Benchmark
    @Threads(2)
    public Instance select_2threads() throws NacosException {
        return naming.selectOneHealthyInstance(service, Targets.GROUP);
    }
}
