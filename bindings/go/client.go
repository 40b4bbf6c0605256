package easdirect

/*
#include <stdlib.h>
#include <easdirect.h>

// None of these calls back into Go or keeps a pointer it was given, which lets a pick's output
// stay on the caller's stack and skips the callback bookkeeping of a cgo call.
#cgo noescape eas_select_instance
#cgo nocallback eas_select_instance
#cgo noescape eas_select_instance_excluding
#cgo nocallback eas_select_instance_excluding
#cgo nocallback eas_report_failure
#cgo nocallback eas_report_success
#cgo noescape eas_client_stats
#cgo nocallback eas_client_stats
#cgo noescape eas_client_instances
#cgo nocallback eas_client_instances
*/
import "C"

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Client discovers the instances of one service and picks one per request. It is safe for
// concurrent use: share one per service per process.
//
// Close stops discovery; the native client is freed once nothing can reach the Client any
// more, so a Close racing with any other call is safe. Methods of a nil *Client or a zero
// Client{} (not made by New or NewWithSource) return an error matching ErrClosed.
type Client struct {
	ptr     *C.eas_client
	service string // eas_client_service: "" for static:// and NewWithSource
	target  string // eas_client_target: the target, secrets removed
	names   *nameCache
	src     *source  // the source function of a NewWithSource client, else nil
	log     *logSink // where its log lines go; nil when logging is off
}

// Instance is one discovered instance of the service.
type Instance struct {
	ID     uint64 // stable for the same Host, in every process
	IP     string // textual IPv4 or IPv6 address
	Port   uint16
	Weight uint32 // the source's weight; 0 means known but never picked
	Host   string // "ip:port" or "[ipv6]:port", ready for "http://" + Host + "/api/predict/..."
}

// Stats are a client's counters.
type Stats struct {
	Generation    uint64    // instance lists published so far (changes only)
	RefreshOK     uint64    // successful discovery fetches
	RefreshFailed uint64    // fetches that kept the cache (error, bad body, nothing pickable)
	LastOK        time.Time // time of the last successful fetch; zero if none
	Instances     int       // instances in the current list
	Ejected       int       // instances ejected now
}

// Option sets one of the library's options (see the README's option table). Options win over
// the same keys given as query parameters of the target.
type Option func(*settings)

type settings struct {
	kv        [][2]string
	logger    *slog.Logger // WithLogger's
	loggerSet bool         // WithLogger was given (else slog.Default())
}

// WithOption sets a library option by its key, e.g. WithOption("discovery_path", "/x/{service}").
// An unknown key or a malformed value makes New fail with ErrInvalidArgument, naming the key.
func WithOption(key, value string) Option {
	return func(s *settings) { s.kv = append(s.kv, [2]string{key, value}) }
}

// WithRefreshInterval sets refresh_interval_ms (default 5 s, minimum 10 ms).
func WithRefreshInterval(d time.Duration) Option {
	return WithOption("refresh_interval_ms", millis(d))
}

// WithRequestTimeout sets request_timeout_ms, the timeout of one discovery fetch (default 2 s).
func WithRequestTimeout(d time.Duration) Option {
	return WithOption("request_timeout_ms", millis(d))
}

// WithFailuresBeforeEjection sets failures_before_ejection (default 1).
func WithFailuresBeforeEjection(n int) Option {
	return WithOption("failures_before_ejection", strconv.Itoa(n))
}

// WithEjectionTime sets ejection_base_ms and ejection_max_ms (defaults 10 s and 5 min): an
// instance is ejected for base, doubling on each re-ejection up to max.
func WithEjectionTime(base, max time.Duration) Option {
	return func(s *settings) {
		WithOption("ejection_base_ms", millis(base))(s)
		WithOption("ejection_max_ms", millis(max))(s)
	}
}

// WithMaxEjectionPercent sets max_ejection_percent (default 50).
func WithMaxEjectionPercent(p int) Option {
	return WithOption("max_ejection_percent", strconv.Itoa(p))
}

// WithSnapshotFile sets snapshot_file: each new list is saved there, and used at start while the
// first fetch fails.
func WithSnapshotFile(path string) Option { return WithOption("snapshot_file", path) }

