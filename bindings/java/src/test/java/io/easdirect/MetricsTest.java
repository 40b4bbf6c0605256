package io.easdirect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The metrics text: it parses (strictly, as format 0.0.4) and says what the stats say. */
class MetricsTest {
    private static Emulator emu;

    @BeforeAll
    static void start() {
        emu = Emulator.start("svc", 3);
    }

    @AfterAll
    static void stop() {
        emu.close();
    }

    /** The one sample of {@code family} whose labels include {@code labels}. */
    private static double value(Map<String, PromText.Family> families, String family,
            Map<String, String> labels) {
        PromText.Family f = families.get(family);
        assertTrue(f != null, "no family " + family + " in " + families.keySet());
        List<PromText.Sample> hits = f.samples.stream()
                .filter(s -> s.labels().entrySet().containsAll(labels.entrySet())).toList();
        assertEquals(1, hits.size(), family + labels + " in " + f.samples);
        return hits.get(0).value();
    }

    @Test
    void the_text_parses_and_its_values_are_the_stats() throws Exception {
        emu.list("metrics", emu.backends);
        // No refresh between the stats and the text: the figures cannot move meanwhile.
        Map<String, String> options = Map.of("refresh_interval_ms", "600000",
                "failures_before_ejection", "1", "ejection_base_ms", "600000",
                "ejection_max_ms", "600000");
        try (EasClient c = EasClient.open(emu.target("metrics"), options, Logging.off())) {
            c.waitReady(Duration.ofSeconds(5));
            List<Instance> list = c.instances();
            Instance ejected = list.get(0);
            assertTrue(c.reportFailure(ejected.id()));
            // Attempts: three recorded, one left in flight.
            for (int i = 0; i < 3; i++) {
                try (EasCall call = c.beginCall()) {
                    call.next();
                    call.record(Outcome.response(i == 0 ? 500 : 200));
                    call.finish(Body.DONE);
                }
            }
            EasCall open = c.beginCall();
            Instance inFlight = open.next();
            try {
                Stats stats = c.stats();
                List<InstanceStats> per = c.instanceStats();
                String text = c.metricsText();
                Map<String, PromText.Family> f = PromText.parse(text);

                Map<String, String> target = Map.of("target", c.target());
                assertEquals(stats.generation(), value(f, "easdirect_list_generation", target));
                assertEquals(stats.instances(), value(f, "easdirect_instances", target));
                assertEquals(1, stats.ejected());
                assertEquals(stats.ejected(), value(f, "easdirect_instances_ejected", target));
                Map<String, String> ok = new HashMap<>(target);
                ok.put("result", "ok");
                Map<String, String> failed = new HashMap<>(target);
                failed.put("result", "failed");
                assertEquals(stats.refreshOk(),
                        value(f, "easdirect_discovery_fetches_total", ok));
                assertEquals(stats.refreshFailed(),
                        value(f, "easdirect_discovery_fetches_total", failed));
                assertEquals(stats.lastOkUnixMs() / 1000.0, value(f,
                        "easdirect_discovery_last_success_timestamp_seconds", target), 1.0);
                assertEquals(0, value(f, "easdirect_push_connected", target));
                assertEquals(0, value(f, "easdirect_log_lines_dropped_total", target));
                assertEquals("counter", f.get("easdirect_discovery_fetches_total").type);
                assertEquals("gauge", f.get("easdirect_instances").type);

                Map<Long, String> hostOf = new HashMap<>();
                for (Instance i : list) {
                    hostOf.put(i.id(), i.host());
                }
                assertEquals(3, per.size());
                long attempts = 0;
                for (InstanceStats s : per) {
                    Map<String, String> inst = new HashMap<>(target);
                    inst.put("instance", hostOf.get(s.id()));
                    assertEquals(s.attempts(),
                            value(f, "easdirect_instance_attempts_total", inst), s.toString());
                    assertEquals(s.failures(),
                            value(f, "easdirect_instance_failures_total", inst), s.toString());
                    assertEquals(s.inFlight(), value(f, "easdirect_instance_in_flight", inst));
                    assertEquals(s.weight(), value(f, "easdirect_instance_weight", inst));
                    assertEquals(s.latencyEwmaMicros() / 1e6,
                            value(f, "easdirect_instance_latency_ewma_seconds", inst), 1e-6);
                    boolean heldOut = s.ejectedUntilUnixMs() > System.currentTimeMillis();
                    assertEquals(heldOut ? 1 : 0,
                            value(f, "easdirect_instance_held_out", inst), s.toString());
                    assertEquals(s.id() == ejected.id(), heldOut, s.toString());
                    assertEquals(s.ejectedUntilUnixMs() / 1000.0, value(f,
                            "easdirect_instance_held_out_until_timestamp_seconds", inst), 1.0);
                    assertEquals(s.id() == inFlight.id() ? 1 : 0, s.inFlight());
                    attempts += s.attempts();
                }
                assertEquals(4, attempts, per.toString());
                assertTrue(per.stream().anyMatch(s -> s.failures() >= 1 && s.id() != ejected.id()),
                        "the 500 counted as a failure: " + per);
            } finally {
                open.close();
            }
        }
    }

    @Test
    void a_closed_client_has_no_text() {
        EasClient c = EasClient.open("static://127.0.0.1:1", Map.of(), Logging.off());
        Map<String, PromText.Family> f = PromText.parse(c.metricsText());
        assertEquals(1, value(f, "easdirect_instances", Map.of("target", c.target())));
        assertEquals(100, value(f, "easdirect_instance_weight", // static:// weighs 100
                Map.of("target", c.target(), "instance", "127.0.0.1:1")));
        c.close();
        EasException e = assertThrows(EasException.class, c::metricsText);
        assertEquals(EasStatus.CLOSED, e.status());
    }

    @Test
    void the_parser_is_strict() {
        String good = "# HELP a_total Help with \\\\ and \\n.\n# TYPE a_total counter\n"
                + "a_total{x=\"1\",y=\"q\\\"\\\\\\n\"} 1.5e3\na_total{x=\"2\"} +Inf 1700000000000\n"
                + "# TYPE b gauge\nb NaN\n";
        Map<String, PromText.Family> f = PromText.parse(good);
        assertEquals("counter", f.get("a_total").type);
        assertEquals("q\"\\\n", f.get("a_total").samples.get(0).labels().get("y"));
        assertEquals(1500.0, f.get("a_total").samples.get(0).value());
        for (String bad : new String[] {
            "a 1",                          // no final newline
            "a{x=1} 1\n",                   // unquoted
            "a{x=\"1\",x=\"2\"} 1\n",       // duplicate label
            "a{x=\"\\t\"} 1\n",             // bad escape
            "1a 1\n",                       // bad name
            "a one\n",                      // bad value
            "a 1\nb 1\na 2\n",              // a family split in two
            "a 1\na 1\n",                   // a sample twice
            "a 1\n# TYPE a gauge\n",        // TYPE after samples
            "# TYPE a gauges\na 1\n",       // unknown type
            "a{x-y=\"1\"} 1\n",             // bad label name
        }) {
            assertThrows(IllegalArgumentException.class, () -> PromText.parse(bad), bad);
        }
        assertFalse(PromText.parse("").size() > 0);
    }
}
