package io.easdirect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * Callbacks stop in a JVM shutdown hook: a JVM that exits mid-callback (a listener, a source's
 * fetch) exits cleanly.
 */
class ShutdownTest {
    @Test
    void exit_during_a_callback_waits_for_it_and_ends_the_subscription() throws Exception {
        String out = runChild();
        assertTrue(out.contains("callback started"), out);
        assertTrue(out.contains("callback returned"), "the hook waited for the callback: " + out);
        assertTrue(out.indexOf("exiting") < out.indexOf("callback returned"), out);
    }

    @Test
    void exit_during_a_fetch_waits_for_it_and_closes_the_source() throws Exception {
        String out = runChild("source");
        assertTrue(out.contains("fetch started"), out);
        assertTrue(out.contains("exiting 1"), out);
        assertTrue(out.contains("fetch returned"), "the hook waited for the fetch: " + out);
        assertTrue(out.indexOf("exiting") < out.indexOf("fetch returned"), out);
    }

    private static String runChild(String... args) throws Exception {
        List<String> cmd = new ArrayList<>();
        cmd.add(System.getProperty("java.home") + File.separator + "bin" + File.separator + "java");
        cmd.add("--enable-native-access=ALL-UNNAMED");
        for (String p : new String[] {"easdirect.backend", "easdirect.library",
                "easdirect.jni.library"}) {
            if (System.getProperty(p) != null) {
                cmd.add("-D" + p + "=" + System.getProperty(p));
            }
        }
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(ShutdownChild.class.getName());
        cmd.addAll(java.util.Arrays.asList(args));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        assertTrue(p.waitFor(30, TimeUnit.SECONDS), "the child exits");
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.exitValue(), out);
        assertTrue(!out.contains("hs_err") && !out.contains("fatal error"), out);
        return out;
    }
}
