package io.easdirect;

import java.util.Locale;
import java.util.Map;

/**
 * The native calls that do not take a client, and the choice of a backend: Panama
 * (java.lang.foreign) on JDK 22 or newer, JNI before; {@code -Deasdirect.backend=panama|jni}
 * forces one. The choice is made once per class loader, on first use.
 */
abstract class Backend {
    /**
     * The ABI this binding was built for: it needs the same major and at least this minor
     * (1.1: eas_client_new_with_source, behind {@link EasClient#fromSource}; 1.2: eas_call_*,
     * eas_client_instance_stats, eas_client_service and eas_client_target).
     */
    static final int ABI_MAJOR = 1;
    static final int ABI_MINOR = 3;
    /**
     * The minor of eas_options_set_log and eas_client_metrics_text (1.4): bound only when the
     * loaded library has it; without it, an explicit logger and {@link EasClient#metricsText()}
     * are refused ({@link #requireObservability}) and the default logging is skipped.
     */
    static final int OBSERVABILITY_MINOR = 4;

    abstract String name();

    /** Where libeasdirect was loaded from. */
    abstract NativeLibrary library();

    abstract String version();

    abstract int abiVersion();

    abstract String statusString(int status);

    /**
     * eas_options_new/set, then (with {@code logLevel} 1-4) eas_options_set_log with this
     * backend's log functions and {@code logToken} (a {@link LogSinks} key) as user_data,
     * eas_client_new, eas_options_free; throws EasException. Once set_log has taken the token,
     * the library lets go of it (free_user_data) when the options are freed and the client (if
     * made) is freed.
     */
    abstract NativeClient open(String target, Map<String, String> options, long logToken,
            int logLevel);

    /**
     * eas_options_new/set (and set_log, as for {@link #open}), eas_client_new_with_source with
     * the fetch and free_user_data callbacks of this backend and {@code token} (a
     * {@link Sources} key) as user_data, eas_options_free; throws EasException. A refused
     * create takes no ownership of the token.
     */
    abstract NativeClient openSource(long token, Map<String, String> options, long logToken,
            int logLevel);

    /** Whether the loaded library has ABI 1.4's logging and metrics. */
    final boolean hasObservability() {
        int abi = abiVersion();
        return (abi >>> 16) == ABI_MAJOR && (abi & 0xffff) >= OBSERVABILITY_MINOR;
    }

    /** Throws UnsupportedOperationException, naming {@code what}, before ABI 1.4. */
    final void requireObservability(String what) {
        if (!hasObservability()) {
            int abi = abiVersion();
            throw new UnsupportedOperationException(what + " needs libeasdirect ABI "
                    + ABI_MAJOR + "." + OBSERVABILITY_MINOR + " or newer; " + version() + " at "
                    + library() + " has ABI " + (abi >>> 16) + "." + (abi & 0xffff)
                    + ": use the library that came with this jar (drop -Deasdirect.library, EASDIRECT_LIBRARY)");
        }
    }

    private static final class Holder {
        static final Object LOADED = load();
    }

    /** The backend, loaded on first use; throws UnsatisfiedLinkError if it cannot load. */
    static Backend get() {
        Object loaded = Holder.LOADED;
        if (loaded instanceof Backend) {
            return (Backend) loaded;
        }
        Throwable cause = (Throwable) loaded;
        UnsatisfiedLinkError e = new UnsatisfiedLinkError("easdirect: " + cause.getMessage());
        e.initCause(cause);
        throw e;
    }

    static int javaFeatureVersion() {
        String v = System.getProperty("java.specification.version", "8");
        if (v.startsWith("1.")) {
            v = v.substring(2);
        }
        try {
            return Integer.parseInt(v);
        } catch (NumberFormatException e) {
            return 8;
        }
    }

    private static Object load() {
        try {
            String forced = System.getProperty("easdirect.backend", "auto").trim()
                    .toLowerCase(Locale.ROOT);
            Backend b;
            switch (forced) {
                case "":
                case "auto":
                    b = javaFeatureVersion() >= 22 && hasPanama() ? panama() : new JniBackend();
                    break;
                case "panama":
                    if (javaFeatureVersion() < 22) {
                        throw new IllegalStateException("-Deasdirect.backend=panama needs JDK 22"
                                + " or newer; this is " + System.getProperty("java.version"));
                    }
                    if (!hasPanama()) {
                        throw new IllegalStateException("-Deasdirect.backend=panama: this jar was"
                                + " built without the Panama backend (built with a JDK before 22)");
                    }
                    b = panama();
                    break;
                case "jni":
                    b = new JniBackend();
                    break;
                default:
                    throw new IllegalArgumentException("-Deasdirect.backend=" + forced
                            + ": expected panama, jni or auto");
            }
            checkAbi(b);
            return b;
        } catch (Throwable t) {
            // The reason itself, not the reflection or class-initialisation wrapper.
            while ((t instanceof ExceptionInInitializerError
                    || t instanceof java.lang.reflect.InvocationTargetException)
                    && t.getCause() != null) {
                t = t.getCause();
            }
            return t;
        }
    }

    private static boolean hasPanama() {
        return Backend.class.getResource("PanamaBackend.class") != null;
    }

    private static Backend panama() throws ReflectiveOperationException {
        // Loaded by name: its class file (release 22) must not be touched on an older JDK.
        return (Backend) Class.forName("io.easdirect.PanamaBackend").getDeclaredConstructor()
                .newInstance();
    }

    static void checkAbi(Backend b) {
        int abi = b.abiVersion();
        int major = abi >>> 16;
        int minor = abi & 0xffff;
        if (major != ABI_MAJOR || minor < ABI_MINOR) {
            throw new IllegalStateException("libeasdirect " + b.version() + " at " + b.library()
                    + " has ABI " + major + "." + minor + ", but this binding needs ABI "
                    + ABI_MAJOR + "." + ABI_MINOR + " or a newer minor of major " + ABI_MAJOR
                    + ": use the library that came with this jar (drop -Deasdirect.library, EASDIRECT_LIBRARY) or"
                    + " upgrade the binding to match the library");
        }
    }
}
