package io.easdirect;

/**
 * How the body of a recorded response ended ({@code eas_body}): what {@link EasCall#finish}
 * reports. Until then the attempt counts as in flight on its instance.
 */
public enum Body {
    /** Read to its end. */
    DONE(0),
    /** Cut by the instance (reset, truncated): a failure of that instance. */
    BROKEN(1),
    /** The caller stopped reading: nothing is reported. */
    DROPPED(2);

    final int code;

    Body(int code) {
        this.code = code;
    }

    /** The C ABI's number for this value. */
    public int code() {
        return code;
    }
}
