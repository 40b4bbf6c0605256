//! Per-instance load state of one client: in-flight attempts, counters, the latency EWMA, the
//! last load report and back-offs. Kept by instance id across list changes and attached to each
//! new snapshot, so that an instance that stays keeps its figures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::instance::Instance;
use crate::load_report::LoadReport;

/// One instance's load figures. Shared by the snapshots that list the instance and by the
/// attempts in flight on it; an attempt that outlives the instance's place in the list ends on
/// this object, which no snapshot shows any more, so it counts nothing visible.
#[derive(Debug, Default)]
pub struct InstanceLoad {
    /// Attempts of this client in flight on the instance (the low 32 bits) and attempts started
    /// since the instance joined the list (the high 32 bits, wrapping into `attempts_high`):
    /// one word, so that an attempt's start is one atomic add.
    counts: AtomicU64,
    /// How many times the attempt count in `counts` wrapped.
    attempts_high: AtomicU32,
    /// Failures the ejection state saw: failed attempts and `report_failure` calls.
    failures: AtomicU64,
    /// Monotonic ms until which the instance backs off (429, 503 with Retry-After); 0: none.
    backoff_until: AtomicU64,
    /// False once the instance has left the list.
    present: AtomicBool,
    /// What a pick reads, kept apart from `figures` so that it takes no lock: the monotonic ms
    /// of the last report (0: none), what that report shows beyond this client (see `others`),
    /// and the latency EWMA (f64 bits, µs; 0: no sample). Written under the `figures` lock
    /// after it; a pick may see one report's time with the next one's load, which no policy
    /// minds.
    report_ms: AtomicU64,
    others: AtomicU32,
    ewma_us: AtomicU64,
    /// The plain (mean) EWMA of the same samples, f64 bits, µs (0: no sample), which one long
    /// request does not move as it moves the peak.
    mean_us: AtomicU64,
    /// least_request's factor for how slow the instance is (f64 bits; 0 reads as 1): its mean
    /// over the median instance's, 1 to 10, fading back to 1 as its last sample ages (so an
    /// instance that was slow once, and so was left alone, is tried again). Set off the pick
    /// path by `LoadTable::refresh_median`.
    slowness: AtomicU64,
    /// The writers' state (one lock per recorded attempt that brings a report or a sample),
    /// also read whole by the instance stats.
    figures: Mutex<Figures>,
    /// The client's attempts in flight on every instance (shared by its table's instances): what
    /// a keyed pick's bound needs, read in O(1) instead of summed over the list.
    client_in_flight: Arc<ClientInFlight>,
}

/// One attempt in `InstanceLoad::counts`: its in-flight count and its attempt count.
const ONE_IN_FLIGHT: u64 = 1;
const ONE_ATTEMPT: u64 = 1 << 32;

/// A client's attempts in flight on all its instances, counted from its first keyed call on
/// (only the bound of keyed picks reads it, and a client that makes none saves an atomic add
/// and subtract per attempt). Attempts that started before are not in it, to their end.
#[derive(Debug, Default)]
pub(crate) struct ClientInFlight {
    count: AtomicU64,
    counting: AtomicBool,
}

/// What the last load report said, and the latency EWMA.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    pub waiting: u32,
    pub running: u32,
    pub kv_permille: u32,
    /// Whether the last report gave `running` (`others` is computed from it then).
    pub has_running: bool,
    /// Whether the last report gave `waiting`.
    pub has_waiting: bool,
    /// This client's in-flight count on the instance when the report arrived.
    pub in_flight_at_report: u32,
    /// Monotonic ms of the last report; 0: none.
    pub report_ms: u64,
    /// Peak EWMA of the time to response headers, in microseconds; 0: no sample yet.
    pub ewma_us: f64,
    /// Plain EWMA of the same samples (the same decay), µs; 0: no sample yet.
    pub mean_us: f64,
    /// Monotonic ns of the last latency sample.
    pub sample_ns: u64,
}

