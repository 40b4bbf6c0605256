//! The call path's clock: `CLOCK_MONOTONIC` nanoseconds, read from the time-stamp counter when
//! the kernel itself keeps time with it.
//!
//! A call reads the clock twice (its attempt's start in next, its end in record), and
//! `clock_gettime` costs 20-30 ns in a virtual machine, about a tenth of a whole call cycle. A
//! plain `rdtsc` costs a third of that. The counter is used only when the kernel's clocksource
//! is `tsc` and the CPU says it is invariant (`constant_tsc`, `nonstop_tsc`): then the kernel
//! has checked that it runs at one rate and in step on every CPU. Its rate is measured against
//! `CLOCK_MONOTONIC` (over at least 20 ms, the first calls in between read `clock_gettime`),
//! and each thread converts from a base pair of readings that it takes again every second, so
//! the result stays within microseconds of `CLOCK_MONOTONIC`: ejection and back-off deadlines,
//! which come from that clock, compare with it. Anywhere else (another architecture, another
//! clocksource, a counter that went backwards) every read is `clock_gettime`.

#[cfg(target_arch = "x86_64")]
mod tsc {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::eject::monotonic_ns;

    /// Nanoseconds per tick as f64 bits; `UNKNOWN` until measured, `UNUSABLE` for good.
    static SCALE: AtomicU64 = AtomicU64::new(UNKNOWN);
    const UNKNOWN: u64 = 0;
    const UNUSABLE: u64 = u64::MAX;
    /// The first reading pair of the rate's measurement: ticks, then nanoseconds (0: none).
    static START_TICKS: AtomicU64 = AtomicU64::new(0);
    static START_NS: AtomicU64 = AtomicU64::new(0);
    /// How long the rate is measured over, at least.
    const MEASURE_NS: u64 = 20_000_000;
    /// How long a thread converts from one base pair.
    const REBASE_NS: f64 = 1e9;

    thread_local! {
        /// This thread's base pair (ticks, nanoseconds) and how many ticks it serves for.
        static BASE: Cell<(u64, u64, u64)> = const { Cell::new((0, 0, 0)) };
    }

    fn ticks() -> u64 {
        // SAFETY: rdtsc has no preconditions on x86_64 (every x86_64 CPU has it); it only
        // reads the counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// Whether the kernel keeps time with an invariant counter (read once per process).
    fn counter_is_trusted() -> bool {
        let source = std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .unwrap_or_default();
        if source.trim() != "tsc" {
            return false;
        }
        // The first CPU's flags (the kernel requires the same of every CPU for this clocksource).
        let Ok(cpuinfo) = std::fs::File::open("/proc/cpuinfo") else {
            return false;
        };
        let flags = std::io::BufRead::lines(std::io::BufReader::new(cpuinfo))
            .map_while(Result::ok)
            .find(|l| l.starts_with("flags"))
            .unwrap_or_default();
        let has = |flag: &str| flags.split_ascii_whitespace().any(|f| f == flag);
        has("constant_tsc") && has("nonstop_tsc")
    }

    #[inline]
    pub(super) fn now_ns() -> u64 {
        let scale = SCALE.load(Ordering::Relaxed);
        if scale != UNKNOWN && scale != UNUSABLE {
            let (base_ticks, base_ns, span) = BASE.get();
            let elapsed = ticks().wrapping_sub(base_ticks);
            // A thread without a base has span 0; a counter behind the base wraps to a huge
            // `elapsed`: both take a new base.
            if elapsed < span {
                return base_ns + (elapsed as f64 * f64::from_bits(scale)) as u64;
            }
            return rebase(f64::from_bits(scale));
        }
        if scale == UNUSABLE {
            return monotonic_ns();
        }
        measure()
    }

    /// A new base pair for this thread, and the rate measured again over the whole time since
    /// the measurement started (more exact as it grows; a rate out of bounds keeps the last).
    #[cold]
    fn rebase(scale: f64) -> u64 {
        let ns = monotonic_ns();
        let now_ticks = ticks();
        let (start_ns, start_ticks) = (
            START_NS.load(Ordering::Acquire),
            START_TICKS.load(Ordering::Acquire),
        );
        let mut scale = scale;
        if ns > start_ns && now_ticks > start_ticks {
            let longer = (ns - start_ns) as f64 / (now_ticks - start_ticks) as f64;
            if (0.05..=10.0).contains(&longer) && (longer / scale - 1.0).abs() < 0.01 {
                SCALE.store(longer.to_bits(), Ordering::Relaxed);
                scale = longer;
            }
        }
        BASE.set((now_ticks, ns, (REBASE_NS / scale) as u64));
        ns
    }

    /// A `clock_gettime` read that also measures the counter's rate: the first read of the
    /// process decides whether the counter is used and starts the measurement; a read at
    /// least `MEASURE_NS` later ends it.
    #[cold]
    fn measure() -> u64 {
        let ns = monotonic_ns();
        let now_ticks = ticks();
        let start_ns = START_NS.load(Ordering::Acquire);
        if start_ns == 0 {
            if !counter_is_trusted() {
                SCALE.store(UNUSABLE, Ordering::Relaxed);
                return ns;
            }
            if START_NS
                .compare_exchange(0, ns.max(1), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                START_TICKS.store(now_ticks, Ordering::Release);
            }
            return ns;
        }
        let start_ticks = START_TICKS.load(Ordering::Acquire);
        let (dns, dticks) = (
            ns.saturating_sub(start_ns),
            now_ticks.wrapping_sub(start_ticks),
        );
        if start_ticks == 0 || dns < MEASURE_NS {
            return ns;
        }
        let scale = dns as f64 / dticks as f64;
        // From 100 MHz to 20 GHz; anything else (a counter that went backwards reads as a
        // huge tick count) is not a counter to keep time with.
        let verdict = if (0.05..=10.0).contains(&scale) {
            scale.to_bits()
        } else {
            UNUSABLE
        };
        let _ = SCALE.compare_exchange(UNKNOWN, verdict, Ordering::AcqRel, Ordering::Relaxed);
        ns
    }
}

/// Monotonic nanoseconds in `CLOCK_MONOTONIC`'s timebase, for the call path (see the module).
/// A client's creation reads it first, so that the counter's check (two small files) and the
/// start of its rate's measurement happen there rather than in a call.
#[inline]
pub(crate) fn now_ns() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        tsc::now_ns()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        crate::eject::monotonic_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_clock_keeps_to_the_monotonic_clock() {
        // Before, during and past the rate's measurement it reads within a millisecond of
        // CLOCK_MONOTONIC, and runs backwards on a thread by no more than a new base's step.
        let started = crate::eject::monotonic_ns();
        let mut last = 0;
        while crate::eject::monotonic_ns() - started < 60_000_000 {
            let before = crate::eject::monotonic_ns();
            let now = now_ns();
            let after = crate::eject::monotonic_ns();
            assert!(
                now + 1_000_000 >= before && now <= after + 1_000_000,
                "{before} {now} {after}"
            );
            assert!(now + 50_000 >= last, "{last} then {now}");
            last = now;
        }
    }
}
