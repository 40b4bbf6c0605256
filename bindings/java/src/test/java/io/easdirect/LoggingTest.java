package io.easdirect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.ResourceBundle;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Predicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The library's log lines: where they go, which events, no secret, the sink's lifetime. */
class LoggingTest {
    private static Emulator emu;

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

    /** A sink that keeps every line. */
    static final class Lines implements LogSink {
        record Line(LogLevel level, String message, String thread) {}

        private final List<Line> lines = new ArrayList<>();

        @Override
        public synchronized void log(LogLevel level, String message) {
            lines.add(new Line(level, message, Thread.currentThread().getName()));
        }

        synchronized List<Line> all() {
            return new ArrayList<>(lines);
        }

        long count(LogLevel level, String part) {
            return all().stream()
                    .filter(l -> l.level() == level && l.message().contains(part)).count();
        }

        Line waitFor(LogLevel level, String part) throws InterruptedException {
            AtomicReference<Line> got = new AtomicReference<>();
            DiscoveryTest.eventually("a " + level + " line with \"" + part + "\" (lines: "
                    + all() + ")", () -> {
                        for (Line l : all()) {
                            if (l.level() == level && l.message().contains(part)) {
                                got.set(l);
                                return true;
                            }
                        }
                        return false;
                    });
            return got.get();
        }
    }

    /** A System.Logger at a level, keeping what it is given. */
    static final class Recording implements System.Logger {
        final System.Logger.Level min;
        final Lines lines = new Lines();

        Recording(System.Logger.Level min) {
            this.min = min;
        }

        @Override
        public String getName() {
            return "recording";
        }

        @Override
        public boolean isLoggable(System.Logger.Level level) {
            return level.getSeverity() >= min.getSeverity();
        }

        @Override
        public void log(System.Logger.Level level, ResourceBundle bundle, String msg,
                Throwable thrown) {
            lines.log(LogLevel.valueOf(level.name()), msg);
        }

        @Override
        public void log(System.Logger.Level level, ResourceBundle bundle, String format,
                Object... params) {
            lines.log(LogLevel.valueOf(level.name()), format);
        }
    }

    private static EasClient open(String service, Logging logging, Map<String, String> options) {
        emu.list(service, emu.backends);
        return EasClient.open(emu.target(service), options, logging);
    }

    @Test
    void lines_go_to_the_system_logger_easdirect_by_default() throws Exception {
        java.util.logging.Logger jul = java.util.logging.Logger.getLogger("easdirect");
        List<java.util.logging.LogRecord> records = new java.util.concurrent.CopyOnWriteArrayList<>();
        java.util.logging.Handler h = new java.util.logging.Handler() {
            @Override
            public void publish(java.util.logging.LogRecord r) {
                records.add(r);
            }

            @Override
            public void flush() {}

            @Override
            public void close() {}
        };
        jul.addHandler(h);
        try (EasClient c = EasClient.open("static://127.0.0.1:1,127.0.0.1:2")) {
            DiscoveryTest.eventually("the list line in java.util.logging's \"easdirect\"",
                    () -> records.stream().anyMatch(r -> r.getMessage()
                            .equals(c.target() + ": list 1: 2 instances (+2 -0)")
                            && r.getLevel() == java.util.logging.Level.INFO));
        } finally {
            jul.removeHandler(h);
        }
    }

