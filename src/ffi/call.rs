//! `eas_call`: the call functions of the C ABI (one logical request and its attempts).

use std::cell::Cell;
use std::ffi::{c_char, CStr};
use std::mem::MaybeUninit;

use super::boundary::{boundary, boundary_or};
use super::client::{client, eas_client};
use super::status::eas_status;
use crate::call::{Body, Call, Outcome, CALL_NOT_IDEMPOTENT};
use crate::instance::Instance;

/// Flag of eas_call_begin: retry only when nothing was sent (EAS_OUTCOME_CONNECT_FAILED).
pub const EAS_CALL_NOT_IDEMPOTENT: u32 = 1;
const _: () = assert!(EAS_CALL_NOT_IDEMPOTENT == CALL_NOT_IDEMPOTENT);

/// One logical request and its attempts, from eas_call_begin; free it with eas_call_free
/// before its client is freed. Movable between threads, never used by two at once.
#[allow(non_camel_case_types)]
pub struct eas_call {
    call: Call,
}

thread_local! {
    /// The memory of the last call freed on this thread, for the next eas_call_begin on it: a
    /// call cycle then allocates nothing. Freed with the thread (reachable until then).
    static SPARE: Cell<Option<Box<MaybeUninit<eas_call>>>> = const { Cell::new(None) };
}

/// A call's box: the thread's spare one if it has it, else a new one.
fn new_box(call: Call) -> *mut eas_call {
    let mut spare = SPARE
        .try_with(Cell::take)
        .ok()
        .flatten()
        .unwrap_or_else(Box::new_uninit);
    spare.write(eas_call { call });
    // Initialised just above; `MaybeUninit<eas_call>` has the layout of `eas_call`.
    Box::into_raw(spare).cast::<eas_call>()
}

/// # Safety
/// `call` came from `new_box` and is not used again.
unsafe fn free_box(call: *mut eas_call) {
    // SAFETY: `MaybeUninit<eas_call>` has the layout of `eas_call`, and the pointer came from
    // a `Box` of it, so this box owns the same allocation (and never drops its contents).
    let mut spare = unsafe { Box::from_raw(call.cast::<MaybeUninit<eas_call>>()) };
    // SAFETY: the contents are initialised (written by `new_box`) and dropped only here. On a
    // panic in that drop, `spare` still frees the memory as it unwinds.
    unsafe { spare.assume_init_drop() };
    // A thread being torn down has no spare slot any more: the box is freed then.
    let _ = SPARE.try_with(|slot| slot.set(Some(spare)));
}

/// How an attempt went, as far as response headers (eas_call_record's `outcome`).
#[repr(C)]
#[allow(non_camel_case_types, dead_code)]
pub enum eas_outcome {
    /// Response headers received, with http_status (100-599).
    EAS_OUTCOME_RESPONSE = 0,
    /// Nothing was sent: refused, unreachable, TLS failed.
    EAS_OUTCOME_CONNECT_FAILED = 1,
    /// No response headers within the attempt's deadline.
    EAS_OUTCOME_TIMEOUT = 2,
    /// The caller gave up: not the instance's fault (ends the call).
    EAS_OUTCOME_CANCELLED = 3,
    /// Sent (maybe in part), then reset before response headers.
    EAS_OUTCOME_RESET = 4,
}

/// How a recorded response's body ended (eas_call_finish's `body`).
#[repr(C)]
#[allow(non_camel_case_types, dead_code)]
pub enum eas_body {
    /// Read to its end.
    EAS_BODY_DONE = 0,
    /// Cut by the instance (reset, truncated): a failure of that instance.
    EAS_BODY_BROKEN = 1,
    /// The caller stopped reading: nothing reported.
    EAS_BODY_DROPPED = 2,
}

/// # Safety
/// `call` must be NULL or a call from eas_call_begin, not freed, not in use by another thread.
unsafe fn call_mut<'a>(call: *mut eas_call) -> Option<&'a mut Call> {
    // SAFETY: forwarded from the caller.
    unsafe { call.as_mut() }.map(|c| &mut c.call)
}

