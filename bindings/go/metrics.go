package easdirect

// #include <easdirect.h>
import "C"

import (
	"runtime"
	"unsafe"
)

// MetricsText is the client's stats and every instance's stats in the Prometheus text format
// 0.0.4 (Content-Type "text/plain; version=0.0.4"), every sample labelled by target (secrets
// removed) and the per-instance ones by instance ("host:port"); the metric names are listed in
// the README and stable. Serve it on a /metrics endpoint as it is, or register the collector
// of the module github.com/easdirect/libeasdirect/bindings/go/prometheus. ErrClosed after
// Close.
func (c *Client) MetricsText() (string, error) {
	if c.missing() {
		return "", errNoClient
	}
	var n C.size_t
	st := C.eas_client_metrics_text(c.ptr, nil, 0, &n)
	runtime.KeepAlive(c)
	for st == C.EAS_STATUS_BUFFER_TOO_SMALL {
		// The text can grow between two calls (a list change): ask again with the length given.
		buf := make([]byte, n+1) // and its NUL
		st = C.eas_client_metrics_text(c.ptr, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
		runtime.KeepAlive(c)
		if st == C.EAS_STATUS_OK {
			return string(buf[:n]), nil
		}
	}
	if st != C.EAS_STATUS_OK {
		return "", statusError(st)
	}
	return "", nil // cap 0 and OK: an empty text (the library always writes at least one metric)
}
