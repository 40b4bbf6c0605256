package io.easdirect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Where the native library is looked up, and what a mismatched one says. */
class LoadingTest {
    private static final String PROPERTY = "easdirect.test.library";

    @Test
    void the_system_property_comes_first_then_java_library_path_then_the_jar(@TempDir Path dir)
            throws Exception {
        String savedPath = System.getProperty("java.library.path");
        try {
            Path inPath = Files.createFile(dir.resolve(System.mapLibraryName("easdirect")));
            Path named = Files.createFile(dir.resolve("named.so"));

            System.setProperty(PROPERTY, named.toString());
            NativeLibrary lib = NativeLibrary.find("easdirect", PROPERTY);
            assertEquals(named.toAbsolutePath(), lib.path);
            assertEquals("-D" + PROPERTY, lib.origin);

            System.clearProperty(PROPERTY);
            System.setProperty("java.library.path", "/nonexistent:" + dir);
            lib = NativeLibrary.find("easdirect", PROPERTY);
            assertEquals(inPath.toAbsolutePath(), lib.path);
            assertEquals("java.library.path", lib.origin);

            System.setProperty("java.library.path", "/nonexistent");
            lib = NativeLibrary.find("easdirect", PROPERTY);
            assertTrue(lib.path.toString().endsWith(
                    "io/easdirect/native/linux-x86_64/libeasdirect.so"), lib.toString());
        } finally {
            System.clearProperty(PROPERTY);
            System.setProperty("java.library.path", savedPath);
        }
    }

    @Test
    void the_environment_twins_come_after_their_properties(@TempDir Path dir) throws Exception {
        String pathProperty = PROPERTY + ".path";
        Path named = Files.createFile(dir.resolve("named.so"));
        Path inDir = Files.createFile(dir.resolve(System.mapLibraryName("easdirect")));
        Map<String, String> env = new java.util.HashMap<>();
        assertEquals("EASDIRECT_TEST_LIBRARY", NativeLibrary.envName(PROPERTY));
        assertEquals("EASDIRECT_LIBRARY_PATH", NativeLibrary.envName(NativeLibrary.PATH_PROPERTY));
        try {
            env.put("EASDIRECT_TEST_LIBRARY", named.toString());
            NativeLibrary lib = NativeLibrary.find("easdirect", PROPERTY, pathProperty, env::get);
            assertEquals(named.toAbsolutePath(), lib.path);
            assertEquals("EASDIRECT_TEST_LIBRARY", lib.origin);

            System.setProperty(PROPERTY, inDir.toString()); // the property wins
            lib = NativeLibrary.find("easdirect", PROPERTY, pathProperty, env::get);
            assertEquals("-D" + PROPERTY, lib.origin);
            System.clearProperty(PROPERTY);

            env.clear();
            env.put("EASDIRECT_TEST_LIBRARY_PATH", "/nonexistent:" + dir);
            lib = NativeLibrary.find("easdirect", PROPERTY, pathProperty, env::get);
            assertEquals(inDir.toAbsolutePath(), lib.path);
            assertEquals("EASDIRECT_TEST_LIBRARY_PATH", lib.origin);

            System.setProperty(pathProperty, "/nonexistent"); // the property wins, then the jar
            lib = NativeLibrary.find("easdirect", PROPERTY, pathProperty, env::get);
            assertTrue(lib.path.toString().endsWith(
                    "io/easdirect/native/linux-x86_64/libeasdirect.so"), lib.toString());
            System.setProperty(pathProperty, dir.toString());
            lib = NativeLibrary.find("easdirect", PROPERTY, pathProperty, env::get);
            assertEquals("-D" + pathProperty, lib.origin);

            env.clear();
            env.put("EASDIRECT_TEST_LIBRARY", "/nonexistent/libeasdirect.so");
            UnsatisfiedLinkError e = assertThrows(UnsatisfiedLinkError.class,
                    () -> NativeLibrary.find("easdirect", PROPERTY, pathProperty, env::get));
            assertTrue(e.getMessage().startsWith("EASDIRECT_TEST_LIBRARY=/nonexistent"),
                    e.getMessage());
        } finally {
            System.clearProperty(PROPERTY);
            System.clearProperty(pathProperty);
        }
    }

