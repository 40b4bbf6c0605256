package io.easdirect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.easdirect.http.EasHttpClient;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;

/**
 * Arguments the C ABI cannot carry (a NUL, an unpaired surrogate) and null arguments, on the
 * backend under test: refused with an exception naming them, never passed on altered.
 */
class ArgumentsTest {
    private static final String TWO = "static://10.0.0.1:80,10.0.0.2:80";
    private static final EndpointSource TWO_ENDPOINTS =
            () -> List.of(Endpoint.of("10.0.0.1", 80), Endpoint.of("10.0.0.2", 80));

    /** How a client is made from a string, and what the message must name. */
    private static final class Place {
        final String names;
        final Function<String, EasClient> open;

        Place(String names, Function<String, EasClient> open) {
            this.names = names;
            this.open = open;
        }
    }

    private static Map<String, String> option(String key, String value) {
        Map<String, String> m = new LinkedHashMap<>();
        m.put(key, value);
        return m;
    }

    private static Map<String, Place> places() {
        Map<String, Place> p = new LinkedHashMap<>();
        p.put("target", new Place("the target", s -> EasClient.open(s)));
        p.put("option key", new Place("option key \"refresh_interval_ms",
                s -> EasClient.open(TWO, option(s, "100"))));
        p.put("option value", new Place("the value of option \"refresh_interval_ms\"",
                s -> EasClient.open(TWO, option("refresh_interval_ms", s))));
        p.put("source option value", new Place("the value of option \"refresh_interval_ms\"",
                s -> EasClient.fromSource(TWO_ENDPOINTS, option("refresh_interval_ms", s))));
        return p;
    }

    /** The string for each place, with {@code bad} inserted where cutting it leaves a valid one. */
    private static String withInside(String place, String bad) {
        switch (place) {
            case "target":
                return "static://10.0.0.1:80" + bad + ",10.0.0.2:80";
            case "option key":
                return "refresh_interval_ms" + bad;
            default:
                return "100" + bad;
        }
    }

    private static EasException assertInvalid(String what, Executable call) {
        EasException e = assertThrows(EasException.class, call, what);
        assertEquals(EasStatus.INVALID_ARGUMENT, e.status(), what + ": " + e.getMessage());
        return e;
    }

    @Test
    void a_nul_is_refused_naming_the_string_never_cut_short() {
        for (Map.Entry<String, Place> p : places().entrySet()) {
            String text = withInside(p.getKey(), "\0");
            int sources = Sources.live();
            EasException e = assertInvalid(p.getKey(), () -> p.getValue().open.apply(text).close());
            String m = e.getMessage();
            assertTrue(m.startsWith(p.getValue().names) && m.contains("NUL"), m);
            assertFalse(m.indexOf('\0') >= 0, "the message carries no NUL: " + m);
            assertEquals(sources, Sources.live(), "a refused source is not held");
            // C reads up to the NUL: what it would have read is valid, so only refusing helps.
            try (EasClient c = p.getValue().open.apply(text.substring(0, text.indexOf('\0')))) {
                c.waitReady(Duration.ofSeconds(5));
                assertEquals(p.getKey().equals("target") ? 1 : 2, c.instances().size());
            }
        }
    }

    @Test
    void unpaired_surrogates_are_refused_naming_the_string() {
        // UTF-8 has no form for them: the encoders would silently put '?' in their place.
        String[] unpaired = {"\uD800", "\uDC00", "\uDC00\uD800"};
        for (Map.Entry<String, Place> p : places().entrySet()) {
            for (String bad : unpaired) {
                String what = p.getKey() + " with " + escaped(bad);
                EasException e = assertInvalid(what,
                        () -> p.getValue().open.apply(withInside(p.getKey(), bad)).close());
                String m = e.getMessage();
                assertTrue(m.startsWith(p.getValue().names), what + ": " + m);
                assertTrue(m.contains("unpaired surrogate U+" + Integer.toHexString(bad.charAt(0))
                        .toUpperCase(java.util.Locale.ROOT)), what + ": " + m);
            }
        }
    }

    @Test
    void a_surrogate_pair_is_encoded_as_one_character(@TempDir Path dir) throws Exception {
        Path snapshot = dir.resolve("snap-\uD83D\uDE00.json"); // U+1F600, a pair in UTF-16
        try (EasClient c = EasClient.open(TWO, option("snapshot_file", snapshot.toString()))) {
            assertEquals(2, c.instances().size());
        }
        assertTrue(Files.isRegularFile(snapshot), "saved under its own name: "
                + Files.list(dir).map(Path::toString).reduce("", (a, b) -> a + " " + b));
    }

    private static void assertNpeNaming(String parameter, Executable call) {
        NullPointerException e = assertThrows(NullPointerException.class, call, parameter);
        assertTrue(e.getMessage() != null && e.getMessage().contains(parameter),
                parameter + ": " + e.getMessage());
    }

    @Test
    void null_arguments_throw_npe_naming_the_parameter() {
        Map<String, String> nullKey = new HashMap<>();
        nullKey.put(null, "100");
        Map<String, String> nullValue = new HashMap<>();
        nullValue.put("refresh_interval_ms", null);
        int sources = Sources.live();
        assertNpeNaming("target", () -> EasClient.open(null, Collections.emptyMap()));
        assertNpeNaming("options", () -> EasClient.open(TWO, null));
        assertNpeNaming("option key", () -> EasClient.open(TWO, nullKey));
        assertNpeNaming("refresh_interval_ms", () -> EasClient.open(TWO, nullValue));
        assertNpeNaming("source", () -> EasClient.fromSource(null));
        assertNpeNaming("options", () -> EasClient.fromSource(TWO_ENDPOINTS, null));
        assertNpeNaming("refresh_interval_ms", () -> EasClient.fromSource(TWO_ENDPOINTS, nullValue));
        assertEquals(sources, Sources.live(), "a refused source is not held");
        assertNpeNaming("ip", () -> Endpoint.of(null, 80));
        assertNpeNaming("client", () -> EasHttpClient.newBuilder(null));
        try (EasClient c = EasClient.open(TWO)) {
            assertNpeNaming("timeout", () -> c.waitReady(null));
            assertNpeNaming("listener", () -> c.subscribe(null));
            EasHttpClient.Builder b = EasHttpClient.newBuilder(c);
            assertNpeNaming("base", () -> b.httpClient(null));
            assertNpeNaming("hosts", () -> b.hostAliases((String[]) null));
            assertNpeNaming("host alias", () -> b.hostAliases("svc", null));
            assertEquals(2, c.instances().size(), "the client still works");
            c.select();
        }
    }

    private static String escaped(String s) {
        StringBuilder b = new StringBuilder();
        for (char ch : s.toCharArray()) {
            b.append(String.format("\\u%04X", (int) ch));
        }
        return b.toString();
    }
}
