//! `eas_client`: the client functions of the C ABI.

use std::ffi::{c_char, c_void, CStr, CString};
use std::time::Duration;

use super::boundary::{boundary, boundary_or, str_arg};
use super::error::{eas_error, fail, fail_with};
use super::options::eas_options;
use super::status::eas_status;
use crate::client::Client;
use crate::config::Options;
use crate::error::ErrorKind;
use crate::instance::Instance;
use crate::load::InstanceStats;

/// A client of one target. Thread-safe: share one per service per process. Every function that
/// takes a `const eas_client *` may be called from any thread at any time until
/// eas_client_free.
#[allow(non_camel_case_types)]
pub struct eas_client {
    client: Client,
    /// What eas_client_service and eas_client_target hand out, valid until eas_client_free.
    service: CString,
    target: CString,
}

impl eas_client {
    /// Hands a client to C.
    pub(crate) fn boxed(client: Client) -> *mut eas_client {
        let text = |s: &str| CString::new(s.replace('\0', " ")).unwrap_or_default();
        let (service, target) = (text(client.service()), text(client.target()));
        Box::into_raw(Box::new(eas_client {
            client,
            service,
            target,
        }))
    }
}

/// Counters of a client.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct eas_stats {
    /// Instance lists published so far (changes only).
    pub generation: u64,
    /// Successful fetches.
    pub refresh_ok: u64,
    /// Fetches that kept the cache (error, bad body, nothing pickable).
    pub refresh_failed: u64,
    /// Time of the last successful fetch; 0 if none.
    pub last_ok_unix_ms: u64,
    /// Instances in the current list.
    pub instances: u32,
    /// Instances ejected now (expired ejections not counted).
    pub ejected: u32,
}

/// Called on a background thread with the whole new list each time it changes.
#[allow(non_camel_case_types)]
pub type eas_change_fn =
    Option<extern "C" fn(user_data: *mut c_void, instances: *const Instance, n: usize)>;

/// Frees a subscription's user data.
#[allow(non_camel_case_types)]
pub type eas_free_fn = Option<extern "C" fn(user_data: *mut c_void)>;

pub(crate) fn status_of(result: Result<(), ErrorKind>) -> eas_status {
    match result {
        Ok(()) => eas_status::EAS_STATUS_OK,
        Err(kind) => kind.into(),
    }
}

/// # Safety
/// `c` must be NULL or a client from eas_client_new that has not been freed.
pub(crate) unsafe fn client<'a>(c: *const eas_client) -> Option<&'a Client> {
    // SAFETY: forwarded from the caller.
    unsafe { c.as_ref() }.map(|c| &c.client)
}

/// Creates a client for `target` (see the README for target forms) and starts discovery.
/// Returns at once: the first fetch runs in the background (use eas_client_wait_ready); a
/// static:// target is ready on return.
///
/// @param target  NUL-terminated UTF-8, e.g. "eas://1.2.3.4:8080/my_service"; not NULL.
/// @param opts    options (copied; may be freed right after), or NULL for defaults. They win
///                over the same keys given as query parameters of the target.
/// @param out     receives the client on EAS_STATUS_OK; free it with eas_client_free.
/// @param err     NULL, or receives an error to free with eas_error_free on failure.
/// @return EAS_STATUS_INVALID_ARGUMENT for a bad target or option, naming it.
#[no_mangle]
pub extern "C" fn eas_client_new(
    target: *const c_char,
    opts: *const eas_options,
    out: *mut *mut eas_client,
    err: *mut *mut eas_error,
) -> eas_status {
    boundary!({
        if out.is_null() {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        }
        // SAFETY: a NUL-terminated string, by contract.
        let target = match unsafe { str_arg(target, "target") } {
            Ok(t) => t,
            // SAFETY: `err` is NULL or writable, by contract.
            Err((status, error)) => return unsafe { fail(err, status, &error) },
        };
        let empty = Options::new();
        // SAFETY: `opts` is NULL or options from eas_options_new not in use by another thread.
        let options = unsafe { opts.as_ref() }.map_or(&empty, |o| &o.options);
        match Client::new(target, options) {
            Ok(client) => {
                let boxed = eas_client::boxed(client);
                // SAFETY: `out` is not NULL and writable, by contract.
                unsafe { *out = boxed };
                eas_status::EAS_STATUS_OK
            }
            // SAFETY: as above.
            Err(error) => unsafe { fail_with(err, &error) },
        }
    })
}

