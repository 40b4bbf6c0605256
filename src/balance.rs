//! The pick of a call's attempt: which instances are candidates, and the load-aware policies
//! that choose among them (power of two choices on least requests).

use std::sync::atomic::Ordering;

use crate::snapshot::Snapshot;

/// A small, fast generator for a call's random draws (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(u64);

thread_local! {
    /// This thread's seed stream and the fork generation it was seeded in: seeded once per
    /// thread and process (`random_unit` reads the process id, a system call, and the clock),
    /// then advanced by one splitmix64 step per generator. A forked child reseeds, so that
    /// workers forked from one parent do not draw alike.
    static SEEDS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

impl Rng {
    pub fn new() -> Rng {
        let seed = SEEDS.with(|seeds| {
            let (mut state, seeded_in) = seeds.get();
            let fork = crate::refresher::fork_generation();
            if state == 0 || seeded_in != fork {
                state = (crate::pick::random_unit() * (1u64 << 53) as f64) as u64 | 1;
            }
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            seeds.set((state, fork));
            // splitmix64 finalizer
            let mut x = state;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        });
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64() >> 11) * n as u128) >> 53) as usize
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::new()
    }
}

/// Whether instance `index` may be picked by a call that tried `tried`, ignoring hold-outs.
fn untried(snapshot: &Snapshot, index: usize, tried: &[u64]) -> bool {
    let inst = &snapshot.instances[index];
    inst.weight > 0 && !tried.contains(&inst.id)
}

/// Whether instance `index` is held out of picks at `now_ms` (ejected or backing off).
pub fn held_out(snapshot: &Snapshot, index: usize, now_ms: u64) -> bool {
    snapshot.ejected_until[index].load(Ordering::Acquire) > now_ms
}

/// The candidates of an attempt: instances of positive weight that the call has not tried,
/// not ejected and not backing off; when none is left that way, the untried ones (panic mode).
pub fn candidates(snapshot: &Snapshot, tried: &[u64], now_ms: u64) -> Vec<usize> {
    let untried: Vec<usize> = (0..snapshot.instances.len())
        .filter(|&i| untried(snapshot, i, tried))
        .collect();
    let healthy: Vec<usize> = untried
        .iter()
        .copied()
        .filter(|&i| !held_out(snapshot, i, now_ms))
        .collect();
    if healthy.is_empty() {
        untried
    } else {
        healthy
    }
}

/// Whether the call could still make an attempt: an untried instance of positive weight.
pub fn any_untried(snapshot: &Snapshot, tried: &[u64]) -> bool {
    (0..snapshot.instances.len()).any(|i| untried(snapshot, i, tried))
}

/// Two distinct candidates drawn uniformly (one when only one is left), or none. Tries a few
/// random draws over the whole list first, so that a large list costs no scan on the common
/// path; falls back to listing the candidates (which also covers panic mode).
pub fn two_choices(
    snapshot: &Snapshot,
    tried: &[u64],
    now_ms: u64,
    rng: &mut Rng,
) -> Option<(usize, Option<usize>)> {
    let n = snapshot.instances.len();
    if n == 0 {
        return None;
    }
    let ok = |i: usize| untried(snapshot, i, tried) && !held_out(snapshot, i, now_ms);
    let draw = |rng: &mut Rng, not: Option<usize>| {
        (0..8)
            .map(|_| rng.below(n))
            .find(|&i| Some(i) != not && ok(i))
    };
    if let Some(a) = draw(rng, None) {
        if let Some(b) = draw(rng, Some(a)) {
            return Some((a, Some(b)));
        }
    }
    let list = candidates(snapshot, tried, now_ms);
    match list.len() {
        0 => None,
        1 => Some((list[0], None)),
        len => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(len - 1)) % len;
            Some((list[a], Some(list[b])))
        }
    }
}

/// Power of two choices: of two candidates, the one with the lower `cost` wins; ties at random.
pub fn lower_cost(
    pair: (usize, Option<usize>),
    rng: &mut Rng,
    mut cost: impl FnMut(usize) -> f64,
) -> usize {
    let (a, Some(b)) = pair else { return pair.0 };
    let (ca, cb) = (cost(a), cost(b));
    if ca < cb {
        a
    } else if cb < ca {
        b
    } else if rng.next_u64() & 1 == 0 {
        a
    } else {
        b
    }
}

