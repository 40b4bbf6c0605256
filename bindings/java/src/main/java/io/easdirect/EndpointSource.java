package io.easdirect;

import java.util.Collection;

/**
 * Your own discovery source, for {@link EasClient#fromSource}: any registry (Consul, a file a
 * sidecar writes, a company service...) that lists a service's instances.
 *
 * <pre>{@code
 * EasClient client = EasClient.fromSource(() -> registry.lookup("my_service").stream()
 *         .map(r -> Endpoint.of(r.ip(), r.port()))
 *         .collect(Collectors.toList()));
 * }</pre>
 */
@FunctionalInterface
public interface EndpointSource {
    /**
     * The instances present now. Called on a library background thread at each refresh
     * ({@code refresh_interval_ms}, 5 s by default, jittered), never twice at once for one
     * client, never after {@link EasClient#close()} has returned.
     *
     * <p>An exception (any {@code Throwable}), a {@code null} result, an empty collection or one
     * with no positive weight is a failed fetch: the last list is kept, and
     * {@link EasClient#lastError()} reports it (with the exception as its cause). Malformed
     * endpoints (an ip that is not a textual address, {@code null} elements) are skipped.
     *
     * <p>It runs on a thread the library shares with every client of the process, and
     * {@code close()} waits for it: bound its own duration (a timeout on a network call).
     *
     * @return the instances; may be a read-only or a reused collection (it is read before the
     *     next call)
     */
    Collection<Endpoint> fetch() throws Exception;
}