    @Test
    void the_level_sent_is_the_most_detailed_the_logger_takes() throws Exception {
        assertEquals(4, SystemLogging.to(new Recording(System.Logger.Level.ALL)).maxLevel());
        assertEquals(4, SystemLogging.to(new Recording(System.Logger.Level.TRACE)).maxLevel());
        assertEquals(3, SystemLogging.to(new Recording(System.Logger.Level.INFO)).maxLevel());
        assertEquals(2, SystemLogging.to(new Recording(System.Logger.Level.WARNING)).maxLevel());
        assertEquals(1, SystemLogging.to(new Recording(System.Logger.Level.ERROR)).maxLevel());
        assertEquals(0, SystemLogging.to(new Recording(System.Logger.Level.OFF)).maxLevel());
        assertEquals(0, Logging.off().maxLevel());
        assertEquals(3, Logging.to((l, m) -> {}, LogLevel.INFO).maxLevel());

        // A logger that takes no level: the library is given no log function at all.
        Recording off = new Recording(System.Logger.Level.OFF);
        try (EasClient c = EasClient.open("static://127.0.0.1:1", Map.of(),
                SystemLogging.to(off))) {
            assertTrue(c.instances().size() == 1);
        }
        // A logger from WARNING gets the warning of a streak, and none of the info lines that
        // follow it (the recovery, a new list).
        Recording warn = new Recording(System.Logger.Level.WARNING);
        try (EasClient c = open("warn-only", SystemLogging.to(warn), Map.of())) {
            c.waitReady(Duration.ofSeconds(5));
            long generation = c.stats().generation();
            emu.setFault("{\"fault\":\"status\",\"status\":503}");
            warn.lines.waitFor(LogLevel.WARNING, "discovery failed");
            emu.setFault("{\"fault\":\"none\"}");
            emu.list("warn-only", emu.backends.subList(0, 2));
            DiscoveryTest.eventually("a new list", () -> c.stats().generation() > generation);
            Thread.sleep(300); // time for info lines, were they sent, to arrive
        }
        assertTrue(warn.lines.all().stream().allMatch(l -> l.level() == LogLevel.WARNING),
                warn.lines.all().toString());
        assertTrue(off.lines.all().isEmpty(), off.lines.all().toString());
    }

    @Test
    void over_ten_lines_a_second_are_dropped_counted_and_said_in_the_next_line()
            throws Exception {
        Lines lines = new Lines();
        StringBuilder target = new StringBuilder("static://");
        for (int i = 0; i < 31; i++) {
            target.append(i == 0 ? "" : ",").append("127.0.0.1:").append(20001 + i);
        }
        Map<String, String> options = Map.of("failures_before_ejection", "1",
                "max_ejection_percent", "100", "ejection_base_ms", "600000",
                "ejection_max_ms", "600000");
        try (EasClient c = EasClient.open(target.toString(), options,
                Logging.to(lines, LogLevel.INFO))) {
            List<Instance> all = c.instances();
            // The list line and 30 ejections, in well under a second: 31 lines for 10 places.
            for (Instance i : all.subList(0, 30)) {
                assertTrue(c.reportFailure(i.id()));
            }
            Thread.sleep(1100); // the next second
            Instance last = all.get(30);
            assertTrue(c.reportFailure(last.id()));
            Lines.Line l = lines.waitFor(LogLevel.INFO, "instance " + last.host() + " ejected");
            Map<String, PromText.Family> f = PromText.parse(c.metricsText());
            double dropped = f.get("easdirect_log_lines_dropped_total").samples.get(0).value();
            assertTrue(dropped >= 21, dropped + " dropped: " + lines.all());
            assertEquals(32, lines.all().size() + (long) dropped, lines.all().toString());
            Pattern said = Pattern.compile(
                    " \\((\\d+) earlier lines dropped: at most 10 a second\\)$");
            long told = 0;
            for (Lines.Line x : lines.all()) {
                Matcher m = said.matcher(x.message());
                if (m.find()) {
                    told += Long.parseLong(m.group(1));
                }
            }
            assertEquals((long) dropped, told, lines.all().toString());
            assertTrue(said.matcher(l.message()).find(), l.message());
        }
    }

    @Test
    void a_client_from_a_source_logs_too() throws Exception {
        Lines lines = new Lines();
        try (EasClient c = EasClient.fromSource(() -> List.of(Endpoint.of("127.0.0.1", 1),
                Endpoint.of("127.0.0.1", 2)), Map.of(), Logging.to(lines, LogLevel.INFO))) {
            Lines.Line l = lines.waitFor(LogLevel.INFO, "list 1: 2 instances (+2 -0)");
            assertEquals(c.target() + ": list 1: 2 instances (+2 -0)", l.message());
        }
    }