/// least_request's cost of instance `index`: `(in_flight + others + 1) x slowness / weight`,
/// where `slowness` is its plain latency EWMA over the median instance's, 1 to 10, fading back
/// to 1 as its last sample ages (see `InstanceLoad::slowness`), and `others` the load other
/// clients put on it (by its last fresh report). Given as a fraction, so that a pick compares
/// two costs by cross-multiplying, with no division.
#[inline]
pub fn least_request_cost(snapshot: &Snapshot, index: usize, now_ms: u64, ttl_ms: u64) -> Cost {
    let weight = f64::from(snapshot.instances[index].weight.max(1));
    let Some(load) = snapshot.loads.get(index) else {
        return Cost {
            num: 1.0,
            den: weight,
            others: 0,
        };
    };
    let others = load.others(now_ms, ttl_ms);
    let queue = f64::from(load.in_flight()) + f64::from(others) + 1.0;
    Cost {
        num: queue * load.slowness(),
        den: weight,
        others,
    }
}

/// A cost as a fraction, and the load other clients put on the instance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    pub num: f64,
    pub den: f64,
    pub others: u32,
}

impl Cost {
    /// How `self` compares with `other` (cross-multiplied: no division).
    fn compare(&self, other: &Cost) -> std::cmp::Ordering {
        (self.num * other.den).total_cmp(&(other.num * self.den))
    }
}

/// least_request's pick: power of two choices on [`least_request_cost`]; when the winner of the
/// two carries more load of other clients than the median instance (`usual_others`, by fresh
/// reports), two more candidates are drawn and the cheapest of all wins, so that a few
/// instances another client keeps busy are not picked whenever both choices fall on them. A
/// fleet that others load evenly needs no more than two. Ties at random.
pub fn least_request(
    snapshot: &Snapshot,
    tried: &[u64],
    now_ms: u64,
    ttl_ms: u64,
    usual_others: u32,
    rng: &mut Rng,
) -> Option<usize> {
    let cost = |i: usize| least_request_cost(snapshot, i, now_ms, ttl_ms);
    let pair = two_choices(snapshot, tried, now_ms, rng)?;
    let (best, best_cost) = cheaper(pair, rng, cost);
    if best_cost.others <= usual_others || pair.1.is_none() {
        return Some(best);
    }
    let Some(more) = two_choices(snapshot, tried, now_ms, rng) else {
        return Some(best);
    };
    let (other, other_cost) = cheaper(more, rng, cost);
    Some(match other_cost.compare(&best_cost) {
        std::cmp::Ordering::Less => other,
        std::cmp::Ordering::Equal if rng.next_u64() & 1 == 0 => other,
        _ => best,
    })
}

/// The cheaper of a pair by `cost` (ties at random), with its cost.
fn cheaper(
    pair: (usize, Option<usize>),
    rng: &mut Rng,
    cost: impl Fn(usize) -> Cost,
) -> (usize, Cost) {
    let ca = cost(pair.0);
    let Some(b) = pair.1 else { return (pair.0, ca) };
    let cb = cost(b);
    match ca.compare(&cb) {
        std::cmp::Ordering::Less => (pair.0, ca),
        std::cmp::Ordering::Equal if rng.next_u64() & 1 == 0 => (pair.0, ca),
        _ => (b, cb),
    }
}

