package io.easdirect;

import java.nio.ByteBuffer;

/**
 * The figures of one instance of the current list ({@code eas_instance_stats}), from this
 * client's calls and the instance's own load reports, as of one
 * {@link EasClient#instanceStats()} call. Immutable. Unsigned C fields are read into
 * {@code long}s.
 */
public final class InstanceStats {
    /**
     * sizeof(eas_instance_stats): id @0, in_flight @8, reported_waiting @12, attempts @16,
     * failures @24, latency_ewma_us @32, reported_kv_permille @36, ejected_until_unix_ms @40,
     * report_unix_ms @48, weight @56, reported_running @60. Asserted by both backends at load.
     */
    static final int SIZE = 64;
    static final int ID = 0;
    static final int IN_FLIGHT = 8;
    static final int REPORTED_WAITING = 12;
    static final int ATTEMPTS = 16;
    static final int FAILURES = 24;
    static final int LATENCY_EWMA_US = 32;
    static final int REPORTED_KV_PERMILLE = 36;
    static final int EJECTED_UNTIL_UNIX_MS = 40;
    static final int REPORT_UNIX_MS = 48;
    static final int WEIGHT = 56;
    static final int REPORTED_RUNNING = 60;

    private final long id;
    private final long inFlight;
    private final long reportedWaiting;
    private final long attempts;
    private final long failures;
    private final long latencyEwmaMicros;
    private final int reportedKvPermille;
    private final long ejectedUntilUnixMs;
    private final long reportUnixMs;
    private final long weight;
    private final long reportedRunning;

    private InstanceStats(ByteBuffer b, int off) {
        id = b.getLong(off + ID);
        inFlight = u32(b, off + IN_FLIGHT);
        reportedWaiting = u32(b, off + REPORTED_WAITING);
        attempts = b.getLong(off + ATTEMPTS);
        failures = b.getLong(off + FAILURES);
        latencyEwmaMicros = u32(b, off + LATENCY_EWMA_US);
        reportedKvPermille = b.getInt(off + REPORTED_KV_PERMILLE);
        ejectedUntilUnixMs = b.getLong(off + EJECTED_UNTIL_UNIX_MS);
        reportUnixMs = b.getLong(off + REPORT_UNIX_MS);
        weight = u32(b, off + WEIGHT);
        reportedRunning = u32(b, off + REPORTED_RUNNING);
    }

    private static long u32(ByteBuffer b, int off) {
        return b.getInt(off) & 0xffffffffL;
    }

    /** Reads {@code n} records from {@code b} (native order, as the C ABI lays them). */
    static InstanceStats[] readAll(ByteBuffer b, int n) {
        InstanceStats[] out = new InstanceStats[n];
        for (int i = 0; i < n; i++) {
            out[i] = new InstanceStats(b, i * SIZE);
        }
        return out;
    }

    /** The instance's id, as {@link Instance#id()}. */
    public long id() {
        return id;
    }

    /** Attempts of this client's calls now in flight on the instance. */
    public long inFlight() {
        return inFlight;
    }

    /** The instance's queue, from its last load report ({@code num_requests_waiting}). */
    public long reportedWaiting() {
        return reportedWaiting;
    }

    /** Call attempts this client sent it since it joined the list. */
    public long attempts() {
        return attempts;
    }

    /**
     * Every failure the ejection state saw: failed attempts and
     * {@link EasClient#reportFailure} calls.
     */
    public long failures() {
        return failures;
    }

    /**
     * The peak EWMA of its time to response headers, in microseconds (what {@code peak_ewma}
     * uses); 0 before the first sample.
     */
    public long latencyEwmaMicros() {
        return latencyEwmaMicros;
    }

    /** KV-cache use, 0-1000, from its last load report. */
    public int reportedKvPermille() {
        return reportedKvPermille;
    }

    /** Until when (ms since the epoch) it is out of picks, ejected or backing off; 0 if not. */
    public long ejectedUntilUnixMs() {
        return ejectedUntilUnixMs;
    }

    /** Time of its last load report (ms since the epoch); 0 if none. */
    public long reportUnixMs() {
        return reportUnixMs;
    }

    /** The instance's weight. */
    public long weight() {
        return weight;
    }

    /** Requests running on it, from its last load report ({@code num_requests_running}). */
    public long reportedRunning() {
        return reportedRunning;
    }

    @Override
    public String toString() {
        return "InstanceStats{id=" + Long.toUnsignedString(id, 16) + ", inFlight=" + inFlight
                + ", attempts=" + attempts + ", failures=" + failures + ", latencyEwmaMicros="
                + latencyEwmaMicros + ", reportedWaiting=" + reportedWaiting
                + ", reportedRunning=" + reportedRunning + ", reportedKvPermille="
                + reportedKvPermille + ", reportUnixMs=" + reportUnixMs
                + ", ejectedUntilUnixMs=" + ejectedUntilUnixMs + ", weight=" + weight + "}";
    }
}
