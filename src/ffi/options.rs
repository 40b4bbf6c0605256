//! `eas_options`: key/value settings for eas_client_new.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use super::boundary::{boundary, boundary_or, str_arg};
use super::client::eas_free_fn;
use super::error::{eas_error, fail, fail_with};
use super::status::eas_status;
use crate::config::Options;
use crate::log::{Level, LogFn, LogSink};

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

/// A log function: `level` 1 error, 2 warn, 3 info, 4 debug; `message` one NUL-terminated UTF-8
/// line without a trailing newline, valid for the duration of the call.
#[allow(non_camel_case_types)]
pub type eas_log_fn =
    Option<extern "C" fn(user_data: *mut c_void, level: i32, message: *const c_char)>;

struct LogUserData(*mut c_void);
// SAFETY: the caller hands `user_data` to the library to be passed to its log function on the
// log thread; making that sound is the caller's part of the contract (see the header).
unsafe impl Send for LogUserData {}
// SAFETY: as above; calls to one log function never overlap.
unsafe impl Sync for LogUserData {}

/// Gives clients made with these options a log function: the first failed fetch of a streak
/// (warn) and the recovery (info), list changes (info), ejections, back-offs and their end
/// (info), snapshot-file trouble (warn), a push stream up (info) and lost (warn); never a line
/// per request, never a secret. Lines up to `max_level` (0 off, 1 error .. 4 debug) go through
/// a bounded queue to one log thread, at most 10 a second per client (the count of dropped
/// lines goes out with the next line). Calls never overlap; `callback` may call any eas_* function
/// but the *_free ones. eas_client_close waits for a line of its client in delivery, and no
/// line of it is delivered after close returns. A client keeps the function it was made with.
/// `free_user_data` (nullable) runs once, on whichever thread lets go last: when these options
/// have been freed or given another function and every client made with it has been freed
/// (never on the log thread: queued lines do not hold their client).
/// `callback` NULL or `max_level` 0: no logging (a function set before is let go). `max_level`
/// outside 0-4: EAS_STATUS_INVALID_ARGUMENT, and no ownership of `user_data` is taken.
#[no_mangle]
pub extern "C" fn eas_options_set_log(
    o: *mut eas_options,
    callback: eas_log_fn,
    user_data: *mut c_void,
    free_user_data: eas_free_fn,
    max_level: i32,
) -> eas_status {
    boundary!({
        // SAFETY: `o` is NULL or options from eas_options_new, used by one thread at a time.
        let Some(o) = (unsafe { o.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        if !(0..=4).contains(&max_level) {
            return eas_status::EAS_STATUS_INVALID_ARGUMENT;
        }
        let (Some(write), Some(level)) = (callback, Level::from_i32(max_level)) else {
            o.options.log = None;
            return eas_status::EAS_STATUS_OK;
        };
        let data = Arc::new(LogUserData(user_data));
        let for_call = data.clone();
        let log: LogFn = Box::new(move |level: Level, line: &str| {
            // Lines are built by the library without NULs; one is replaced, never cut at.
            let line = CString::new(line.replace('\0', " ")).unwrap_or_default();
            write(for_call.0, level as i32, line.as_ptr());
        });
        let on_end =
            free_user_data.map(|free| Box::new(move || free(data.0)) as Box<dyn FnOnce() + Send>);
        o.options.log = Some(LogSink::new(log, on_end, level));
        eas_status::EAS_STATUS_OK
    })
}