/// peak_ewma's cost of instance `index`: `ewma x (in_flight + 1) / weight`, where an instance
/// without a sample costs `median` (the median of those with one), and when none has a sample
/// every ewma counts as equal.
pub fn peak_ewma_cost(snapshot: &Snapshot, index: usize, median: f64) -> f64 {
    let weight = f64::from(snapshot.instances[index].weight.max(1));
    let Some(load) = snapshot.loads.get(index) else {
        return 1.0 / weight;
    };
    let ewma = match load.ewma_us() {
        e if e > 0.0 => e,
        _ if median > 0.0 => median,
        _ => 1.0,
    };
    ewma * f64::from(load.in_flight() + 1) / weight
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::Instance;
    use crate::load::LoadTable;

    fn snapshot(weights: &[u32]) -> Snapshot {
        let list: Vec<Instance> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Instance::new(format!("10.0.1.{}", i + 1).parse().unwrap(), 80, w))
            .collect();
        let mut s = Snapshot::new(1, list);
        s.loads = LoadTable::default().attach(&s.instances);
        s
    }

    #[test]
    fn candidates_skip_tried_weight_zero_and_held_out_then_fall_back_to_panic_mode() {
        let s = snapshot(&[1, 0, 1, 1]);
        let ids: Vec<u64> = s.instances.iter().map(|i| i.id).collect();
        assert_eq!(candidates(&s, &[ids[0]], 0), vec![2, 3]);
        s.ejected_until[2].store(100, Ordering::Relaxed);
        assert_eq!(candidates(&s, &[ids[0]], 10), vec![3]);
        s.ejected_until[3].store(100, Ordering::Relaxed);
        assert_eq!(candidates(&s, &[ids[0]], 10), vec![2, 3], "panic mode");
        assert!(candidates(&s, &[ids[0], ids[2], ids[3]], 10).is_empty());
    }

    #[test]
    fn two_choices_are_distinct_and_uniform() {
        let s = snapshot(&[1, 1, 1, 1]);
        let mut rng = Rng::new();
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            let (a, b) = two_choices(&s, &[], 0, &mut rng).unwrap();
            assert_ne!(Some(a), b);
            seen[a] += 1;
        }
        assert!(seen.iter().all(|&n| (700..1300).contains(&n)), "{seen:?}");
    }

    #[test]
    fn peak_ewma_charges_an_instance_without_a_sample_the_median() {
        let s = snapshot(&[1, 1, 1, 2]);
        s.loads[0].take_latency(10_000.0, 0, 10_000);
        s.loads[1].take_latency(30_000.0, 0, 10_000);
        let table = LoadTable::default();
        table.refresh_median(1, 10_000, 2000, || Some(s.loads.to_vec()));
        let median = table.median_ewma_us();
        assert_eq!(median, 20_000.0);
        assert_eq!(peak_ewma_cost(&s, 2, median), 20_000.0);
        // ewma x (in_flight + 1) / weight
        let _a = s.loads[0].start();
        let _b = s.loads[0].start();
        assert_eq!(peak_ewma_cost(&s, 0, median), 30_000.0);
        assert_eq!(
            peak_ewma_cost(&s, 3, median),
            10_000.0,
            "weight 2 halves it"
        );
        // Refreshed at most every 100 ms.
        s.loads[2].take_latency(90_000.0, 0, 10_000);
        table.refresh_median(50, 10_000, 2000, || Some(s.loads.to_vec()));
        assert_eq!(table.median_ewma_us(), 20_000.0);
        table.refresh_median(101, 10_000, 2000, || Some(s.loads.to_vec()));
        assert_eq!(table.median_ewma_us(), 30_000.0);
    }

    #[test]
    fn peak_ewma_without_any_sample_counts_every_ewma_as_equal() {
        let s = snapshot(&[1, 1]);
        let _busy = s.loads[1].start();
        assert_eq!(peak_ewma_cost(&s, 0, 0.0), 1.0);
        assert_eq!(peak_ewma_cost(&s, 1, 0.0), 2.0);
    }

    /// The cost as a number, slowness included.
    fn lr(s: &Snapshot, i: usize) -> f64 {
        let c = least_request_cost(s, i, 0, 2000);
        c.num / c.den
    }

    #[test]
    fn the_less_loaded_of_two_wins() {
        let s = snapshot(&[1, 1]);
        let _busy = s.loads[0].start();
        let mut rng = Rng::new();
        for _ in 0..100 {
            assert_eq!(least_request(&s, &[], 0, 2000, 0, &mut rng), Some(1));
        }
    }

    #[test]
    fn least_request_counts_weight_and_slowness() {
        let s = snapshot(&[3, 1]);
        let _a = s.loads[0].start();
        let _b = s.loads[0].start();
        // (2 + 1) / 3 = 1 against (0 + 1) / 1 = 1: a tie, so both win at times.
        assert_eq!((lr(&s, 0), lr(&s, 1)), (1.0, 1.0));
        let mut rng = Rng::new();
        let mut wins = [0u32; 2];
        for _ in 0..200 {
            wins[least_request(&s, &[], 0, 2000, 0, &mut rng).unwrap()] += 1;
        }
        assert!(wins[0] > 0 && wins[1] > 0, "{wins:?}");
        // Slowness: the plain EWMA over the median instance's, 1 to 10, fading as the last
        // sample ages (set by refresh_median, off the pick path).
        let s = snapshot(&[1, 1, 1, 1]);
        for (i, us) in [10_000.0, 10_000.0, 30_000.0, 1_000_000.0]
            .into_iter()
            .enumerate()
        {
            s.loads[i].take_latency(us, 0, 10_000);
        }
        let table = LoadTable::default();
        table.refresh_median(1, 10_000, 2000, || Some(s.loads.to_vec()));
        assert_eq!(table.median_mean_us(), 20_000.0);
        assert_eq!(lr(&s, 0), 1.0, "faster than the median counts as 1");
        assert!((lr(&s, 2) - 1.5).abs() < 1e-3, "{}", lr(&s, 2));
        assert!((lr(&s, 3) - 10.0).abs() < 1e-3, "capped: {}", lr(&s, 3));
        // One decay (10 s) later without a sample: 1 + 9 / e.
        table.refresh_median(10_000, 10_000, 2000, || Some(s.loads.to_vec()));
        let faded = lr(&s, 3);
        assert!(
            (faded - (1.0 + 9.0 / std::f64::consts::E)).abs() < 0.01,
            "{faded}"
        );
    }

    #[test]
    fn a_pair_loaded_by_others_draws_two_more() {
        // Two of eight instances busy with another client's requests (a fresh report each).
        let s = snapshot(&[1; 8]);
        for i in [0, 1] {
            let r = crate::load_report::parse_bytes(b"TEXT named_metrics.num_requests_running=4")
                .unwrap();
            s.loads[i].take(Some(&r), None, 1_000_000, 10_000);
        }
        assert_eq!(least_request_cost(&s, 0, 1, 2000).others, 4);
        assert_eq!(least_request_cost(&s, 2, 1, 2000).others, 0);
        let table = LoadTable::default();
        table.refresh_median(1, 10_000, 2000, || Some(s.loads.to_vec()));
        assert_eq!(table.median_others(), 0);
        let mut rng = Rng::new();
        let busy = (0..20_000)
            .filter(|_| least_request(&s, &[], 1, 2000, 0, &mut rng).unwrap() < 2)
            .count();
        // Two choices alone would land both on the busy pair 1 time in 28 (714 of 20,000);
        // with two more drawn, that needs all four on it.
        assert!(busy < 300, "{busy} of 20000 picks on the busy pair");
    }

    #[test]
    fn a_fleet_loaded_evenly_by_others_is_picked_by_two_choices() {
        let s = snapshot(&[1; 8]);
        let r =
            crate::load_report::parse_bytes(b"TEXT named_metrics.num_requests_waiting=3").unwrap();
        for load in s.loads.iter() {
            load.take(Some(&r), None, 1_000_000, 10_000);
        }
        let table = LoadTable::default();
        table.refresh_median(1, 10_000, 2000, || Some(s.loads.to_vec()));
        assert_eq!(table.median_others(), 3);
        let _mine = s.loads[5].start();
        let mut rng = Rng::new();
        for _ in 0..1000 {
            let (mut a, mut b) = (rng.clone(), rng.clone());
            let pair = two_choices(&s, &[], 1, &mut a).unwrap();
            let (two, _) = cheaper(pair, &mut a, |i| least_request_cost(&s, i, 1, 2000));
            assert_eq!(least_request(&s, &[], 1, 2000, 3, &mut b), Some(two));
            rng.next_u64();
        }
        // Stale reports show no load of others.
        table.refresh_median(5000, 10_000, 2000, || Some(s.loads.to_vec()));
        assert_eq!(table.median_others(), 0);
    }
}
