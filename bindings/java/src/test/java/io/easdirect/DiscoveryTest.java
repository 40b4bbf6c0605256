package io.easdirect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;

/** EAS discovery against the emulator: readiness, list changes, faults, subscriptions. */
class DiscoveryTest {
    private static Emulator emu;
    private String service;

    @BeforeAll
    static void start() {
        emu = Emulator.start("svc", 3);
    }

    @AfterAll
    static void stop() {
        emu.close();
    }

    @AfterEach
    void noFault() {
        emu.setFault("{\"fault\":\"none\"}");
    }

    /** A service of the test's own, listing the given backends. */
    private EasClient clientOf(TestInfo info, List<Integer> ports) {
        service = info.getTestMethod().get().getName().replace('_', '-');
        emu.list(service, ports);
        return EasClient.open(emu.target(service));
    }

    static void eventually(String what, BooleanSupplier cond) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!cond.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out waiting until " + what);
            }
            Thread.sleep(10);
        }
    }

    private static Set<Integer> ports(List<Instance> list) {
        return list.stream().map(Instance::port).collect(Collectors.toSet());
    }

    @Test
    void wait_ready_returns_once_the_list_is_fetched(TestInfo info) {
        try (EasClient c = clientOf(info, emu.backends)) {
            c.waitReady(Duration.ofSeconds(5));
            assertTrue(c.isReady());
            assertEquals(Set.copyOf(emu.backends), ports(c.instances()));
            assertTrue(emu.backends.contains(c.select().port()));
            Stats s = c.stats();
            assertEquals(1, s.generation());
            assertTrue(s.refreshOk() >= 1);
            assertTrue(Math.abs(System.currentTimeMillis() - s.lastOkUnixMs()) < 60_000);
            assertEquals(3, s.instances());
            assertEquals(java.util.Optional.of(service), c.serviceName());
        }
    }

    @Test
    void a_changed_list_is_published_and_subscribers_get_it(TestInfo info) throws Exception {
        try (EasClient c = clientOf(info, emu.backends)) {
            c.waitReady(Duration.ofSeconds(5));
            BlockingQueue<List<Instance>> got = new LinkedBlockingQueue<>();
            Thread caller = Thread.currentThread();
            AtomicInteger onCaller = new AtomicInteger();
            try (Subscription s = c.subscribe(list -> {
                if (Thread.currentThread() == caller) {
                    onCaller.incrementAndGet();
                }
                got.add(list);
            })) {
                assertTrue(s.id() != 0);
                List<Instance> first = got.poll(5, TimeUnit.SECONDS);
                assertEquals(Set.copyOf(emu.backends), ports(first), "the current list, once");
                emu.list(service, emu.backends.subList(0, 2));
                List<Instance> next = got.poll(5, TimeUnit.SECONDS);
                assertEquals(Set.copyOf(emu.backends.subList(0, 2)), ports(next));
                eventually("instances() shows the new list", () -> c.instances().size() == 2);
                assertEquals(2, c.stats().generation());
                for (int i = 0; i < 20; i++) {
                    assertNotEquals((int) emu.backends.get(2), c.select().port());
                }
                assertEquals(0, onCaller.get(), "callbacks run on a background thread");
            }
        }
    }

    @Test
    void a_closed_subscription_gets_no_more_calls(TestInfo info) throws Exception {
        try (EasClient c = clientOf(info, emu.backends)) {
            c.waitReady(Duration.ofSeconds(5));
            int live = Listeners.live();
            AtomicInteger calls = new AtomicInteger();
            Subscription s = c.subscribe(list -> calls.incrementAndGet());
            eventually("the first call", () -> calls.get() == 1);
            s.close();
            assertEquals(live, Listeners.live(), "free_user_data ran before unsubscribe returned");
            emu.list(service, emu.backends.subList(0, 1));
            eventually("the client sees the change", () -> c.instances().size() == 1);
            Thread.sleep(100);
            assertEquals(1, calls.get());
        }
    }

    @Test
    void a_listener_may_unsubscribe_itself_and_call_the_client(TestInfo info) throws Exception {
        try (EasClient c = clientOf(info, emu.backends)) {
            c.waitReady(Duration.ofSeconds(5));
            CountDownLatch done = new CountDownLatch(1);
            Subscription[] self = new Subscription[1];
            AtomicInteger calls = new AtomicInteger();
            CopyOnWriteArrayList<Instance> picked = new CopyOnWriteArrayList<>();
            synchronized (self) {
                self[0] = c.subscribe(list -> {
                    calls.incrementAndGet();
                    picked.add(c.select());
                    c.stats();
                    synchronized (self) {
                        self[0].close();
                    }
                    done.countDown();
                });
            }
            assertTrue(done.await(5, TimeUnit.SECONDS));
            emu.list(service, emu.backends.subList(0, 1));
            eventually("the client sees the change", () -> c.instances().size() == 1);
            Thread.sleep(100);
            assertEquals(1, calls.get());
            assertEquals(1, picked.size());
        }
    }

    @Test
    void a_throwing_listener_goes_to_the_uncaught_handler_and_keeps_its_subscription(TestInfo info)
            throws Exception {
        Thread.UncaughtExceptionHandler old = Thread.getDefaultUncaughtExceptionHandler();
        BlockingQueue<Throwable> caught = new LinkedBlockingQueue<>();
        Thread.setDefaultUncaughtExceptionHandler((t, e) -> caught.add(e));
        try (EasClient c = clientOf(info, emu.backends)) {
            AtomicInteger calls = new AtomicInteger();
            Subscription s = c.subscribe(list -> {
                calls.incrementAndGet();
                throw new IllegalStateException("boom");
            });
            assertEquals("boom", caught.poll(5, TimeUnit.SECONDS).getMessage());
            emu.list(service, emu.backends.subList(0, 2));
            assertEquals("boom", caught.poll(5, TimeUnit.SECONDS).getMessage());
            assertEquals(2, calls.get());
            s.close();
        } finally {
            Thread.setDefaultUncaughtExceptionHandler(old);
        }
    }

    @Test
    void closing_the_client_ends_its_subscriptions(TestInfo info) throws Exception {
        int live = Listeners.live();
        EasClient c = clientOf(info, emu.backends);
        AtomicInteger calls = new AtomicInteger();
        c.subscribe(list -> calls.incrementAndGet());
        c.subscribe(list -> calls.incrementAndGet());
        assertEquals(live + 2, Listeners.live());
        eventually("both first calls", () -> calls.get() == 2);
        c.close();
        assertEquals(live, Listeners.live(), "free_user_data ran before close returned");
        emu.list(service, emu.backends.subList(0, 1));
        Thread.sleep(200);
        assertEquals(2, calls.get());
    }

    @Test
    void a_failing_discovery_keeps_the_cache_and_says_why(TestInfo info) throws Exception {
        try (EasClient c = clientOf(info, emu.backends)) {
            c.waitReady(Duration.ofSeconds(5));
            assertFalse(c.lastError().isPresent());
            emu.setFault("{\"fault\":\"status\",\"status\":500}");
            eventually("a failed fetch is reported", () -> c.lastError().isPresent());
            EasException e = c.lastError().get();
            assertEquals(EasStatus.DISCOVERY_FAILED, e.status());
            assertTrue(e.getMessage().contains("500"), e.getMessage());
            assertTrue(e.getMessage().contains(emu.addr), e.getMessage());
            assertEquals(3, c.instances().size());
            assertTrue(c.stats().refreshFailed() > 0);
            assertTrue(emu.backends.contains(c.select().port()));

            emu.setFault("{\"fault\":\"empty_list\"}");
            long failed = c.stats().refreshFailed();
            eventually("more failed fetches", () -> c.stats().refreshFailed() > failed + 2);
            assertEquals(3, c.instances().size(), "an empty list keeps the cache");

            emu.setFault("{\"fault\":\"none\"}");
            eventually("the error clears", () -> !c.lastError().isPresent());
            assertEquals(1, c.stats().generation());
        }
    }

    @Test
    void a_hung_discovery_times_out_and_never_delays_select(TestInfo info) throws Exception {
        service = "hung";
        emu.list(service, emu.backends);
        try (EasClient c = EasClient.open(emu.target(service),
                java.util.Map.of("request_timeout_ms", "300"))) {
            c.waitReady(Duration.ofSeconds(5));
            emu.setFault("{\"fault\":\"hang\"}");
            long t0 = System.nanoTime();
            for (int i = 0; i < 100_000; i++) {
                c.select();
            }
            assertTrue(System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(2));
            eventually("the hung fetch times out", () -> c.lastError().isPresent());
            assertEquals(3, c.instances().size());
        }
    }
}
