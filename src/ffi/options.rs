//! `eas_options`: key/value settings for eas_client_new.

use std::ffi::c_char;

use super::boundary::{boundary, boundary_or, str_arg};
use super::error::{eas_error, fail, fail_with};
use super::status::eas_status;
use crate::config::Options;

/// Key/value settings. Not thread-safe; eas_client_new copies them, so they may be freed right
/// after it returns.
#[allow(non_camel_case_types)]
pub struct eas_options {
    pub(crate) options: Options,
}

/// A new, empty set of options; free with eas_options_free. NULL only if allocation failed.
#[no_mangle]
pub extern "C" fn eas_options_new() -> *mut eas_options {
    boundary_or!(std::ptr::null_mut(), {
        Box::into_raw(Box::new(eas_options {
            options: Options::new(),
        }))
    })
}

/// Sets `key` to `value`, checking both at once: an unknown key or a malformed value is
/// EAS_STATUS_INVALID_ARGUMENT with a message naming the key. Setting a key again replaces it.
#[no_mangle]
pub extern "C" fn eas_options_set(
    o: *mut eas_options,
    key: *const c_char,
    value: *const c_char,
    err: *mut *mut eas_error,
) -> eas_status {
    boundary!({
        // SAFETY: `o` is NULL or options from eas_options_new, used by one thread at a time.
        let Some(o) = (unsafe { o.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        // SAFETY: NUL-terminated strings, by contract; `err` is NULL or writable.
        let key = match unsafe { str_arg(key, "option key") } {
            Ok(key) => key,
            Err((status, mut error)) => {
                if !key.is_null() {
                    // SAFETY: as above; not NULL.
                    let lossy = unsafe { std::ffi::CStr::from_ptr(key) }.to_string_lossy();
                    error.message = format!(
                        "option key \"{}\" is not valid UTF-8",
                        lossy.escape_default()
                    );
                }
                // SAFETY: `err` is NULL or writable, by contract.
                return unsafe { fail(err, status, &error) };
            }
        };
        // SAFETY: as above.
        let value = match unsafe {
            str_arg(
                value,
                &format!("the value of option \"{}\"", key.escape_default()),
            )
        } {
            Ok(value) => value,
            // SAFETY: as above.
            Err((status, error)) => return unsafe { fail(err, status, &error) },
        };
        match o.options.set(key, value) {
            Ok(()) => eas_status::EAS_STATUS_OK,
            // SAFETY: as above.
            Err(error) => unsafe { fail_with(err, &error) },
        }
    })
}

/// Frees options; NULL is a no-op.
#[no_mangle]
pub extern "C" fn eas_options_free(o: *mut eas_options) {
    boundary_or!((), {
        if !o.is_null() {
            // SAFETY: `o` came from eas_options_new and is freed once, by contract.
            drop(unsafe { Box::from_raw(o) });
        }
    })
}
