package io.easdirect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;

/** The API on static:// targets and unreachable upstreams: no emulator needed. */
class ClientTest {
    private static final String THREE = "static://127.0.0.1:1*5,127.0.0.1:2*1,127.0.0.1:3*1";

    private static EasException assertStatus(EasStatus status, Runnable call) {
        EasException e = assertThrows(EasException.class, call::run);
        assertEquals(status, e.status(), e.getMessage());
        assertEquals(status.code(), e.code());
        assertNotNull(e.getMessage());
        assertFalse(e.getMessage().isEmpty());
        return e;
    }

    @Test
    void the_expected_backend_is_loaded_and_the_abi_matches() {
        String expected = System.getProperty("easdirect.expectBackend", "");
        if (!expected.isEmpty()) {
            assertEquals(expected, EasClient.backend());
        }
        assertTrue(EasClient.backend().equals("jni") || EasClient.backend().equals("panama"));
        assertEquals(1, EasClient.abiVersion() >>> 16);
        assertTrue(EasClient.libraryVersion().matches("\\d+\\.\\d+\\.\\d+.*"),
                EasClient.libraryVersion());
        assertTrue(EasClient.libraryPath().endsWith("libeasdirect.so"), EasClient.libraryPath());
    }

    @Test
    void a_static_target_is_ready_at_once_and_lists_its_instances() {
        try (EasClient c = EasClient.open(THREE)) {
            assertTrue(c.isReady());
            c.waitReady(Duration.ZERO);
            List<Instance> list = c.instances();
            assertEquals(3, list.size());
            Instance a = list.stream().filter(i -> i.port() == 1).findFirst().get();
            assertEquals("127.0.0.1", a.ip());
            assertEquals("127.0.0.1:1", a.host());
            assertEquals(5, a.weight());
            assertNotEquals(0, a.id());
            assertEquals(a, list.get(list.indexOf(a)));
            assertThrows(UnsupportedOperationException.class, () -> list.add(a));
            Stats s = c.stats();
            assertEquals(1, s.generation());
            assertEquals(3, s.instances());
            assertEquals(0, s.ejected());
            assertEquals(Optional.empty(), c.lastError());
            assertEquals(Optional.empty(), c.serviceName());
            assertEquals(THREE, c.target());
        }
    }

    @Test
    void select_follows_the_weights_exactly_over_full_cycles() {
        try (EasClient c = EasClient.open(THREE)) {
            Map<Integer, Integer> counts = new HashMap<>();
            for (int i = 0; i < 700; i++) {
                counts.merge(c.select().port(), 1, Integer::sum);
            }
            assertEquals(Map.of(1, 500, 2, 100, 3, 100), counts);
        }
    }

    @Test
    void instances_keep_their_ids_across_clients_and_a_pick_reuses_one_object() {
        try (EasClient a = EasClient.open("static://127.0.0.1:7000");
                EasClient b = EasClient.open("static://127.0.0.1:7000*3")) {
            Instance first = a.select();
            assertSame(first, a.select(), "a pick of a known instance allocates no new Instance");
            assertEquals(first.id(), b.select().id());
            assertEquals(3, b.select().weight());
            assertTrue(first.toString().contains("127.0.0.1:7000"));
        }
    }

    @Test
    void weight_zero_is_listed_but_never_picked() {
        try (EasClient c = EasClient.open("static://127.0.0.1:1*0,127.0.0.1:2")) {
            assertEquals(2, c.instances().size());
            for (int i = 0; i < 50; i++) {
                assertEquals(2, c.select().port());
            }
        }
    }

