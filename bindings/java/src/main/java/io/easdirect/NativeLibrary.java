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
import java.util.function.UnaryOperator;

/**
 * Finds a native library file, in this order:
 * <ol>
 *   <li>the path in a system property ({@code easdirect.library} for libeasdirect,
 *       {@code easdirect.jni.library} for the JNI glue), else in its environment twin
 *       ({@code EASDIRECT_LIBRARY}, {@code EASDIRECT_JNI_LIBRARY}): it must exist;</li>
 *   <li>each directory of {@code easdirect.library.path}, else of the environment's
 *       {@code EASDIRECT_LIBRARY_PATH} (a list like {@code java.library.path}, for both
 *       files);</li>
 *   <li>each directory of {@code java.library.path};</li>
 *   <li>the copy packaged in the jar for linux-x86_64, extracted to a temporary file (in
 *       {@code easdirect.tmpdir}, else {@code java.io.tmpdir}) that is deleted once loaded.</li>
 * </ol>
 */
final class NativeLibrary {
    static final String RESOURCE_DIR = "/io/easdirect/native/linux-x86_64/";

    /** The file to load. */
    final Path path;
    /**
     * How it was found, for messages: "-Deasdirect.library", "EASDIRECT_LIBRARY",
     * "-Deasdirect.library.path", "EASDIRECT_LIBRARY_PATH", "java.library.path", "the jar".
     */
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

    /** The directories of libeasdirect and the JNI glue, before java.library.path. */
    static final String PATH_PROPERTY = "easdirect.library.path";

    /** The environment twin of a property: {@code easdirect.jni.library} is EASDIRECT_JNI_LIBRARY. */
    static String envName(String property) {
        return property.toUpperCase(Locale.ROOT).replace('.', '_');
    }

    static NativeLibrary find(String name, String property) {
        return find(name, property, PATH_PROPERTY, System::getenv);
    }

    /** {@link #find(String, String)} with the directory property and the environment given. */
    static NativeLibrary find(String name, String property, String pathProperty,
            UnaryOperator<String> env) {
        List<String> tried = new ArrayList<>();
        String configured = System.getProperty(property);
        String configuredBy = "-D" + property;
        if (configured == null || configured.isEmpty()) {
            configured = env.apply(envName(property));
            configuredBy = envName(property);
        }
        if (configured != null && !configured.isEmpty()) {
            Path p = Paths.get(configured).toAbsolutePath();
            if (!Files.isRegularFile(p)) {
                throw new UnsatisfiedLinkError(configuredBy + "=" + configured
                        + ": no such file (it must name the " + System.mapLibraryName(name)
                        + " file to load)");
            }
            return new NativeLibrary(p, configuredBy, false);
        }
        String file = System.mapLibraryName(name);
        String dirs = System.getProperty(pathProperty);
        String dirsBy = "-D" + pathProperty;
        if (dirs == null || dirs.isEmpty()) {
            dirs = env.apply(envName(pathProperty));
            dirsBy = envName(pathProperty);
        }
        if (dirs != null && !dirs.isEmpty()) {
            NativeLibrary found = inDirectories(dirs, file, dirsBy);
            if (found != null) {
                return found;
            }
            tried.add(dirsBy + " (" + dirs + ")");
        }
        String libraryPath = System.getProperty("java.library.path", "");
        NativeLibrary found = inDirectories(libraryPath, file, "java.library.path");
        if (found != null) {
            return found;
        }
        tried.add(0, "-D" + property + " and " + envName(property) + " (not set)");
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

    private static NativeLibrary inDirectories(String dirs, String file, String origin) {
        for (String dir : dirs.split(File.pathSeparator)) {
            if (dir.isEmpty()) {
                continue;
            }
            Path p = Paths.get(dir, file).toAbsolutePath();
            if (Files.isRegularFile(p)) {
                return new NativeLibrary(p, origin, false);
            }
        }
        return null;
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
