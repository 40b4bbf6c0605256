//! Callback sources: `eas_client_new_with_source` and the builder its fetch function fills.

use std::ffi::{c_char, c_void};

use super::boundary::{boundary, str_arg};
use super::client::{eas_client, eas_free_fn};
use super::error::{eas_error, fail_with};
use super::options::eas_options;
use super::status::{eas_status, eas_status_str};
use crate::client::Client;
use crate::config::Options;
use crate::source::callback::ListBuilder;
use crate::source::nacos::ServerListProvider;

/// The list a source callback is filling. Valid only during the callback that received it;
/// used by that callback's thread only.
#[allow(non_camel_case_types)]
#[repr(transparent)]
pub struct eas_source_builder(ListBuilder);

/// A source callback: lists the instances present now by calling eas_source_builder_add for
/// each, then returns EAS_STATUS_OK (an empty list keeps the last one, like any source), or any
/// other status to report a failed fetch (the last list is kept).
#[allow(non_camel_case_types)]
pub type eas_source_fetch_fn =
    Option<extern "C" fn(user_data: *mut c_void, builder: *mut eas_source_builder) -> i32>;

/// Adds one instance to the list being built. `weight` is as in eas_instance (0: listed, never
/// picked). A malformed instance (an ip that is not a textual IPv4/IPv6 address, port 0) is
/// refused with EAS_STATUS_INVALID_ARGUMENT and the list goes on without it.
#[no_mangle]
pub extern "C" fn eas_source_builder_add(
    builder: *mut eas_source_builder,
    ip: *const c_char,
    port: u16,
    weight: u32,
) -> eas_status {
    boundary!({
        // SAFETY: `builder` is NULL or the builder passed to the running callback, by contract.
        let Some(builder) = (unsafe { builder.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        // SAFETY: a NUL-terminated string, by contract.
        let ip = match unsafe { str_arg(ip, "ip") } {
            Ok(ip) => ip,
            Err((status, _)) => return status,
        };
        match builder.0.add(ip, port, weight) {
            Ok(()) => eas_status::EAS_STATUS_OK,
            Err(error) => error.kind.into(),
        }
    })
}

/// Says why the running fetch fails (the callback then returns a status other than
/// EAS_STATUS_OK): the text appears in eas_client_last_error and eas_client_wait_ready
/// messages. `message` is NUL-terminated UTF-8 (invalid bytes are replaced); it is copied.
#[no_mangle]
pub extern "C" fn eas_source_builder_set_error(
    builder: *mut eas_source_builder,
    message: *const c_char,
) -> eas_status {
    boundary!({
        // SAFETY: `builder` is NULL or the builder passed to the running callback, by contract.
        let Some(builder) = (unsafe { builder.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        if message.is_null() {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        }
        // SAFETY: a NUL-terminated string, by contract.
        let text = unsafe { std::ffi::CStr::from_ptr(message) }.to_string_lossy();
        builder.0.set_error(&text);
        eas_status::EAS_STATUS_OK
    })
}

struct UserData(*mut c_void);
// SAFETY: the caller hands `user_data` to the library to be passed to its callbacks on the
// refresher thread; making that sound is the caller's part of the contract (see the header).
unsafe impl Send for UserData {}
// SAFETY: as above; the library never runs two calls of one source's callback at once.
unsafe impl Sync for UserData {}

/// Creates a client whose instance list comes from `fetch`, called on a background thread at
/// each refresh (every refresh_interval_ms, jittered), never two calls at once, and never after
/// eas_client_close has returned. The client behaves as for any target: a failed or empty
/// fetch keeps the last list; selection, ejection, subscriptions and wait_ready are the same.
/// `fetch` may call any eas_* function on the client except eas_client_free (and except
/// eas_client_wait_ready before the first list, which would wait for itself).
/// `free_user_data` (nullable) runs exactly once, when the client is closed (eas_client_close
/// or eas_client_free), after a `fetch` in progress returns; when this call fails it does not
/// run and the caller keeps ownership of `user_data`.
/// @param opts  options (copied), or NULL; the keys every source shares.
#[no_mangle]
pub extern "C" fn eas_client_new_with_source(
    fetch: eas_source_fetch_fn,
    user_data: *mut c_void,
    free_user_data: eas_free_fn,
    opts: *const eas_options,
    out: *mut *mut eas_client,
    err: *mut *mut eas_error,
) -> eas_status {
    boundary!({
        let Some(fetch) = fetch else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        if out.is_null() {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        }
        let empty = Options::new();
        // SAFETY: `opts` is NULL or options from eas_options_new not in use by another thread.
        let options = unsafe { opts.as_ref() }.map_or(&empty, |o| &o.options);
        let data = std::sync::Arc::new(UserData(user_data));
        let for_fetch = data.clone();
        let fetch_fn = Box::new(move |builder: &mut ListBuilder| {
            // eas_source_builder is a transparent wrapper of ListBuilder.
            let handle = builder as *mut ListBuilder as *mut eas_source_builder;
            match fetch(for_fetch.0, handle) {
                0 => Ok(()),
                status => {
                    // SAFETY: eas_status_str returns a static NUL-terminated string.
                    let text = unsafe { std::ffi::CStr::from_ptr(eas_status_str(status)) };
                    let mut why =
                        format!("it returned status {status} ({})", text.to_string_lossy());
                    if let Some(reason) = builder.error() {
                        why.push_str(": ");
                        why.push_str(reason);
                    }
                    Err(why)
                }
            }
        });
        let on_end =
            free_user_data.map(|free| Box::new(move || free(data.0)) as Box<dyn FnOnce() + Send>);
        match Client::with_source(fetch_fn, on_end, options) {
            Ok(client) => {
                let boxed = eas_client::boxed(client);
                // SAFETY: `out` is not NULL and writable, by contract.
                unsafe { *out = boxed };
                eas_status::EAS_STATUS_OK
            }
            // SAFETY: `err` is NULL or writable, by contract.
            Err(error) => unsafe { fail_with(err, &error) },
        }
    })
}

/// The Nacos server list a server-list callback is filling. Valid only during the callback
/// that received it.
#[allow(non_camel_case_types)]
#[repr(transparent)]
pub struct eas_server_list(Vec<String>);

/// A Nacos server-list callback: adds the servers to use now with eas_server_list_add and
/// returns EAS_STATUS_OK; any other status (or no server) keeps the servers last listed.
#[allow(non_camel_case_types)]
pub type eas_server_list_fn =
    Option<extern "C" fn(user_data: *mut c_void, list: *mut eas_server_list) -> i32>;

/// Adds one Nacos server, `host[:port]` (port 8848 by default; several may be given separated
/// by ',' or ';').
#[no_mangle]
pub extern "C" fn eas_server_list_add(
    list: *mut eas_server_list,
    server: *const c_char,
) -> eas_status {
    boundary!({
        // SAFETY: `list` is NULL or the list passed to the running callback, by contract.
        let Some(list) = (unsafe { list.as_mut() }) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        // SAFETY: a NUL-terminated string, by contract.
        match unsafe { str_arg(server, "server") } {
            Ok(server) if !server.trim().is_empty() => {
                list.0.push(server.to_owned());
                eas_status::EAS_STATUS_OK
            }
            Ok(_) => eas_status::EAS_STATUS_INVALID_ARGUMENT,
            Err((status, _)) => status,
        }
    })
}

/// Gives Nacos clients made with these options a function that supplies the Nacos servers
/// (the Nacos clients' ServerListProvider idea). It wins over env ALIBABA_ALIWARE_ENDPOINT_URL,
/// an address server and the target's server list. It is called on a background thread before
/// each discovery fetch, never two calls at once; when the servers it lists change, the client
/// moves to them. `free_user_data` (nullable) runs once, on whichever thread lets go last: when
/// these options have been freed or given another callback and every client made from them has
/// been freed (and a fetch it had in flight has returned). A client whose
/// target is not nacos:// refuses options that carry it. Setting it again replaces it.
#[no_mangle]
pub extern "C" fn eas_options_set_nacos_server_list(
    o: *mut eas_options,
    callback: eas_server_list_fn,
    user_data: *mut c_void,
    free_user_data: eas_free_fn,
) -> eas_status {
    boundary!({
        // SAFETY: `o` is NULL or options from eas_options_new, used by one thread at a time.
        let (Some(o), Some(callback)) = (unsafe { o.as_mut() }, callback) else {
            return eas_status::EAS_STATUS_NULL_PARAMETER;
        };
        let data = std::sync::Arc::new(UserData(user_data));
        let for_call = data.clone();
        let fetch = Box::new(move |list: &mut Vec<String>| {
            // eas_server_list is a transparent wrapper of Vec<String>.
            let handle = list as *mut Vec<String> as *mut eas_server_list;
            match callback(for_call.0, handle) {
                0 => Ok(()),
                status => Err(format!("it returned status {status}")),
            }
        });
        let on_end =
            free_user_data.map(|free| Box::new(move || free(data.0)) as Box<dyn FnOnce() + Send>);
        o.options.nacos_server_list = Some(ServerListProvider::new(fetch, on_end));
        eas_status::EAS_STATUS_OK
    })
}