    @Test
    void select_excluding_never_returns_an_excluded_id() {
        try (EasClient c = EasClient.open(THREE)) {
            List<Instance> all = c.instances();
            long a = all.get(0).id();
            for (int i = 0; i < 100; i++) {
                assertNotEquals(a, c.selectExcluding(a).id());
            }
            assertEquals(all.get(2).id(), c.selectExcluding(a, all.get(1).id()).id());
            assertNotNull(c.selectExcluding());
            assertNotNull(c.selectExcluding((long[]) null));
            long[] every = all.stream().mapToLong(Instance::id).toArray();
            assertStatus(EasStatus.NO_INSTANCE, () -> c.selectExcluding(every));
        }
    }

    @Test
    void a_reported_failure_ejects_the_instance_and_unknown_ids_are_harmless() {
        try (EasClient c = EasClient.open("static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")) {
            Instance bad = c.instances().get(0);
            assertTrue(c.reportFailure(bad.id()));
            assertEquals(1, c.stats().ejected());
            for (int i = 0; i < 60; i++) {
                assertNotEquals(bad.id(), c.select().id());
            }
            assertTrue(c.reportSuccess(bad.id()), "success does not end the ejection");
            assertEquals(1, c.stats().ejected());
            assertFalse(c.reportFailure(12345));
            assertFalse(c.reportSuccess(12345));
        }
    }

    @Test
    void when_every_instance_is_ejected_select_still_picks() {
        Map<String, String> opts = Map.of("max_ejection_percent", "100");
        try (EasClient c = EasClient.open("static://127.0.0.1:1,127.0.0.1:2", opts)) {
            for (Instance i : c.instances()) {
                c.reportFailure(i.id());
            }
            assertEquals(2, c.stats().ejected());
            assertNotNull(c.select());
        }
    }

    @Test
    void failures_before_ejection_counts_consecutive_failures() {
        Map<String, String> opts = Map.of("failures_before_ejection", "2");
        try (EasClient c = EasClient.open("static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", opts)) {
            long id = c.instances().get(0).id();
            c.reportFailure(id);
            c.reportSuccess(id);
            c.reportFailure(id);
            assertEquals(0, c.stats().ejected(), "a success resets the count");
            c.reportFailure(id);
            assertEquals(1, c.stats().ejected());
        }
    }

    @Test
    void bad_targets_and_options_are_invalid_arguments_naming_them() {
        assertTrue(assertStatus(EasStatus.INVALID_ARGUMENT, () -> EasClient.open("bogus://x"))
                .getMessage().contains("bogus"));
        assertTrue(assertStatus(EasStatus.INVALID_ARGUMENT,
                () -> EasClient.open("static://127.0.0.1:1", Map.of("no_such_key", "1")))
                .getMessage().contains("no_such_key"));
        assertTrue(assertStatus(EasStatus.INVALID_ARGUMENT,
                () -> EasClient.open("static://127.0.0.1:1", Map.of("refresh_interval_ms", "5")))
                .getMessage().contains("refresh_interval_ms"));
        assertTrue(assertStatus(EasStatus.INVALID_ARGUMENT,
                () -> EasClient.open("static://127.0.0.1:1?bogus_key=1"))
                .getMessage().contains("bogus_key"));
        assertTrue(assertStatus(EasStatus.INVALID_ARGUMENT,
                () -> EasClient.open("eas://127.0.0.1:1/svc", Map.of("group", "x")))
                .getMessage().contains("group"), "a Nacos key on an eas:// target");
        assertStatus(EasStatus.INVALID_ARGUMENT, () -> EasClient.open("static://127.0.0.1:1\0"));
        assertStatus(EasStatus.INVALID_ARGUMENT,
                () -> EasClient.open("static://127.0.0.1:1", Map.of("max_ejection_percent", "1\0")));
        Map<String, String> ordered = new LinkedHashMap<>();
        ordered.put("request_timeout_ms", "100");
        ordered.put("ejection_base_ms", "oops");
        assertTrue(assertStatus(EasStatus.INVALID_ARGUMENT,
                () -> EasClient.open("static://127.0.0.1:1", ordered))
                .getMessage().contains("ejection_base_ms"));
        assertThrows(NullPointerException.class, () -> EasClient.open(null));
    }