// WithTLSCAFile sets tls_ca_file, a PEM file of CA certificates for eas+https:// discovery.
func WithTLSCAFile(path string) Option { return WithOption("tls_ca_file", path) }

// millis renders d in whole milliseconds, rounding up so that a positive duration stays positive.
func millis(d time.Duration) string {
	ms := d / time.Millisecond
	if d%time.Millisecond > 0 {
		ms++
	}
	return strconv.FormatInt(int64(ms), 10)
}

// New creates a client for target and starts discovery; it returns at once (see WaitReady).
//
// Targets: eas://endpoint[:port]/service (eas+https:// for TLS), static://ip:port[*weight],...
// Options may also be given as query parameters: eas://host/svc?refresh_interval_ms=1000.
func New(target string, opts ...Option) (*Client, error) {
	if abiErr != nil {
		return nil, abiErr
	}
	if err := checkString("the target", target); err != nil {
		return nil, err
	}
	copts, sink, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	if copts != nil {
		// The client holds what it needs; the log function ends once both are freed.
		defer C.eas_options_free(copts)
	}
	ctarget := C.CString(target)
	defer C.free(unsafe.Pointer(ctarget))
	var ptr *C.eas_client
	var cerr *C.eas_error
	if st := C.eas_client_new(ctarget, copts, &ptr, &cerr); st != C.EAS_STATUS_OK {
		return nil, takeError(st, cerr)
	}
	service, shown := clientNames(ptr)
	c := &Client{ptr: ptr, service: service, target: shown, names: &nameCache{}, log: sink}
	// Frees only when no goroutine can reach c, so no call on it can be running (every method
	// keeps c alive until its C call has returned).
	runtime.AddCleanup(c, freeClient, ptr)
	return c, nil
}

func freeClient(p *C.eas_client) { C.eas_client_free(p) }

// buildOptions is the eas_options of opts (to free with eas_options_free), or nil when opts set
// nothing and logging is off, with the log sink the options carry (nil when off).
func buildOptions(opts []Option) (*C.eas_options, *logSink, error) {
	var s settings
	for _, o := range opts {
		o(&s)
	}
	sink, maxLevel := newLogSink(s.logger, s.loggerSet)
	if len(s.kv) == 0 && sink == nil {
		return nil, nil, nil
	}
	copts := C.eas_options_new()
	if copts == nil {
		return nil, nil, &Error{Code: CodePanic, Message: "eas_options_new: out of memory"}
	}
	for _, kv := range s.kv {
		if err := setOption(copts, kv[0], kv[1]); err != nil {
			C.eas_options_free(copts)
			return nil, nil, err
		}
	}
	if sink != nil {
		if err := sink.attach(copts, maxLevel); err != nil {
			C.eas_options_free(copts)
			return nil, nil, err
		}
	}
	return copts, sink, nil
}

func setOption(o *C.eas_options, key, value string) error {
	if err := checkString(fmt.Sprintf("option key %q", key), key); err != nil {
		return err
	}
	if err := checkString(fmt.Sprintf("the value of option %q", key), value); err != nil {
		return err
	}
	ckey, cvalue := C.CString(key), C.CString(value)
	defer C.free(unsafe.Pointer(ckey))
	defer C.free(unsafe.Pointer(cvalue))
	var cerr *C.eas_error
	if st := C.eas_options_set(o, ckey, cvalue, &cerr); st != C.EAS_STATUS_OK {
		return takeError(st, cerr)
	}
	return nil
}

// checkString refuses what the C ABI's NUL-terminated UTF-8 cannot carry, naming what: a NUL
// (C would read the string only up to it) or bytes that are not UTF-8.
func checkString(what, s string) error {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return &Error{Code: CodeInvalidArgument,
			Message: fmt.Sprintf("%s contains a NUL byte (at byte %d)", what, i)}
	}
	if !utf8.ValidString(s) {
		return &Error{Code: CodeInvalidArgument, Message: what + " is not valid UTF-8"}
	}
	return nil
}

