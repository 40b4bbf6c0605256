package easdirect

/*
#include <stdint.h>
#include <easdirect.h>

// The builder only copies the ip: the buffer may live on the Go stack, and it never calls back.
#cgo noescape eas_source_builder_add
#cgo nocallback eas_source_builder_add

// Defined in callbacks.go (//export).
extern int32_t easdirectFetch(void *user_data, eas_source_builder *builder);
extern void easdirectOnSourceEnd(void *user_data);

// The user data is a cgo.Handle: an integer, passed as a pointer-sized value that C never
// dereferences.
static enum eas_status easdirect_new_with_source(uintptr_t handle, const eas_options *opts,
                                                 eas_client **out, eas_error **err) {
	return eas_client_new_with_source(easdirectFetch, (void *)handle, easdirectOnSourceEnd, opts,
	                                  out, err);
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"runtime/cgo"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"unsafe"
)

// Endpoint is one instance as a source function lists it (see NewWithSource).
type Endpoint struct {
	IP   string // textual IPv4 or IPv6 address: "10.0.0.1", "fd00::1" or "[fd00::1]"
	Port uint16 // not 0
	// Weight is the instance's share of the picks. 0 means known but never picked (it is
	// listed by Instances, never returned by Select): use DefaultWeight for equal shares.
	Weight uint32
}

// DefaultWeight is the weight EAS gives an instance by default; give it to every Endpoint for
// equal shares.
const DefaultWeight = 100

// liveSources counts sources whose user data the library still holds (for tests).
var liveSources atomic.Int64

// source is what the cgo.Handle given to eas_client_new_with_source as user_data refers to. The
// handle is deleted in the library's free_user_data callback, which runs exactly once, when the
// client is closed, after a fetch in progress returns. It does not refer to the Client, so that
// the Client can become unreachable (and be freed) without Close.
type source struct {
	fetch func() ([]Endpoint, error)
	// lastErr is the error of the last fetch when it failed in Go (an error or a panic), nil
	// after one that did not; LastError adds it to the library's message.
	lastErr atomic.Pointer[error]
	calls   atomic.Int64 // fetches that reached fetch (for tests)
}

// NewWithSource creates a client whose instances come from fetch instead of a target: your own
// registry (Consul, a file a sidecar writes, a company service...). fetch is called on a library
// background thread at each refresh (every refresh_interval_ms, 5 s by default, jittered),
// never two calls at once, and never after Close has returned. Everything else works as for any
// target: Select, ejection, Subscribe, WaitReady, Stats, the Transport (give it
// WithHostAliases, as for a static:// target).
//
// fetch returns the instances present now. A returned error, a panic (recovered: it never
// reaches the library) and an empty list are failed fetches: the last list is kept, and
// LastError reports it (wrapping the returned error, so that errors.Is and errors.As see it).
// Malformed endpoints (an IP that is not a textual address, port 0) are skipped; a list left with
// no positive weight keeps the last list too.
//
// fetch runs on a thread the library shares with every client of the process: bound its own
// duration (a context with a timeout for a network call), since the library cannot interrupt
// it, and Close waits for a fetch in progress. It may call any method of the client, Close
// included (the source ends once that fetch returns), but not WaitReady before the first list,
// which would wait for itself. Call Close when done: the client is freed once unreachable, but
// a fetch function that refers to the client keeps it reachable until Close.
//
// Options: the keys every target shares (WithRefreshInterval, WithEjectionTime, ...).
func NewWithSource(fetch func() ([]Endpoint, error), opts ...Option) (*Client, error) {
	if abiErr != nil {
		return nil, abiErr
	}
	if fetch == nil {
		return nil, &Error{Code: CodeNullParameter, Message: "NewWithSource: fetch is nil"}
	}
	copts, sink, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	if copts != nil {
		defer C.eas_options_free(copts)
	}
	src := &source{fetch: fetch}
	h := cgo.NewHandle(src)
	liveSources.Add(1)
	var ptr *C.eas_client
	var cerr *C.eas_error
	if st := C.easdirect_new_with_source(C.uintptr_t(h), copts, &ptr, &cerr); st != C.EAS_STATUS_OK {
		h.Delete() // a failed create takes no ownership of the user data
		liveSources.Add(-1)
		return nil, takeError(st, cerr)
	}
	service, shown := clientNames(ptr)
	c := &Client{ptr: ptr, service: service, target: shown, names: &nameCache{}, src: src,
		log: sink}
	runtime.AddCleanup(c, freeClient, ptr)
	return c, nil
}

// run is one fetch: it calls the Go function and fills the builder. It never panics.
func (s *source) run(b *C.eas_source_builder) (status Code) {
	defer func() {
		if r := recover(); r != nil { // only a bug in this function could get here
			s.fail(fmt.Errorf("easdirect: filling the instance list panicked: %v", r))
			status = CodePanic
		}
	}()
	s.calls.Add(1)
	list, panicked, err := s.call()
	if err != nil {
		s.fail(err)
		if panicked {
			return CodePanic
		}
		return CodeDiscoveryFailed
	}
	s.lastErr.Store(nil)
	// One reusable NUL-terminated copy of each IP: no allocation per endpoint.
	var buf [64]byte
	ip := buf[:0]
	for i := range list {
		e := &list[i]
		if e.Port == 0 || strings.IndexByte(e.IP, 0) >= 0 {
			continue // refused by the library too; a NUL would cut the IP short
		}
		ip = append(append(ip[:0], e.IP...), 0)
		// A malformed IP is refused with EAS_STATUS_INVALID_ARGUMENT and skipped.
		C.eas_source_builder_add(b, (*C.char)(unsafe.Pointer(&ip[0])), C.uint16_t(e.Port),
			C.uint32_t(e.Weight))
	}
	return CodeOK
}

// call calls the Go function, turning a panic into an error.
func (s *source) call() (list []Endpoint, panicked bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			list, panicked = nil, true
			err = &sourcePanic{value: r, stack: debug.Stack()}
		}
	}()
	list, err = s.fetch()
	return list, false, err
}

func (s *source) fail(err error) { s.lastErr.Store(&err) }

// sourcePanic is the error LastError wraps after the source function panicked.
type sourcePanic struct {
	value any
	stack []byte
}

func (p *sourcePanic) Error() string {
	return fmt.Sprintf("the source function panicked: %v\n\n%s", p.value, p.stack)
}

// Unwrap is the panic value when it is an error (panic(err)).
func (p *sourcePanic) Unwrap() error {
	err, _ := p.value.(error)
	return err
}
