package easdirect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// TransportOption configures the RoundTripper that Client.Transport returns.
type TransportOption func(*transport)

// WithHostAliases makes the transport also rewrite requests to these hosts (compared without
// port, case-insensitively), in addition to the service name of the client's target. A
// static:// target has no service name, so it needs an alias.
func WithHostAliases(hosts ...string) TransportOption {
	return func(t *transport) {
		for _, h := range hosts {
			t.hosts = append(t.hosts, strings.ToLower(h))
		}
	}
}

// WithScheme sets the scheme of rewritten URLs: "http" (the default) or "https".
func WithScheme(scheme string) TransportOption {
	return func(t *transport) { t.scheme = scheme }
}

// WithMaxAttempts sets how many instances one request may try in all (default 3; never more
// than the number of instances). 1 turns retries off.
func WithMaxAttempts(n int) TransportOption {
	return func(t *transport) { t.maxAttempts = max(n, 1) }
}

// WithIdempotentRetriesOnly retries only requests that are idempotent: GET, HEAD, OPTIONS,
// TRACE, PUT, DELETE, or any request with an Idempotency-Key or X-Idempotency-Key header.
// By default every method is retried, since EAS predict calls are POSTs.
func WithIdempotentRetriesOnly() TransportOption {
	return func(t *transport) { t.idempotentOnly = true }
}

// WithAttemptTimeout bounds each attempt until its response headers arrive (0, the default,
// leaves only the request's own context): an attempt that times out is reported as a failure
// and retried on another instance while the request's context allows.
func WithAttemptTimeout(d time.Duration) TransportOption {
	return func(t *transport) { t.attemptTimeout = d }
}

type transport struct {
	c              *Client
	base           http.RoundTripper
	hosts          []string
	scheme         string
	maxAttempts    int
	idempotentOnly bool
	attemptTimeout time.Duration
}

// Transport returns an http.RoundTripper that sends requests addressed to the service (URL host
// equal to the target's service name, or to an alias given with WithHostAliases) to an instance
// picked by Select: the URL becomes http://{instance.Host} with the same path and query. Other
// requests go to base unchanged. base nil means http.DefaultTransport.
//
// It follows one policy in every binding of libeasdirect:
//   - a connection error, a timeout, a 5xx or a 429 is reported with ReportFailure and retried on
//     a different instance; any other answer (a 4xx included) is reported with ReportSuccess
//     and returned at once;
//   - 3 attempts in all by default (WithMaxAttempts), never more than the number of instances;
//     every method is retried unless WithIdempotentRetriesOnly;
//   - the body is replayed on retry through Request.GetBody (which http.NewRequest sets for
//     bytes.Buffer, bytes.Reader and strings.Reader bodies); a body without GetBody is sent once;
//   - the request's context bounds the whole: once it is done nothing is retried (a deadline
//     counts as the instance's failure, a cancellation does not);
//   - when every attempt failed, the last answer (a 5xx or 429 response) or error is returned.
func (c *Client) Transport(base http.RoundTripper, opts ...TransportOption) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	t := &transport{c: c, base: base, scheme: "http", maxAttempts: 3}
	if svc := c.Service(); svc != "" { // a nil Client has none; its requests fail with ErrClosed
		t.hosts = append(t.hosts, strings.ToLower(svc))
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

func (t *transport) matches(req *http.Request) bool {
	if req.URL == nil {
		return false
	}
	host := req.URL.Hostname()
	for _, h := range t.hosts {
		if strings.EqualFold(host, h) {
			return true
		}
	}
	return false
}

func idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace,
		http.MethodPut, http.MethodDelete:
		return true
	}
	_, k1 := req.Header["Idempotency-Key"]
	_, k2 := req.Header["X-Idempotency-Key"]
	return k1 || k2
}

// retryable says whether an answer calls for a failure report and another instance.
func retryable(status int) bool {
	return status >= 500 || status == http.StatusTooManyRequests
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// discard closes a response we will not return, reading a little of it first so that its
// connection can be reused.
func discard(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.matches(req) {
		return t.base.RoundTrip(req)
	}
	ctx := req.Context()
	hasBody := req.Body != nil && req.Body != http.NoBody
	attempts := t.maxAttempts
	if (hasBody && req.GetBody == nil) || (t.idempotentOnly && !idempotent(req)) {
		attempts = 1
	}

	var tried [8]uint64
	excluded := tried[:0]
	var lastResp *http.Response
	var lastErr error
	bodyUsed := false
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 && ctx.Err() != nil {
			break
		}
		inst, err := t.c.SelectExcluding(excluded...)
		if err != nil {
			if attempt == 0 {
				closeBody(req)
				return nil, fmt.Errorf("easdirect: cannot pick an instance of %s for %s %s: %w",
					req.URL.Host, req.Method, req.URL.Path, err)
			}
			break // every instance has been tried
		}
		out := req.Clone(ctx)
		out.URL.Scheme = t.scheme
		out.URL.Host = inst.Host
		out.Host = ""
		if hasBody {
			if bodyUsed {
				body, err := req.GetBody()
				if err != nil {
					lastErr = fmt.Errorf("easdirect: replaying the request body: %w", err)
					break
				}
				out.Body = body
			}
			bodyUsed = true
		}
		if lastResp != nil {
			discard(lastResp)
			lastResp = nil
		}
		lastErr = nil
		excluded = append(excluded, inst.ID)

		resp, err := t.attempt(out)
		switch {
		case err != nil:
			if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
				t.c.ReportFailure(inst.ID) // the instance failed, or did not answer in time
			}
			lastErr = fmt.Errorf("easdirect: %s %s on %s (attempt %d): %w",
				req.Method, req.URL.Path, inst.Host, attempt+1, err)
		case retryable(resp.StatusCode):
			t.c.ReportFailure(inst.ID)
			lastResp = resp
		default:
			t.c.ReportSuccess(inst.ID)
			return resp, nil
		}
	}
	if hasBody && !bodyUsed {
		closeBody(req)
	}
	if lastResp != nil {
		return lastResp, nil
	}
	return nil, lastErr
}

// attempt sends one request, bounded by the attempt timeout if there is one; the timeout ends
// when the response headers arrive (the body is the caller's to read, under its own context).
func (t *transport) attempt(req *http.Request) (*http.Response, error) {
	if t.attemptTimeout <= 0 {
		return t.base.RoundTrip(req)
	}
	ctx, cancel := context.WithCancel(req.Context())
	timer := time.AfterFunc(t.attemptTimeout, cancel)
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if !timer.Stop() {
		// The timer fired: the attempt timed out, whatever error the base transport reports.
		if err == nil {
			discard(resp)
		}
		cancel()
		return nil, fmt.Errorf("no response headers within %v: %w", t.attemptTimeout, context.DeadlineExceeded)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelOnClose releases an attempt's context when its response body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// CloseIdleConnections closes the idle connections of the base transport, if it has any.
func (t *transport) CloseIdleConnections() {
	if ci, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}
