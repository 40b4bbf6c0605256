package io.easdirect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BooleanSupplier;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;

/** EasClient.fromSource: a Java function as the discovery source, on both backends. */
class SourceTest {
    private static final Map<String, String> FAST = Collections.singletonMap("refresh_interval_ms", "10");

    /** A source whose behaviour the test changes; counts its calls. */
    private static final class Scripted implements EndpointSource {
        final AtomicReference<Object> next = new AtomicReference<>(); // a list or a Throwable
        final AtomicInteger calls = new AtomicInteger();

        Scripted(Object first) {
            next.set(first);
        }

        @Override
        @SuppressWarnings("unchecked")
        public Collection<Endpoint> fetch() throws Exception {
            calls.incrementAndGet();
            Object o = next.get();
            if (o instanceof Exception) {
                throw (Exception) o;
            }
            if (o instanceof Error) {
                throw (Error) o;
            }
            return (Collection<Endpoint>) o;
        }

        /** Waits for n more calls, so that the current behaviour has been seen. */
        void awaitCalls(int n) {
            int target = calls.get() + n;
            eventually("the source to be called " + n + " more times", () -> calls.get() >= target);
        }
    }

    private static List<Endpoint> endpoints(int n) {
        List<Endpoint> l = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            l.add(Endpoint.of("10.0.0." + (i + 1), 8000 + i));
        }
        return l;
    }

    private static void eventually(String what, BooleanSupplier cond) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!cond.getAsBoolean()) {
            assertTrue(System.nanoTime() < deadline, "timed out waiting for " + what);
            try {
                Thread.sleep(2);
            } catch (InterruptedException e) {
                throw new AssertionError(e);
            }
        }
    }

    private static Set<String> hosts(EasClient c) {
        return c.instances().stream().map(Instance::host).collect(Collectors.toSet());
    }

    @Test
    void endpoints_check_their_port_and_weight() {
        Endpoint e = Endpoint.of("10.0.0.1", 80);
        assertEquals(Endpoint.DEFAULT_WEIGHT, e.weight());
        assertEquals(100, e.weight());
        assertEquals(e, new Endpoint("10.0.0.1", 80, 100));
        assertEquals(e.hashCode(), new Endpoint("10.0.0.1", 80, 100).hashCode());
        assertFalse(e.equals(Endpoint.of("10.0.0.1", 80, 0)));
        assertEquals("Endpoint{10.0.0.1:80, weight=100}", e.toString());
        assertEquals("Endpoint{[fd00::1]:80, weight=0}", Endpoint.of("fd00::1", 80, 0).toString());
        assertEquals(Endpoint.MAX_WEIGHT, Endpoint.of("10.0.0.1", 1, 0xffff_ffffL).weight());
        assertThrows(IllegalArgumentException.class, () -> Endpoint.of("10.0.0.1", 0));
        assertThrows(IllegalArgumentException.class, () -> Endpoint.of("10.0.0.1", 65536));
        assertThrows(IllegalArgumentException.class, () -> Endpoint.of("10.0.0.1", 80, -1));
        assertThrows(IllegalArgumentException.class, () -> Endpoint.of("10.0.0.1", 80, 1L << 32));
        assertThrows(NullPointerException.class, () -> Endpoint.of(null, 80));
    }

    @Test
    void a_changing_list_is_followed_and_malformed_endpoints_are_skipped() {
        List<Endpoint> first = new ArrayList<>(endpoints(2));
        first.add(Endpoint.of("not-an-address", 9000));
        first.add(null);
        first.add(Endpoint.of("10.0.0.1\0", 9001));
        first.add(Endpoint.of("10.9.9.9", 9002, 0)); // listed, never picked
        Scripted src = new Scripted(first);
        try (EasClient c = EasClient.fromSource(src, FAST)) {
            c.waitReady(Duration.ofSeconds(5));
            assertEquals(new HashSet<>(Arrays.asList("10.0.0.1:8000", "10.0.0.2:8001",
                    "10.9.9.9:9002")), hosts(c));
            for (int i = 0; i < 50; i++) {
                assertFalse(c.select().port() == 9002, "weight 0 is never picked");
            }
            assertEquals(Optional.empty(), c.lastError());
            assertEquals(Optional.empty(), c.serviceName());
            assertEquals("", c.service());
            assertEquals("source callback", c.target());

            BlockingQueue<Integer> sizes = new ArrayBlockingQueue<>(100);
            Subscription sub = c.subscribe(list -> sizes.offer(list.size()));

            src.next.set(endpoints(5));
            eventually("5 instances", () -> c.instances().size() == 5);
            Map<Integer, Integer> counts = new HashMap<>();
            for (int i = 0; i < 500; i++) {
                counts.merge(c.select().port(), 1, Integer::sum);
            }
            assertEquals(5, counts.size());
            counts.values().forEach(n -> assertEquals(100, n));

            src.next.set(Arrays.asList(Endpoint.of("fd00::7", 7000, 300), Endpoint.of("10.0.0.1", 8000)));
            eventually("the last list", () -> hosts(c).equals(new HashSet<>(Arrays.asList(
                    "[fd00::7]:7000", "10.0.0.1:8000"))));
            eventually("the subscription to see 2", () -> sizes.contains(2));
            assertTrue(sizes.contains(5), sizes.toString());
            sub.close();
            assertTrue(c.stats().generation() >= 3, c.stats().toString());
        }
    }

    @Test
    void an_exception_a_null_and_an_empty_list_keep_the_cache() {
        Scripted src = new Scripted(endpoints(3));
        try (EasClient c = EasClient.fromSource(src, FAST)) {
            c.waitReady(Duration.ofSeconds(5));
            Set<String> three = hosts(c);
            assertEquals(3, three.size());
            long failedBefore = c.stats().refreshFailed();

            IOException down = new IOException("registry unreachable");
            src.next.set(down);
            src.awaitCalls(3);
            assertEquals(three, hosts(c));
            c.select();
            EasException e = c.lastError().get();
            assertEquals(EasStatus.DISCOVERY_FAILED, e.status());
            assertTrue(e.getMessage().contains("registry unreachable"), e.getMessage());
            assertTrue(e.getMessage().contains("IOException"), e.getMessage());
            assertSame(down, e.getCause());
            assertTrue(c.stats().refreshFailed() >= failedBefore + 2, c.stats().toString());

            // Errors other than the JVM's own are failed fetches too; nothing reaches native code.
            src.next.set(new AssertionError("a bug in the source"));
            src.awaitCalls(3);
            assertEquals(three, hosts(c));
            e = c.lastError().get();
            assertTrue(e.getMessage().contains("a bug in the source"), e.getMessage());
            assertTrue(e.getCause() instanceof AssertionError);

            src.next.set(Collections.emptyList());
            src.awaitCalls(3);
            assertEquals(three, hosts(c));
            e = c.lastError().get();
            assertEquals(EasStatus.DISCOVERY_FAILED, e.status());
            assertFalse(e.getMessage().contains("registry unreachable"), e.getMessage());

            src.next.set(null);
            src.awaitCalls(3);
            assertEquals(three, hosts(c));
            e = c.lastError().get();
            assertTrue(e.getMessage().contains("returned null"), e.getMessage());

            src.next.set(Collections.singletonList(Endpoint.of("10.0.0.1", 8000, 0)));
            src.awaitCalls(3); // nothing pickable: kept as well
            assertEquals(three, hosts(c));

            src.next.set(endpoints(1));
            eventually("the recovered list", () -> c.instances().size() == 1);
            eventually("no error", () -> !c.lastError().isPresent());
        }
    }

    @Test
    void close_releases_the_source_once_and_no_fetch_runs_after() throws Exception {
        long stray = Sources.stray();
        int live = Sources.live();
        Scripted src = new Scripted(endpoints(2));
        EasClient c = EasClient.fromSource(src, FAST);
        assertEquals(live + 1, Sources.live());
        c.waitReady(Duration.ofSeconds(5));
        src.awaitCalls(2);
        c.close();
        assertEquals(live, Sources.live(), "free_user_data ran before close returned");
        int calls = src.calls.get();
        c.close(); // idempotent: no second release
        Thread.sleep(100);
        assertEquals(calls, src.calls.get(), "fetch called after close");
        assertEquals(live, Sources.live());
        assertThrows(EasException.class, c::select);
        assertEquals(EasStatus.CLOSED, assertThrows(EasException.class, c::lastError).status());
        c = null;
        // The cleaner frees the closed client: free_user_data does not run again.
        long freed = ClientCleaner.freed();
        for (int i = 0; i < 200 && ClientCleaner.freed() == freed; i++) {
            System.gc();
            Thread.sleep(10);
        }
        assertEquals(stray, Sources.stray(), "free_user_data ran twice");
    }

    @Test
    void close_waits_for_a_fetch_in_progress() throws Exception {
        int live = Sources.live();
        CountDownLatch inFetch = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        AtomicInteger calls = new AtomicInteger();
        EasClient c = EasClient.fromSource(() -> {
            if (calls.incrementAndGet() == 3) {
                inFetch.countDown();
                release.await();
            }
            return endpoints(1);
        }, FAST);
        assertTrue(inFetch.await(10, TimeUnit.SECONDS));
        Thread closer = new Thread(c::close);
        closer.start();
        closer.join(200);
        assertTrue(closer.isAlive(), "close waits for the running fetch");
        assertEquals(live + 1, Sources.live());
        release.countDown();
        closer.join(10_000);
        assertFalse(closer.isAlive());
        assertEquals(live, Sources.live());
        Thread.sleep(50);
        assertEquals(3, calls.get());
    }

    @Test
    void the_source_may_call_its_client_and_close_it() throws Exception {
        int live = Sources.live();
        AtomicReference<EasClient> self = new AtomicReference<>();
        AtomicReference<Object> seen = new AtomicReference<>();
        AtomicInteger calls = new AtomicInteger();
        CountDownLatch closed = new CountDownLatch(1);
        EasClient c = EasClient.fromSource(() -> {
            EasClient me = self.get();
            int n = calls.incrementAndGet();
            if (me != null && n >= 3) {
                seen.set(me.stats());
                me.close(); // the source ends once this fetch returns
                closed.countDown();
            }
            return endpoints(2);
        }, FAST);
        self.set(c);
        assertTrue(closed.await(10, TimeUnit.SECONDS));
        eventually("the source to be released", () -> Sources.live() == live);
        int n = calls.get();
        Thread.sleep(100);
        assertEquals(n, calls.get());
        assertTrue(seen.get() instanceof Stats);
        assertEquals(EasStatus.CLOSED, assertThrows(EasException.class, c::select).status());
    }

    @Test
    void an_unreachable_client_releases_its_source() throws Exception {
        int live = Sources.live();
        Scripted src = new Scripted(endpoints(1));
        EasClient.fromSource(src, FAST).waitReady(Duration.ofSeconds(5));
        for (int i = 0; i < 1000 && Sources.live() != live; i++) {
            System.gc();
            Thread.sleep(10);
        }
        assertEquals(live, Sources.live(), "the cleaner freed the client and its source");
        int calls = src.calls.get();
        Thread.sleep(100);
        assertEquals(calls, src.calls.get());
    }

    @Test
    void a_refused_create_takes_no_ownership() {
        int live = Sources.live();
        long released = Sources.released();
        long stray = Sources.stray();
        Scripted src = new Scripted(endpoints(1));
        EasException e = assertThrows(EasException.class,
                () -> EasClient.fromSource(src, Collections.singletonMap("no_such_key", "1")));
        assertEquals(EasStatus.INVALID_ARGUMENT, e.status());
        assertTrue(e.getMessage().contains("no_such_key"), e.getMessage());
        // Refused by eas_client_new_with_source itself: a key no callback source takes.
        e = assertThrows(EasException.class,
                () -> EasClient.fromSource(src, Collections.singletonMap("tls_ca_file", "/etc/ca.pem")));
        assertEquals(EasStatus.INVALID_ARGUMENT, e.status());
        assertTrue(e.getMessage().contains("tls_ca_file"), e.getMessage());
        e = assertThrows(EasException.class,
                () -> EasClient.fromSource(src, Collections.singletonMap("refresh_interval_ms", "x")));
        assertEquals(EasStatus.INVALID_ARGUMENT, e.status());
        assertThrows(NullPointerException.class, () -> EasClient.fromSource(null));
        assertThrows(NullPointerException.class, () -> EasClient.fromSource(src, null));
        assertThrows(NullPointerException.class,
                () -> EasClient.fromSource(src, Collections.singletonMap("refresh_interval_ms", null)));
        assertEquals(live, Sources.live());
        assertEquals(released, Sources.released());
        assertEquals(stray, Sources.stray());
        assertEquals(0, src.calls.get());
    }

    @Test
    void many_source_clients_coexist() {
        List<EasClient> clients = new ArrayList<>();
        try {
            for (int i = 0; i < 32; i++) {
                int port = 1000 + i;
                clients.add(EasClient.fromSource(
                        () -> Collections.singletonList(Endpoint.of("127.0.0.1", port)), FAST));
            }
            for (int i = 0; i < 32; i++) {
                EasClient c = clients.get(i);
                c.waitReady(Duration.ofSeconds(5));
                assertEquals(1000 + i, c.select().port());
            }
        } finally {
            clients.forEach(EasClient::close);
        }
    }
}