    @Test
    void options_win_over_query_parameters() {
        // The query's malformed value would be rejected on its own; the option replaces it.
        try (EasClient c = EasClient.open("static://127.0.0.1:1?max_ejection_percent=100",
                Map.of("max_ejection_percent", "0"))) {
            c.reportFailure(c.select().id());
            assertEquals(0, c.stats().ejected());
        }
    }

    @Test
    void an_unreachable_upstream_times_out_wait_ready_with_the_reason() {
        Map<String, String> opts = Map.of("request_timeout_ms", "200", "refresh_interval_ms", "50");
        try (EasClient c = EasClient.open("eas://127.0.0.1:1/svc", opts)) {
            assertFalse(c.isReady());
            assertStatus(EasStatus.NO_INSTANCE, c::select);
            long t0 = System.nanoTime();
            EasException e = assertStatus(EasStatus.TIMEOUT, () -> c.waitReady(Duration.ofMillis(600)));
            long ms = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(ms >= 550 && ms < 5000, "waited " + ms + " ms");
            assertTrue(e.getMessage().contains("127.0.0.1:1"), e.getMessage());
            // The message tells the whole wait, not the library's last slice of it.
            assertTrue(e.getMessage().startsWith("no instance list within 600 ms; last check: "),
                    e.getMessage());
            EasException last = c.lastError().orElseThrow();
            assertEquals(EasStatus.DISCOVERY_FAILED, last.status());
            assertTrue(last.getMessage().contains("127.0.0.1:1"), last.getMessage());
            assertTrue(c.stats().refreshFailed() > 0);
            assertEquals(0, c.stats().lastOkUnixMs());
            assertEquals(List.of(), c.instances());
            assertEquals(Optional.of("svc"), c.serviceName());
        }
    }

    @Test
    void an_interrupt_ends_wait_ready_and_stays_set() {
        try (EasClient c = EasClient.open("eas://127.0.0.1:1/svc?request_timeout_ms=100")) {
            Thread.currentThread().interrupt();
            long t0 = System.nanoTime();
            EasException e = assertStatus(EasStatus.TIMEOUT, () -> c.waitReady(Duration.ofSeconds(30)));
            assertTrue(Thread.interrupted(), "the interrupt stays set");
            assertTrue((System.nanoTime() - t0) / 1_000_000 < 2000);
            assertTrue(e.getMessage().contains("interrupted"), e.getMessage());
        }
    }

    @Test
    void every_call_after_close_fails_with_closed_and_close_is_idempotent() {
        EasClient c = EasClient.open(THREE);
        Instance i = c.select();
        Subscription s = c.subscribe(list -> { });
        c.close();
        c.close();
        assertStatus(EasStatus.CLOSED, c::select);
        assertStatus(EasStatus.CLOSED, () -> c.selectExcluding(i.id()));
        assertStatus(EasStatus.CLOSED, () -> c.reportFailure(i.id()));
        assertStatus(EasStatus.CLOSED, () -> c.reportSuccess(i.id()));
        assertStatus(EasStatus.CLOSED, c::instances);
        assertStatus(EasStatus.CLOSED, c::stats);
        assertStatus(EasStatus.CLOSED, c::lastError);
        assertStatus(EasStatus.CLOSED, c::isReady);
        assertStatus(EasStatus.CLOSED, () -> c.waitReady(Duration.ofMillis(10)));
        assertStatus(EasStatus.CLOSED, () -> c.subscribe(list -> { }));
        s.close(); // the subscription ended with the client: nothing to do
        s.close();
    }

