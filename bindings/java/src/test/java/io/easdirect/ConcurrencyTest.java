package io.easdirect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Many threads on one client while its list changes, and close while it is in use. */
class ConcurrencyTest {
    private static Emulator emu;

    @BeforeAll
    static void start() {
        emu = Emulator.start("svc", 0);
    }

    @AfterAll
    static void stop() {
        emu.close();
    }

    private static String items(int from, int to) {
        return IntStream.range(from, to)
                .mapToObj(i -> "{\"ip\":\"10.1.0." + i + "\",\"port\":" + (50000 + i)
                        + ",\"weight\":" + (i % 3 + 1) * 50 + "}")
                .collect(Collectors.joining(",", "[", "]"));
    }

    @Test
    void select_from_many_threads_while_the_list_changes() throws Exception {
        String[] lists = {items(1, 4), items(2, 9), items(5, 7), items(1, 30)};
        Set<String> possible = IntStream.range(1, 30).mapToObj(i -> "10.1.0." + i + ":" + (50000 + i))
                .collect(Collectors.toSet());
        emu.setItems("churn", lists[0]);
        try (EasClient c = EasClient.open("eas://" + emu.addr + "/churn?refresh_interval_ms=10")) {
            c.waitReady(Duration.ofSeconds(5));
            AtomicLong changes = new AtomicLong();
            Subscription sub = c.subscribe(list -> changes.incrementAndGet());
            AtomicBoolean stop = new AtomicBoolean();
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Set<String> seen = ConcurrentHashMap.newKeySet();
            int threads = 8;
            long[] counts = new long[threads];
            List<Thread> workers = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                int me = t;
                Thread w = new Thread(() -> {
                    try {
                        long n = 0;
                        while (!stop.get()) {
                            Instance a = c.select();
                            Instance b = c.selectExcluding(a.id());
                            if (a.id() == b.id()) {
                                throw new AssertionError("an excluded id was returned");
                            }
                            seen.add(a.host());
                            if (++n % 1024 == 0) {
                                c.instances().forEach(i -> seen.add(i.host()));
                                c.stats();
                            }
                        }
                        counts[me] = n;
                    } catch (Throwable e) {
                        failure.compareAndSet(null, e);
                    }
                }, "selector-" + t);
                workers.add(w);
                w.start();
            }
            for (int round = 0; round < 40; round++) {
                emu.setItems("churn", lists[round % lists.length]);
                Thread.sleep(25);
            }
            stop.set(true);
            for (Thread w : workers) {
                w.join(10_000);
            }
            sub.close();
            if (failure.get() != null) {
                throw new AssertionError(failure.get());
            }
            assertTrue(possible.containsAll(seen), "only listed instances: " + seen);
            assertTrue(seen.size() > 3, "picks followed the changes: " + seen);
            assertTrue(c.stats().generation() > 5, "the list changed: " + c.stats());
            assertTrue(changes.get() > 5, "subscribers saw the changes: " + changes.get());
            for (long n : counts) {
                assertTrue(n > 0);
            }
        }
    }

    @Test
    void close_while_other_threads_use_the_client() throws Exception {
        for (int round = 0; round < 5; round++) {
            EasClient c = EasClient.open("static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3");
            AtomicReference<Throwable> failure = new AtomicReference<>();
            AtomicLong closedSeen = new AtomicLong();
            CountDownLatch running = new CountDownLatch(6);
            List<Thread> workers = new ArrayList<>();
            for (int t = 0; t < 6; t++) {
                int kind = t % 3;
                Thread w = new Thread(() -> {
                    running.countDown();
                    try {
                        for (;;) {
                            Instance i = c.select();
                            if (kind == 1) {
                                c.reportFailure(i.id());
                                c.reportSuccess(i.id());
                            } else if (kind == 2) {
                                c.instances();
                                c.stats();
                                c.subscribe(list -> { }).close();
                            }
                        }
                    } catch (EasException e) {
                        if (e.status() == EasStatus.CLOSED) {
                            closedSeen.incrementAndGet();
                        } else {
                            failure.compareAndSet(null, e);
                        }
                    } catch (Throwable e) {
                        failure.compareAndSet(null, e);
                    }
                });
                workers.add(w);
                w.start();
            }
            assertTrue(running.await(5, TimeUnit.SECONDS));
            Thread.sleep(30);
            Thread closer = new Thread(c::close);
            closer.start();
            c.close();
            closer.join();
            for (Thread w : workers) {
                w.join(10_000);
                assertTrue(!w.isAlive());
            }
            if (failure.get() != null) {
                throw new AssertionError(failure.get());
            }
            assertEquals(6, closedSeen.get(), "every thread ends with CLOSED");
        }
    }
}
