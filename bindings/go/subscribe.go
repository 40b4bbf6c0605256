package easdirect

/*
#include <stdint.h>
#include <easdirect.h>

// Defined in callbacks.go (//export).
extern void easdirectOnChange(void *user_data, eas_instance *instances, size_t n);
extern void easdirectOnEnd(void *user_data);

// The user data is a cgo.Handle: an integer, passed as a pointer-sized value that C never
// dereferences.
static enum eas_status easdirect_subscribe(const eas_client *c, uintptr_t handle, uint64_t *out) {
	return eas_client_subscribe(c, (eas_change_fn)easdirectOnChange, (void *)handle,
	                            easdirectOnEnd, out);
}
*/
import "C"

import (
	"runtime"
	"runtime/cgo"
	"sync"
	"sync/atomic"
)

// liveSubscriptions counts subscriptions whose user data the library still holds (for tests).
var liveSubscriptions atomic.Int64

// subscription is what a cgo.Handle given to the library as user_data refers to. The handle is
// deleted in the library's free_user_data callback, which runs exactly once, after the last
// change callback.
type subscription struct {
	fn    func([]Instance)
	names *nameCache // not the Client: a subscription alone must not keep a client alive
}

// Subscribe calls fn with the whole instance list each time it changes, and once soon after
// subscribing when a list is already known. fn runs on a library background thread shared with
// other clients: keep it short (hand long work to a goroutine). The slice is fn's to keep.
//
// fn may call any method of the client, cancel and Close included. cancel ends the
// subscription: when it returns, fn is not running and will not run again (when called from
// inside fn, once fn returns). cancel is idempotent; Close ends every subscription the same way.
// Subscribe on a closed client returns ErrClosed.
func (c *Client) Subscribe(fn func([]Instance)) (cancel func(), err error) {
	if fn == nil {
		return nil, &Error{Code: CodeNullParameter, Message: "Subscribe: fn is nil"}
	}
	if c.missing() {
		return nil, errNoClient
	}
	h := cgo.NewHandle(&subscription{fn: fn, names: c.names})
	liveSubscriptions.Add(1)
	var id C.uint64_t
	st := C.easdirect_subscribe(c.ptr, C.uintptr_t(h), &id)
	runtime.KeepAlive(c)
	if st != C.EAS_STATUS_OK {
		h.Delete() // a refused subscribe takes no ownership of the user data
		liveSubscriptions.Add(-1)
		return nil, statusError(st)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			// CLOSED or an unknown id both mean the subscription has ended already.
			C.eas_client_unsubscribe(c.ptr, id)
			runtime.KeepAlive(c)
		})
	}, nil
}