    @Test
    void a_failing_upstream_logs_one_warning_per_streak_and_one_info_on_recovery()
            throws Exception {
        Lines lines = new Lines();
        Pattern recovered = Pattern.compile("discovery recovered after (\\d+) failed fetches");
        try (EasClient c = open("streaks", Logging.to(lines, LogLevel.DEBUG), Map.of())) {
            c.waitReady(Duration.ofSeconds(5));
            for (int streak = 1; streak <= 2; streak++) {
                long failedBefore = c.stats().refreshFailed();
                emu.setFault("{\"fault\":\"status\",\"status\":503}");
                DiscoveryTest.eventually("three failed fetches",
                        () -> c.stats().refreshFailed() >= failedBefore + 3);
                emu.setFault("{\"fault\":\"none\"}");
                final int n = streak;
                DiscoveryTest.eventually("recovery " + streak,
                        () -> lines.count(LogLevel.INFO, "discovery recovered after") == n);
                long failed = c.stats().refreshFailed() - failedBefore;
                assertEquals(streak, lines.count(LogLevel.WARNING,
                        "discovery failed, keeping the last list: "),
                        "streak " + streak + " of " + failed + " failed fetches: " + lines.all());
                String last = null;
                for (Lines.Line l : lines.all()) {
                    if (recovered.matcher(l.message()).find()) {
                        last = l.message();
                    }
                }
                Matcher m = recovered.matcher(last);
                assertTrue(m.find());
                assertEquals(failed, Long.parseLong(m.group(1)), last);
            }
            Lines.Line warning = lines.waitFor(LogLevel.WARNING, "discovery failed");
            assertTrue(warning.message().startsWith(c.target() + ": "), warning.message());
            assertTrue(warning.message().contains("http://" + emu.addr + "/"), warning.message());
            assertTrue(warning.message().contains("503"), warning.message());
        }
        // Lines come on the library's one log thread (attached to the JVM under JNI).
        assertEquals(1, lines.all().stream().map(Lines.Line::thread).distinct().count(),
                lines.all().toString());
        assertEquals("easdirect-log", lines.all().get(0).thread());
    }

    @Test
    void an_ejection_logs_the_instance() throws Exception {
        Lines lines = new Lines();
        Map<String, String> options = new LinkedHashMap<>();
        options.put("failures_before_ejection", "1");
        options.put("ejection_base_ms", "200");
        options.put("ejection_max_ms", "400");
        try (EasClient c = open("ejection", Logging.to(lines, LogLevel.INFO), options)) {
            c.waitReady(Duration.ofSeconds(5));
            Instance bad = c.instances().get(1);
            assertTrue(c.reportFailure(bad.id()));
            lines.waitFor(LogLevel.INFO, "instance " + bad.host() + " ejected for ");
            lines.waitFor(LogLevel.INFO, "instance " + bad.host() + " back in rotation");
            for (Instance i : c.instances()) {
                if (i.id() != bad.id()) {
                    assertEquals(0, lines.count(LogLevel.INFO, i.host() + " ejected"),
                            lines.all().toString());
                }
            }
        }
    }

    @Test
    void no_secret_from_the_options_or_the_target_reaches_a_line() throws Exception {
        Lines lines = new Lines();
        String[] secrets = {"pa55-w0rd-1", "s3cret-k3y-2"};
        Map<String, String> options = new LinkedHashMap<>();
        options.put("nacos_transport", "http");
        options.put("username", "nacos-user");
        options.put("password", secrets[0]);
        options.put("access_key", "ak-id");
        String text;
        try (EasClient c = EasClient.open("nacos://127.0.0.1:1/svc?refresh_interval_ms=20"
                + "&secret_key=" + secrets[1], options, Logging.to(lines, LogLevel.DEBUG))) {
            lines.waitFor(LogLevel.WARNING, "discovery failed");
            DiscoveryTest.eventually("five failed fetches", () -> c.stats().refreshFailed() >= 5);
            text = c.metricsText();
        }
        List<Lines.Line> all = lines.all();
        assertFalse(all.isEmpty());
        assertTrue(all.get(0).message().contains("127.0.0.1:1"), all.toString());
        for (String s : secrets) {
            for (Lines.Line l : all) {
                assertFalse(l.message().contains(s), "a secret in " + l.message());
            }
            assertFalse(text.contains(s), "a secret in the metrics text:\n" + text);
        }
    }

    /** Lets go of the client in a frame of its own, so that nothing on the stack holds it. */
    private static void openAndClose(LogSink sink) throws Exception {
        EasClient c = EasClient.open("static://127.0.0.1:1", Map.of(),
                Logging.to(sink, LogLevel.INFO));
        ((Lines) sink).waitFor(LogLevel.INFO, "list 1");
        c.close();
        System.gc();
        // Closed, not freed: the library holds the sink until eas_client_free.
        assertTrue(LogSinks.holds(sink), "the sink was let go before the client was freed");
        java.lang.ref.Reference.reachabilityFence(c);
    }

