package io.easdirect.http;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpHeaders;
import java.net.http.HttpRequest;
import java.time.Duration;
import java.util.Optional;

/**
 * A request whose URI names a host that {@link HttpRequest#newBuilder(URI)} refuses (an EAS
 * service name with {@code _}, such as {@code http://my_svc/x}): the JDK's request to a stand-in
 * host, with that URI. What a caller with an {@code HttpRequest} of their own may send.
 */
final class NamedRequest extends HttpRequest {
    private final HttpRequest inner;
    private final URI uri;

    NamedRequest(HttpRequest.Builder builder, String uri) {
        this.uri = URI.create(uri);
        String path = this.uri.getRawPath() + (this.uri.getRawQuery() == null ? ""
                : "?" + this.uri.getRawQuery());
        this.inner = builder.uri(URI.create("http://stand-in.invalid" + path)).build();
    }

    /** {@code builder}'s request to {@code uri}, through a stand-in when the JDK refuses it. */
    static HttpRequest of(HttpRequest.Builder builder, String uri) {
        URI u = URI.create(uri);
        return u.getHost() != null ? builder.uri(u).build() : new NamedRequest(builder, uri);
    }

    @Override
    public Optional<BodyPublisher> bodyPublisher() {
        return inner.bodyPublisher();
    }

    @Override
    public String method() {
        return inner.method();
    }

    @Override
    public Optional<Duration> timeout() {
        return inner.timeout();
    }

    @Override
    public boolean expectContinue() {
        return inner.expectContinue();
    }

    @Override
    public URI uri() {
        return uri;
    }

    @Override
    public Optional<HttpClient.Version> version() {
        return inner.version();
    }

    @Override
    public HttpHeaders headers() {
        return inner.headers();
    }
}
