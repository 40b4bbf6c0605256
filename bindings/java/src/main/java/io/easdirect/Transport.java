package io.easdirect;

/** What delivers a client's instance list now ({@link EasClient#transport()}). */
public enum Transport {
    /** The client polls its source. */
    POLL,
    /** A Nacos push stream (gRPC) delivers the list; polling is a safety net. */
    PUSH
}
