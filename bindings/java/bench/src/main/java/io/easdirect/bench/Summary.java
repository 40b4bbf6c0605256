package io.easdirect.bench;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.openjdk.jmh.results.IterationResult;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.options.CommandLineOptions;

/**
 * Runs JMH with the given command line, then prints one line per benchmark with the median of
 * its measurement iterations, and the ratio of nacos-client's median to each backend's at the
 * same instance count and thread count.
 */
public final class Summary {
    public static void main(String[] args) throws Exception {
        Collection<RunResult> results = new Runner(new CommandLineOptions(args)).run();
        Map<String, Double> medians = new LinkedHashMap<>();
        System.out.println();
        System.out.println("java " + System.getProperty("java.version") + ", "
                + Runtime.getRuntime().availableProcessors() + " cpus: median ns/op per thread");
        System.out.printf("%-8s %-20s %8s %8s %12s%n", "threads", "what", "instances", "median",
                "iterations");
        for (RunResult r : results) {
            String bench = r.getParams().getBenchmark();
            boolean nacos = bench.contains("NacosBench");
            String what = nacos ? "nacos" : r.getParams().getParam("backend");
            if (bench.contains("CallBench")) {
                // call cycle and select on the same static:// client, apart from SelectBench's
                what += bench.contains("call_cycle") ? ":call" : ":select-static";
            }
            int instances = Integer.parseInt(r.getParams().getParam("instances"));
            int threads = r.getParams().getThreads();
            List<Double> scores = new ArrayList<>();
            for (IterationResult it : r.getBenchmarkResults().iterator().next()
                    .getIterationResults()) {
                scores.add(it.getPrimaryResult().getScore());
            }
            double[] s = scores.stream().mapToDouble(Double::doubleValue).sorted().toArray();
            double median = s.length % 2 == 1 ? s[s.length / 2]
                    : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
            medians.put(threads + "/" + what + "/" + instances, median);
            System.out.printf("%-8d %-20s %8d %8.1f %12s%n", threads, what, instances, median,
                    Arrays.toString(Arrays.stream(s).mapToObj(x -> String.format("%.1f", x))
                            .toArray()));
        }
        System.out.println();
        for (Map.Entry<String, Double> e : medians.entrySet()) {
            String[] k = e.getKey().split("/");
            if (k[1].equals("nacos") || k[1].contains(":")) {
                continue;
            }
            Double nacos = medians.get(k[0] + "/nacos/" + k[2]);
            if (nacos != null) {
                System.out.printf("ratio nacos-client / %s at %s instances, %s thread(s): %.1fx%n",
                        k[1], k[2], k[0], nacos / e.getValue());
            }
        }
        for (Map.Entry<String, Double> e : medians.entrySet()) {
            String[] k = e.getKey().split("/");
            if (k[1].endsWith(":call")) {
                String backend = k[1].substring(0, k[1].length() - ":call".length());
                Double select = medians.get(k[0] + "/" + backend + ":select-static/" + k[2]);
                if (select != null) {
                    System.out.printf("%s at %s static instances, %s thread(s): call cycle %.1f ns,"
                            + " select %.1f ns (%.1fx)%n", backend, k[2], k[0], e.getValue(),
                            select, e.getValue() / select);
                }
            }
        }
    }
}
