//! libeasdirect: client-side discovery and load balancing for PAI-EAS services (and any service
//! a supported source lists), behind a C ABI.
//!
//! The Rust API is what the crate root exports: [`Client`] (discovery, plain picks, ejection
//! reports, subscribers), [`Call`] (one logical request and its attempts), [`Options`],
//! [`Instance`], [`InstanceStats`], [`Error`]. Everything else is internal.
//!
//! Module map (the safe core, then the C ABI):
//! - `target`, `config`: target strings and option keys; `redact`: what of a target or URL may
//!   be printed.
//! - `source`: discovery sources (`eas`, `nacos`, `dns`, `static`, callback); each fetch gives
//!   a list or an error.
//! - `instance`: the 128-byte instance record the C ABI hands out.
//! - `pick`: the smooth weighted round-robin cycle and the per-thread cursors of a pick.
//! - `snapshot`: immutable published lists and their lock-free publication.
//! - `eject`: failure ejection.
//! - `refresher`: the shared background threads and fork handling.
//! - `blocking`: the few shared threads for calls that may hang (name lookups, file I/O).
//! - `client`: one target's client: its refreshes, health (ejections, back-offs) and
//!   subscribers, each in its own module.
//! - `call`: one logical request and its attempts (`eas_call_*`); `load`: per-instance load
//!   state; `balance`: candidates and the load-aware policies; `affinity`: the consistent-hash
//!   ring with bounded loads for keyed calls; `load_report`, `retry_after`: the two response
//!   headers a call reads.
//! - `ffi`: the `eas_*` C functions; it converts, checks pointers and contains panics.
#![deny(unsafe_op_in_unsafe_fn)]

mod affinity;
mod balance;
pub(crate) mod blocking;
mod call;
pub(crate) mod callback;
pub(crate) mod client;
mod clock;
pub(crate) mod config;
pub(crate) mod eject;
pub(crate) mod error;
pub(crate) mod instance;
mod load;
mod load_report;
pub(crate) mod log;
mod metrics;
pub(crate) mod pick;
mod push;
pub(crate) mod redact;
pub(crate) mod refresher;
mod retry_after;
pub(crate) mod snapshot;
mod snapshot_file;
pub(crate) mod source;
pub(crate) mod target;
mod tls;

mod ffi;

pub use call::{Body, Call, Outcome, CALL_NOT_IDEMPOTENT};
pub use callback::EndFn;
pub use client::{ChangeFn, Client, Stats, Transport};
pub use config::Options;
pub use error::{Error, ErrorKind};
pub use instance::Instance;
pub use load::InstanceStats;
pub use log::{Level, LogFn, LogSink};
pub use snapshot::Snapshot;
pub use source::callback::{FetchFn, ListBuilder};

/// Not API: what the crate's own tests, fuzz targets and benches reach inside it for (parsers
/// fed hostile bytes, thread bounds, the clock). It may change in any release.
#[doc(hidden)]
pub mod internals {
    pub use crate::blocking::{file_io, MAX_FILE_THREADS, MAX_LOOKUP_THREADS};
    pub use crate::eject::monotonic_ms;
    pub use crate::instance::host_id;
    pub use crate::refresher::MAX_THREADS;
    pub use crate::source::nacos::ServerListProvider;
    pub use crate::source::{dns, eas, nacos};
    pub use crate::target::{Target, TargetSpec};
}
