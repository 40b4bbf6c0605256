package io.easdirect;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Finds a native library file, in this order:
 * <ol>
 *   <li>the path in a system property ({@code easdirect.library} for libeasdirect,
 *       {@code easdirect.jni.library} for the JNI glue): it must exist;</li>
 *   <li>each directory of {@code java.library.path};</li>
 *   <li>the copy packaged in the jar for linux-x86_64, extracted to a temporary file (in
 *       {@code easdirect.tmpdir}, else {@code java.io.tmpdir}) that is deleted once loaded.</li>
 * </ol>
 */
final class NativeLibrary {
    static final String RESOURCE_DIR = "/io/easdirect/native/linux-x86_64/";

    /** The file to load. */
    final Path path;
    /** How it was found, for messages: "-Deasdirect.library", "java.library.path", "the jar". */
    final String origin;
    private final boolean temporary;

    private NativeLibrary(Path path, String origin, boolean temporary) {
        this.path = path;
        this.origin = origin;
        this.temporary = temporary;
    }

    /** Deletes an extracted copy: once loaded, the mapping outlives the file. */
    void loaded() {
        if (temporary) {
            try {
                Files.deleteIfExists(path);
            } catch (IOException ignored) {
                // a file left in the temporary directory
            }
        }
    }

    @Override
    public String toString() {
        return path + " (from " + origin + ")";
    }

    static NativeLibrary find(String name, String property) {
        List<String> tried = new ArrayList<>();
        String configured = System.getProperty(property);
        if (configured != null && !configured.isEmpty()) {
            Path p = Paths.get(configured).toAbsolutePath();
            if (!Files.isRegularFile(p)) {
                throw new UnsatisfiedLinkError("-D" + property + "=" + configured
                        + ": no such file (it must name the " + System.mapLibraryName(name)
                        + " file to load)");
            }
            return new NativeLibrary(p, "-D" + property, false);
        }
        String file = System.mapLibraryName(name);
        String libraryPath = System.getProperty("java.library.path", "");
        for (String dir : libraryPath.split(File.pathSeparator)) {
            if (dir.isEmpty()) {
                continue;
            }
            Path p = Paths.get(dir, file).toAbsolutePath();
            if (Files.isRegularFile(p)) {
                return new NativeLibrary(p, "java.library.path", false);
            }
        }
        tried.add("-D" + property + " (not set)");
        tried.add("java.library.path (" + libraryPath + ")");
        if (isLinuxX8664()) {
            URL url = NativeLibrary.class.getResource(RESOURCE_DIR + file);
            if (url != null) {
                return fromResource(url, file);
            }
            tried.add("the jar (" + RESOURCE_DIR + file + " is missing)");
        } else {
            tried.add("the jar (it carries linux-x86_64 only; this is " + System.getProperty("os.name")
                    + "/" + System.getProperty("os.arch") + ")");
        }
        throw new UnsatisfiedLinkError(file + " not found; looked in: " + String.join(", ", tried)
                + ". Build it with `cargo build --release -p easdirect` and pass -D" + property
                + "=/path/to/" + file);
    }

    private static boolean isLinuxX8664() {
        String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
        String arch = System.getProperty("os.arch", "").toLowerCase(Locale.ROOT);
        return os.startsWith("linux") && (arch.equals("amd64") || arch.equals("x86_64"));
    }

    private static NativeLibrary fromResource(URL url, String file) {
        if ("file".equals(url.getProtocol())) { // an exploded build (target/classes): no copy
            try {
                return new NativeLibrary(Paths.get(url.toURI()), "the classpath", false);
            } catch (URISyntaxException | IllegalArgumentException e) {
                // fall through to a copy
            }
        }
        String dir = System.getProperty("easdirect.tmpdir", System.getProperty("java.io.tmpdir"));
        Path tmp = null;
        try (InputStream in = url.openStream()) {
            tmp = Files.createTempFile(Paths.get(dir), file.replace(".so", "-"), ".so");
            Files.copy(in, tmp, StandardCopyOption.REPLACE_EXISTING);
            return new NativeLibrary(tmp, "the jar", true);
        } catch (IOException e) {
            if (tmp != null) {
                try {
                    Files.deleteIfExists(tmp);
                } catch (IOException ignored) {
                    // nothing more to do
                }
            }
            UnsatisfiedLinkError err = new UnsatisfiedLinkError("extracting " + file
                    + " from the jar into " + dir + " failed: " + e
                    + " (set -Deasdirect.tmpdir to a writable directory that allows execution)");
            err.initCause(e);
            throw err;
        }
    }
}
