//! The C ABI: `eas_*` functions over the safe core. This layer only converts, checks pointers
//! and contains panics; every decision is the core's.
//!
//! The exported functions take raw pointers from C callers, whose validity is the contract the
//! header documents for each parameter; marking them `unsafe fn` would change nothing for C.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::c_char;

mod boundary;
pub mod call;
pub mod client;
pub mod error;
pub mod options;
pub mod source;
pub mod status;

/// ABI major version: a binding requires the same major.
pub const EAS_ABI_MAJOR: u32 = 1;
/// ABI minor version: a binding requires at least the minor it was built for.
pub const EAS_ABI_MINOR: u32 = 4;

/// The library version, e.g. "0.1.0". Static; never to be freed.
#[no_mangle]
pub extern "C" fn eas_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version: EAS_ABI_MAJOR << 16 | EAS_ABI_MINOR of the library actually loaded.
#[no_mangle]
pub extern "C" fn eas_abi_version() -> u32 {
    (EAS_ABI_MAJOR << 16) | EAS_ABI_MINOR
}
