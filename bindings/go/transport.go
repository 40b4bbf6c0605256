package easdirect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// TransportOption configures the RoundTripper that Client.Transport returns.
type TransportOption func(*transport)

// DefaultAttemptTimeout is how long one attempt waits for its response headers unless
// WithAttemptTimeout says otherwise.
const DefaultAttemptTimeout = 60 * time.Second

// WithHostAliases makes the transport also rewrite requests to these hosts, in addition to the
// service name of the client's target. Hosts are compared as the service name is: without
// port, case-insensitively, with '_' and '-' alike. A static:// target has no service name, so
// it needs an alias.
func WithHostAliases(hosts ...string) TransportOption {
	return func(t *transport) {
		for _, h := range hosts {
			if h != "" {
				t.hosts = append(t.hosts, foldHost(h))
			}
		}
	}
}

// WithScheme sets the scheme of rewritten URLs: "http" (the default) or "https". Any other
// value makes every rewritten request fail with an error naming it.
func WithScheme(scheme string) TransportOption {
	return func(t *transport) { t.scheme = strings.ToLower(scheme) }
}

// WithToken sets the EAS service token, sent as the Authorization header of rewritten
// requests that carry none. It is never printed: not by the transport's String, nor in any
// error.
func WithToken(token string) TransportOption {
	return func(t *transport) { t.token = token }
}

// WithLoadReports turns load reports on (the default) or off. On, rewritten requests carry
// Endpoint-Load-Metrics-Format: text (unless they name a format themselves) and the answer's
// Endpoint-Load-Metrics header, as vLLM and Triton send it, reaches the library, which
// balances on the instances' queues. Off, nothing is asked and only Retry-After is read.
func WithLoadReports(on bool) TransportOption {
	return func(t *transport) { t.loadReports = on }
}

// WithMaxAttempts caps the attempts of one request at n, on top of the client's max_attempts
// option (default 3), which the library applies to every call: the smaller of the two holds.
// 1 turns retries off.
//
// Deprecated: set the client's max_attempts option (WithOption("max_attempts", "2")), which
// every helper of every binding obeys.
func WithMaxAttempts(n int) TransportOption {
	return func(t *transport) { t.maxAttempts = max(n, 1) }
}

// WithIdempotentRetriesOnly retries only requests that are idempotent: GET, HEAD, OPTIONS,
// PUT, DELETE, or any request with an Idempotency-Key header. Other requests (POST, PATCH)
// begin their call with CallNotIdempotent: they are retried only when nothing was sent (a
// refused connection). By default every method is retried, since EAS predict calls are POSTs
// that the official SDKs retry too.
func WithIdempotentRetriesOnly() TransportOption {
	return func(t *transport) { t.idempotentOnly = true }
}

// WithAttemptTimeout bounds each attempt until its response headers arrive (default
// DefaultAttemptTimeout, 60 s; 0 or less: no bound but the request's context). An attempt that
// times out counts as a failure of its instance and the request moves on to another one, so a
// hung instance costs one attempt timeout, not the whole wait. The body that follows the
// headers is bounded by the request's context only. Keep it below an http.Client.Timeout, so
// that a retry has time to run.
func WithAttemptTimeout(d time.Duration) TransportOption {
	return func(t *transport) { t.attemptTimeout = d }
}

// WithAffinityHeader keys each request by the value of its header name (e.g. "X-Session-Id"):
// requests with the same value go to the same instance while its load allows (consistent
// hashing with bounded loads), and requests without the header are balanced by load. It
// replaces an earlier WithAffinityKey.
func WithAffinityHeader(name string) TransportOption {
	return func(t *transport) {
		t.affinityKey = nil
		t.affinityHeader = http.CanonicalHeaderKey(name)
		if name == "" {
			t.affinityHeader = ""
		}
	}
}