/// Begins a call on `c`. Attempts then come from eas_call_next, each recorded with
/// eas_call_record (and its body ended with eas_call_finish); the core picks each attempt's
/// instance (by `lb_policy`, or by affinity for a keyed call), never one this call tried,
/// and decides retries.
///
/// Thread-safe (as every `const eas_client *` function); the call it returns is not.
/// @param key      affinity key bytes (a session id, a conversation id, a prompt-prefix hash),
///                 copied; NULL with key_len 0 for none. A keyed call picks by affinity
///                 whatever lb_policy says: the same key, list and loads give the same
///                 instance in every process.
/// @param flags    0, or EAS_CALL_NOT_IDEMPOTENT; other bits are EAS_STATUS_INVALID_ARGUMENT.
/// @param out      receives the call on EAS_STATUS_OK; free it with eas_call_free before the
///                 client is freed.
/// @return EAS_STATUS_CLOSED after eas_client_close.
#[no_mangle]
pub extern "C" fn eas_call_begin(
    c: *const eas_client,
    key: *const u8,
    key_len: usize,
    flags: u32,
    out: *mut *mut eas_call,
) -> eas_status {
    boundary!({
        // SAFETY: `c` is NULL or a live client, and `out` NULL or writable, by contract.
        let (Some(client), Some(out)) = (unsafe { client(c) }, unsafe { out.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        if flags & !EAS_CALL_NOT_IDEMPOTENT != 0 {
            return eas_status::EAS_STATUS_INVALID_ARGUMENT;
        }
        let key: Option<&[u8]> = if key_len == 0 {
            None
        } else if key.is_null() {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        } else {
            // SAFETY: `key` points to `key_len` readable bytes, by contract.
            Some(unsafe { std::slice::from_raw_parts(key, key_len) })
        };
        match client.call(key, flags) {
            Ok(call) => {
                *out = new_box(call);
                eas_status::EAS_STATUS_OK
            }
            Err(kind) => kind.into(),
        }
    })
}

/// The instance for the next attempt, among instances this call has not tried (of positive
/// weight, not ejected, not backing off; when none is, the untried ones: panic mode); it is
/// in flight from now. An attempt still open (next without record) is recorded as
/// EAS_OUTCOME_CANCELLED first, which ends the call; a recorded one's body is taken as
/// EAS_BODY_DONE.
/// @param out  written only when the result is EAS_STATUS_OK.
/// @return EAS_STATUS_NO_INSTANCE when the attempt budget (max_attempts) is spent, no untried
///         instance is left, or the last outcome ended the call; EAS_STATUS_CLOSED after
///         eas_client_close.
#[no_mangle]
pub extern "C" fn eas_call_next(call: *mut eas_call, out: *mut Instance) -> eas_status {
    boundary!({
        // SAFETY: `call` is NULL or a live call, and `out` NULL or writable, by contract.
        let (Some(call), Some(out)) = (unsafe { call_mut(call) }, unsafe { out.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        match call.next_into(out) {
            Ok(()) => eas_status::EAS_STATUS_OK,
            Err(kind) => kind.into(),
        }
    })
}

/// Records how the open attempt went (see eas_outcome; the outcome table of the README says
/// what each means for ejection, back-off and latency).
/// @param outcome        an eas_outcome value.
/// @param http_status    the response's status (100-599) for EAS_OUTCOME_RESPONSE; ignored
///                       otherwise.
/// @param header_names   the response's header lines as parallel name/value arrays of
///                       NUL-terminated strings (NULL/0 for none; names case-insensitive; a
///                       NULL entry is skipped). The core reads only `endpoint-load-metrics`
///                       and `retry-after`, so bindings pass only those. Not kept.
/// @param retry          NULL, or receives 1 when the caller should call eas_call_next
///                       (budget and an untried candidate remain and the outcome is
///                       retryable), else 0; written only on EAS_STATUS_OK.
/// @return EAS_STATUS_OK whenever an attempt is open (an instance that left the list meanwhile
///         counts nothing; a closed client gives *retry 0); EAS_STATUS_INVALID_ARGUMENT when no
///         attempt is open, for an unknown outcome, or a status outside 100-599.
#[no_mangle]
pub extern "C" fn eas_call_record(
    call: *mut eas_call,
    outcome: i32,
    http_status: u32,
    header_names: *const *const c_char,
    header_values: *const *const c_char,
    n_headers: usize,
    retry: *mut u32,
) -> eas_status {
    boundary!({
        // SAFETY: `call` is NULL or a live call, by contract.
        let Some(call) = (unsafe { call_mut(call) }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        let Some(outcome) = Outcome::from_code(outcome, http_status) else {
            return eas_status::EAS_STATUS_INVALID_ARGUMENT;
        };
        if n_headers > 0 && (header_names.is_null() || header_values.is_null()) {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        }
        // SAFETY (both closures): the arrays hold `n_headers` pointers, and non-NULL entries
        // are NUL-terminated strings that outlive the call, by contract.
        let entry = |i: usize| unsafe { (*header_names.add(i), *header_values.add(i)) };
        let bytes = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_bytes();
        // Read in place as bytes: no copy, no UTF-8 check (the core reads bytes that are not
        // UTF-8 as U+FFFD would be read).
        let headers = (0..n_headers).filter_map(|i| {
            let (name, value) = entry(i);
            (!name.is_null() && !value.is_null()).then(|| (bytes(name), bytes(value)))
        });
        match call.record_raw(outcome, headers) {
            Ok(again) => {
                // SAFETY: `retry` is NULL or writable, by contract.
                if let Some(retry) = unsafe { retry.as_mut() } {
                    *retry = u32::from(again);
                }
                eas_status::EAS_STATUS_OK
            }
            Err(kind) => kind.into(),
        }
    })
}

/// The recorded attempt's body is over (see eas_body): the attempt leaves in-flight, and
/// EAS_BODY_BROKEN counts a failure of its instance. Implied, as EAS_BODY_DONE, by the next
/// eas_call_next and by eas_call_free. With no recorded attempt (none yet, or finished
/// already) it does nothing and returns EAS_STATUS_OK.
/// @return EAS_STATUS_INVALID_ARGUMENT for an unknown body value.
#[no_mangle]
pub extern "C" fn eas_call_finish(call: *mut eas_call, body: i32) -> eas_status {
    boundary!({
        // SAFETY: `call` is NULL or a live call, by contract.
        let Some(call) = (unsafe { call_mut(call) }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        let Some(body) = Body::from_code(body) else {
            return eas_status::EAS_STATUS_INVALID_ARGUMENT;
        };
        match call.finish(body) {
            Ok(()) => eas_status::EAS_STATUS_OK,
            Err(kind) => kind.into(),
        }
    })
}

/// Frees a call: an attempt not yet recorded ends as EAS_OUTCOME_CANCELLED, a recorded one's
/// body as EAS_BODY_DONE. Call it before eas_client_free of the call's client (after
/// eas_client_close is fine). NULL is a no-op.
#[no_mangle]
pub extern "C" fn eas_call_free(call: *mut eas_call) {
    boundary_or!((), {
        if !call.is_null() {
            // SAFETY: `call` came from eas_call_begin and is freed once, by contract.
            unsafe { free_box(call) };
        }
    })
}
