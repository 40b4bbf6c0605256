package io.easdirect;

import java.util.Objects;

/**
 * One instance as an {@link EndpointSource} lists it: an IP address, a port and a weight.
 * Immutable.
 *
 * <pre>{@code
 * Endpoint.of("10.0.0.1", 8000)          // weight DEFAULT_WEIGHT (100)
 * Endpoint.of("fd00::1", 8000, 300)      // three times the picks of a default one
 * Endpoint.of("10.0.0.2", 8000, 0)       // listed by instances(), never picked
 * }</pre>
 */
public final class Endpoint {
    /** The weight EAS gives an instance by default: give it to every endpoint for equal shares. */
    public static final long DEFAULT_WEIGHT = 100;
    /** The largest weight (an unsigned 32-bit value in the C ABI). */
    public static final long MAX_WEIGHT = 0xffff_ffffL;

    private final String ip;
    private final int port;
    private final long weight;

    /**
     * @param ip a textual IPv4 or IPv6 address ({@code "10.0.0.1"}, {@code "fd00::1"} or
     *     {@code "[fd00::1]"}); the library checks it when the source's list is read, and skips
     *     an endpoint whose ip is not one (a host name is not resolved)
     * @param port 1 to 65535
     * @param weight the instance's share of the picks, 0 to {@link #MAX_WEIGHT}; 0 means listed
     *     but never picked
     * @throws IllegalArgumentException for a port or weight out of range
     */
    public Endpoint(String ip, int port, long weight) {
        this.ip = Objects.requireNonNull(ip, "ip");
        if (port < 1 || port > 65535) {
            throw new IllegalArgumentException("port " + port + " of " + ip
                    + " is out of range (1 to 65535)");
        }
        if (weight < 0 || weight > MAX_WEIGHT) {
            throw new IllegalArgumentException("weight " + weight + " of " + ip + ":" + port
                    + " is out of range (0 to " + MAX_WEIGHT + ")");
        }
        this.port = port;
        this.weight = weight;
    }

    /** An endpoint of weight {@link #DEFAULT_WEIGHT}. */
    public Endpoint(String ip, int port) {
        this(ip, port, DEFAULT_WEIGHT);
    }

    /** {@code new Endpoint(ip, port)}. */
    public static Endpoint of(String ip, int port) {
        return new Endpoint(ip, port);
    }

    /** {@code new Endpoint(ip, port, weight)}. */
    public static Endpoint of(String ip, int port, long weight) {
        return new Endpoint(ip, port, weight);
    }

    public String ip() {
        return ip;
    }

    public int port() {
        return port;
    }

    /** 0 to {@link #MAX_WEIGHT}; 0 means listed but never picked. */
    public long weight() {
        return weight;
    }

    @Override
    public boolean equals(Object o) {
        if (this == o) {
            return true;
        }
        if (!(o instanceof Endpoint)) {
            return false;
        }
        Endpoint other = (Endpoint) o;
        return port == other.port && weight == other.weight && ip.equals(other.ip);
    }

    @Override
    public int hashCode() {
        return (ip.hashCode() * 31 + port) * 31 + Long.hashCode(weight);
    }

    @Override
    public String toString() {
        return "Endpoint{" + (ip.indexOf(':') >= 0 && !ip.startsWith("[") ? "[" + ip + "]" : ip)
                + ":" + port + ", weight=" + weight + "}";
    }
}