// WithAffinityKey keys each request by what key returns for it (nil or empty: no key), e.g. a
// session id read from the body's JSON or a hash of the prompt's prefix. It runs on the
// caller's goroutine before the first attempt, and must not read the request's body. It
// replaces an earlier WithAffinityHeader.
func WithAffinityKey(key func(*http.Request) []byte) TransportOption {
	return func(t *transport) {
		t.affinityHeader = ""
		t.affinityKey = key
	}
}

type transport struct {
	c              *Client
	base           http.RoundTripper
	traced         bool     // base is an *http.Transport, which calls httptrace's GotConn
	hosts          []string // folded by foldHost
	scheme         string
	token          string
	loadReports    bool
	maxAttempts    int // 0: only the client's max_attempts
	idempotentOnly bool
	attemptTimeout time.Duration
	affinityHeader string
	affinityKey    func(*http.Request) []byte
}

// Transport returns an http.RoundTripper that sends requests addressed to the service to its
// instances, and passes every other request to base unchanged (base nil means
// http.DefaultTransport). A request is the service's when its URL host, without port, is the
// client's service name (Client.Service) or an alias given with WithHostAliases, compared
// case-insensitively and with '_' and '-' alike ('_' is not valid in a host name, and EAS
// service names hold it). Its URL becomes http://{instance.Host} (https with WithScheme), with
// the same path and query.
//
// Each such request drives one Call: the library picks every attempt's instance (by load, or
// by affinity with WithAffinityHeader or WithAffinityKey) and decides whether to retry, as it
// does for every binding's helper; the transport only does the I/O:
//   - an answer whose headers arrived is recorded with its status (a 429, a 5xx, a 503 with
//     Retry-After: retried elsewhere; others returned), a refused connection or a failed TLS
//     handshake as nothing sent, no headers within the attempt timeout (WithAttemptTimeout,
//     default 60 s) as a timeout (as nothing sent while still connecting), any other error
//     as a reset, the request's cancellation as the caller's (it ends the call, and nothing
//     counts against the instance). With an *http.Transport base, whether the connection was
//     up tells nothing sent from a reset; with another base, the error's type does;
//   - the attempt stays in flight (the instance counts as busy) until the response body is
//     read to its end or closed, so that a streamed LLM answer is balanced as running;
//     a body cut by the instance counts as its failure;
//   - a retry happens only before the response is returned; a retried attempt's response is
//     drained and closed; the body is replayed whole on every attempt: through
//     Request.GetBody (which http.NewRequest sets for bytes.Buffer, bytes.Reader and
//     strings.Reader bodies), or read again from where it stood when it is an *os.File of
//     a regular file; any other body is retried only while none of it was read (a refused
//     connection), else the caller gets the answer of its one attempt;
//   - when no attempt got an answer, the error of the last one (wrapped; errors.Is matches
//     context.Canceled, context.DeadlineExceeded for a timeout, and net.Error's Timeout says
//     so); with no instance to try, an error matching ErrNoInstance (ErrClosed after Close);
//   - an answer is never turned into an error afterwards, even when the client was closed
//     meanwhile.
//
// Rewritten requests carry the service token (WithToken) as Authorization when they have
// none, and ask for load reports unless WithLoadReports(false).
func (c *Client) Transport(base http.RoundTripper, opts ...TransportOption) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	_, traced := base.(*http.Transport)
	t := &transport{c: c, base: base, traced: traced, scheme: "http", loadReports: true,
		attemptTimeout: DefaultAttemptTimeout}
	if svc := c.Service(); svc != "" { // a nil Client has none (aliased requests fail: ErrClosed)
		t.hosts = append(t.hosts, foldHost(svc))
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

// String describes the transport without its token.
func (t *transport) String() string {
	return fmt.Sprintf("easdirect.Transport{hosts: %q, scheme: %s, token set: %t}",
		t.hosts, t.scheme, t.token != "")
}

// GoString is String, so that %#v prints no token either.
func (t *transport) GoString() string { return t.String() }

// foldHost lower-cases h and makes '_' a '-'.
func foldHost(h string) string {
	return strings.ReplaceAll(strings.ToLower(h), "_", "-")
}

// hostIs reports whether host equals folded (see foldHost) without allocating.
func hostIs(host, folded string) bool {
	if len(host) != len(folded) {
		return false
	}
	for i := 0; i < len(host); i++ {
		b := host[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		} else if b == '_' {
			b = '-'
		}
		if b != folded[i] {
			return false
		}
	}
	return true
}

func (t *transport) matches(req *http.Request) bool {
	if req.URL == nil {
		return false
	}
	host := req.URL.Hostname()
	for _, h := range t.hosts {
		if hostIs(host, h) {
			return true
		}
	}
	return false
}

// idempotent is the DESIGN.md list: GET, HEAD, OPTIONS, PUT, DELETE, or an Idempotency-Key.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	_, ok := req.Header["Idempotency-Key"]
	return ok
}