/// Waits until an instance list is known (fetched, or loaded from snapshot_file), at most
/// `timeout_ms`; 0 checks without waiting. It does not return early on a failed fetch.
/// @return EAS_STATUS_TIMEOUT at the deadline, with the last fetch error in `*err`.
#[no_mangle]
pub extern "C" fn eas_client_wait_ready(
    c: *const eas_client,
    timeout_ms: u32,
    err: *mut *mut eas_error,
) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, by contract.
        let Some(client) = (unsafe { client(c) }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        match client.wait_ready(Duration::from_millis(u64::from(timeout_ms))) {
            Ok(()) => eas_status::EAS_STATUS_OK,
            // SAFETY: `err` is NULL or writable, by contract.
            Err(error) => unsafe { fail_with(err, &error) },
        }
    })
}

/// Picks one instance by smooth weighted round-robin, skipping ejected ones (all ejected:
/// picks among them rather than fail).
///
/// Thread-safe; on the common path it takes no lock, allocates nothing, makes no system call.
/// @param out  written only when the result is EAS_STATUS_OK.
/// @return EAS_STATUS_NO_INSTANCE before the first list is known.
#[no_mangle]
pub extern "C" fn eas_select_instance(c: *const eas_client, out: *mut Instance) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, and `out` NULL or writable, by contract.
        let (Some(client), Some(out)) = (unsafe { client(c) }, unsafe { out.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        status_of(client.select_into(&[], out))
    })
}

/// As eas_select_instance, but never returns one of the `n_exclude` ids in `exclude` (for a
/// retry on a different instance). `exclude` may be NULL when `n_exclude` is 0.
/// @return EAS_STATUS_NO_INSTANCE when every instance is excluded.
#[no_mangle]
pub extern "C" fn eas_select_instance_excluding(
    c: *const eas_client,
    exclude: *const u64,
    n_exclude: usize,
    out: *mut Instance,
) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, and `out` NULL or writable, by contract.
        let (Some(client), Some(out)) = (unsafe { client(c) }, unsafe { out.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        let exclude: &[u64] = if n_exclude == 0 {
            &[]
        } else if exclude.is_null() {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        } else {
            // SAFETY: `exclude` points to `n_exclude` ids, by contract.
            unsafe { std::slice::from_raw_parts(exclude, n_exclude) }
        };
        status_of(client.select_into(exclude, out))
    })
}

/// Reports a failed call to instance `id`: after failures_before_ejection consecutive failures
/// it is ejected for ejection_base_ms, doubling on each re-ejection up to ejection_max_ms.
/// @return EAS_STATUS_UNKNOWN_INSTANCE when `id` is not in the current list (harmless).
#[no_mangle]
pub extern "C" fn eas_report_failure(c: *const eas_client, id: u64) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, by contract.
        let Some(client) = (unsafe { client(c) }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        status_of(client.report_failure(id))
    })
}

/// Reports a successful call to instance `id`: resets its failure count and ejection doubling
/// (an ejection in force runs its course).
#[no_mangle]
pub extern "C" fn eas_report_success(c: *const eas_client, id: u64) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, by contract.
        let Some(client) = (unsafe { client(c) }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        status_of(client.report_success(id))
    })
}

