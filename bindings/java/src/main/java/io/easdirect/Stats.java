package io.easdirect;

/** A client's counters ({@code eas_stats}), as of one {@link EasClient#stats()} call. */
public final class Stats {
    private final long generation;
    private final long refreshOk;
    private final long refreshFailed;
    private final long lastOkUnixMs;
    private final int instances;
    private final int ejected;

    Stats(long generation, long refreshOk, long refreshFailed, long lastOkUnixMs, int instances,
            int ejected) {
        this.generation = generation;
        this.refreshOk = refreshOk;
        this.refreshFailed = refreshFailed;
        this.lastOkUnixMs = lastOkUnixMs;
        this.instances = instances;
        this.ejected = ejected;
    }

    /** Instance lists published so far (changes only). */
    public long generation() {
        return generation;
    }

    /** Successful discovery fetches. */
    public long refreshOk() {
        return refreshOk;
    }

    /** Fetches that kept the cache (error, bad body, nothing pickable). */
    public long refreshFailed() {
        return refreshFailed;
    }

    /** Time of the last successful fetch in milliseconds since the epoch; 0 if none. */
    public long lastOkUnixMs() {
        return lastOkUnixMs;
    }

    /** Instances in the current list. */
    public int instances() {
        return instances;
    }

    /** Instances ejected now (expired ejections not counted). */
    public int ejected() {
        return ejected;
    }

    @Override
    public String toString() {
        return "Stats{generation=" + generation + ", refreshOk=" + refreshOk + ", refreshFailed="
                + refreshFailed + ", lastOkUnixMs=" + lastOkUnixMs + ", instances=" + instances
                + ", ejected=" + ejected + "}";
    }
}