// errNoClient is what every method of a nil *Client, or of a Client that New or NewWithSource
// did not make (a zero Client{}), returns: it matches ErrClosed, as for a closed client.
var errNoClient = &Error{Code: CodeClosed,
	Message: "the Client is nil or was not made by New or NewWithSource"}

// missing reports whether c is nil or a zero Client{}: then the method returns errNoClient.
func (c *Client) missing() bool { return c == nil || c.ptr == nil }

// Service is the service the client's target names, as the library reads it: the service of
// an eas:// or nacos:// target, the name of a dns:// one; "" for static:// and NewWithSource
// clients (and a nil or zero Client). It is the URL host that Transport rewrites, and still
// answers after Close.
func (c *Client) Service() string {
	if c == nil {
		return ""
	}
	return c.service
}

// waitSlice bounds each blocking wait in C, so that WaitReady notices a cancelled context soon.
const waitSlice = 25 * time.Millisecond

// WaitReady waits until an instance list is known (fetched, or loaded from the snapshot file),
// or until ctx is done. It does not return early on a failed fetch: on ctx's end it returns an
// error that matches both ctx.Err() and ErrTimeout and carries the last fetch error (for a
// NewWithSource client, it also wraps the error the function returned).
func (c *Client) WaitReady(ctx context.Context) error {
	if c.missing() {
		return errNoClient
	}
	start := time.Now()
	for {
		wait := waitSlice
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, max(time.Until(dl), 0))
		}
		if ctx.Err() != nil {
			wait = 0 // still check once: a client that is ready is ready
		}
		var cerr *C.eas_error
		st := C.eas_client_wait_ready(c.ptr, C.uint32_t(wait/time.Millisecond), &cerr)
		runtime.KeepAlive(c)
		if st == C.EAS_STATUS_OK {
			return nil
		}
		err := takeError(st, cerr)
		if st != C.EAS_STATUS_TIMEOUT {
			return err
		}
		if ctx.Err() != nil {
			if cause := c.sourceErr(); cause != nil {
				return fmt.Errorf("easdirect: not ready after %v: %w; last check: %w: %w",
					time.Since(start).Round(time.Millisecond), ctx.Err(), err, cause)
			}
			return fmt.Errorf("easdirect: not ready after %v: %w; last check: %w",
				time.Since(start).Round(time.Millisecond), ctx.Err(), err)
		}
	}
}

// Select picks one instance by smooth weighted round-robin, skipping ejected ones. It takes no
// lock and, on the common path, allocates nothing. ErrNoInstance before the first list is known.
func (c *Client) Select() (Instance, error) {
	if c.missing() {
		return Instance{}, errNoClient
	}
	var out C.eas_instance
	st := C.eas_select_instance(c.ptr, &out)
	runtime.KeepAlive(c)
	if st != C.EAS_STATUS_OK {
		return Instance{}, statusError(st)
	}
	return c.names.instance(c, &out), nil
}

// SelectExcluding is Select that never returns one of ids (for a retry on a different
// instance); ErrNoInstance when nothing else is left.
func (c *Client) SelectExcluding(ids ...uint64) (Instance, error) {
	if c.missing() {
		return Instance{}, errNoClient
	}
	var out C.eas_instance
	var p *C.uint64_t
	if len(ids) > 0 {
		p = (*C.uint64_t)(unsafe.Pointer(&ids[0]))
	}
	st := C.eas_select_instance_excluding(c.ptr, p, C.size_t(len(ids)), &out)
	runtime.KeepAlive(c)
	runtime.KeepAlive(ids)
	if st != C.EAS_STATUS_OK {
		return Instance{}, statusError(st)
	}
	return c.names.instance(c, &out), nil
}

// ReportFailure reports a failed call to instance id: after failures_before_ejection
// consecutive failures it is ejected for a while. ErrUnknownInstance (harmless) when id is no
// longer listed.
func (c *Client) ReportFailure(id uint64) error {
	if c.missing() {
		return errNoClient
	}
	st := C.eas_report_failure(c.ptr, C.uint64_t(id))
	runtime.KeepAlive(c)
	return statusError(st)
}

