//! `eas_status`: the result of every fallible call.

use std::ffi::c_char;

use crate::error::ErrorKind;

/// The result of every fallible call. Numbers are stable and never reused.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum eas_status {
    EAS_STATUS_OK = 0,
    /// A required pointer was NULL.
    EAS_STATUS_NULL_PARAMETER = 1,
    /// A bad target, option key or value, or a string that is not UTF-8.
    EAS_STATUS_INVALID_ARGUMENT = 2,
    /// Nothing selectable (none known, all excluded).
    EAS_STATUS_NO_INSTANCE = 3,
    EAS_STATUS_TIMEOUT = 4,
    /// A discovery fetch failed (eas_client_last_error).
    EAS_STATUS_DISCOVERY_FAILED = 5,
    EAS_STATUS_BUFFER_TOO_SMALL = 6,
    /// The id is not in the current snapshot: harmless.
    EAS_STATUS_UNKNOWN_INSTANCE = 7,
    /// The client was closed.
    EAS_STATUS_CLOSED = 8,
    /// A bug in the library was contained; the call had no effect or an incomplete one.
    EAS_STATUS_PANIC = 99,
}

impl From<ErrorKind> for eas_status {
    fn from(kind: ErrorKind) -> eas_status {
        match kind {
            ErrorKind::NullParameter => eas_status::EAS_STATUS_NULL_PARAMETER,
            ErrorKind::InvalidArgument => eas_status::EAS_STATUS_INVALID_ARGUMENT,
            ErrorKind::NoInstance => eas_status::EAS_STATUS_NO_INSTANCE,
            ErrorKind::Timeout => eas_status::EAS_STATUS_TIMEOUT,
            ErrorKind::DiscoveryFailed => eas_status::EAS_STATUS_DISCOVERY_FAILED,
            ErrorKind::BufferTooSmall => eas_status::EAS_STATUS_BUFFER_TOO_SMALL,
            ErrorKind::UnknownInstance => eas_status::EAS_STATUS_UNKNOWN_INSTANCE,
            ErrorKind::Closed => eas_status::EAS_STATUS_CLOSED,
        }
    }
}

/// A static, NUL-terminated description of `status`; "unknown status" for any other value.
/// Never NULL; never to be freed.
#[no_mangle]
pub extern "C" fn eas_status_str(status: i32) -> *const c_char {
    let text: &'static [u8] = match status {
        0 => b"ok\0",
        1 => b"null parameter\0",
        2 => b"invalid argument\0",
        3 => b"no instance\0",
        4 => b"timeout\0",
        5 => b"discovery failed\0",
        6 => b"buffer too small\0",
        7 => b"unknown instance\0",
        8 => b"closed\0",
        99 => b"panic\0",
        _ => b"unknown status\0",
    };
    text.as_ptr().cast()
}
