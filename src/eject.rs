//! Failure ejection: consecutive failures eject an instance for a time that doubles on each
//! re-ejection, with a cap on how many instances may be out at once.

use std::collections::{BTreeSet, HashMap};

/// Monotonic milliseconds from a coarse clock (a vDSO read, no system call on Linux).
#[inline]
pub fn monotonic_ms() -> u64 {
    monotonic_ns_of(libc::CLOCK_MONOTONIC_COARSE) / 1_000_000
}

/// Wall-clock milliseconds since the Unix epoch (0 before it), for times shown to callers.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Monotonic nanoseconds, precise.
pub fn monotonic_ns() -> u64 {
    monotonic_ns_of(libc::CLOCK_MONOTONIC)
}

fn monotonic_ns_of(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime writes only it.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The ejection settings of one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EjectionPolicy {
    pub failures_before_ejection: u32,
    pub base_ms: u64,
    pub max_ms: u64,
    pub max_percent: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Health {
    consecutive_failures: u32,
    /// Ejections since the last success: the next one lasts base * 2^ejections.
    ejections: u32,
    until_ms: u64,
}

/// Per-instance failure state, keyed by instance id so that it survives a refresh.
#[derive(Debug)]
pub struct Ejector {
    policy: EjectionPolicy,
    health: HashMap<u64, Health>,
    /// (deadline, id) of the ejections that may be in force, so that the count in force and
    /// the horizon cost O(log n) rather than a scan of every instance.
    in_force: BTreeSet<(u64, u64)>,
    /// Ejections with a deadline at or before this time have left `in_force`.
    expired_to: u64,
}

impl Ejector {
    pub fn new(policy: EjectionPolicy) -> Ejector {
        Ejector {
            policy,
            health: HashMap::new(),
            in_force: BTreeSet::new(),
            expired_to: 0,
        }
    }

    /// Records a failure of `id` at `now`; `pickable` is the count of instances of positive
    /// weight. Returns the new ejection deadline when the failure ejects the instance.
    /// O(log n).
    pub fn on_failure(&mut self, id: u64, now: u64, pickable: usize) -> Option<u64> {
        let ejected_now = self.ejected(now);
        let allowed = self.max_ejected(pickable);
        let policy = self.policy;
        let health = self.health.entry(id).or_default();
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        if health.until_ms > now
            || health.consecutive_failures < policy.failures_before_ejection
            || ejected_now >= allowed
        {
            return None;
        }
        let duration = policy
            .base_ms
            .saturating_mul(1u64 << health.ejections.min(32))
            .min(policy.max_ms);
        health.ejections = health.ejections.saturating_add(1);
        health.consecutive_failures = 0;
        self.in_force.remove(&(health.until_ms, id));
        health.until_ms = now.saturating_add(duration);
        self.in_force.insert((health.until_ms, id));
        Some(health.until_ms)
    }

    /// Records a success at `now`: the failure count and the doubling start over; an ejection
    /// in force runs its course. An instance left with nothing to remember is forgotten, so
    /// that the ejector empties again once failures stop.
    pub fn on_success(&mut self, id: u64, now: u64) {
        if let Some(health) = self.health.get_mut(&id) {
            health.consecutive_failures = 0;
            health.ejections = 0;
            if health.until_ms <= now {
                self.health.remove(&id);
            }
        }
    }

    /// Whether no instance has a failure count, an ejection or a doubling to remember.
    pub fn is_empty(&self) -> bool {
        self.health.is_empty()
    }

    /// Deadline of the ejection of `id`, 0 when none was ever set.
    pub fn until(&self, id: u64) -> u64 {
        self.health.get(&id).map_or(0, |h| h.until_ms)
    }

    /// Instances ejected at `now`. O(log n) per ejection that ended since the last call.
    pub fn ejected(&mut self, now: u64) -> usize {
        if now < self.expired_to {
            // A time before one already asked about (only tests do this): counted exactly.
            return self.health.values().filter(|h| h.until_ms > now).count();
        }
        self.expire(now);
        self.in_force.len()
    }

    /// The latest deadline in force at `now`, 0 when none.
    pub fn horizon(&mut self, now: u64) -> u64 {
        if now < self.expired_to {
            let deadlines = self.health.values().map(|h| h.until_ms);
            return deadlines.filter(|&u| u > now).max().unwrap_or(0);
        }
        self.expire(now);
        self.in_force.last().map_or(0, |&(until, _)| until)
    }

    /// `(id, deadline)` of every instance that was ever ejected (the deadline may be past).
    pub fn deadlines(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let ejected = self.health.iter().filter(|(_, h)| h.until_ms > 0);
        ejected.map(|(&id, h)| (id, h.until_ms))
    }

    /// Forgets instances that left the list.
    pub fn retain(&mut self, present: impl Fn(u64) -> bool) {
        self.health.retain(|&id, _| present(id));
        self.in_force.retain(|&(_, id)| present(id));
    }

    /// Drops the ejections that ended at or before `now` from `in_force`.
    fn expire(&mut self, now: u64) {
        while self
            .in_force
            .first()
            .is_some_and(|&(until, _)| until <= now)
        {
            self.in_force.pop_first();
        }
        self.expired_to = now;
    }

    fn max_ejected(&self, pickable: usize) -> usize {
        let percent = self.policy.max_percent as usize;
        if percent == 0 {
            return 0;
        }
        (pickable * percent / 100).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(failures: u32, percent: u32) -> EjectionPolicy {
        EjectionPolicy {
            failures_before_ejection: failures,
            base_ms: 100,
            max_ms: 350,
            max_percent: percent,
        }
    }

    #[test]
    fn ejects_after_the_threshold_of_consecutive_failures() {
        let mut e = Ejector::new(policy(3, 100));
        assert_eq!(e.on_failure(1, 0, 4), None);
        assert!(!e.is_empty());
        e.on_success(1, 0);
        assert!(e.is_empty(), "nothing left to remember");
        assert_eq!(e.on_failure(1, 0, 4), None);
        assert_eq!(e.on_failure(1, 0, 4), None);
        assert_eq!(e.on_failure(1, 0, 4), Some(100));
        assert_eq!(e.ejected(50), 1);
        assert_eq!(e.ejected(100), 0);
    }

    #[test]
    fn ejection_time_doubles_up_to_the_cap_and_success_resets_it() {
        let mut e = Ejector::new(policy(1, 100));
        assert_eq!(e.on_failure(1, 0, 4), Some(100));
        assert_eq!(e.on_failure(1, 1000, 4), Some(1200));
        assert_eq!(e.on_failure(1, 2000, 4), Some(2350));
        assert_eq!(e.on_failure(1, 3000, 4), Some(3350));
        e.on_success(1, 3400);
        assert_eq!(e.on_failure(1, 4000, 4), Some(4100));
    }

    #[test]
    fn success_does_not_end_an_ejection_early() {
        let mut e = Ejector::new(policy(1, 100));
        e.on_failure(1, 0, 4);
        e.on_success(1, 10);
        assert_eq!(e.until(1), 100);
        assert_eq!(e.ejected(99), 1);
        assert!(!e.is_empty(), "the ejection in force is kept");
        e.on_success(1, 100);
        assert!(e.is_empty());
    }

    #[test]
    fn failures_while_ejected_do_not_extend_it() {
        let mut e = Ejector::new(policy(1, 100));
        assert_eq!(e.on_failure(1, 0, 4), Some(100));
        assert_eq!(e.on_failure(1, 50, 4), None);
        assert_eq!(e.until(1), 100);
    }

    #[test]
    fn at_most_the_allowed_share_is_ejected_but_at_least_one() {
        let mut e = Ejector::new(policy(1, 50));
        assert!(e.on_failure(1, 0, 5).is_some());
        assert!(e.on_failure(2, 0, 5).is_some());
        assert_eq!(e.on_failure(3, 0, 5), None, "floor(5 * 50%) = 2");
        let mut e = Ejector::new(policy(1, 10));
        assert!(e.on_failure(1, 0, 3).is_some(), "at least one when above 0");
        assert_eq!(e.on_failure(2, 0, 3), None);
        let mut e = Ejector::new(policy(1, 0));
        assert_eq!(e.on_failure(1, 0, 3), None);
    }

    #[test]
    fn instances_that_leave_lose_their_state() {
        let mut e = Ejector::new(policy(1, 100));
        e.on_failure(1, 0, 4);
        e.retain(|id| id != 1);
        assert_eq!(e.until(1), 0);
        assert_eq!(e.horizon(0), 0);
    }

    #[test]
    fn the_count_in_force_and_the_horizon_follow_the_deadlines() {
        let mut e = Ejector::new(policy(1, 100));
        assert_eq!(e.on_failure(1, 0, 4), Some(100));
        assert_eq!(e.on_failure(2, 50, 4), Some(150));
        assert_eq!(e.on_failure(3, 60, 4), Some(160));
        assert_eq!((e.ejected(60), e.horizon(60)), (3, 160));
        assert_eq!((e.ejected(100), e.horizon(100)), (2, 160));
        assert_eq!((e.ejected(159), e.horizon(159)), (1, 160));
        assert_eq!((e.ejected(160), e.horizon(160)), (0, 0));
        // Re-ejected after its ejection ended: one entry, the new deadline (doubled).
        assert_eq!(e.on_failure(1, 200, 4), Some(400));
        assert_eq!((e.ejected(200), e.horizon(200)), (1, 400));
        assert_eq!(e.until(1), 400);
    }

    #[test]
    fn a_time_before_one_already_asked_about_is_answered_exactly() {
        let mut e = Ejector::new(policy(1, 100));
        e.on_failure(1, 0, 4);
        e.on_failure(2, 50, 4);
        assert_eq!(e.ejected(120), 1);
        assert_eq!((e.ejected(60), e.horizon(60)), (2, 150));
        assert_eq!((e.ejected(150), e.horizon(150)), (0, 0));
    }

    #[test]
    fn the_share_in_force_counts_only_ejections_that_have_not_ended() {
        let mut e = Ejector::new(policy(1, 50));
        assert!(e.on_failure(1, 0, 4).is_some());
        assert!(e.on_failure(2, 0, 4).is_some());
        assert_eq!(e.on_failure(3, 10, 4), None, "2 of 4 out");
        // The first two ended: room again.
        assert!(e.on_failure(3, 100, 4).is_some());
    }

    #[test]
    fn instances_that_leave_leave_the_count_in_force() {
        let mut e = Ejector::new(policy(1, 100));
        e.on_failure(1, 0, 4);
        e.on_failure(2, 0, 4);
        e.retain(|id| id == 2);
        assert_eq!((e.ejected(10), e.horizon(10)), (1, 100));
        let deadlines: Vec<(u64, u64)> = e.deadlines().collect();
        assert_eq!(deadlines, [(2, 100)]);
    }

    #[test]
    fn past_deadlines_are_kept_for_the_record() {
        let mut e = Ejector::new(policy(1, 100));
        e.on_failure(7, 0, 4);
        assert_eq!(e.ejected(500), 0);
        assert_eq!(e.deadlines().collect::<Vec<_>>(), [(7, 100)]);
    }
}
