//! Failure ejection: consecutive failures eject an instance for a time that doubles on each
//! re-ejection, with a cap on how many instances may be out at once.

use std::collections::HashMap;

/// Monotonic milliseconds from a coarse clock (a vDSO read, no system call on Linux).
#[inline]
pub fn monotonic_ms() -> u64 {
    monotonic_ns_of(libc::CLOCK_MONOTONIC_COARSE) / 1_000_000
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
}

impl Ejector {
    pub fn new(policy: EjectionPolicy) -> Ejector {
        Ejector {
            policy,
            health: HashMap::new(),
        }
    }

    /// Records a failure of `id` at `now`; `pickable` is the count of instances of positive
    /// weight. Returns the new ejection deadline when the failure ejects the instance.
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
        health.until_ms = now.saturating_add(duration);
        Some(health.until_ms)
    }

    /// Records a success: the failure count and the doubling start over; an ejection in force
    /// runs its course.
    pub fn on_success(&mut self, id: u64) {
        if let Some(health) = self.health.get_mut(&id) {
            health.consecutive_failures = 0;
            health.ejections = 0;
        }
    }

    /// Deadline of the ejection of `id`, 0 when none was ever set.
    pub fn until(&self, id: u64) -> u64 {
        self.health.get(&id).map_or(0, |h| h.until_ms)
    }

    /// Instances ejected at `now`.
    pub fn ejected(&self, now: u64) -> usize {
        self.health.values().filter(|h| h.until_ms > now).count()
    }

    /// The latest deadline in force at `now`, 0 when none.
    pub fn horizon(&self, now: u64) -> u64 {
        self.health
            .values()
            .map(|h| h.until_ms)
            .filter(|&u| u > now)
            .max()
            .unwrap_or(0)
    }

    /// Forgets instances that left the list.
    pub fn retain(&mut self, present: impl Fn(u64) -> bool) {
        self.health.retain(|&id, _| present(id));
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
        e.on_success(1);
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
        e.on_success(1);
        assert_eq!(e.on_failure(1, 4000, 4), Some(4100));
    }

    #[test]
    fn success_does_not_end_an_ejection_early() {
        let mut e = Ejector::new(policy(1, 100));
        e.on_failure(1, 0, 4);
        e.on_success(1);
        assert_eq!(e.until(1), 100);
        assert_eq!(e.ejected(99), 1);
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
}