// ReportSuccess reports a successful call to instance id: it resets its failure count and
// ejection doubling (an ejection in force runs its course).
func (c *Client) ReportSuccess(id uint64) error {
	if c.missing() {
		return errNoClient
	}
	st := C.eas_report_success(c.ptr, C.uint64_t(id))
	runtime.KeepAlive(c)
	return statusError(st)
}

// Instances lists every known instance, ejected or not, weight 0 included; empty before the
// first list is known.
func (c *Client) Instances() ([]Instance, error) {
	if c.missing() {
		return nil, errNoClient
	}
	raw, err := c.rawInstances()
	if err != nil {
		return nil, err
	}
	list := make([]Instance, len(raw))
	for i := range raw {
		list[i] = c.names.lookup(&raw[i])
	}
	return list, nil
}

func (c *Client) rawInstances() ([]C.eas_instance, error) {
	var n C.size_t
	st := C.eas_client_instances(c.ptr, nil, 0, &n)
	runtime.KeepAlive(c)
	for {
		switch st {
		case C.EAS_STATUS_OK:
			if n == 0 {
				return []C.eas_instance{}, nil
			}
		case C.EAS_STATUS_BUFFER_TOO_SMALL:
		default:
			return nil, statusError(st)
		}
		// The list can grow between two calls: ask again with the count the library gave.
		buf := make([]C.eas_instance, n)
		st = C.eas_client_instances(c.ptr, &buf[0], C.size_t(len(buf)), &n)
		runtime.KeepAlive(c)
		if st == C.EAS_STATUS_OK {
			return buf[:n], nil
		}
	}
}

// Stats returns the client's counters.
func (c *Client) Stats() (Stats, error) {
	if c.missing() {
		return Stats{}, errNoClient
	}
	var s C.eas_stats
	st := C.eas_client_stats(c.ptr, &s)
	runtime.KeepAlive(c)
	if st != C.EAS_STATUS_OK {
		return Stats{}, statusError(st)
	}
	out := Stats{
		Generation:    uint64(s.generation),
		RefreshOK:     uint64(s.refresh_ok),
		RefreshFailed: uint64(s.refresh_failed),
		Instances:     int(s.instances),
		Ejected:       int(s.ejected),
	}
	if s.last_ok_unix_ms != 0 {
		out.LastOK = time.UnixMilli(int64(s.last_ok_unix_ms))
	}
	return out, nil
}

// LastError is the last discovery fetch's error (ErrDiscoveryFailed, naming the URL and HTTP
// status), or nil when the last fetch succeeded or none has finished yet. For a NewWithSource
// client whose function returned an error or panicked, it wraps that error too.
func (c *Client) LastError() error {
	if c.missing() {
		return errNoClient
	}
	var cerr *C.eas_error
	st := C.eas_client_last_error(c.ptr, &cerr)
	runtime.KeepAlive(c)
	if st == C.EAS_STATUS_OK {
		return nil
	}
	err := takeError(st, cerr)
	if Code(st) == CodeDiscoveryFailed {
		if cause := c.sourceErr(); cause != nil {
			if e, ok := err.(*Error); ok {
				return &Error{Code: e.Code, Message: e.Message + ": " + cause.Error(), cause: cause}
			}
		}
	}
	return err
}

// sourceErr is the error the NewWithSource function returned (or its panic) at the last fetch,
// if that fetch failed so; nil otherwise.
func (c *Client) sourceErr() error {
	if c.src == nil {
		return nil
	}
	if p := c.src.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Close stops discovery and ends subscriptions (their callbacks have returned when Close
// returns, unless it is called from inside one); later calls return ErrClosed. No log line of
// the client reaches its logger after Close returns (it waits for one being handled, so a
// slog.Handler must not close a client that logs through it). It is safe to call more than
// once and concurrently with any other call. The memory is released once the Client is
// unreachable.
func (c *Client) Close() error {
	if c.missing() {
		return errNoClient
	}
	C.eas_client_close(c.ptr)
	runtime.KeepAlive(c)
	if c.log != nil {
		// The library sends no line of c from now on; lines still queued in Go are dropped.
		c.log.close()
	}
	return nil
}
