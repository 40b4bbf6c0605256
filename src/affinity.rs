//! Affinity for keyed calls: consistent hashing with bounded loads (Mirrokni, Thorup and
//! Zadimoghaddam 2018) on a ring whose points per instance are proportional to its weight.
//!
//! The hash is fixed, so that the same key, list and loads give the same instance in every
//! process, whatever the order of the list:
//! `hash(bytes) = mix(FNV-1a-64(bytes))`, where `mix` is splitmix64's finalizer
//! (`x ^= x >> 30; x *= 0xbf58476d1ce4e5b9; x ^= x >> 27; x *= 0x94d049bb133111eb; x ^= x >> 31`).
//! A key's place is `hash(key)`; point `j` (0-based) of an instance is
//! `hash(host + "#" + decimal(j))`, `host` being `eas_instance.host` (`ip:port`, `[v6]:port`).
//! An instance of weight `w` gets `max(1, round(POINTS_PER_MEAN_WEIGHT x w / mean weight))`
//! points (scaled down proportionally above `MAX_POINTS` in all); weight 0 gets none. A key's
//! order is the instances in the order their first points follow its place, clockwise
//! (ascending hash, wrapping); equal hashes order by host.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crossbeam_epoch as epoch;

use crate::balance::held_out;
use crate::config::CallSettings;
use crate::snapshot::Snapshot;

/// Ring points per instance of the mean weight: enough that 1,000 keys spread within 1.5x of
/// each instance's weight share.
pub(crate) const POINTS_PER_MEAN_WEIGHT: u64 = 256;
/// Cap on the points of one ring (16 bytes each).
pub(crate) const MAX_POINTS: u64 = 1 << 20;

/// The fixed hash of the ring (see the module documentation).
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A key's place on the ring.
pub fn key_hash(key: &[u8]) -> u64 {
    hash(key)
}

/// The ring of one snapshot: points sorted by (hash, host), each naming an instance index.
#[derive(Debug)]
pub struct Ring {
    /// The points: hash (ascending) and instance index, side by side so that the point a
    /// key's search ends on also names its instance (one cache line).
    points: Vec<(u64, u32)>,
    /// Where the points whose hash has top bits `b` begin (`bucket_bits` of them), and one
    /// more entry for the end: a key's search starts within a few points of its place
    /// instead of a binary search over the whole ring (20 cache misses at a million points).
    buckets: Vec<u32>,
    bucket_bits: u32,
    /// The snapshot's total weight, summed once here rather than on every keyed pick.
    total_weight: u64,
}

impl Ring {
    pub fn new(snapshot: &Snapshot) -> Ring {
        let instances = &snapshot.instances;
        let positive = instances.iter().filter(|i| i.weight > 0).count() as u64;
        let total: u64 = instances.iter().map(|i| u64::from(i.weight)).sum();
        if total == 0 {
            return Ring {
                points: Vec::new(),
                buckets: vec![0, 0],
                bucket_bits: 0,
                total_weight: 0,
            };
        }
        let per = |w: u64| -> u64 {
            if w == 0 {
                return 0;
            }
            // w / mean = w * positive / total
            ((POINTS_PER_MEAN_WEIGHT * w * positive + total / 2) / total).max(1)
        };
        let mut counts: Vec<u64> = instances.iter().map(|i| per(u64::from(i.weight))).collect();
        let sum: u64 = counts.iter().sum();
        if sum > MAX_POINTS {
            for c in counts.iter_mut().filter(|c| **c > 0) {
                *c = (*c * MAX_POINTS / sum).max(1);
            }
        }
        let mut points = Vec::with_capacity(counts.iter().sum::<u64>() as usize);
        let mut text = String::new();
        for (index, (inst, &count)) in instances.iter().zip(&counts).enumerate() {
            for j in 0..count {
                text.clear();
                text.push_str(inst.host_str());
                text.push('#');
                text.push_str(&j.to_string());
                points.push((hash(text.as_bytes()), index as u32));
            }
        }
        points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                instances[a.1 as usize]
                    .host_str()
                    .cmp(instances[b.1 as usize].host_str())
            })
        });
        // About 4 points (one cache line) a bucket.
        let bucket_bits = (points.len() / 4).max(1).ilog2();
        let mut buckets = Vec::with_capacity((1 << bucket_bits) + 1);
        let mut at = 0;
        for b in 0..1u64 << bucket_bits {
            while at < points.len() && bucket_of(points[at].0, bucket_bits) < b {
                at += 1;
            }
            buckets.push(at as u32);
        }
        buckets.push(points.len() as u32);
        Ring {
            points,
            buckets,
            bucket_bits,
            total_weight: total,
        }
    }

    /// The first point at or after `key` (`len` when none is: the search wraps to 0).
    fn start(&self, key: u64) -> usize {
        let b = bucket_of(key, self.bucket_bits) as usize;
        let (from, to) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        from + self.points[from..to].partition_point(|p| p.0 < key)
    }

    /// The instances (indexes) in `key`'s order, each once.
    pub fn order(&self, key: u64, n: usize) -> Order<'_> {
        let len = self.points.len();
        let start = self.start(key);
        Order {
            ring: self,
            at: if start == len { 0 } else { start },
            left: len,
            seen: Seen::default(),
            n,
        }
    }
}