/// Lists every known instance, ejected or not, weight 0 included; before the first list: OK
/// with `*len` 0. `buf` may be NULL with `cap` 0 to ask for the count.
/// @return EAS_STATUS_BUFFER_TOO_SMALL with the count needed in `*len` (buf untouched); the
///         count can change between calls, so callers loop.
#[no_mangle]
pub extern "C" fn eas_client_instances(
    c: *const eas_client,
    buf: *mut Instance,
    cap: usize,
    len: *mut usize,
) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, and `len` NULL or writable, by contract.
        let (Some(client), Some(len)) = (unsafe { client(c) }, unsafe { len.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        let snapshot = match client.snapshot() {
            Ok(s) => s,
            Err(kind) => return kind.into(),
        };
        let list: &[Instance] = snapshot.as_ref().map_or(&[], |s| &s.instances);
        // SAFETY: `buf` is NULL or holds `cap` writable instances, by contract; the snapshot
        // is the library's own memory.
        unsafe { copy_out(list, buf, cap, len) }
    })
}

/// Copies `list` into the caller's `buf` of `cap` records, as every list-returning function
/// of the C API does: `*len` = the count; EAS_STATUS_BUFFER_TOO_SMALL (buffer untouched) when
/// `cap` is less; a NULL `buf` is fine only for an empty list.
///
/// # Safety
/// `buf` is NULL or points to `cap` writable `T`s that do not overlap `list`.
unsafe fn copy_out<T: Copy>(list: &[T], buf: *mut T, cap: usize, len: &mut usize) -> eas_status {
    if list.len() > cap {
        *len = list.len();
        return eas_status::EAS_STATUS_BUFFER_TOO_SMALL;
    }
    if !list.is_empty() {
        if buf.is_null() {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        }
        // SAFETY: the caller's promise: `buf` holds `cap` >= list.len() writable records
        // that do not overlap `list`.
        unsafe { std::ptr::copy_nonoverlapping(list.as_ptr(), buf, list.len()) };
    }
    *len = list.len();
    eas_status::EAS_STATUS_OK
}

/// The last fetch's error: EAS_STATUS_DISCOVERY_FAILED with its URL and status in `*err`, or
/// EAS_STATUS_OK (and `*err` untouched) when the last fetch succeeded or none has finished.
#[no_mangle]
pub extern "C" fn eas_client_last_error(
    c: *const eas_client,
    err: *mut *mut eas_error,
) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, by contract.
        let Some(client) = (unsafe { client(c) }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        match client.last_error() {
            Ok(None) => eas_status::EAS_STATUS_OK,
            // SAFETY: `err` is NULL or writable, by contract.
            Ok(Some(error)) => unsafe { fail_with(err, &error) },
            Err(kind) => kind.into(),
        }
    })
}

/// Fills `*out` with the client's counters.
#[no_mangle]
pub extern "C" fn eas_client_stats(c: *const eas_client, out: *mut eas_stats) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, and `out` NULL or writable, by contract.
        let (Some(client), Some(out)) = (unsafe { client(c) }, unsafe { out.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        match client.stats() {
            Ok(s) => {
                *out = eas_stats {
                    generation: s.generation,
                    refresh_ok: s.refresh_ok,
                    refresh_failed: s.refresh_failed,
                    last_ok_unix_ms: s.last_ok_unix_ms,
                    instances: s.instances,
                    ejected: s.ejected,
                };
                eas_status::EAS_STATUS_OK
            }
            Err(kind) => kind.into(),
        }
    })
}

struct UserData(*mut c_void);
// SAFETY: the caller hands `user_data` to the library to be passed to its callbacks on
// background threads; making that sound is the caller's part of the contract, documented in
// the header.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