/// The figures of one instance of the current list, from this client's calls and the
/// instance's load reports (eas_client_instance_stats). 64 bytes: the layout is the C ABI's
/// `eas_instance_stats`, asserted by every binding; it never grows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceStats {
    /// @0 the instance's id.
    pub id: u64,
    /// @8 attempts of this client now in flight.
    pub in_flight: u32,
    /// @12 the instance's queue, from its last load report.
    pub reported_waiting: u32,
    /// @16 call attempts, since the instance joined the list.
    pub attempts: u64,
    /// @24 every failure the ejection state saw: failed attempts and eas_report_failure calls.
    pub failures: u64,
    /// @32 what peak_ewma uses: the peak EWMA of the time to response headers, in
    /// microseconds; 0 before the first sample.
    pub latency_ewma_us: u32,
    /// @36 KV-cache use 0-1000, from its last load report.
    pub reported_kv_permille: u32,
    /// @40 until when (unix ms) it is out of picks, ejected or backing off; 0 when neither.
    pub ejected_until_unix_ms: u64,
    /// @48 time of the last load report; 0 if none.
    pub report_unix_ms: u64,
    /// @56 the instance's weight.
    pub weight: u32,
    /// @60 requests running, from its last load report.
    pub reported_running: u32,
}

const _: () = assert!(std::mem::size_of::<InstanceStats>() == 64);

impl InstanceStats {
    /// The stats of `inst`, given its load state and the deadline (unix ms, 0: none) until
    /// which it is out of picks.
    /// The record of `inst`; `now` is the clock pair of the stats call (see `StatsClock`).
    pub(crate) fn of(
        inst: &Instance,
        load: &InstanceLoad,
        out_until_unix_ms: u64,
        now: StatsClock,
    ) -> InstanceStats {
        let f = load.figures();
        // Reports keep only monotonic time (one clock read per record); the wall-clock time
        // shown here is converted with the offset of now.
        let report_unix_ms = match f.report_ms {
            0 => 0,
            at => now
                .unix_ms
                .saturating_sub(now.monotonic_ms.saturating_sub(at)),
        };
        InstanceStats {
            id: inst.id,
            in_flight: load.in_flight(),
            reported_waiting: f.waiting,
            attempts: load.attempts(),
            failures: load.failures(),
            latency_ewma_us: f.ewma_us.round().min(f64::from(u32::MAX)) as u32,
            reported_kv_permille: f.kv_permille,
            ejected_until_unix_ms: out_until_unix_ms,
            report_unix_ms,
            weight: inst.weight,
            reported_running: f.running,
        }
    }
}

