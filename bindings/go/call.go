package easdirect

/*
#include <string.h>
#include <easdirect.h>

// The most header lines Record passes: each of the two names the core reads may come more
// than once in a response.
#define EASDIRECT_MAX_HEADERS 8

// easdirect_call_record is eas_call_record over header lines laid out as "name\0value\0" n
// times in one buffer: the buffer holds no pointer, so Go can pass its own memory (even its
// stack) without pinning, and the pointer arrays live on this C stack.
static enum eas_status easdirect_call_record(eas_call *call, int32_t outcome, uint32_t status,
                                             const char *lines, size_t n, uint32_t *retry) {
	const char *names[EASDIRECT_MAX_HEADERS], *values[EASDIRECT_MAX_HEADERS];
	if (n > EASDIRECT_MAX_HEADERS) n = EASDIRECT_MAX_HEADERS;
	for (size_t i = 0; i < n; i++) {
		names[i] = lines;
		lines += strlen(lines) + 1;
		values[i] = lines;
		lines += strlen(lines) + 1;
	}
	return eas_call_record(call, outcome, status, n ? names : NULL, n ? values : NULL, n, retry);
}

// None of these calls back into Go or keeps a pointer it was given (the key is copied, the
// header lines are read during the call), so their outputs and inputs stay on the Go stack.
#cgo noescape eas_call_begin
#cgo nocallback eas_call_begin
#cgo noescape eas_call_next
#cgo nocallback eas_call_next
#cgo noescape easdirect_call_record
#cgo nocallback easdirect_call_record
#cgo nocallback eas_call_finish
#cgo nocallback eas_call_free
*/
import "C"

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"unsafe"
)

// Outcome is how an attempt went, as far as its response headers (the C ABI's eas_outcome).
// What each means for ejection, back-off, latency and retries is the table in the
// repository's DESIGN.md ("Calls"); the numbers are stable.
type Outcome int32

// The outcomes of an attempt.
const (
	// OutcomeResponse: response headers received; Record takes their HTTP status (100-599).
	OutcomeResponse Outcome = C.EAS_OUTCOME_RESPONSE
	// OutcomeConnectFailed: nothing was sent (refused, unreachable, TLS failed). The one
	// outcome a not-idempotent call retries.
	OutcomeConnectFailed Outcome = C.EAS_OUTCOME_CONNECT_FAILED
	// OutcomeTimeout: no response headers within the attempt's deadline.
	OutcomeTimeout Outcome = C.EAS_OUTCOME_TIMEOUT
	// OutcomeCancelled: the caller gave up; not the instance's fault. It ends the call.
	OutcomeCancelled Outcome = C.EAS_OUTCOME_CANCELLED
	// OutcomeReset: sent (maybe in part), then reset before response headers.
	OutcomeReset Outcome = C.EAS_OUTCOME_RESET
)

// String is the outcome's name, e.g. "connect failed".
func (o Outcome) String() string {
	switch o {
	case OutcomeResponse:
		return "response"
	case OutcomeConnectFailed:
		return "connect failed"
	case OutcomeTimeout:
		return "timeout"
	case OutcomeCancelled:
		return "cancelled"
	case OutcomeReset:
		return "reset"
	}
	return fmt.Sprintf("Outcome(%d)", int32(o))
}

// Body is how a recorded response's body ended (the C ABI's eas_body); the numbers are stable.
type Body int32

// The ends of a response body.
const (
	// BodyDone: read to its end.
	BodyDone Body = C.EAS_BODY_DONE
	// BodyBroken: cut by the instance (reset, truncated); counts as a failure of the instance.
	BodyBroken Body = C.EAS_BODY_BROKEN
	// BodyDropped: the caller stopped reading; nothing is reported.
	BodyDropped Body = C.EAS_BODY_DROPPED
)

// String is the body end's name, e.g. "broken".
func (b Body) String() string {
	switch b {
	case BodyDone:
		return "done"
	case BodyBroken:
		return "broken"
	case BodyDropped:
		return "dropped"
	}
	return fmt.Sprintf("Body(%d)", int32(b))
}

// CallOption configures one Call (see Client.Call). It is a value, not a function, so that
// beginning a call allocates nothing for its options.
type CallOption struct {
	flags C.uint32_t
}

// CallNotIdempotent marks a call whose request must not run twice: it is retried only when
// nothing was sent (OutcomeConnectFailed), never after a 5xx, a reset or a timeout.
func CallNotIdempotent() CallOption { return CallOption{flags: C.EAS_CALL_NOT_IDEMPOTENT} }

