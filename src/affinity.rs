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

use std::sync::{Arc, Mutex};

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
    points: Vec<(u64, u32)>,
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
        Ring {
            points,
            total_weight: total,
        }
    }

    /// The instances (indexes) in `key`'s order, each once.
    pub fn order(&self, key: u64, n: usize) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|p| p.0 < key);
        let len = self.points.len();
        // One bit per instance (n / 8 bytes to clear rather than n).
        let mut seen = vec![0u64; n.div_ceil(64)];
        (0..len).filter_map(move |step| {
            let index = self.points[(start + step) % len].1 as usize;
            let (word, bit) = (index / 64, 1u64 << (index % 64));
            let new = seen[word] & bit == 0;
            seen[word] |= bit;
            new.then_some(index)
        })
    }
}

/// The ring of the current snapshot, built on the first keyed call after each list change.
#[derive(Debug, Default)]
pub struct RingCache {
    ring: Mutex<Option<(u64, Arc<Ring>)>>,
}

impl RingCache {
    pub fn ring(&self, snapshot: &Snapshot) -> Arc<Ring> {
        let mut cached = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((generation, ring)) if *generation == snapshot.generation => ring.clone(),
            _ => {
                let ring = Arc::new(Ring::new(snapshot));
                *cached = Some((snapshot.generation, ring.clone()));
                ring
            }
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
        s.loads = LoadTable::default().attach(&s.instances);
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
}
