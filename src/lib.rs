//! libeasdirect: client-side discovery and load balancing for PAI-EAS services (and any service
//! a supported source lists), behind a C ABI.
//!
//! Module map (the safe core, then the C ABI):
//! - [`target`], [`config`]: target strings and option keys; [`redact`]: what of a target or
//!   URL may be printed.
//! - [`source`]: discovery sources (`eas`, `static`); each fetch gives a list or an error.
//! - [`instance`]: the 128-byte instance record the C ABI hands out.
//! - [`pick`]: the smooth weighted round-robin cycle and the per-thread cursors of a pick.
//! - [`snapshot`]: immutable published lists and their lock-free publication.
//! - [`eject`]: failure ejection.
//! - [`refresher`]: the shared background threads and fork handling.
//! - [`blocking`]: the few shared threads for calls that may hang (name lookups, file I/O).
//! - [`client`]: one target's discovery, selection, ejection and subscribers.
//! - `ffi`: the `eas_*` C functions; it converts, checks pointers and contains panics.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod blocking;
pub mod callback;
pub mod client;
pub mod config;
pub mod eject;
pub mod error;
pub mod instance;
// Read by the call API of issue 13 ("Load-aware calls in the core"); unused until then.
#[allow(dead_code)]
mod load_report;
pub mod pick;
pub mod redact;
pub mod refresher;
// Read by the call API of issue 13 (back-offs on 429 and 503); unused until then.
#[allow(dead_code)]
mod retry_after;
pub mod snapshot;
mod snapshot_file;
pub mod source;
pub mod target;
mod tls;

pub mod ffi;

pub use client::{Client, Stats};
pub use config::Options;
pub use error::{Error, ErrorKind};
pub use instance::Instance;