fn bucket_of(hash: u64, bits: u32) -> u64 {
    if bits == 0 {
        0
    } else {
        hash >> (64 - bits)
    }
}

/// A key's order on a ring: the owners of the points from the key's place on, clockwise, each
/// instance once.
pub struct Order<'a> {
    ring: &'a Ring,
    at: usize,
    left: usize,
    seen: Seen,
    n: usize,
}

impl Iterator for Order<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.left > 0 {
            let index = self.ring.points[self.at].1 as usize;
            self.left -= 1;
            self.at += 1;
            if self.at == self.ring.points.len() {
                self.at = 0;
            }
            if self.seen.insert(index, self.n) {
                return Some(index);
            }
        }
        None
    }
}

/// The instances an order has given: a few inline (a keyed pick mostly takes the first),
/// then one bit per instance.
#[derive(Default)]
struct Seen {
    few: [u32; 8],
    len: usize,
    bits: Vec<u64>,
}

impl Seen {
    /// Whether `index` (below `n`) is new; it is seen from now.
    fn insert(&mut self, index: usize, n: usize) -> bool {
        if self.bits.is_empty() {
            if self.few[..self.len].contains(&(index as u32)) {
                return false;
            }
            if self.len < self.few.len() {
                self.few[self.len] = index as u32;
                self.len += 1;
                return true;
            }
            self.bits = vec![0u64; n.div_ceil(64)];
            for &i in &self.few {
                self.bits[i as usize / 64] |= 1 << (i % 64);
            }
        }
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        let new = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        new
    }
}

/// The ring of the current snapshot, built on the first keyed call after each list change.
/// Read without a lock or a reference count: a keyed pick reads it under an epoch pin, and a
/// replaced ring is freed once no pin that could see it is left.
#[derive(Debug, Default)]
pub struct RingCache {
    ring: epoch::Atomic<(u64, Ring)>,
    /// Held while a ring is built, so that one list's ring is built once.
    build: Mutex<()>,
}

impl RingCache {
    /// Runs `f` on the ring of `snapshot`, building it first if the cache holds another's.
    pub fn with<R>(&self, snapshot: &Snapshot, f: impl FnOnce(&Ring) -> R) -> R {
        let guard = epoch::pin();
        let current = self.ring.load(Ordering::Acquire, &guard);
        // SAFETY: a pointer loaded under `guard` stays valid until the guard drops: it is
        // only ever freed through `defer_destroy`, after every pin that could load it ended.
        if let Some((generation, ring)) = unsafe { current.as_ref() } {
            if *generation == snapshot.generation {
                return f(ring);
            }
        }
        let _building = self.build.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.ring.load(Ordering::Acquire, &guard);
        // SAFETY: as above.
        if let Some((generation, ring)) = unsafe { current.as_ref() } {
            if *generation == snapshot.generation {
                return f(ring);
            }
        }
        let fresh =
            epoch::Owned::new((snapshot.generation, Ring::new(snapshot))).into_shared(&guard);
        let old = self.ring.swap(fresh, Ordering::AcqRel, &guard);
        if !old.is_null() {
            // SAFETY: `old` is no longer reachable through the cache; readers that loaded it
            // hold pins taken before the swap, and the destruction waits for them.
            unsafe { guard.defer_destroy(old) };
        }
        // SAFETY: `fresh` was stored under `guard` and is freed only after it drops.
        f(&unsafe { fresh.deref() }.1)
    }
}

impl Drop for RingCache {
    fn drop(&mut self) {
        // SAFETY: the cache is being dropped, so no reader can load the pointer any more.
        let guard = unsafe { epoch::unprotected() };
        let ring = self
            .ring
            .swap(epoch::Shared::null(), Ordering::AcqRel, guard);
        if !ring.is_null() {
            // SAFETY: the ring came from `Owned::new` and nothing else refers to it.
            drop(unsafe { ring.into_owned() });
        }
    }
}