func (t *transport) keyOf(req *http.Request) []byte {
	if t.affinityKey != nil {
		return t.affinityKey(req)
	}
	if t.affinityHeader != "" {
		if v := req.Header[t.affinityHeader]; len(v) > 0 && v[0] != "" {
			return []byte(v[0])
		}
	}
	return nil
}

// discard closes a response we will not return, reading a little of it first so that its
// connection can be reused.
func discard(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

// Headers passed to the core, and asked for.
const loadFormatHeader = "Endpoint-Load-Metrics-Format"

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.matches(req) {
		return t.base.RoundTrip(req)
	}
	body := newBodySource(req)
	if t.scheme != "http" && t.scheme != "https" {
		body.close()
		return nil, fmt.Errorf("easdirect: WithScheme(%q): the scheme must be http or https", t.scheme)
	}
	var flags []CallOption
	if t.idempotentOnly && !idempotent(req) {
		flags = append(flags, CallNotIdempotent())
	}
	call, err := t.c.Call(t.keyOf(req), flags...)
	if err != nil {
		body.close()
		return nil, fmt.Errorf("easdirect: cannot begin a call of %s for %s %s: %w",
			req.URL.Host, req.Method, req.URL.Path, err)
	}
	var pending *http.Response // a retried attempt's answer, drained once the next one starts
	var lastErr error
	for attempt := 1; ; attempt++ {
		inst, err := call.Next()
		if err != nil {
			if pending != nil { // the client was closed meanwhile: an answer stays an answer
				return t.deliver(req, pending, call, body, nil), nil
			}
			call.Close()
			body.close()
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, fmt.Errorf("easdirect: cannot pick an instance of %s for %s %s: %w",
				req.URL.Host, req.Method, req.URL.Path, err)
		}
		if pending != nil {
			discard(pending)
			pending = nil
		}
		resp, cancel, outcome, err := t.attempt(req, inst, body, attempt)
		lastErr = nil
		status := 0
		var header http.Header
		if err == nil {
			status, header = resp.StatusCode, resp.Header
			status = min(max(status, 100), 599)
			if !t.loadReports {
				header = onlyRetryAfter(header)
			}
		}
		retry, _ := call.Record(outcome, status, header)
		if retry && callerDone(req) == nil && (t.maxAttempts == 0 || attempt < t.maxAttempts) &&
			body.rewind(outcome) {
			if err == nil {
				pending = resp
				resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
			} else {
				cancel()
				lastErr = attemptError(req, inst, attempt, outcome, err)
			}
			continue
		}
		if err != nil {
			cancel()
			call.Close()
			body.close()
			return nil, attemptError(req, inst, attempt, outcome, err)
		}
		return t.deliver(req, resp, call, body, cancel), nil
	}
}

// deliver hands resp to the caller: its body ends the call when read to its end or closed.
func (t *transport) deliver(req *http.Request, resp *http.Response, call *Call, body *bodySource, cancel context.CancelFunc) *http.Response {
	resp.Body = &callBody{rc: resp.Body, req: req, call: call, body: body, cancel: cancel}
	return resp
}