    @Test
    void the_sink_is_let_go_once_the_client_is_closed_and_freed() throws Exception {
        Lines sink = new Lines();
        long strayBefore = LogSinks.stray();
        openAndClose(sink);
        DiscoveryTest.eventually("the cleaner frees the client and the library lets go", () -> {
            System.gc();
            return !LogSinks.holds(sink);
        });
        int lines = sink.all().size();

        // A create that fails lets go of the sink at once.
        Lines other = new Lines();
        EasException e = assertThrows(EasException.class, () -> EasClient.open(
                "eas://127.0.0.1:1", Map.of(), Logging.to(other, LogLevel.INFO)));
        assertEquals(EasStatus.INVALID_ARGUMENT, e.status());
        assertFalse(LogSinks.holds(other));
        assertEquals(strayBefore, LogSinks.stray(), "a free_user_data ran twice");
        assertEquals(lines, sink.all().size(), "a line after the client was freed");
    }

    @Test
    void a_sink_that_throws_reaches_the_uncaught_handler_and_lines_go_on() throws Exception {
        List<Throwable> uncaught = new java.util.concurrent.CopyOnWriteArrayList<>();
        Thread.UncaughtExceptionHandler before = Thread.getDefaultUncaughtExceptionHandler();
        Thread.setDefaultUncaughtExceptionHandler((t, x) -> uncaught.add(x));
        Lines lines = new Lines();
        LogSink throwing = (level, message) -> {
            lines.log(level, message);
            throw new IllegalStateException("the sink failed on " + message);
        };
        try (EasClient c = open("throwing", Logging.to(throwing, LogLevel.INFO), Map.of())) {
            c.waitReady(Duration.ofSeconds(5));
            lines.waitFor(LogLevel.INFO, "list 1:");
            emu.list("throwing", emu.backends.subList(0, 1));
            lines.waitFor(LogLevel.INFO, "list 2:");
            DiscoveryTest.eventually("two exceptions in the handler", () -> uncaught.size() >= 2);
        } finally {
            Thread.setDefaultUncaughtExceptionHandler(before);
        }
        assertTrue(uncaught.get(0).getMessage().startsWith("the sink failed on "), uncaught.toString());
    }

    @Test
    void close_waits_for_the_line_in_the_sink_and_no_line_comes_after() throws Exception {
        CountDownLatch holding = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        Lines lines = new Lines();
        LogSink slow = (level, message) -> {
            lines.log(level, message);
            holding.countDown();
            try {
                release.await(30, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        };
        EasClient c = open("slow", Logging.to(slow, LogLevel.INFO), Map.of());
        try {
            assertTrue(holding.await(10, TimeUnit.SECONDS));
            // The client goes on meanwhile: a new list while its first line is held.
            emu.list("slow", emu.backends.subList(0, 2));
            DiscoveryTest.eventually("the new list", () -> c.instances().size() == 2);
            Thread closer = new Thread(c::close, "closer");
            closer.start();
            closer.join(200);
            assertTrue(closer.isAlive(), "close returned while the sink held a line");
            release.countDown();
            closer.join(10_000);
            assertFalse(closer.isAlive(), "close did not return once the sink did");
            int n = lines.all().size();
            assertTrue(lines.all().get(0).message().contains("list 1:"), lines.all().toString());
            Thread.sleep(200);
            assertEquals(n, lines.all().size(), "a line after close returned");
        } finally {
            release.countDown();
            c.close();
        }
    }

    @Test
    void what_needs_abi_1_4_is_there() {
        assertTrue(Backend.get().hasObservability(), "the library in use has ABI 1.4");
        assertTrue(Logging.system().toString().contains("system"));
        List<String> names = List.of(LogLevel.values()).stream().map(Enum::name)
                .collect(Collectors.toList());
        for (String n : names) {
            System.Logger.Level.valueOf(n); // the names are System.Logger's
        }
        Predicate<Integer> mapsBack = i -> LogLevel.of(i).code() == i;
        assertTrue(mapsBack.test(1) && mapsBack.test(2) && mapsBack.test(3) && mapsBack.test(4));
    }
}
