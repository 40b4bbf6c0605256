package io.easdirect;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/**
 * The Instance objects a client has handed out, by id, so that a pick returns an existing
 * immutable object instead of decoding two strings: select allocates nothing once an instance
 * has been seen. Lookups read an immutable open-addressing table through one volatile load; a
 * miss (a new instance, or a new weight) publishes a copy. Rare by nature: instances change
 * when the list does.
 */
final class InstanceTable {
    /** Past this many entries the table starts afresh, so that a churning list cannot grow it. */
    private static final int MAX_ENTRIES = 1 << 16;

    private volatile Instance[] slots = new Instance[16];
    private int size; // guarded by this

    private static int slot(long id, int mask) {
        long h = id * 0x9E3779B97F4A7C15L;
        return (int) (h >>> 40) & mask;
    }

    /** The known Instance with these fields, or null. */
    Instance find(long id, int port, long weight) {
        Instance[] t = slots;
        int mask = t.length - 1;
        for (int i = slot(id, mask);; i = (i + 1) & mask) {
            Instance x = t[i];
            if (x == null) {
                return null;
            }
            if (x.id() == id) {
                return x.port() == port && x.weight() == weight ? x : null;
            }
        }
    }

    /** The Instance of the eas_instance at {@code off} in {@code b}, decoded on a miss. */
    Instance intern(ByteBuffer b, int off) {
        Instance x = find(b.getLong(off + Instance.ID), b.getShort(off + Instance.PORT) & 0xffff,
                b.getInt(off + Instance.WEIGHT) & 0xffffffffL);
        if (x != null) {
            return x;
        }
        x = Instance.read(b, off);
        add(Collections.singletonList(x));
        return x;
    }

    /** The Instances of the {@code n} eas_instance records in {@code b}, as an unmodifiable list. */
    List<Instance> internAll(ByteBuffer b, int n) {
        Instance[] out = new Instance[n];
        List<Instance> fresh = null;
        for (int i = 0; i < n; i++) {
            int off = i * Instance.SIZE;
            Instance x = find(b.getLong(off + Instance.ID),
                    b.getShort(off + Instance.PORT) & 0xffff,
                    b.getInt(off + Instance.WEIGHT) & 0xffffffffL);
            if (x == null) {
                x = Instance.read(b, off);
                if (fresh == null) {
                    fresh = new ArrayList<>();
                }
                fresh.add(x);
            }
            out[i] = x;
        }
        if (fresh != null) {
            add(fresh);
        }
        return Collections.unmodifiableList(Arrays.asList(out));
    }

    private synchronized void add(List<Instance> fresh) {
        Instance[] old = slots;
        int need = size + fresh.size();
        boolean restart = need > MAX_ENTRIES;
        if (restart) {
            need = fresh.size();
        }
        int cap = 16;
        while (cap < need * 2) {
            cap <<= 1;
        }
        Instance[] t = new Instance[cap];
        int n = 0;
        for (Instance x : fresh) {
            n += put(t, x);
        }
        if (!restart) {
            for (Instance x : old) {
                if (x != null) {
                    n += put(t, x); // an entry replaced by a fresh one (new weight) is skipped
                }
            }
        }
        size = n;
        slots = t;
    }

    /** Puts x unless its id is there already; 1 if it was put. */
    private static int put(Instance[] t, Instance x) {
        int mask = t.length - 1;
        for (int i = slot(x.id(), mask);; i = (i + 1) & mask) {
            if (t[i] == null) {
                t[i] = x;
                return 1;
            }
            if (t[i].id() == x.id()) {
                return 0;
            }
        }
    }
}