    @Test
    void service_and_target_come_from_the_library_without_secrets() {
        String[][] cases = {
            {"eas://127.0.0.1:1/svc?refresh_interval_ms=100000", "svc", "eas://127.0.0.1:1/svc"},
            {"eas+https://127.0.0.1:1/my_service?refresh_interval_ms=100000", "my_service",
                "eas+https://127.0.0.1:1/my_service"},
            {"nacos://127.0.0.1:1/svc?username=u&password=s3cret&refresh_interval_ms=100000",
                "svc", "nacos://127.0.0.1:1/svc"},
            {"static://127.0.0.1:1?max_ejection_percent=10", "", "static://127.0.0.1:1"},
        };
        for (String[] c : cases) {
            EasClient client = EasClient.open(c[0]);
            assertEquals(c[1], client.service(), c[0]);
            assertEquals(c[1].isEmpty() ? Optional.empty() : Optional.of(c[1]),
                    client.serviceName());
            assertEquals(c[2], client.target());
            assertEquals("EasClient{" + c[2] + "}", client.toString());
            assertFalse(client.target().contains("s3cret"), client.target());
            client.close();
            assertEquals(c[2], client.target(), "still answers after close");
            assertEquals(c[1], client.service());
        }
    }

    @Test
    void transport_is_poll_but_for_a_pushing_nacos_client_and_closed_throws() {
        EasClient s = EasClient.open("static://127.0.0.1:1,127.0.0.1:2");
        assertEquals(Transport.POLL, s.transport());
        // A Nacos client whose server never answers: no push stream came up.
        EasClient n = EasClient.open("nacos://127.0.0.1:1/svc?request_timeout_ms=50");
        assertEquals(Transport.POLL, n.transport());
        n.close();
        s.close();
        EasException e = assertThrows(EasException.class, s::transport);
        assertEquals(EasStatus.CLOSED, e.status());
    }

    @Test
    void statuses_map_to_their_stable_numbers() {
        for (EasStatus s : EasStatus.values()) {
            if (s != EasStatus.UNKNOWN) {
                assertSame(s, EasStatus.of(s.code()));
            }
        }
        assertSame(EasStatus.UNKNOWN, EasStatus.of(12345));
        assertEquals(99, EasStatus.PANIC.code());
        EasException e = EasException.of(12345);
        assertEquals(12345, e.code());
        assertEquals(EasStatus.UNKNOWN, e.status());
        assertEquals("unknown status", e.getMessage());
        assertFalse(EasException.of(EasStatus.NO_INSTANCE.code()).getMessage().isEmpty());
    }

    @Test
    void many_clients_coexist_and_unreachable_ones_are_freed_by_the_cleaner()
            throws InterruptedException {
        long before = ClientCleaner.freed();
        Set<Long> ids = new HashSet<>();
        for (int i = 0; i < 64; i++) {
            EasClient c = EasClient.open("static://127.0.0.1:" + (1000 + i));
            ids.add(c.select().id());
            if (i % 2 == 0) {
                c.close(); // closed or not, the cleaner frees it
            }
        }
        assertEquals(64, ids.size());
        long deadline = System.nanoTime() + 20_000_000_000L;
        while (ClientCleaner.freed() - before < 64 && System.nanoTime() < deadline) {
            System.gc();
            Thread.sleep(20);
        }
        assertTrue(ClientCleaner.freed() - before >= 64,
                "freed " + (ClientCleaner.freed() - before) + " of 64");
    }

    @Test
    void instance_lists_of_a_thousand_are_decoded_whole() {
        String target = java.util.stream.IntStream.range(0, 1000)
                .mapToObj(i -> "10.0." + (i / 250) + "." + (i % 250 + 1) + ":" + (50000 + i))
                .collect(Collectors.joining(",", "static://", ""));
        try (EasClient c = EasClient.open(target)) {
            List<Instance> list = c.instances();
            assertEquals(1000, list.size());
            assertEquals(1000, list.stream().map(Instance::host).distinct().count());
            Set<Long> seen = new HashSet<>();
            for (int i = 0; i < 1000; i++) {
                seen.add(c.select().id());
            }
            assertEquals(1000, seen.size(), "one full cycle visits every instance once");
            assertSame(list.get(5), c.instances().get(5));
        }
    }
}
