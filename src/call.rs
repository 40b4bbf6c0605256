//! A call: one logical request and its attempts. The core picks each attempt's instance, sees
//! how it went, decides whether to retry, and feeds ejection, back-off, latency and load
//! figures. The driver (a binding's HTTP helper) only does the I/O.
//!
//! Counts cannot leak: an attempt's in-flight count is an [`InFlight`] guard owned by the call
//! (the open attempt, then the recorded one until its body ends), so every way an attempt ends
//! (record, finish, next, drop of the call) drops the guard exactly once. The guard holds the
//! instance's load state, so an attempt that outlives its instance's place in the list ends on
//! state that no snapshot shows any more.

use std::sync::Arc;

use crate::balance::{self, Rng};
use crate::client::Inner;
use crate::clock;
use crate::config::LbPolicy;
use crate::eject::unix_ms;
use crate::error::ErrorKind;
use crate::instance::Instance;
use crate::load::InFlight;
use crate::load_report::{self, LoadReport};
use crate::retry_after;
use crate::snapshot::Snapshot;

/// Retry only when nothing was sent (`CONNECT_FAILED`): `EAS_CALL_NOT_IDEMPOTENT`.
pub const CALL_NOT_IDEMPOTENT: u32 = 1;

/// How long a 429 without `Retry-After` keeps its instance out of picks.
pub(crate) const DEFAULT_429_BACKOFF_MS: u64 = 10_000;

/// How an attempt went, as far as response headers (`eas_outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers received, with this HTTP status (100-599).
    Response(u16),
    /// Nothing was sent: refused, unreachable, TLS failed.
    ConnectFailed,
    /// No response headers within the attempt's deadline.
    Timeout,
    /// The caller gave up: not the instance's fault; ends the call.
    Cancelled,
    /// Sent (maybe in part), then reset before response headers.
    Reset,
}

impl Outcome {
    /// From the C ABI's `eas_outcome` code and status; `None` for an unknown code or a
    /// response status outside 100-599.
    pub fn from_code(code: i32, http_status: u32) -> Option<Outcome> {
        match code {
            0 if (100..=599).contains(&http_status) => Some(Outcome::Response(http_status as u16)),
            1 => Some(Outcome::ConnectFailed),
            2 => Some(Outcome::Timeout),
            3 => Some(Outcome::Cancelled),
            4 => Some(Outcome::Reset),
            _ => None,
        }
    }
}

/// How the body of a recorded response ended (`eas_body`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// Read to its end.
    Done,
    /// Cut by the instance (reset, truncated): a failure of that instance.
    Broken,
    /// The caller stopped reading: nothing reported.
    Dropped,
}

impl Body {
    pub fn from_code(code: i32) -> Option<Body> {
        match code {
            0 => Some(Body::Done),
            1 => Some(Body::Broken),
            2 => Some(Body::Dropped),
            _ => None,
        }
    }
}

/// What an outcome means for the instance's ejection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Success,
    Failure,
    /// 429, or 503 with Retry-After: out of picks for that long, not a failure.
    BackOff,
    Nothing,
}

struct Attempt {
    id: u64,
    in_flight: InFlight,
    /// Monotonic ns when the attempt began (before its pick).
    started_ns: u64,
    /// The recorded outcome already counted a failure (so a broken body counts none again).
    failed: bool,
}

/// One logical request and its attempts. Movable between threads; used by one at a time.
pub struct Call {
    client: Arc<Inner>,
    /// The affinity key's hash, for a keyed call.
    key: Option<u64>,
    not_idempotent: bool,
    tried: Tried,
    /// Attempts started.
    attempts: u32,
    /// The attempt between next and record.
    open: Option<Attempt>,
    /// The recorded attempt whose body is not over yet.
    recorded: Option<Attempt>,
    /// The last outcome ended the call.
    ended: bool,
    rng: Rng,
}

