package io.easdirect.http;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpHeaders;
import java.net.http.HttpRequest;
import java.time.Duration;
import java.util.Optional;

/**
 * The request of one attempt: the caller's request sent to an instance. Its headers and
 * timeout are worked out once per request ({@link EasHttpClient#attemptHeaders}), so an
 * attempt costs its URI and this object, not a new {@link HttpRequest.Builder} with every
 * header copied and checked again (the base client checks them anyway when it takes the
 * request).
 */
final class AttemptRequest extends HttpRequest {
    private final HttpRequest request;
    private final URI uri;
    private final HttpHeaders headers;
    private final Optional<BodyPublisher> body;
    private final Optional<Duration> timeout;

    AttemptRequest(HttpRequest request, URI uri, HttpHeaders headers, BodyPublisher body,
            Duration timeout) {
        this.request = request;
        this.uri = uri;
        this.headers = headers;
        this.body = Optional.of(body);
        this.timeout = Optional.of(timeout);
    }

    @Override
    public Optional<BodyPublisher> bodyPublisher() {
        return body;
    }

    @Override
    public String method() {
        return request.method();
    }

    @Override
    public Optional<Duration> timeout() {
        return timeout;
    }

    @Override
    public boolean expectContinue() {
        return request.expectContinue();
    }

    @Override
    public URI uri() {
        return uri;
    }

    @Override
    public Optional<HttpClient.Version> version() {
        return request.version();
    }

    @Override
    public HttpHeaders headers() {
        return headers;
    }

    /** As the JDK's own requests print: the URI and the method. */
    @Override
    public String toString() {
        return uri + " " + method();
    }
}