/// Subscribes to changes: `fn` is called on a background thread with the whole new list each
/// time it changes, and once soon after subscribing (never inside this call) when a list is
/// already known. The list is valid for the duration of the call. `fn` may call any eas_*
/// function except eas_client_free on the same client, eas_client_unsubscribe included.
/// `free_user_data` (nullable) runs exactly once when the subscription ends: before
/// eas_client_unsubscribe returns (after the running callback returns; when called from inside
/// it, once it returns), or when the client is closed. A refused subscribe takes no ownership
/// of `user_data`.
/// @param out_subscription  receives the id to pass to eas_client_unsubscribe.
#[no_mangle]
pub extern "C" fn eas_client_subscribe(
    c: *const eas_client,
    callback: eas_change_fn,
    user_data: *mut c_void,
    free_user_data: eas_free_fn,
    out_subscription: *mut u64,
) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, and the out pointer NULL or writable.
        let (Some(client), Some(out), Some(callback)) = (
            unsafe { client(c) },
            unsafe { out_subscription.as_mut() },
            callback,
        ) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        let data = std::sync::Arc::new(UserData(user_data));
        let for_call = data.clone();
        let on_change = Box::new(move |list: &[Instance]| {
            callback(for_call.0, list.as_ptr(), list.len());
        });
        let on_end =
            free_user_data.map(|free| Box::new(move || free(data.0)) as Box<dyn FnOnce() + Send>);
        match client.subscribe(on_change, on_end) {
            Ok(id) => {
                *out = id;
                eas_status::EAS_STATUS_OK
            }
            Err(kind) => kind.into(),
        }
    })
}

/// Ends a subscription; see eas_client_subscribe for when free_user_data runs.
/// @return EAS_STATUS_INVALID_ARGUMENT for an unknown subscription id.
#[no_mangle]
pub extern "C" fn eas_client_unsubscribe(c: *const eas_client, subscription: u64) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, by contract.
        let Some(client) = (unsafe { client(c) }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        status_of(client.unsubscribe(subscription))
    })
}

/// One record per instance of the current list (see eas_instance_stats), in the order of
/// eas_client_instances; before the first list: OK with `*len` 0. `buf` may be NULL with `cap`
/// 0 to ask for the count. Thread-safe; it takes the client's lock briefly (not a hot-path
/// call).
/// @return EAS_STATUS_BUFFER_TOO_SMALL with the count needed in `*len` (buf untouched); the
///         count can change between calls, so callers loop.
#[no_mangle]
pub extern "C" fn eas_client_instance_stats(
    c: *const eas_client,
    buf: *mut InstanceStats,
    cap: usize,
    len: *mut usize,
) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, and `len` NULL or writable, by contract.
        let (Some(client), Some(len)) = (unsafe { client(c) }, unsafe { len.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        let list = match client.instance_stats() {
            Ok(list) => list,
            Err(kind) => return kind.into(),
        };
        // SAFETY: `buf` is NULL or holds `cap` writable records, by contract; `list` was
        // allocated by this call.
        unsafe { copy_out(&list, buf, cap, len) }
    })
}

/// What delivers a client's list now (eas_client_transport): polling the source.
pub const EAS_TRANSPORT_POLL: i32 = 0;
/// What delivers a client's list now: a push stream (Nacos over gRPC).
pub const EAS_TRANSPORT_PUSH: i32 = 1;

/// What delivers the list now: EAS_TRANSPORT_PUSH while a Nacos push stream is up (see the
/// nacos_transport option), else EAS_TRANSPORT_POLL (every other source, and Nacos while its
/// stream is down or was never up).
/// @return EAS_STATUS_OK; EAS_STATUS_NULL_PARAMETER; EAS_STATUS_CLOSED after eas_client_close.
#[no_mangle]
pub extern "C" fn eas_client_transport(c: *const eas_client, out: *mut i32) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, and `out` NULL or writable, by contract.
        let (Some(client), Some(out)) = (unsafe { client(c) }, unsafe { out.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        match client.transport() {
            Ok(t) => {
                *out = match t {
                    crate::Transport::Poll => EAS_TRANSPORT_POLL,
                    crate::Transport::Push => EAS_TRANSPORT_PUSH,
                };
                eas_status::EAS_STATUS_OK
            }
            Err(kind) => kind.into(),
        }
    })
}

