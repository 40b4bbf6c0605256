//! The one way into the library from C: pointer checks and panic containment.

use std::ffi::{c_char, CStr};

use super::status::eas_status;
use crate::error::Error;

/// Runs `$body` (which evaluates to an `eas_status`) as the body of an exported function: a
/// panic becomes `EAS_STATUS_PANIC` and never unwinds into the caller.
macro_rules! boundary {
    ($body:block) => {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || -> $crate::ffi::status::eas_status { $body },
        )) {
            Ok(status) => status,
            Err(_) => $crate::ffi::status::eas_status::EAS_STATUS_PANIC,
        }
    };
}

/// Like `boundary!` for functions that return a value: a panic returns `$fallback`.
macro_rules! boundary_or {
    ($fallback:expr, $body:block) => {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| $body)) {
            Ok(value) => value,
            Err(_) => $fallback,
        }
    };
}

pub(crate) use {boundary, boundary_or};

/// Reads a NUL-terminated UTF-8 string; `what` names the parameter in the error.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string that outlives the call.
pub unsafe fn str_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, (eas_status, Error)> {
    if ptr.is_null() {
        return Err((
            eas_status::EAS_STATUS_NULL_PARAMETER,
            Error::new(
                crate::error::ErrorKind::NullParameter,
                format!("{what} is NULL"),
            ),
        ));
    }
    // SAFETY: the caller promises a NUL-terminated string that outlives the call.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes.to_str().map_err(|_| {
        (
            eas_status::EAS_STATUS_INVALID_ARGUMENT,
            Error::invalid(format!("{what} is not valid UTF-8")),
        )
    })
}