/// The instance for a keyed call's attempt: in the key's order, the first candidate (positive
/// weight, untried, not ejected or backing off) whose `in_flight + 1 <= ceil(c x
/// (total_in_flight + 1) x weight / total_weight)`; when none is under that bound, the first
/// candidate; when no candidate is healthy, the first untried one (panic mode).
pub fn pick(
    snapshot: &Snapshot,
    ring: &Ring,
    key: u64,
    tried: &[u64],
    now_ms: u64,
    settings: &CallSettings,
) -> Option<usize> {
    let instances = &snapshot.instances;
    let total_weight = ring.total_weight;
    let in_flight = |i: usize| {
        snapshot
            .loads
            .get(i)
            .map_or(0, |l| u64::from(l.in_flight()))
    };
    // Every instance of a list shares its client's counter: O(1), not a sum over the list.
    let total_in_flight = snapshot.loads.first().map_or(0, |l| l.client_in_flight());
    let c = settings.affinity_load_factor;
    let mut first_healthy = None;
    let mut first_untried = None;
    for index in ring.order(key, instances.len()) {
        let inst = &instances[index];
        if inst.weight == 0 || tried.contains(&inst.id) {
            continue;
        }
        first_untried.get_or_insert(index);
        if held_out(snapshot, index, now_ms) {
            continue;
        }
        first_healthy.get_or_insert(index);
        let bound = (c * (total_in_flight + 1) as f64 * f64::from(inst.weight)
            / total_weight as f64)
            .ceil();
        if (in_flight(index) + 1) as f64 <= bound {
            return Some(index);
        }
    }
    first_healthy.or(first_untried)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{parse_ip, Instance};
    use crate::load::LoadTable;
    use std::collections::HashSet;

    /// A snapshot of `hosts` (`ip:port` or `[v6]:port`) with weights, in the order given.
    fn snapshot(hosts: &[(&str, u32)]) -> Snapshot {
        let list: Vec<Instance> = hosts
            .iter()
            .map(|&(host, w)| {
                let (ip, port) = host.rsplit_once(':').unwrap();
                Instance::new(parse_ip(ip).unwrap(), port.parse().unwrap(), w)
            })
            .collect();
        let mut s = Snapshot::new(1, list);
        // As a keyed call sets it, before any attempt of these tests.
        let table = LoadTable::default();
        table.count_client_in_flight();
        s.loads = table.attach(&s.instances);
        s
    }

    fn order_of(s: &Snapshot, key: &[u8]) -> Vec<String> {
        Ring::new(s)
            .order(key_hash(key), s.instances.len())
            .map(|i| s.instances[i].host_str().to_owned())
            .collect()
    }

    fn pick_of(s: &Snapshot, key: &[u8], tried: &[u64]) -> String {
        let ring = Ring::new(s);
        let i = pick(s, &ring, key_hash(key), tried, 0, &CallSettings::default()).unwrap();
        s.instances[i].host_str().to_owned()
    }

    const LIST: [(&str, u32); 4] = [
        ("10.0.0.1:8000", 100),
        ("10.0.0.2:8000", 100),
        ("10.0.0.3:8000", 200),
        ("[fd00::4]:8000", 100),
    ];

    /// The orders a separate implementation of the documented ring (Python, from the module
    /// documentation alone) computes for these keys: any process gets the same.
    #[test]
    fn key_orders_are_the_documented_ones_whatever_the_order_of_the_list() {
        let want: [(&[u8], [&str; 4]); 5] = [
            (
                b"session-1",
                [
                    "[fd00::4]:8000",
                    "10.0.0.2:8000",
                    "10.0.0.3:8000",
                    "10.0.0.1:8000",
                ],
            ),
            (
                b"session-2",
                [
                    "10.0.0.2:8000",
                    "[fd00::4]:8000",
                    "10.0.0.3:8000",
                    "10.0.0.1:8000",
                ],
            ),
            (
                b"conversation-42",
                [
                    "10.0.0.3:8000",
                    "[fd00::4]:8000",
                    "10.0.0.2:8000",
                    "10.0.0.1:8000",
                ],
            ),
            (
                b"",
                [
                    "[fd00::4]:8000",
                    "10.0.0.2:8000",
                    "10.0.0.3:8000",
                    "10.0.0.1:8000",
                ],
            ),
            (
                b"\x00\xff",
                [
                    "10.0.0.3:8000",
                    "10.0.0.2:8000",
                    "[fd00::4]:8000",
                    "10.0.0.1:8000",
                ],
            ),
        ];
        let mut reversed = LIST;
        reversed.reverse();
        let shuffled = [LIST[2], LIST[0], LIST[3], LIST[1]];
        for list in [&LIST, &reversed, &shuffled] {
            let s = snapshot(list);
            for (key, order) in &want {
                assert_eq!(
                    order_of(&s, key),
                    order.to_vec(),
                    "key {key:?}, list {list:?}"
                );
                assert_eq!(pick_of(&s, key, &[]), order[0]);
            }
        }
    }

    #[test]
    fn retries_follow_the_keys_order() {
        let s = snapshot(&LIST);
        let order = order_of(&s, b"session-1");
        let mut tried = Vec::new();
        for want in &order {
            let got = pick_of(&s, b"session-1", &tried);
            assert_eq!(&got, want);
            tried.push(s.instances.iter().find(|i| i.host_str() == got).unwrap().id);
        }
        let ring = Ring::new(&s);
        let settings = CallSettings::default();
        assert_eq!(
            pick(&s, &ring, key_hash(b"session-1"), &tried, 0, &settings),
            None
        );
    }

    fn hosts(n: usize) -> Vec<(String, u32)> {
        (1..=n)
            .map(|i| (format!("10.1.{}.{}:9000", i / 250, i % 250), 100))
            .collect()
    }

    fn owners(list: &[(String, u32)], keys: usize) -> Vec<String> {
        let borrowed: Vec<(&str, u32)> = list.iter().map(|(h, w)| (h.as_str(), *w)).collect();
        let s = snapshot(&borrowed);
        (0..keys)
            .map(|k| pick_of(&s, format!("key-{k}").as_bytes(), &[]))
            .collect()
    }

    #[test]
    fn a_list_change_moves_about_one_nth_of_the_keys() {
        let ten = hosts(10);
        let before = owners(&ten, 1000);
        let eleven = hosts(11);
        let added = &eleven[10].0;
        let after = owners(&eleven, 1000);
        let moved: Vec<usize> = (0..1000).filter(|&k| before[k] != after[k]).collect();
        assert!(
            (40..=150).contains(&moved.len()),
            "{} of 1000 moved",
            moved.len()
        );
        assert!(
            moved.iter().all(|&k| &after[k] == added),
            "keys move only to the new one"
        );
        // Removing one moves only its own keys.
        let nine: Vec<(String, u32)> = ten[1..].to_vec();
        let after = owners(&nine, 1000);
        for k in 0..1000 {
            if before[k] != ten[0].0 {
                assert_eq!(before[k], after[k], "key {k} moved without cause");
            }
        }
    }

    #[test]
    fn a_thousand_keys_spread_within_one_and_a_half_times_the_weight_share() {
        for weights in [
            vec![100u32; 5],
            vec![100, 100, 200, 300, 100],
            vec![100; 10],
            vec![1, 2, 3, 4],
        ] {
            let list: Vec<(String, u32)> = hosts(weights.len())
                .into_iter()
                .zip(&weights)
                .map(|((h, _), &w)| (h, w))
                .collect();
            let total: u32 = weights.iter().sum();
            let got = owners(&list, 1000);
            for (host, w) in &list {
                let share = 1000.0 * f64::from(*w) / f64::from(total);
                let n = got.iter().filter(|h| *h == host).count() as f64;
                assert!(
                    n <= share * 1.5 && n >= share / 1.5,
                    "weights {weights:?}: {host} got {n} keys for a share of {share}"
                );
            }
        }
    }

    #[test]
    fn a_loaded_instance_sheds_keys_to_the_next_in_ring_order() {
        let s = snapshot(&LIST);
        let order = order_of(&s, b"session-1");
        let index = |host: &str| {
            s.instances
                .iter()
                .position(|i| i.host_str() == host)
                .unwrap()
        };
        let first = index(&order[0]);
        // Total weight 500, c = 1.25: with 3 in flight on the first (weight 100) and 1
        // elsewhere, its bound is ceil(1.25 x 5 x 100 / 500) = 2 < 3 + 1.
        let _held: Vec<_> = (0..3).map(|_| s.loads[first].start()).collect();
        let _other = s.loads[index("10.0.0.1:8000")].start();
        assert_eq!(pick_of(&s, b"session-1", &[]), order[1]);
        // A larger load factor keeps it: ceil(4 x 5 x 100 / 500) = 4 >= 3 + 1.
        let ring = Ring::new(&s);
        let loose = CallSettings {
            affinity_load_factor: 4.0,
            ..CallSettings::default()
        };
        let i = pick(&s, &ring, key_hash(b"session-1"), &[], 0, &loose).unwrap();
        assert_eq!(i, first);
    }

    #[test]
    fn held_out_instances_are_skipped_in_ring_order_and_all_held_out_is_panic_mode() {
        let s = snapshot(&LIST);
        let order = order_of(&s, b"session-2");
        let index = |host: &str| {
            s.instances
                .iter()
                .position(|i| i.host_str() == host)
                .unwrap()
        };
        s.ejected_until[index(&order[0])].store(100, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(pick_of(&s, b"session-2", &[]), order[1]);
        for i in 0..4 {
            s.ejected_until[i].store(100, std::sync::atomic::Ordering::Relaxed);
        }
        assert_eq!(
            pick_of(&s, b"session-2", &[]),
            order[0],
            "panic mode keeps the order"
        );
    }

    #[test]
    fn weight_zero_gets_no_point() {
        let s = snapshot(&[("10.0.0.1:8000", 0), ("10.0.0.2:8000", 100)]);
        assert_eq!(order_of(&s, b"k"), vec!["10.0.0.2:8000".to_owned()]);
    }

    #[test]
    fn the_hash_is_the_documented_one() {
        // FNV-1a-64("a") = 0xaf63dc4c8601ec8c, then splitmix64's finalizer.
        assert_eq!(hash(b"a"), mix(0xaf63_dc4c_8601_ec8c));
        assert_eq!(hash(b""), mix(0xcbf2_9ce4_8422_2325));
        // Pinned (computed apart from this code), so that a change cannot go unnoticed: the
        // bindings and other processes rely on these values.
        assert_eq!(hash(b"10.0.0.1:8080#0"), 0x5e71_d853_6458_55d8);
        assert_eq!(key_hash(b"session-42"), 0x666a_2654_7240_5471);
    }

    /// The documented order computed plainly: every point sorted, walked from the key's place.
    fn plain_order(ring: &Ring, key: u64) -> Vec<usize> {
        let points = &ring.points;
        let start = points.partition_point(|p| p.0 < key);
        let mut seen = HashSet::new();
        (0..points.len())
            .map(|step| points[(start + step) % points.len()].1 as usize)
            .filter(|&i| seen.insert(i))
            .collect()
    }

    #[test]
    fn the_bucketed_search_and_the_walk_give_the_plain_order() {
        for n in [1usize, 3, 9, 40, 300] {
            let list = hosts(n);
            let borrowed: Vec<(&str, u32)> = list.iter().map(|(h, w)| (h.as_str(), *w)).collect();
            let s = snapshot(&borrowed);
            let ring = Ring::new(&s);
            let mut keys: Vec<u64> = (0..500u64).map(|k| key_hash(&k.to_le_bytes())).collect();
            // The edges: before the first point, on points, after the last.
            keys.extend([0, u64::MAX, ring.points[0].0, ring.points.last().unwrap().0]);
            keys.extend(ring.points.iter().take(50).map(|p| p.0.wrapping_add(1)));
            for key in keys {
                let got: Vec<usize> = ring.order(key, n).collect();
                assert_eq!(got, plain_order(&ring, key), "n {n}, key {key:#x}");
                assert_eq!(got.len(), n);
            }
        }
    }

    #[test]
    fn the_cache_builds_a_ring_per_list_and_keeps_it() {
        let cache = RingCache::default();
        let mut s = snapshot(&LIST);
        let first = cache.with(&s, |r| r as *const Ring);
        assert_eq!(cache.with(&s, |r| r as *const Ring), first, "kept");
        let key = key_hash(b"session-1");
        let order = cache.with(&s, |r| r.order(key, 4).collect::<Vec<_>>());
        // Another list (generation): another ring, the order of the new list.
        let mut other = snapshot(&LIST[..3]);
        other.generation = 2;
        let three = cache.with(&other, |r| r.order(key, 3).collect::<Vec<_>>());
        assert_eq!(three, plain_order(&Ring::new(&other), key));
        s.generation = 3;
        assert_eq!(
            cache.with(&s, |r| r.order(key, 4).collect::<Vec<_>>()),
            order
        );
    }
}