/// The service the target names: the service of an eas:// or nacos:// target, the name of a
/// dns:// one; "" for static:// and callback sources, and for NULL. Valid until
/// eas_client_free(c) (a closed client still answers); never to be freed.
#[no_mangle]
pub extern "C" fn eas_client_service(c: *const eas_client) -> *const c_char {
    boundary_or!(c"".as_ptr(), {
        // SAFETY: `c` is NULL or a live client, by contract.
        unsafe { client_text(c, |c| &c.service) }
    })
}

/// A text the client keeps until it is freed, or "" for NULL.
///
/// # Safety
/// `c` is NULL or a live client.
unsafe fn client_text(c: *const eas_client, text: fn(&eas_client) -> &CStr) -> *const c_char {
    // SAFETY: the caller's promise.
    match unsafe { c.as_ref() } {
        Some(c) => text(c).as_ptr(),
        None => c"".as_ptr(),
    }
}

/// The target, secrets removed (no userinfo, no query): what messages print. "" for NULL.
/// Valid until eas_client_free(c) (a closed client still answers); never to be freed.
#[no_mangle]
pub extern "C" fn eas_client_target(c: *const eas_client) -> *const c_char {
    boundary_or!(c"".as_ptr(), {
        // SAFETY: `c` is NULL or a live client, by contract.
        unsafe { client_text(c, |c| &c.target) }
    })
}

/// Prometheus text exposition (format 0.0.4) of the client's stats and every instance's stats;
/// every sample is labelled by target (secrets removed), per-instance ones also by instance
/// (`host:port`). The names are stable and listed in the README. `buf` gets NUL-terminated
/// UTF-8 and `*len` its length without the NUL; EAS_STATUS_BUFFER_TOO_SMALL (with `*len`, buf
/// untouched) when `cap` <= that length; `buf` may be NULL with `cap` 0 to ask for the length.
/// The text may grow between two calls (a list change): ask again on BUFFER_TOO_SMALL.
#[no_mangle]
pub extern "C" fn eas_client_metrics_text(
    c: *const eas_client,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, and `len` NULL or writable, by contract.
        let (Some(client), Some(len)) = (unsafe { client(c) }, unsafe { len.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        let text = match client.metrics_text() {
            Ok(t) => t,
            Err(kind) => return kind.into(),
        };
        *len = text.len();
        if cap <= text.len() {
            return eas_status::EAS_STATUS_BUFFER_TOO_SMALL;
        }
        if buf.is_null() {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        }
        // SAFETY: the caller's promise: `buf` holds `cap` > text.len() writable bytes that do
        // not overlap `text`.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
            *buf.add(text.len()) = 0;
        }
        eas_status::EAS_STATUS_OK
    })
}

/// Stops refreshes and callbacks; from then on every call on `c` but eas_client_free returns
/// EAS_STATUS_CLOSED. Subscriptions end: their free_user_data has run when this returns (when
/// called from inside a callback, once that callback returns). Safe to call more than once and
/// concurrently with any other call on `c`. NULL is a no-op.
#[no_mangle]
pub extern "C" fn eas_client_close(c: *const eas_client) {
    boundary_or!((), {
        // SAFETY: `c` is NULL or a live client, by contract.
        if let Some(client) = unsafe { client(c) } {
            client.close();
        }
    })
}

/// Closes `c` if needed and releases it. No call on `c` may run concurrently with or after
/// it. It waits for a user callback that is running, never for a fetch in flight, and no
/// callback runs after it returns. NULL is a no-op.
#[no_mangle]
pub extern "C" fn eas_client_free(c: *mut eas_client) {
    boundary_or!((), {
        if !c.is_null() {
            // SAFETY: `c` came from eas_client_new and is freed once, by contract.
            drop(unsafe { Box::from_raw(c) });
        }
    })
}