// Call is one logical request and its attempts. The library picks each attempt's instance
// (by the lb_policy option, or by affinity for a keyed call), never one the call already
// tried, and decides whether to retry; the caller does the I/O:
//
//	call, err := client.Call(nil)
//	if err != nil { return err }
//	defer call.Close()
//	for {
//		inst, err := call.Next()     // ErrNoInstance: no attempt left
//		...                          // send the request to inst.Host
//		retry, _ := call.Record(easdirect.OutcomeResponse, resp.StatusCode, resp.Header)
//		if !retry { break }          // else drain and close resp.Body, then Next
//	}
//	...                              // read the body
//	call.Finish(easdirect.BodyDone)  // the attempt leaves in-flight
//
// A Call is not safe for concurrent use: use it from one goroutine at a time (it may move
// between goroutines). It keeps its Client alive: the native client is not freed while a Call
// of it exists. Close it when done; a Call that becomes unreachable unclosed is freed by a
// cleanup, its open attempt ending as OutcomeCancelled. After Client.Close, Next returns an
// error matching ErrClosed, while Record, Finish and Close still work, so a response already
// received is never lost.
type Call struct {
	ptr     *C.eas_call // nil once closed
	client  *Client
	cleanup runtime.Cleanup
}

// callRef is what a Call's cleanup holds: the native call, and its client, so that the
// client's own cleanup (eas_client_free) cannot run before the call is freed.
type callRef struct {
	ptr    *C.eas_call
	client *Client
}

func freeCall(r callRef) {
	C.eas_call_free(r.ptr)
	runtime.KeepAlive(r.client)
}

// errNoCall is what every method of a nil, zero or closed *Call returns: it matches ErrClosed.
var errNoCall = &Error{Code: CodeClosed, Message: "the Call is nil, closed, or was not made by Client.Call"}

// Errors of Record and Finish, naming the misuse (they match ErrInvalidArgument).
var (
	errNoAttempt = &Error{Code: CodeInvalidArgument,
		Message: "Call.Record: no attempt is open (Next first, and Record once per attempt)"}
	errBadBody = &Error{Code: CodeInvalidArgument, Message: "Call.Finish: unknown Body value"}
)

// Call begins a call on c. key is the affinity key (a session id, a conversation id, a
// prompt-prefix hash; []byte(s) for a string), copied; nil or empty for none. A keyed call
// picks by consistent hashing with bounded loads whatever lb_policy says: the same key, list
// and loads give the same instance in every process.
//
// ErrClosed after Close. The Call must be closed (Call.Close) when done.
func (c *Client) Call(key []byte, opts ...CallOption) (*Call, error) {
	if c.missing() {
		return nil, errNoClient
	}
	var flags C.uint32_t
	for _, o := range opts {
		flags |= o.flags
	}
	var k *C.uint8_t
	if len(key) > 0 {
		k = (*C.uint8_t)(unsafe.Pointer(&key[0]))
	}
	var ptr *C.eas_call
	st := C.eas_call_begin(c.ptr, k, C.size_t(len(key)), flags, &ptr)
	runtime.KeepAlive(c)
	runtime.KeepAlive(key)
	if st != C.EAS_STATUS_OK {
		return nil, statusError(st)
	}
	call := &Call{ptr: ptr, client: c}
	call.cleanup = runtime.AddCleanup(call, freeCall, callRef{ptr: ptr, client: c})
	return call, nil
}

// Next is the instance for the next attempt, among those this call has not tried; it is in
// flight from now until its Record and Finish (or the next Next, or Close). An attempt still
// open (Next without Record) is recorded as OutcomeCancelled first, which ends the call; a
// recorded one's body is taken as BodyDone.
//
// ErrNoInstance when the attempt budget (the max_attempts option, default 3) is spent, no
// untried instance is left, or the last outcome ended the call; ErrClosed after the client's
// Close or the call's.
func (call *Call) Next() (Instance, error) {
	if call == nil || call.ptr == nil {
		return Instance{}, errNoCall
	}
	var out C.eas_instance
	st := C.eas_call_next(call.ptr, &out)
	runtime.KeepAlive(call)
	if st != C.EAS_STATUS_OK {
		return Instance{}, statusError(st)
	}
	return call.client.names.instance(call.client, &out), nil
}

