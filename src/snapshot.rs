//! Immutable instance lists and how they are published to pickers without a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_epoch as epoch;

use crate::instance::Instance;
use crate::load::InstanceLoad;
use crate::pick::build_cycle;

/// One published instance list with its precomputed pick cycle. Never changes once published,
/// except the per-instance ejection deadlines, which only `eject` writes.
pub struct Snapshot {
    /// Lists published so far for this client, this one included.
    pub generation: u64,
    /// Every known instance, in address order, weight 0 included.
    pub instances: Vec<Instance>,
    /// One smooth weighted round-robin cycle, as indexes into `instances`.
    pub cycle: Vec<u32>,
    /// Per instance: monotonic ms until which it is ejected (0: not ejected).
    pub ejected_until: Box<[AtomicU64]>,
    /// Per instance: its load state (calls), shared with the snapshots before and after that
    /// list it; attached by the client when it publishes (empty until then).
    pub loads: Box<[Arc<InstanceLoad>]>,
    by_id: HashMap<u64, u32>,
}

impl Snapshot {
    /// Builds a snapshot from a list that is already de-duplicated and sorted.
    pub fn new(generation: u64, instances: Vec<Instance>) -> Snapshot {
        let weights: Vec<u32> = instances.iter().map(|i| i.weight).collect();
        let cycle = build_cycle(&weights);
        let by_id = instances
            .iter()
            .enumerate()
            .map(|(i, inst)| (inst.id, i as u32))
            .collect();
        let ejected_until = instances.iter().map(|_| AtomicU64::new(0)).collect();
        Snapshot {
            generation,
            instances,
            cycle,
            ejected_until,
            loads: Box::new([]),
            by_id,
        }
    }

    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.by_id.get(&id).map(|&i| i as usize)
    }

    /// Instances of positive weight: the ones that can be picked.
    pub fn pickable(&self) -> usize {
        self.instances.iter().filter(|i| i.weight > 0).count()
    }

    /// Whether `other` lists the same instances with the same weights.
    pub fn same_list(&self, other: &[Instance]) -> bool {
        self.instances.len() == other.len()
            && self
                .instances
                .iter()
                .zip(other)
                .all(|(a, b)| a.id == b.id && a.weight == b.weight && a.host == b.host)
    }

    /// Walks the cycle from `*cursor`: the first entry that is not excluded and not ejected at
    /// `now_ms`; when every candidate is ejected, the first candidate (panic mode). Moves the
    /// cursor past the entry it returns. `None` when no candidate is left.
    pub fn walk(&self, cursor: &mut u32, exclude: &[u64], now_ms: Option<u64>) -> Option<usize> {
        let len = self.cycle.len();
        let start = *cursor as usize;
        let mut first_candidate = None;
        for step in 0..len {
            let pos = (start + step) % len;
            let index = self.cycle[pos] as usize;
            if exclude.contains(&self.instances[index].id) {
                continue;
            }
            if first_candidate.is_none() {
                first_candidate = Some(pos);
            }
            let ejected =
                now_ms.is_some_and(|now| self.ejected_until[index].load(Ordering::Acquire) > now);
            if !ejected {
                *cursor = next_pos(pos, len);
                return Some(index);
            }
        }
        let pos = first_candidate?;
        *cursor = next_pos(pos, len);
        Some(self.cycle[pos] as usize)
    }
}

#[inline]
pub fn next_pos(pos: usize, len: usize) -> u32 {
    if pos + 1 == len {
        0
    } else {
        (pos + 1) as u32
    }
}

/// Where a client's current snapshot lives. Readers take a counted reference inside an epoch
/// pin, so that a reader never waits on a writer; a replaced snapshot is released once no
/// reader can still be loading it.
pub struct SnapshotCell {
    ptr: AtomicPtr<Snapshot>,
    /// Generation of the snapshot in `ptr` (0: none yet); pickers compare it with their copy.
    generation: AtomicU64,
}

struct RetiredSnapshot(*const Snapshot);
// SAFETY: the pointer came from `Arc::into_raw` of an `Arc<Snapshot>`, and `Snapshot` is
// `Send + Sync`; the wrapper only carries that reference to the thread that releases it.
unsafe impl Send for RetiredSnapshot {}