func onlyRetryAfter(h http.Header) http.Header {
	if v, ok := h[retryAfterHeader]; ok {
		return http.Header{retryAfterHeader: v}
	}
	return nil
}

// rewrite is the attempt's request: the instance's URL, the token, the load-report ask, the
// body to send.
func (t *transport) rewrite(ctx context.Context, req *http.Request, inst Instance, body *bodySource, attempt int) *http.Request {
	out := req.Clone(ctx)
	out.URL.Scheme = t.scheme
	out.URL.Host = inst.Host
	out.Host = ""
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	if t.token != "" {
		if _, ok := out.Header["Authorization"]; !ok {
			out.Header["Authorization"] = []string{t.token}
		}
	}
	if t.loadReports {
		if _, ok := out.Header[loadFormatHeader]; !ok {
			out.Header[loadFormatHeader] = []string{"text"}
		}
	}
	body.set(out, attempt)
	return out
}

// attempt sends req to inst (its attempt-th attempt), bounded by the attempt timeout until the
// response headers arrive, and says how it went. cancel ends the attempt's context: once the
// response body is done with, or at once for an error.
func (t *transport) attempt(req *http.Request, inst Instance, body *bodySource, attempt int) (*http.Response, context.CancelFunc, Outcome, error) {
	ctx := req.Context()
	actx, cancel := context.WithCancel(ctx)
	var conn *atomic.Bool
	if t.traced {
		conn = new(atomic.Bool)
		actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { conn.Store(true) },
		})
	}
	var timer *time.Timer
	if t.attemptTimeout > 0 {
		timer = time.AfterFunc(t.attemptTimeout, cancel)
	}
	resp, err := t.base.RoundTrip(t.rewrite(actx, req, inst, body, attempt))
	if timer != nil && !timer.Stop() {
		// The timer fired: the attempt timed out, whatever the base transport says.
		if err == nil {
			discard(resp)
		}
		if callerDone(req) == nil {
			if conn != nil && !conn.Load() { // still connecting (a TCP or TLS handshake): nothing sent
				return nil, cancel, OutcomeConnectFailed, &attemptTimeoutError{d: t.attemptTimeout, connecting: true}
			}
			return nil, cancel, OutcomeTimeout, &attemptTimeoutError{d: t.attemptTimeout}
		}
		err = callerDone(req)
	}
	if err == nil {
		if resp.Body == nil { // a base transport that breaks RoundTripper's contract
			resp.Body = http.NoBody
		}
		return resp, cancel, OutcomeResponse, nil
	}
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	switch cerr := callerDone(req); {
	case errors.Is(cerr, context.Canceled):
		return nil, cancel, OutcomeCancelled, withCause(err, cerr)
	case cerr != nil: // the request's own deadline: no headers in time
		return nil, cancel, OutcomeTimeout, withCause(err, cerr)
	}
	if connectFailed(err) || (conn != nil && !conn.Load()) {
		return nil, cancel, OutcomeConnectFailed, err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() { // e.g. http.Transport.ResponseHeaderTimeout
		return nil, cancel, OutcomeTimeout, err
	}
	return nil, cancel, OutcomeReset, err
}

// callerDone is why the caller gave up on req, or nil: its context's end, or the deprecated
// Request.Cancel closed (which http.Client closes at its Timeout for a RoundTripper other than
// its own, a moment before the context's deadline passes).
func callerDone(req *http.Request) error {
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		return err
	}
	if req.Cancel != nil { // deprecated, but http.Client still closes it
		select {
		case <-req.Cancel:
			if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
				return context.DeadlineExceeded
			}
			return context.Canceled
		default:
		}
	}
	return nil
}