/// Ends one attempt's in-flight count exactly once: when dropped.
#[derive(Debug)]
pub struct InFlight {
    load: Arc<InstanceLoad>,
    /// The attempt is in the client's total.
    in_total: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.counts.fetch_sub(ONE_IN_FLIGHT, Ordering::AcqRel);
        if self.in_total {
            self.load
                .client_in_flight
                .count
                .fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl InFlight {
    pub fn load(&self) -> &Arc<InstanceLoad> {
        &self.load
    }
}

impl InstanceLoad {
    /// Starts an attempt on the instance; it is in flight until the returned guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        let before = self
            .counts
            .fetch_add(ONE_ATTEMPT + ONE_IN_FLIGHT, Ordering::AcqRel);
        if before >> 32 == u64::from(u32::MAX) {
            self.attempts_high.fetch_add(1, Ordering::Relaxed);
        }
        let total = &self.client_in_flight;
        let in_total = total.counting.load(Ordering::Relaxed);
        if in_total {
            total.count.fetch_add(1, Ordering::AcqRel);
        }
        InFlight {
            load: self.clone(),
            in_total,
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.counts.load(Ordering::Acquire) as u32
    }

    /// The client's attempts in flight on all its instances (those that left the list included,
    /// until they end), since its first keyed call (see `ClientInFlight`).
    pub fn client_in_flight(&self) -> u64 {
        self.client_in_flight.count.load(Ordering::Acquire)
    }

    pub fn attempts(&self) -> u64 {
        // Two reads: at the moment of a wrap (every 2^32 attempts) they may disagree once.
        (u64::from(self.attempts_high.load(Ordering::Relaxed)) << 32)
            | (self.counts.load(Ordering::Relaxed) >> 32)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn count_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn is_present(&self) -> bool {
        self.present.load(Ordering::Acquire)
    }

    pub fn backoff_until(&self) -> u64 {
        self.backoff_until.load(Ordering::Acquire)
    }

    /// Backs off until `until_ms` (monotonic), unless a later back-off already holds; returns
    /// the deadline in force.
    pub fn back_off_until(&self, until_ms: u64) -> u64 {
        self.backoff_until
            .fetch_max(until_ms, Ordering::AcqRel)
            .max(until_ms)
    }

    pub fn figures(&self) -> Figures {
        *lock(&self.figures)
    }

    /// The latency EWMA, µs; 0 before the first sample.
    pub fn ewma_us(&self) -> f64 {
        f64::from_bits(self.ewma_us.load(Ordering::Acquire))
    }

    /// The plain latency EWMA, µs; 0 before the first sample.
    pub fn mean_us(&self) -> f64 {
        f64::from_bits(self.mean_us.load(Ordering::Acquire))
    }

    /// least_request's slowness factor, 1 to 10 (see the field).
    #[inline]
    pub fn slowness(&self) -> f64 {
        match self.slowness.load(Ordering::Relaxed) {
            0 => 1.0,
            bits => f64::from_bits(bits),
        }
    }

    /// Takes in what one recorded attempt brought, under one lock: a parsed report (a figure
    /// it lacks keeps its last value) and a latency sample (µs), at `now_ns` (monotonic).
    pub(crate) fn take(
        &self,
        report: Option<&LoadReport>,
        latency_us: Option<f64>,
        now_ns: u64,
        decay_ms: u64,
    ) {
        let in_flight = self.in_flight();
        let mut f = lock(&self.figures);
        if let Some(report) = report {
            if let Some(w) = report.waiting {
                f.waiting = w;
                f.has_waiting = true;
            }
            if let Some(r) = report.running {
                f.running = r;
                f.has_running = true;
            }
            if let Some(kv) = report.kv_permille {
                f.kv_permille = kv;
            }
            f.in_flight_at_report = in_flight;
            f.report_ms = (now_ns / 1_000_000).max(1);
            // Fixed at the report, so that a pick only reads it.
            let others = if f.has_running {
                (f.running + f.waiting).saturating_sub(f.in_flight_at_report)
            } else if f.has_waiting {
                f.waiting
            } else {
                0
            };
            self.others.store(others, Ordering::Relaxed);
            self.report_ms.store(f.report_ms, Ordering::Release);
        }
        if let Some(sample_us) = latency_us {
            let sample_us = sample_us.max(1.0);
            if f.ewma_us == 0.0 {
                f.ewma_us = sample_us;
                f.mean_us = sample_us;
            } else {
                let dt_ms = now_ns.saturating_sub(f.sample_ns) as f64 / 1e6;
                let w = exp_neg(dt_ms / decay_ms.max(1) as f64);
                f.ewma_us = if sample_us > f.ewma_us {
                    sample_us
                } else {
                    (f.ewma_us * w + sample_us * (1.0 - w)).max(1.0)
                };
                f.mean_us = (f.mean_us * w + sample_us * (1.0 - w)).max(1.0);
            }
            f.sample_ns = now_ns;
            self.ewma_us.store(f.ewma_us.to_bits(), Ordering::Release);
            self.mean_us.store(f.mean_us.to_bits(), Ordering::Release);
        }
    }

    /// Takes in a parsed report at `now_ms` (monotonic).
    #[cfg(test)]
    pub(crate) fn take_report(&self, report: &LoadReport, now_ms: u64) {
        self.take(Some(report), None, now_ms * 1_000_000, 1);
    }

    /// Takes in a latency sample (Finagle's peak EWMA): `ewma = s` when `s` exceeds it, else
    /// `ewma x w + s x (1 - w)` with `w = exp(-dt / decay)`.
    pub fn take_latency(&self, sample_us: f64, now_ns: u64, decay_ms: u64) {
        self.take(None, Some(sample_us), now_ns, decay_ms);
    }

    /// The load the instance's last report shows beyond this client, when that report is
    /// younger than `ttl_ms`: `running + waiting` minus this client's in-flight count when it
    /// arrived (at least 0) when it gave `running`; `waiting` when it gave only that; else 0.
    /// Two atomic reads, no lock: it is on the pick path.
    #[inline]
    pub fn others(&self, now_ms: u64, ttl_ms: u64) -> u32 {
        let at = self.report_ms.load(Ordering::Acquire);
        if at == 0 || now_ms.saturating_sub(at) >= ttl_ms {
            return 0;
        }
        self.others.load(Ordering::Relaxed)
    }
}

/// `exp(-x)` for `x >= 0`. Samples on a busy instance come much closer together than the
/// decay (10 s by default), where a cubic is as exact as `exp` (its error, below `x^4 / 24`,
/// is under half an ulp of 1 for `x < 2^-13`) and skips the libm call.
#[inline]
fn exp_neg(x: f64) -> f64 {
    if x < 1.0 / 8192.0 {
        1.0 - x * (1.0 - x * (0.5 - x * (1.0 / 6.0)))
    } else {
        (-x).exp()
    }
}

/// How much slower than the median instance one may count in least_request's cost.
pub(crate) const MAX_SLOWNESS: f64 = 10.0;

/// One reading of both clocks, for every record of a stats call.
#[derive(Clone, Copy, Debug)]
pub struct StatsClock {
    /// Precise monotonic ms, the clock reports are stamped with.
    pub monotonic_ms: u64,
    pub unix_ms: u64,
}

impl StatsClock {
    pub fn now() -> StatsClock {
        StatsClock {
            monotonic_ms: monotonic_now_ms(),
            unix_ms: crate::eject::unix_ms(),
        }
    }
}

fn monotonic_now_ms() -> u64 {
    crate::eject::monotonic_ns() / 1_000_000
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The figures stay consistent under a panic (plain stores), so a poisoned lock is used on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The load state of every instance of a client's current list, by id.
#[derive(Debug, Default)]
pub struct LoadTable {
    by_id: Mutex<HashMap<u64, Arc<InstanceLoad>>>,
    /// Load reports that were malformed (as a whole or in a figure).
    malformed_reports: AtomicU64,
    /// The median latency EWMA of the instances with a sample (f64 bits, µs; 0: none), what
    /// peak_ewma charges an instance without one.
    median_ewma_us: AtomicU64,
    /// The median plain EWMA of the same instances (f64 bits, µs; 0: none), what each
    /// instance's slowness is measured against.
    median_mean_us: AtomicU64,
    /// The median over the list of the load other clients put on each instance (`others` of
    /// a fresh report, else 0): what least_request's escape compares a winner with.
    median_others: AtomicU32,
    /// Monotonic ms of the medians' last refresh.
    median_at_ms: AtomicU64,
    /// Attempts in flight on every instance of this table (see `InstanceLoad::client_in_flight`).
    in_flight: Arc<ClientInFlight>,
}

impl LoadTable {
    /// The state of each instance of `list`, in its order: an instance already known keeps
    /// its state; one that left the list is marked gone and forgotten.
    pub fn attach(&self, list: &[Instance]) -> Box<[Arc<InstanceLoad>]> {
        let mut by_id = lock(&self.by_id);
        let mut next: HashMap<u64, Arc<InstanceLoad>> = HashMap::with_capacity(list.len());
        let loads = list
            .iter()
            .map(|inst| {
                let load = by_id.remove(&inst.id).unwrap_or_else(|| {
                    let fresh = Arc::new(InstanceLoad {
                        client_in_flight: self.in_flight.clone(),
                        ..InstanceLoad::default()
                    });
                    fresh.present.store(true, Ordering::Release);
                    fresh
                });
                next.insert(inst.id, load.clone());
                load
            })
            .collect();
        for gone in by_id.values() {
            gone.present.store(false, Ordering::Release);
        }
        *by_id = next;
        loads
    }

    /// The latest back-off deadline in force at `now_ms`, 0 when none.
    pub fn backoff_horizon(&self, now_ms: u64) -> u64 {
        lock(&self.by_id)
            .values()
            .map(|l| l.backoff_until())
            .filter(|&u| u > now_ms)
            .max()
            .unwrap_or(0)
    }

    /// From now on the client's total in flight counts every attempt that starts: called by a
    /// keyed call before its pick.
    pub fn count_client_in_flight(&self) {
        if !self.in_flight.counting.load(Ordering::Relaxed) {
            self.in_flight.counting.store(true, Ordering::Relaxed);
        }
    }

    /// The median latency EWMA of instances with a sample, µs; 0 when none has one.
    pub fn median_ewma_us(&self) -> f64 {
        f64::from_bits(self.median_ewma_us.load(Ordering::Acquire))
    }

    /// The median over the list of the load others put on an instance (as of the last
    /// refresh of the medians).
    pub fn median_others(&self) -> u32 {
        self.median_others.load(Ordering::Relaxed)
    }

    /// The median plain latency EWMA of instances with a sample, µs; 0 when none has one.
    #[cfg(test)]
    pub fn median_mean_us(&self) -> f64 {
        f64::from_bits(self.median_mean_us.load(Ordering::Acquire))
    }

    /// Recomputes the medians from `loads()`, and each instance's slowness, unless it was done
    /// less than 100 ms ago: called after a latency sample, never on the pick path. A
    /// slowness fades to 1 as `exp(-age / decay_ms)` of the instance's last sample; a report
    /// older than `ttl_ms` shows no load of others.
    pub fn refresh_median(
        &self,
        now_ms: u64,
        decay_ms: u64,
        ttl_ms: u64,
        loads: impl FnOnce() -> Option<Vec<Arc<InstanceLoad>>>,
    ) {
        let last = self.median_at_ms.load(Ordering::Acquire);
        if last != 0 && now_ms.saturating_sub(last) < 100 {
            return;
        }
        if self
            .median_at_ms
            .compare_exchange(last, now_ms.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // another thread refreshes it
        }
        let Some(loads) = loads() else { return };
        let median = |of: fn(&InstanceLoad) -> f64| {
            let mut samples: Vec<f64> = loads.iter().map(|l| of(l)).filter(|&e| e > 0.0).collect();
            samples.sort_by(f64::total_cmp);
            match samples.len() {
                0 => 0.0,
                n if n % 2 == 1 => samples[n / 2],
                n => (samples[n / 2 - 1] + samples[n / 2]) / 2.0,
            }
        };
        self.median_ewma_us
            .store(median(InstanceLoad::ewma_us).to_bits(), Ordering::Release);
        let median_mean = median(InstanceLoad::mean_us);
        self.median_mean_us
            .store(median_mean.to_bits(), Ordering::Release);
        let mut others: Vec<u32> = loads.iter().map(|l| l.others(now_ms, ttl_ms)).collect();
        let mid = others.len() / 2;
        let median_others = match others.is_empty() {
            true => 0,
            false => *others.select_nth_unstable(mid).1,
        };
        self.median_others.store(median_others, Ordering::Relaxed);
        let now_ns = now_ms.saturating_mul(1_000_000);
        for load in &loads {
            let f = load.figures();
            let slowness = if f.mean_us > 0.0 && median_mean > 0.0 {
                let s = (f.mean_us / median_mean).clamp(1.0, MAX_SLOWNESS);
                let age_ms = now_ns.saturating_sub(f.sample_ns) as f64 / 1e6;
                1.0 + (s - 1.0) * exp_neg(age_ms / decay_ms.max(1) as f64)
            } else {
                1.0
            };
            load.slowness.store(slowness.to_bits(), Ordering::Relaxed);
        }
    }

    pub fn count_malformed(&self) {
        self.malformed_reports.fetch_add(1, Ordering::Relaxed);
    }

    /// Load reports ignored (in whole or in part) as malformed.
    pub fn malformed_reports(&self) -> u64 {
        self.malformed_reports.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(n: u8) -> Instance {
        Instance::new(format!("10.0.0.{n}").parse().unwrap(), 80, 100)
    }

    #[test]
    fn instance_stats_layout_matches_the_c_abi() {
        let s = InstanceStats::default();
        let base = &s as *const InstanceStats as usize;
        let at = |p: *const u8| p as usize - base;
        assert_eq!(std::mem::size_of::<InstanceStats>(), 64);
        assert_eq!(at(&s.in_flight as *const u32 as *const u8), 8);
        assert_eq!(at(&s.reported_waiting as *const u32 as *const u8), 12);
        assert_eq!(at(&s.attempts as *const u64 as *const u8), 16);
        assert_eq!(at(&s.failures as *const u64 as *const u8), 24);
        assert_eq!(at(&s.latency_ewma_us as *const u32 as *const u8), 32);
        assert_eq!(at(&s.reported_kv_permille as *const u32 as *const u8), 36);
        assert_eq!(at(&s.ejected_until_unix_ms as *const u64 as *const u8), 40);
        assert_eq!(at(&s.report_unix_ms as *const u64 as *const u8), 48);
        assert_eq!(at(&s.weight as *const u32 as *const u8), 56);
        assert_eq!(at(&s.reported_running as *const u32 as *const u8), 60);
    }

    #[test]
    fn the_clients_total_in_flight_counts_every_attempt_until_it_ends() {
        let table = LoadTable::default();
        let first = table.attach(&[inst(1), inst(2)]);
        // Not counted before the first keyed call (nothing reads it), and not taken off after.
        let early = first[1].start();
        table.count_client_in_flight();
        assert_eq!(first[0].client_in_flight(), 0);
        drop(early);
        assert_eq!(first[0].client_in_flight(), 0);
        assert_eq!(first[1].attempts(), 1);
        let a = first[0].start();
        let b = first[1].start();
        let c = first[1].start();
        assert_eq!(first[0].client_in_flight(), 3);
        // The instance with two attempts leaves the list; they count until they end.
        let second = table.attach(&[inst(1), inst(3)]);
        assert_eq!(second[1].client_in_flight(), 3);
        drop((b, c));
        assert_eq!(second[0].client_in_flight(), 1);
        drop(a);
        assert_eq!(second[1].client_in_flight(), 0);
        // Another client's table counts on its own.
        let other = LoadTable::default().attach(&[inst(1)]);
        let _d = other[0].start();
        assert_eq!(second[0].client_in_flight(), 0);
    }

    #[test]
    fn attempts_count_past_the_32_bits_they_share_a_word_with_the_in_flight_count() {
        let load = Arc::new(InstanceLoad::default());
        load.counts
            .store((u64::from(u32::MAX) - 1) << 32, Ordering::Relaxed);
        let a = load.start();
        let b = load.start();
        let c = load.start();
        assert_eq!(load.attempts(), u64::from(u32::MAX) + 2);
        assert_eq!(load.in_flight(), 3);
        drop((a, b, c));
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.attempts(), u64::from(u32::MAX) + 2);
    }

    #[test]
    fn an_instance_that_stays_keeps_its_state_and_one_that_leaves_is_marked_gone() {
        let table = LoadTable::default();
        let first = table.attach(&[inst(1), inst(2)]);
        let held = first[1].start();
        first[0].count_failure();
        let second = table.attach(&[inst(1), inst(3)]);
        assert!(Arc::ptr_eq(&first[0], &second[0]));
        assert_eq!(second[0].failures(), 1);
        assert!(!first[1].is_present() && second[1].is_present());
        assert_eq!(second[1].in_flight(), 0);
        drop(held); // ends on the gone instance's state, which no list shows
        assert_eq!(first[1].in_flight(), 0);
        assert!(!lock(&table.by_id).contains_key(&inst(2).id));
    }

    #[test]
    fn others_come_from_a_fresh_report_only() {
        let load = Arc::new(InstanceLoad::default());
        let _mine = load.start();
        let report = LoadReport {
            waiting: Some(3),
            running: Some(2),
            ..LoadReport::default()
        };
        load.take_report(&report, 1000);
        assert_eq!(load.others(1500, 2000), 4, "2 + 3 - 1 of mine");
        assert_eq!(load.others(3000, 2000), 0, "stale");
        let waiting_only = Arc::new(InstanceLoad::default());
        waiting_only.take_report(
            &LoadReport {
                waiting: Some(7),
                ..LoadReport::default()
            },
            1000,
        );
        assert_eq!(waiting_only.others(1001, 2000), 7);
    }

    #[test]
    fn peak_ewma_jumps_to_a_higher_sample_and_decays_towards_lower_ones() {
        let load = InstanceLoad::default();
        load.take_latency(1000.0, 0, 10_000);
        load.take_latency(5000.0, 1_000_000, 10_000);
        assert_eq!(load.figures().ewma_us, 5000.0);
        load.take_latency(1000.0, 10_001_000_000, 10_000);
        let e = load.figures().ewma_us;
        let want = 5000.0 * (-1.0f64).exp() + 1000.0 * (1.0 - (-1.0f64).exp());
        assert!((e - want).abs() < 1.0, "{e} vs {want}");
    }

    #[test]
    fn the_cubic_for_close_samples_is_as_exact_as_exp() {
        for i in 0..=10_000 {
            let x = f64::from(i) / 10_000.0 / 8192.0;
            let (got, want) = (exp_neg(x), (-x).exp());
            assert!(
                (got - want).abs() <= f64::EPSILON / 2.0,
                "{x}: {got} vs {want}"
            );
        }
        let x = 1.0 / 8192.0;
        assert_eq!(exp_neg(x), (-x).exp());
    }

    #[test]
    fn close_samples_decay_the_ewma_as_exp_says() {
        let load = InstanceLoad::default();
        load.take_latency(5000.0, 0, 10_000);
        // 40 us apart, as on a busy instance.
        load.take_latency(1000.0, 40_000, 10_000);
        let w = (-40_000.0f64 / 1e6 / 10_000.0).exp();
        let want = 5000.0 * w + 1000.0 * (1.0 - w);
        assert!(
            (load.ewma_us() - want).abs() < 1e-9,
            "{} vs {want}",
            load.ewma_us()
        );
        assert_eq!(load.figures().ewma_us, load.ewma_us());
    }

    #[test]
    fn a_report_without_running_keeps_the_last_running_for_others() {
        let load = Arc::new(InstanceLoad::default());
        let both = LoadReport {
            waiting: Some(1),
            running: Some(5),
            ..LoadReport::default()
        };
        load.take_report(&both, 1000);
        let waiting_only = LoadReport {
            waiting: Some(3),
            ..LoadReport::default()
        };
        load.take_report(&waiting_only, 1100);
        assert_eq!(load.others(1200, 2000), 8, "running 5 kept, waiting 3");
        assert_eq!(
            load.others(3100, 2000),
            0,
            "stale from the second report's time"
        );
    }

    #[test]
    fn the_report_time_is_shown_in_unix_ms() {
        let table = LoadTable::default();
        let loads = table.attach(&[inst(1)]);
        assert_eq!(
            InstanceStats::of(&inst(1), &loads[0], 0, StatsClock::now()).report_unix_ms,
            0
        );
        let report = LoadReport {
            waiting: Some(2),
            ..LoadReport::default()
        };
        loads[0].take(Some(&report), None, crate::eject::monotonic_ns(), 1);
        let shown = InstanceStats::of(&inst(1), &loads[0], 0, StatsClock::now()).report_unix_ms;
        let now = crate::eject::unix_ms();
        assert!(shown <= now && shown + 1000 > now, "{shown} vs {now}");
    }
}
