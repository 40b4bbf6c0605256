//! `eas_error`: an owned error object with a code and a message.

use std::ffi::{c_char, CString};

use super::boundary::{boundary, boundary_or};
use super::status::eas_status;
use crate::error::Error;

/// An error: a status code and a message naming the key, value, URL or HTTP status at fault.
/// Owned by the caller once returned; free with eas_error_free.
#[allow(non_camel_case_types)]
pub struct eas_error {
    code: eas_status,
    message: CString,
}

impl eas_error {
    fn new(error: &Error) -> eas_error {
        let message = error.message.replace('\0', " ");
        eas_error {
            code: error.kind.into(),
            message: CString::new(message).unwrap_or_default(),
        }
    }
}

/// Writes `error` to `*err` when `err` is not NULL, and returns `status`.
///
/// # Safety
/// `err` must be NULL or valid for a write of one pointer.
pub unsafe fn fail(err: *mut *mut eas_error, status: eas_status, error: &Error) -> eas_status {
    if !err.is_null() {
        let boxed = Box::into_raw(Box::new(eas_error::new(error)));
        // SAFETY: `err` is not NULL and the caller promises it is writable.
        unsafe { *err = boxed };
    }
    status
}

/// Writes a core error to `*err` (when not NULL) and returns its status.
///
/// # Safety
/// As `fail`.
pub unsafe fn fail_with(err: *mut *mut eas_error, error: &Error) -> eas_status {
    // SAFETY: forwarded from the caller.
    unsafe { fail(err, error.kind.into(), error) }
}

/// The status code of `e`; EAS_STATUS_NULL_PARAMETER when `e` is NULL.
#[no_mangle]
pub extern "C" fn eas_error_code(e: *const eas_error) -> eas_status {
    boundary!({
        // SAFETY: `e` is NULL or an error from this library that has not been freed.
        match unsafe { e.as_ref() } {
            Some(e) => e.code,
            None => eas_status::EAS_STATUS_NULL_PARAMETER,
        }
    })
}

/// The message of `e`, valid until eas_error_free(e); "" when `e` is NULL.
#[no_mangle]
pub extern "C" fn eas_error_message(e: *const eas_error) -> *const c_char {
    boundary_or!(c"".as_ptr(), {
        // SAFETY: `e` is NULL or an error from this library that has not been freed.
        match unsafe { e.as_ref() } {
            Some(e) => e.message.as_ptr(),
            None => c"".as_ptr(),
        }
    })
}

/// Frees an error; NULL is a no-op.
#[no_mangle]
pub extern "C" fn eas_error_free(e: *mut eas_error) {
    boundary_or!((), {
        if !e.is_null() {
            // SAFETY: `e` came from Box::into_raw in `fail` and is freed once, by contract.
            drop(unsafe { Box::from_raw(e) });
        }
    })
}