impl Call {
    pub(crate) fn new(client: Arc<Inner>, key: Option<&[u8]>, flags: u32) -> Call {
        if key.is_some() {
            // Its pick's bound reads the client's total in flight.
            client.loads.count_client_in_flight();
        }
        Call {
            client,
            key: key.map(crate::affinity::key_hash),
            not_idempotent: flags & CALL_NOT_IDEMPOTENT != 0,
            tried: Tried::default(),
            attempts: 0,
            open: None,
            recorded: None,
            ended: false,
            rng: Rng::new(),
        }
    }

    /// The instance for the next attempt, among instances this call has not tried; it is in
    /// flight from now. An attempt still open is recorded as cancelled first (which ends the
    /// call); a recorded one's body is taken as done. `NoInstance` when the attempt budget is
    /// spent, no untried instance is left, or the last outcome ended the call; `Closed` after
    /// the client was closed.
    // Named as eas_call_next; a call is no iterator (it fails, and its items need a record).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Instance, ErrorKind> {
        let mut out = Instance::ZEROED;
        self.next_into(&mut out)?;
        Ok(out)
    }

    /// [`Call::next`] into `out` (written only on success): the C ABI's form, which copies the
    /// 128-byte record once, from the list to the caller.
    pub(crate) fn next_into(&mut self, out: &mut Instance) -> Result<(), ErrorKind> {
        if self.recorded.is_some() {
            self.finish(Body::Done)?;
        }
        if self.open.is_some() {
            self.record(Outcome::Cancelled, &[])?;
        }
        if self.client.is_closed() {
            return Err(ErrorKind::Closed);
        }
        if self.ended || self.attempts >= self.client.call_settings().max_attempts {
            return Err(ErrorKind::NoInstance);
        }
        // The one clock read of a next: the attempt's start, and the time its pick sees.
        let now_ns = clock::now_ns();
        let now_ms = now_ns / 1_000_000;
        let settings = *self.client.call_settings();
        let (id, in_flight) = if self.key.is_none() && settings.lb_policy == LbPolicy::RoundRobin {
            let (snapshot, index) = self.pick_round_robin()?;
            let (Some(instance), Some(load)) =
                (snapshot.instances.get(index), snapshot.loads.get(index))
            else {
                return Err(ErrorKind::NoInstance);
            };
            *out = *instance;
            (instance.id, load.start())
        } else {
            // On the snapshot this thread's cursor holds: no epoch pin or reference count for
            // it (the attempt holds its instance's load state).
            let (key, tried, rng) = (self.key, self.tried.as_slice(), &mut self.rng);
            let client = &self.client;
            client
                .with_current(|snapshot| {
                    let index = match key {
                        Some(key) => client.rings.with(snapshot, |ring| {
                            crate::affinity::pick(snapshot, ring, key, tried, now_ms, &settings)
                        }),
                        None => pick_by_load(client, snapshot, tried, now_ms, &settings, rng),
                    }?;
                    let (instance, load) =
                        (snapshot.instances.get(index)?, snapshot.loads.get(index)?);
                    *out = *instance;
                    Some((instance.id, load.start()))
                })
                .flatten()
                .ok_or(ErrorKind::NoInstance)?
        };
        self.attempts += 1;
        self.tried.push(id);
        self.open = Some(Attempt {
            id,
            in_flight,
            started_ns: now_ns,
            failed: false,
        });
        Ok(())
    }

    /// A round-robin attempt's instance: the snapshot picked from and its index there. The
    /// pick comes from the picker, which may be one list behind the cell for an instant: then
    /// the cell's list is asked again.
    fn pick_round_robin(&mut self) -> Result<(Arc<Snapshot>, usize), ErrorKind> {
        for _ in 0..4 {
            let snapshot = self.client.current().ok_or(ErrorKind::NoInstance)?;
            let mut out = Instance::ZEROED;
            self.client
                .select_excluding(self.tried.as_slice(), &mut out)?;
            match snapshot.index_of(out.id) {
                Some(index) if index < snapshot.loads.len() => return Ok((snapshot, index)),
                _ => continue,
            }
        }
        Err(ErrorKind::NoInstance)
    }

    /// Records the open attempt: its effect on the instance's ejection state, latency and load
    /// figures (`headers`: the response's `endpoint-load-metrics` and `retry-after`, names in
    /// any case; others are ignored). Returns whether the caller should call next: the outcome
    /// is retryable, and budget and an untried instance remain. `InvalidArgument` when no
    /// attempt is open.
    pub fn record(
        &mut self,
        outcome: Outcome,
        headers: &[(&str, &str)],
    ) -> Result<bool, ErrorKind> {
        self.record_raw(
            outcome,
            headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
        )
    }

    /// [`Call::record`] with the headers as bytes, as the C ABI has them (not checked for
    /// UTF-8: bytes that are not read as U+FFFD would).
    pub(crate) fn record_raw<'h>(
        &mut self,
        outcome: Outcome,
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    ) -> Result<bool, ErrorKind> {
        let mut attempt = self.open.take().ok_or(ErrorKind::InvalidArgument)?;
        // The one clock read of a record (monotonic only: the stats convert to unix time).
        let now_ns = clock::now_ns();
        let settings = *self.client.call_settings();
        let closed = self.client.is_closed();
        let load = attempt.in_flight.load();
        // An instance that left the list meanwhile counts nothing.
        let counts = load.is_present() && !closed;
        let mut retry_after_ms = None;
        let mut report: Option<LoadReport> = None;
        if counts {
            for (name, value) in headers {
                if is_header(name, load_report::HEADER) {
                    match load_report::parse_bytes(value) {
                        Some(new) => {
                            if new.malformed {
                                self.client.loads.count_malformed();
                            }
                            if new.has_figures() {
                                // A figure a later report lacks keeps the earlier one's.
                                report = Some(match report {
                                    Some(old) => new.over(&old),
                                    None => new,
                                });
                            }
                        }
                        None => self.client.loads.count_malformed(),
                    }
                } else if is_header(name, retry_after::HEADER) {
                    retry_after_ms = retry_after::parse(&String::from_utf8_lossy(value), unix_ms())
                        .map(|d| d.as_millis() as u64);
                }
            }
        }
        let idempotent = !self.not_idempotent;
        let (effect, retryable, sample) = match outcome {
            Outcome::Response(429) => (Effect::BackOff, idempotent, false),
            Outcome::Response(503) if retry_after_ms.is_some() => {
                (Effect::BackOff, idempotent, false)
            }
            Outcome::Response(s) if s >= 500 => (Effect::Failure, idempotent, false),
            Outcome::Response(_) => (Effect::Success, false, true),
            Outcome::ConnectFailed => (Effect::Failure, true, false),
            Outcome::Reset => (Effect::Failure, idempotent, false),
            Outcome::Timeout => (Effect::Failure, idempotent, true),
            Outcome::Cancelled => (Effect::Nothing, false, false),
        };
        if counts {
            match effect {
                Effect::Success => self.client.success(attempt.id),
                Effect::Failure => self.client.failure(attempt.id),
                Effect::BackOff => {
                    let wait = retry_after_ms.unwrap_or(DEFAULT_429_BACKOFF_MS);
                    self.client
                        .back_off(attempt.id, wait.min(self.client.ejection_max_ms()));
                }
                Effect::Nothing => {}
            }
            let latency_us = sample.then(|| now_ns.saturating_sub(attempt.started_ns) as f64 / 1e3);
            if report.is_some() || latency_us.is_some() {
                load.take(report.as_ref(), latency_us, now_ns, settings.ewma_decay_ms);
            }
            // round_robin does not read the median.
            if latency_us.is_some() && settings.lb_policy != LbPolicy::RoundRobin {
                let decay = settings.ewma_decay_ms;
                self.client.loads.refresh_median(
                    now_ns / 1_000_000,
                    decay,
                    settings.load_report_ttl_ms,
                    || self.client.current().map(|s| s.loads.to_vec()),
                );
            }
        }
        attempt.failed = effect == Effect::Failure;
        self.ended = !retryable;
        if matches!(outcome, Outcome::Response(_)) {
            // In flight until its body is over (finish, next or drop).
            self.recorded = Some(attempt);
        } else {
            drop(attempt);
        }
        if !retryable || closed || self.attempts >= settings.max_attempts {
            return Ok(false);
        }
        Ok(self
            .client
            .current()
            .is_some_and(|s| balance::any_untried(&s, self.tried.as_slice())))
    }

    /// The recorded attempt's body is over; the attempt leaves in-flight. A broken body is a
    /// failure of the instance (unless its outcome already counted one). Nothing to finish
    /// (no recorded attempt, or finished already) is not an error: a response already
    /// received is never turned into one.
    pub fn finish(&mut self, body: Body) -> Result<(), ErrorKind> {
        let Some(attempt) = self.recorded.take() else {
            return Ok(());
        };
        let load = attempt.in_flight.load();
        if body == Body::Broken && !attempt.failed && load.is_present() && !self.client.is_closed()
        {
            self.client.failure(attempt.id);
        }
        drop(attempt);
        Ok(())
    }

    /// Attempts started so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

