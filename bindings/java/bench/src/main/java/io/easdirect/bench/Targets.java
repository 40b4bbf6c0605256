package io.easdirect.bench;

import java.util.StringJoiner;

/**
 * The instances every benchmark uses: n instances 10.{i/250}.{i%250+1}.0:50000 of equal weight,
 * registered in rnacos as service "bench-{n}" of group pai-eas (by {@link BenchMain}), or as a
 * static:// list when no rnacos runs.
 */
final class Targets {
    static final String GROUP = "pai-eas";
    /** host:port of rnacos's HTTP API, or absent. */
    static final String NACOS = System.getProperty("easdirect.bench.nacos", "");

    private Targets() {}

    static String ip(int i) {
        return "10." + (i / 250) + "." + (i % 250 + 1) + ".0";
    }

    static String service(int n) {
        return "bench-" + n;
    }

    /** The libeasdirect target of the n instances: nacos:// when rnacos runs, else static://. */
    static String target(int n) {
        if (!NACOS.isEmpty()) {
            return "nacos://" + NACOS + "/" + service(n);
        }
        return staticTarget(n);
    }

    /** The n instances as a static:// target. */
    static String staticTarget(int n) {
        StringJoiner j = new StringJoiner(",", "static://", "");
        for (int i = 0; i < n; i++) {
            j.add(ip(i) + ":50000");
        }
        return j.toString();
    }
}
