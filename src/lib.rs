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
//! - `call` ([`Call`]): one logical request and its attempts (`eas_call_*`); `load`:
//!   per-instance load state ([`InstanceStats`]); `balance`: candidates and the load-aware
//!   policies; `affinity`: the consistent-hash ring with bounded loads for keyed calls.
//! - `ffi`: the `eas_*` C functions; it converts, checks pointers and contains panics.
#![deny(unsafe_op_in_unsafe_fn)]

mod affinity;
mod balance;
pub mod blocking;
mod call;
pub mod callback;
pub mod client;
pub mod config;
pub mod eject;
pub mod error;
pub mod instance;
mod load;
mod load_report;
pub mod pick;
pub mod redact;
pub mod refresher;
mod retry_after;
pub mod snapshot;
mod snapshot_file;
pub mod source;
pub mod target;
mod tls;

pub mod ffi;

pub use call::{Body, Call, Outcome, CALL_NOT_IDEMPOTENT};
pub use client::{Client, Stats};
pub use config::Options;
pub use error::{Error, ErrorKind};
pub use instance::Instance;
pub use load::InstanceStats;