impl Drop for Call {
    /// An attempt not yet recorded ends as cancelled; a recorded one's body as done.
    fn drop(&mut self) {
        if self.open.is_some() {
            let _ = self.record(Outcome::Cancelled, &[]);
        }
        let _ = self.finish(Body::Done);
    }
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("keyed", &self.key.is_some())
            .field("attempts", &self.attempts)
            .field("open", &self.open.is_some())
            .field("recorded", &self.recorded.is_some())
            .field("ended", &self.ended)
            .finish()
    }
}

/// An unkeyed attempt's instance by least_request or peak_ewma.
fn pick_by_load(
    client: &Inner,
    snapshot: &Snapshot,
    tried: &[u64],
    now_ms: u64,
    settings: &crate::config::CallSettings,
    rng: &mut Rng,
) -> Option<usize> {
    match settings.lb_policy {
        LbPolicy::PeakEwma => {
            let median = client.loads.median_ewma_us();
            balance::two_choices(snapshot, tried, now_ms, rng).map(|pair| {
                balance::lower_cost(pair, rng, |i| balance::peak_ewma_cost(snapshot, i, median))
            })
        }
        _ => balance::least_request(
            snapshot,
            tried,
            now_ms,
            settings.load_report_ttl_ms,
            client.loads.median_others(),
            rng,
        ),
    }
}

/// Whether header `name` is `header` (ASCII, lower case): in any case, with surrounding
/// whitespace as `str::trim` removes it (a name that is not UTF-8 is no header the core reads).
fn is_header(name: &[u8], header: &str) -> bool {
    name.eq_ignore_ascii_case(header.as_bytes())
        || (name.len() > header.len()
            && std::str::from_utf8(name).is_ok_and(|n| n.trim().eq_ignore_ascii_case(header)))
}

/// The ids a call has tried, inline up to `INLINE` (max_attempts is 3 by default), so that a
/// call allocates nothing for them.
#[derive(Debug, Default)]
struct Tried {
    len: usize,
    inline: [u64; Tried::INLINE],
    more: Vec<u64>,
}

impl Tried {
    const INLINE: usize = 4;

    fn as_slice(&self) -> &[u64] {
        if self.len <= Tried::INLINE {
            &self.inline[..self.len]
        } else {
            &self.more
        }
    }

    fn push(&mut self, id: u64) {
        if self.len < Tried::INLINE {
            self.inline[self.len] = id;
        } else {
            if self.len == Tried::INLINE {
                self.more.extend_from_slice(&self.inline);
            }
            self.more.push(id);
        }
        self.len += 1;
    }
}