impl SnapshotCell {
    pub fn new() -> SnapshotCell {
        SnapshotCell {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            generation: AtomicU64::new(0),
        }
    }

    /// Generation of the current snapshot: a single read of a rarely written word.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A counted reference to the current snapshot.
    pub fn load(&self) -> Option<Arc<Snapshot>> {
        let _guard = epoch::pin();
        let ptr = self.ptr.load(Ordering::Acquire);
        if ptr.is_null() {
            return None;
        }
        // SAFETY: `ptr` came from `Arc::into_raw`; a replaced pointer's reference is released
        // only after every pin taken before the swap has ended, and we hold such a pin, so the
        // count is still at least one here and taking another reference is sound.
        unsafe {
            Arc::increment_strong_count(ptr);
            Some(Arc::from_raw(ptr))
        }
    }

    /// Publishes `snapshot`; the previous one is released once no reader can be loading it.
    pub fn store(&self, snapshot: Arc<Snapshot>) {
        let generation = snapshot.generation;
        let guard = epoch::pin();
        // The generation goes first: whoever loads the new pointer then also reads its
        // generation (or a later one), so a picker never keeps using an older snapshot after a
        // `load` on its thread has returned the new one.
        self.generation.store(generation, Ordering::Release);
        let old = self
            .ptr
            .swap(Arc::into_raw(snapshot) as *mut Snapshot, Ordering::AcqRel);
        if !old.is_null() {
            let retired = RetiredSnapshot(old);
            // SAFETY: `old` is no longer reachable through `ptr`; readers that loaded it hold a
            // pin taken before this point, and the closure runs after all of them have ended.
            unsafe {
                guard.defer_unchecked(move || {
                    let retired = retired;
                    drop(Arc::from_raw(retired.0));
                });
            }
            // Hand the retired snapshot to the global queue now rather than when this thread's
            // bag fills up (64 items), so that memory is reclaimed within a few publications.
            guard.flush();
        }
    }
}

impl Default for SnapshotCell {
    fn default() -> Self {
        SnapshotCell::new()
    }
}

impl Drop for SnapshotCell {
    fn drop(&mut self) {
        let ptr = *self.ptr.get_mut();
        if !ptr.is_null() {
            // SAFETY: we own the cell exclusively, so no reader can be loading `ptr`; it holds
            // the one reference `store` gave the cell.
            unsafe { drop(Arc::from_raw(ptr)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(weights: &[u32]) -> Vec<Instance> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Instance::new(format!("10.0.0.{}", i + 1).parse().unwrap(), 80, w))
            .collect()
    }

    #[test]
    fn walk_skips_excluded_and_ejected_and_falls_back_to_panic_mode() {
        let snap = Snapshot::new(1, list(&[1, 1, 1]));
        let mut cursor = 0;
        let ids: Vec<u64> = snap.instances.iter().map(|i| i.id).collect();
        assert_eq!(snap.walk(&mut cursor, &[ids[0]], None), Some(1));
        snap.ejected_until[2].store(1000, Ordering::Relaxed);
        assert_eq!(snap.walk(&mut cursor, &[ids[0]], Some(10)), Some(1));
        // Once the ejection is over, the instance is picked again.
        assert_eq!(snap.walk(&mut cursor, &[ids[0]], Some(2000)), Some(2));
        // Every candidate ejected: panic mode picks in weighted order.
        snap.ejected_until[1].store(1000, Ordering::Relaxed);
        assert_eq!(snap.walk(&mut cursor, &[ids[0]], Some(10)), Some(1));
        assert_eq!(snap.walk(&mut cursor, &[ids[0]], Some(10)), Some(2));
        assert_eq!(snap.walk(&mut cursor, &ids, Some(10)), None);
    }

    #[test]
    fn a_cell_hands_out_the_latest_snapshot() {
        let cell = SnapshotCell::new();
        assert!(cell.load().is_none());
        cell.store(Arc::new(Snapshot::new(1, list(&[1]))));
        cell.store(Arc::new(Snapshot::new(2, list(&[1, 2]))));
        assert_eq!(cell.generation(), 2);
        assert_eq!(cell.load().unwrap().instances.len(), 2);
    }
}
