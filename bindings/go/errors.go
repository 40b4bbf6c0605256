package easdirect

// #include <easdirect.h>
import "C"

import "errors"

// Code is a libeasdirect status code (the C ABI's eas_status). The numbers are stable.
type Code int32

// The status codes of the C ABI.
const (
	CodeOK              Code = C.EAS_STATUS_OK
	CodeNullParameter   Code = C.EAS_STATUS_NULL_PARAMETER
	CodeInvalidArgument Code = C.EAS_STATUS_INVALID_ARGUMENT
	CodeNoInstance      Code = C.EAS_STATUS_NO_INSTANCE
	CodeTimeout         Code = C.EAS_STATUS_TIMEOUT
	CodeDiscoveryFailed Code = C.EAS_STATUS_DISCOVERY_FAILED
	CodeBufferTooSmall  Code = C.EAS_STATUS_BUFFER_TOO_SMALL
	CodeUnknownInstance Code = C.EAS_STATUS_UNKNOWN_INSTANCE
	CodeClosed          Code = C.EAS_STATUS_CLOSED
	CodePanic           Code = C.EAS_STATUS_PANIC
)

// String is the library's description of the code ("unknown status" for any other value).
func (c Code) String() string {
	return C.GoString(C.eas_status_str(C.int32_t(c)))
}

// Error is an error reported by libeasdirect: a status code and a message naming the key,
// value, URL or HTTP status at fault.
//
// errors.Is(err, ErrNoInstance) (or any other sentinel below) holds for every *Error with the
// sentinel's code, whatever its message.
type Error struct {
	Code    Code
	Message string
	cause   error // what a NewWithSource function returned, for Unwrap
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "easdirect: " + e.Code.String()
	}
	return "easdirect: " + e.Message
}

// Unwrap is the error a NewWithSource function returned (or its panic), when this error reports
// that fetch (see Client.LastError); nil otherwise.
func (e *Error) Unwrap() error { return e.cause }

// Is reports whether target is an *Error with the same code, so that errors.Is matches the
// sentinels.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is. Calls on the hot path (Select, ReportFailure, ...) return these very
// values, so that they allocate nothing.
var (
	ErrNullParameter   = sentinel(CodeNullParameter)
	ErrInvalidArgument = sentinel(CodeInvalidArgument)
	ErrNoInstance      = sentinel(CodeNoInstance)
	ErrTimeout         = sentinel(CodeTimeout)
	ErrDiscoveryFailed = sentinel(CodeDiscoveryFailed)
	ErrBufferTooSmall  = sentinel(CodeBufferTooSmall)
	ErrUnknownInstance = sentinel(CodeUnknownInstance)
	ErrClosed          = sentinel(CodeClosed)
	ErrPanic           = sentinel(CodePanic)
)

func sentinel(c Code) *Error { return &Error{Code: c, Message: c.String()} }

// statusError turns a status without a message into an error: nil for OK, else the sentinel.
func statusError(st C.enum_eas_status) error {
	switch Code(st) {
	case CodeOK:
		return nil
	case CodeNullParameter:
		return ErrNullParameter
	case CodeInvalidArgument:
		return ErrInvalidArgument
	case CodeNoInstance:
		return ErrNoInstance
	case CodeTimeout:
		return ErrTimeout
	case CodeDiscoveryFailed:
		return ErrDiscoveryFailed
	case CodeBufferTooSmall:
		return ErrBufferTooSmall
	case CodeUnknownInstance:
		return ErrUnknownInstance
	case CodeClosed:
		return ErrClosed
	case CodePanic:
		return ErrPanic
	}
	return &Error{Code: Code(st), Message: Code(st).String()}
}

// takeError turns a status and the eas_error the library wrote (or not) into an error, and
// frees the eas_error.
func takeError(st C.enum_eas_status, e *C.eas_error) error {
	if e == nil {
		return statusError(st)
	}
	defer C.eas_error_free(e)
	return &Error{Code: Code(C.eas_error_code(e)), Message: C.GoString(C.eas_error_message(e))}
}

// ErrABIMismatch is wrapped by the error New and NewWithSource return when the loaded
// libeasdirect is not compatible with the one this package was built for.
var ErrABIMismatch = errors.New("easdirect: incompatible libeasdirect")
