package easdirect

/*
#include <stddef.h>
#include <easdirect.h>

// The layout of eas_instance_stats is the C ABI's, and never grows: 64 bytes, fields at fixed
// offsets. A header that disagrees fails the build here rather than misreading figures.
_Static_assert(sizeof(eas_instance_stats) == 64, "eas_instance_stats is 64 bytes");
_Static_assert(offsetof(eas_instance_stats, id) == 0, "id @0");
_Static_assert(offsetof(eas_instance_stats, in_flight) == 8, "in_flight @8");
_Static_assert(offsetof(eas_instance_stats, reported_waiting) == 12, "reported_waiting @12");
_Static_assert(offsetof(eas_instance_stats, attempts) == 16, "attempts @16");
_Static_assert(offsetof(eas_instance_stats, failures) == 24, "failures @24");
_Static_assert(offsetof(eas_instance_stats, latency_ewma_us) == 32, "latency_ewma_us @32");
_Static_assert(offsetof(eas_instance_stats, reported_kv_permille) == 36, "reported_kv_permille @36");
_Static_assert(offsetof(eas_instance_stats, ejected_until_unix_ms) == 40, "ejected_until_unix_ms @40");
_Static_assert(offsetof(eas_instance_stats, report_unix_ms) == 48, "report_unix_ms @48");
_Static_assert(offsetof(eas_instance_stats, weight) == 56, "weight @56");
_Static_assert(offsetof(eas_instance_stats, reported_running) == 60, "reported_running @60");

#cgo noescape eas_client_instance_stats
#cgo nocallback eas_client_instance_stats
*/
import "C"

import (
	"runtime"
	"strconv"
	"time"
	"unsafe"
)

// The Go view of eas_instance_stats must keep its size (a compile-time check: a negative
// array length does not build).
var _ [unsafe.Sizeof(C.eas_instance_stats{}) - 64]byte
var _ [64 - unsafe.Sizeof(C.eas_instance_stats{})]byte

// InstanceStats are the figures of one instance of the current list, from this client's calls
// and the instance's load reports (the C ABI's 64-byte eas_instance_stats).
type InstanceStats struct {
	ID              uint64        // the instance's id (Instance.ID)
	InFlight        uint32        // attempts of this client in flight on it now
	ReportedWaiting uint32        // its queue, from its last load report
	Attempts        uint64        // call attempts since it joined the list
	Failures        uint64        // failed attempts and ReportFailure calls, as ejection saw them
	LatencyEWMA     time.Duration // peak EWMA of the time to response headers; 0 before a sample
	// ReportedKVPermille is its KV-cache use, 0-1000, from its last load report.
	ReportedKVPermille uint32
	EjectedUntil       time.Time // until when it is out of picks (ejected or backing off); zero if neither
	LastReport         time.Time // when its last load report arrived; zero if none
	Weight             uint32    // its weight
	ReportedRunning    uint32    // requests running on it, from its last load report
}

// unixMillis is t (unix ms), or the zero Time for 0.
func unixMillis(ms C.uint64_t) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms))
}

func instanceStatsFromC(s *C.eas_instance_stats) InstanceStats {
	return InstanceStats{
		ID:                 uint64(s.id),
		InFlight:           uint32(s.in_flight),
		ReportedWaiting:    uint32(s.reported_waiting),
		Attempts:           uint64(s.attempts),
		Failures:           uint64(s.failures),
		LatencyEWMA:        time.Duration(s.latency_ewma_us) * time.Microsecond,
		ReportedKVPermille: uint32(s.reported_kv_permille),
		EjectedUntil:       unixMillis(s.ejected_until_unix_ms),
		LastReport:         unixMillis(s.report_unix_ms),
		Weight:             uint32(s.weight),
		ReportedRunning:    uint32(s.reported_running),
	}
}

// InstanceStats lists the figures of every instance of the current list, in the order of
// Instances; empty before the first list is known. It takes the client's lock briefly: for
// metrics and tests, not for every request. ErrClosed after Close.
func (c *Client) InstanceStats() ([]InstanceStats, error) {
	if c.missing() {
		return nil, errNoClient
	}
	var n C.size_t
	st := C.eas_client_instance_stats(c.ptr, nil, 0, &n)
	runtime.KeepAlive(c)
	for {
		switch st {
		case C.EAS_STATUS_OK:
			if n == 0 {
				return []InstanceStats{}, nil
			}
		case C.EAS_STATUS_BUFFER_TOO_SMALL:
		default:
			return nil, statusError(st)
		}
		// The list can grow between two calls: ask again with the count the library gave.
		buf := make([]C.eas_instance_stats, n)
		st = C.eas_client_instance_stats(c.ptr, &buf[0], C.size_t(len(buf)), &n)
		runtime.KeepAlive(c)
		if st == C.EAS_STATUS_OK {
			out := make([]InstanceStats, n)
			for i := range out {
				out[i] = instanceStatsFromC(&buf[i])
			}
			return out, nil
		}
	}
}

// Target is the client's target with its secrets removed (no userinfo, no query), as the
// library's messages print it; "" for a NewWithSource client, a nil or zero Client. It still
// answers after Close.
func (c *Client) Target() string {
	if c == nil {
		return ""
	}
	return c.target
}

// names of the target, read from the library once when the client is made (the C strings
// live until eas_client_free, the Go copies as long as the Client).
func clientNames(ptr *C.eas_client) (service, target string) {
	return C.GoString(C.eas_client_service(ptr)), C.GoString(C.eas_client_target(ptr))
}

// Delivery is what delivers a client's instance list now (eas_client_transport; the name
// Transport is the http.RoundTripper's).
type Delivery int

const (
	// DeliveryPoll: the client polls its source (every source but Nacos, and Nacos while its
	// push stream is down or was never up).
	DeliveryPoll Delivery = C.EAS_TRANSPORT_POLL
	// DeliveryPush: a Nacos push stream (gRPC) delivers the list; polling is a safety net.
	DeliveryPush Delivery = C.EAS_TRANSPORT_PUSH
)

// String is "poll" or "push".
func (d Delivery) String() string {
	switch d {
	case DeliveryPoll:
		return "poll"
	case DeliveryPush:
		return "push"
	}
	return "Delivery(" + strconv.Itoa(int(d)) + ")"
}

// Delivery says what delivers the list now (the nacos_transport option decides whether a
// Nacos client subscribes). A closed client gives an error matching ErrClosed.
func (c *Client) Delivery() (Delivery, error) {
	if c.missing() {
		return DeliveryPoll, errNoClient
	}
	var out C.int32_t
	st := C.eas_client_transport(c.ptr, &out)
	runtime.KeepAlive(c)
	if st != C.EAS_STATUS_OK {
		return DeliveryPoll, statusError(st)
	}
	return Delivery(out), nil
}