// The response headers the core reads; Record passes only these.
const (
	loadMetricsHeader = "Endpoint-Load-Metrics"
	retryAfterHeader  = "Retry-After"
)

// Record records how the open attempt went, and says whether to retry: true when the caller
// should drain and close this attempt's response and call Next (budget and an untried
// candidate remain and the outcome is retryable), false when this answer is the call's.
//
// status is the response's HTTP status (100-599) for OutcomeResponse, ignored otherwise.
// header is the response's header (nil for none); only its Endpoint-Load-Metrics (the
// instance's load report) and Retry-After lines reach the library, matched case-insensitively.
// A recorded attempt stays in flight until Finish (or the next Next, or Close).
//
// An error matching ErrInvalidArgument when no attempt is open, for an unknown outcome or a
// status outside 100-599; ErrClosed for a closed Call. After the client's Close it still
// records, and says false.
func (call *Call) Record(outcome Outcome, status int, header http.Header) (retry bool, err error) {
	if call == nil || call.ptr == nil {
		return false, errNoCall
	}
	if outcome < OutcomeResponse || outcome > OutcomeReset {
		return false, &Error{Code: CodeInvalidArgument,
			Message: fmt.Sprintf("Call.Record: unknown outcome %d", int32(outcome))}
	}
	if outcome != OutcomeResponse {
		status = 0
	} else if status < 100 || status > 599 {
		return false, &Error{Code: CodeInvalidArgument,
			Message: fmt.Sprintf("Call.Record: HTTP status %d is outside 100-599", status)}
	}
	// The header lines as "name\0value\0" pairs, on the stack unless a report is long.
	var stack [512]byte
	lines, n := appendHeader(stack[:0], 0, header, loadMetricsHeader)
	lines, n = appendHeader(lines, n, header, retryAfterHeader)
	var p *C.char
	if len(lines) > 0 {
		p = (*C.char)(unsafe.Pointer(&lines[0]))
	}
	var r C.uint32_t
	st := C.easdirect_call_record(call.ptr, C.int32_t(outcome), C.uint32_t(status), p, C.size_t(n), &r)
	runtime.KeepAlive(call)
	runtime.KeepAlive(lines)
	switch Code(st) {
	case CodeOK:
		return r != 0, nil
	case CodeInvalidArgument:
		return false, errNoAttempt
	}
	return false, statusError(st)
}

// appendHeader appends to lines each value of the header line name as "name\0value\0" (up to
// the C side's limit of lines in all), and returns lines and the count of pairs in it. A
// value holding a NUL (which HTTP forbids) is skipped.
func appendHeader(lines []byte, n int, h http.Header, name string) ([]byte, int) {
	values, ok := h[name] // canonical, as net/http and textproto write them
	if !ok && len(h) > 0 {
		for k, v := range h { // a header map built by hand: names are case-insensitive
			if len(k) == len(name) && strings.EqualFold(k, name) {
				values = v
				break
			}
		}
	}
	for _, v := range values {
		if n == C.EASDIRECT_MAX_HEADERS {
			break
		}
		if strings.IndexByte(v, 0) >= 0 {
			continue
		}
		lines = append(lines, name...)
		lines = append(lines, 0)
		lines = append(lines, v...)
		lines = append(lines, 0)
		n++
	}
	return lines, n
}

// Finish says that the recorded attempt's body is over (see Body): the attempt leaves
// in-flight, and BodyBroken counts a failure of its instance. With nothing recorded (none
// yet, or finished already) it does nothing, so a body's Close never turns a response into an
// error. It works after the client's Close. ErrInvalidArgument for an unknown Body, ErrClosed
// for a closed Call.
func (call *Call) Finish(body Body) error {
	if call == nil || call.ptr == nil {
		return errNoCall
	}
	st := C.eas_call_finish(call.ptr, C.int32_t(body))
	runtime.KeepAlive(call)
	if Code(st) == CodeInvalidArgument {
		return errBadBody
	}
	return statusError(st)
}

// Close frees the call: an attempt not yet recorded ends as OutcomeCancelled, a recorded
// one's body as BodyDone. Later calls of its methods return ErrClosed; a second Close does
// nothing. It works after the client's Close.
func (call *Call) Close() error {
	if call == nil || call.ptr == nil {
		return nil
	}
	call.cleanup.Stop()
	C.eas_call_free(call.ptr)
	call.ptr = nil
	runtime.KeepAlive(call.client) // freed before its client can be
	return nil
}