    @Test
    void a_missing_file_names_the_property_and_where_else_it_looked() {
        System.setProperty(PROPERTY, "/nonexistent/libeasdirect.so");
        try {
            UnsatisfiedLinkError e = assertThrows(UnsatisfiedLinkError.class,
                    () -> NativeLibrary.find("easdirect", PROPERTY));
            assertTrue(e.getMessage().contains("-D" + PROPERTY + "=/nonexistent"), e.getMessage());
        } finally {
            System.clearProperty(PROPERTY);
        }
        UnsatisfiedLinkError e = assertThrows(UnsatisfiedLinkError.class,
                () -> NativeLibrary.find("no_such_library", PROPERTY));
        assertTrue(e.getMessage().contains("java.library.path"), e.getMessage());
        assertTrue(e.getMessage().contains("the jar"), e.getMessage());
    }

    /** A backend that reports another ABI; nothing else is called. */
    private static final class OtherAbi extends Backend {
        private final int abi;

        OtherAbi(int abi) {
            this.abi = abi;
        }

        @Override
        String name() {
            return "fake";
        }

        @Override
        NativeLibrary library() {
            return Backend.get().library();
        }

        @Override
        String version() {
            return "9.9.9";
        }

        @Override
        int abiVersion() {
            return abi;
        }

        @Override
        String statusString(int status) {
            return "";
        }

        @Override
        NativeClient open(String target, Map<String, String> options, long logToken,
                int logLevel) {
            throw new UnsupportedOperationException();
        }

        @Override
        NativeClient openSource(long token, Map<String, String> options, long logToken,
                int logLevel) {
            throw new UnsupportedOperationException();
        }
    }

    @Test
    void a_library_of_another_major_abi_is_refused_with_what_to_do() {
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> Backend.checkAbi(new OtherAbi(2 << 16)));
        assertTrue(e.getMessage().contains("has ABI 2.0"), e.getMessage());
        assertTrue(e.getMessage().contains("needs ABI 1.3"), e.getMessage());
        assertTrue(e.getMessage().contains("9.9.9"), e.getMessage());
        Backend.checkAbi(new OtherAbi(1 << 16 | 7)); // a newer minor is fine
        Backend.checkAbi(new OtherAbi(1 << 16 | 3));
    }

    @Test
    void a_library_of_an_older_minor_abi_is_refused() {
        // 1.2 has no eas_client_transport (EasClient.transport).
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> Backend.checkAbi(new OtherAbi(1 << 16 | 2)));
        assertTrue(e.getMessage().contains("has ABI 1.2"), e.getMessage());
        assertTrue(e.getMessage().contains("needs ABI 1.3"), e.getMessage());
    }

    @Test
    void logging_and_metrics_before_abi_1_4_are_refused_with_what_to_do() {
        assertTrue(new OtherAbi(1 << 16 | 4).hasObservability());
        assertTrue(new OtherAbi(1 << 16 | 9).hasObservability());
        Backend old = new OtherAbi(1 << 16 | 3);
        assertTrue(!old.hasObservability());
        UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class,
                () -> old.requireObservability("metricsText (eas_client_metrics_text)"));
        assertTrue(e.getMessage().startsWith("metricsText (eas_client_metrics_text) needs"
                + " libeasdirect ABI 1.4 or newer; 9.9.9 at "), e.getMessage());
        assertTrue(e.getMessage().contains("has ABI 1.3"), e.getMessage());
        new OtherAbi(1 << 16 | 4).requireObservability("logging"); // no exception
    }
}