// withCause makes err match cause too (a base transport may report a cancelled request in its
// own words).
func withCause(err, cause error) error {
	if errors.Is(err, cause) {
		return err
	}
	return fmt.Errorf("%w (%w)", cause, err)
}

// connectFailed reports whether err says that nothing was sent: no connection, or no TLS.
func connectFailed(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	var rh tls.RecordHeaderError
	var alert tls.AlertError
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.As(err, &dns) || errors.As(err, &rh) || errors.As(err, &alert) ||
		errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) ||
		errors.As(err, &ci) || errors.Is(err, http.ErrSchemeMismatch)
}

// attemptTimeoutError is an attempt that got no response headers within its timeout.
type attemptTimeoutError struct {
	d          time.Duration
	connecting bool // it had no connection yet (TCP or TLS handshake unfinished)
}

func (e *attemptTimeoutError) Error() string {
	if e.connecting {
		return fmt.Sprintf("no connection (TCP or TLS handshake) within the attempt timeout (%v)", e.d)
	}
	return fmt.Sprintf("no response headers within the attempt timeout (%v)", e.d)
}
func (e *attemptTimeoutError) Timeout() bool   { return true }
func (e *attemptTimeoutError) Temporary() bool { return true }
func (e *attemptTimeoutError) Is(target error) bool {
	return target == context.DeadlineExceeded
}

// AttemptError is the error of a request whose last attempt got no answer: Err is that
// attempt's error (errors.Is and errors.As see through it).
type AttemptError struct {
	Method   string  // the request's method
	Path     string  // its URL path (the query is left out)
	Instance string  // host:port of the attempt's instance
	Attempt  int     // 1 for the first attempt
	Outcome  Outcome // how the library recorded it
	Err      error
}

func attemptError(req *http.Request, inst Instance, attempt int, o Outcome, err error) *AttemptError {
	return &AttemptError{Method: req.Method, Path: req.URL.Path, Instance: inst.Host,
		Attempt: attempt, Outcome: o, Err: err}
}

func (e *AttemptError) Error() string {
	return fmt.Sprintf("easdirect: %s %s on %s (attempt %d, %s): %v",
		e.Method, e.Path, e.Instance, e.Attempt, e.Outcome, e.Err)
}

// Unwrap is Err.
func (e *AttemptError) Unwrap() error { return e.Err }

// Timeout reports whether the attempt timed out (net.Error's Timeout, which url.Error asks).
func (e *AttemptError) Timeout() bool {
	if e.Outcome == OutcomeTimeout {
		return true
	}
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

// Temporary is Timeout (net.Error's deprecated method).
func (e *AttemptError) Temporary() bool { return e.Timeout() }

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

// callBody is the body of a response handed to the caller: the attempt stays in flight until
// it is read to its end (BodyDone), cut (BodyBroken) or closed early (BodyDropped).
type callBody struct {
	rc     io.ReadCloser
	req    *http.Request // the caller's: once it gave up, a cut body is its doing
	mu     sync.Mutex    // guards the end: Read and Close may run on two goroutines
	call   *Call         // nil once ended
	body   *bodySource
	cancel context.CancelFunc // nil when there is none
}

func (b *callBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		switch {
		case err == io.EOF:
			b.end(BodyDone)
		case callerDone(b.req) != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			b.end(BodyDropped) // the caller gave up (its context, http.Client.Timeout)
		default:
			b.end(BodyBroken)
		}
	}
	return n, err
}

func (b *callBody) Close() error {
	b.end(BodyDropped) // first: a Read that this Close cuts short is not the instance's fault
	err := b.rc.Close()
	if b.cancel != nil {
		b.cancel()
	}
	return err
}

// end finishes and frees the call once; its errors are ignored (the caller has its answer).
func (b *callBody) end(how Body) {
	b.mu.Lock()
	call := b.call
	b.call = nil
	b.mu.Unlock()
	if call == nil {
		return
	}
	call.Finish(how)
	call.Close()
	b.body.close()
}
