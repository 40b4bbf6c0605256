package io.easdirect;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/**
 * One discovered instance of a service ({@code eas_instance}): immutable. Send a request to
 * {@code "http://" + host() + "/api/predict/..."} and report the outcome with
 * {@link EasClient#reportSuccess(long)} or {@link EasClient#reportFailure(long)} by {@link #id()}.
 */
public final class Instance {
    /** sizeof(eas_instance): id @0, ip @8, port @54, weight @56, host @60, reserved @124. */
    static final int SIZE = 128;
    static final int ID = 0;
    static final int IP = 8;
    static final int IP_LEN = 46;
    static final int PORT = 54;
    static final int WEIGHT = 56;
    static final int HOST = 60;
    static final int HOST_LEN = 64;

    private final long id;
    private final String ip;
    private final int port;
    private final long weight;
    private final String host;

    Instance(long id, String ip, int port, long weight, String host) {
        this.id = id;
        this.ip = ip;
        this.port = port;
        this.weight = weight;
        this.host = host;
    }

    /**
     * The instance's id: FNV-1a-64 of {@link #host()}, the same in every process and stable
     * across refreshes. An unsigned 64-bit value in a {@code long}.
     */
    public long id() {
        return id;
    }

    /** The textual IPv4 or IPv6 address (RFC 5952). */
    public String ip() {
        return ip;
    }

    /** The TCP port, 1-65535. */
    public int port() {
        return port;
    }

    /** The source's weight (an unsigned 32-bit value); 0 means listed but never picked. */
    public long weight() {
        return weight;
    }

    /** {@code "ip:port"} or {@code "[ipv6]:port"}, ready for a URL. */
    public String host() {
        return host;
    }

    @Override
    public boolean equals(Object o) {
        if (this == o) {
            return true;
        }
        if (!(o instanceof Instance)) {
            return false;
        }
        Instance other = (Instance) o;
        return id == other.id && port == other.port && weight == other.weight
                && ip.equals(other.ip) && host.equals(other.host);
    }

    @Override
    public int hashCode() {
        return (int) (id ^ (id >>> 32)) * 31 + (int) weight;
    }

    @Override
    public String toString() {
        return "Instance{host=" + host + ", weight=" + weight + ", id="
                + Long.toUnsignedString(id, 16) + "}";
    }

    /** Reads the eas_instance at {@code off} in {@code b} (little-endian, as the C ABI lays it). */
    static Instance read(ByteBuffer b, int off) {
        return new Instance(b.getLong(off + ID), cString(b, off + IP, IP_LEN),
                b.getShort(off + PORT) & 0xffff, b.getInt(off + WEIGHT) & 0xffffffffL,
                cString(b, off + HOST, HOST_LEN));
    }

    private static String cString(ByteBuffer b, int off, int max) {
        byte[] bytes = new byte[max];
        int n = 0;
        while (n < max) {
            byte c = b.get(off + n);
            if (c == 0) {
                break;
            }
            bytes[n++] = c;
        }
        return new String(bytes, 0, n, StandardCharsets.UTF_8);
    }
}
