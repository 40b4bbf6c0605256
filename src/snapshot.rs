//! Immutable instance lists and how they are published to pickers without a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_epoch as epoch;

use crate::instance::Instance;
use crate::load::InstanceLoad;
use crate::pick::build_cycle;

/// Excluded instances a pick with exclusions meets in cycle order before it looks for one in
/// address order instead, where it meets each excluded instance at most once.
const EXCLUDED_HITS: usize = 8;

/// One published instance list with its precomputed pick cycle. Never changes once published,
/// except the per-instance ejection deadlines (and the bounds kept over them), which only rise
/// and are written only through `Picker::eject_until`.
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
    /// The instances of positive weight (the ones that can be picked), ascending.
    pickable: Box<[u32]>,
    /// The cycle positions of instance i, ascending:
    /// `positions[position_starts[i]..position_starts[i + 1]]`.
    position_starts: Box<[u32]>,
    positions: Box<[u32]>,
    /// Bounds of the deadlines over blocks of cycle positions.
    cycle_deadlines: DeadlineTree,
    /// Bounds of the deadlines over blocks of `pickable`.
    pickable_deadlines: DeadlineTree,
}

/// What one thread learnt from its last search past ejected entries: from cycle position
/// `from`, the first entry not ejected was `to`, and the entries before it stay ejected until
/// `until` (deadlines only rise within a snapshot). Lets a cursor that does not move (picks
/// with exclusions) skip the same entries again in O(1). Belongs to one thread and one snapshot.
#[derive(Clone, Copy, Debug, Default)]
pub struct SkipHint {
    from: u32,
    to: u32,
    until: u64,
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
        let pickable: Box<[u32]> = (0..instances.len() as u32)
            .filter(|&i| instances[i as usize].weight > 0)
            .collect();
        // Counting sort of the cycle by instance.
        let mut position_starts = vec![0u32; instances.len() + 1];
        for &index in &cycle {
            position_starts[index as usize + 1] += 1;
        }
        for i in 0..instances.len() {
            position_starts[i + 1] += position_starts[i];
        }
        let mut fill = position_starts.clone();
        let mut positions = vec![0u32; cycle.len()];
        for (pos, &index) in cycle.iter().enumerate() {
            positions[fill[index as usize] as usize] = pos as u32;
            fill[index as usize] += 1;
        }
        Snapshot {
            generation,
            cycle_deadlines: DeadlineTree::new(cycle.len()),
            pickable_deadlines: DeadlineTree::new(pickable.len()),
            instances,
            cycle,
            ejected_until,
            loads: Box::new([]),
            by_id,
            pickable,
            position_starts: position_starts.into(),
            positions: positions.into(),
        }
    }

    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.by_id.get(&id).map(|&i| i as usize)
    }

    /// Instances of positive weight: the ones that can be picked.
    pub fn pickable(&self) -> usize {
        self.pickable.len()
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

    /// Sets the deadlines `(id, until)` an ejector holds, before the snapshot is published.
    /// Ids not listed here are ignored.
    pub(crate) fn restore_deadlines(
        &self,
        deadlines: impl IntoIterator<Item = (u64, u64)>,
        now_ms: u64,
    ) {
        let mut in_force = Vec::new();
        let mut in_force_positions = 0;
        for (id, until) in deadlines {
            let Some(index) = self.index_of(id) else {
                continue;
            };
            self.ejected_until[index].store(until, Ordering::Relaxed);
            if until > now_ms && self.instances[index].weight > 0 {
                in_force.push(index);
                in_force_positions += self.positions_of(index).len();
            }
        }
        // Many entries ejected: one pass over the whole cycle costs less than one per instance.
        if in_force_positions.saturating_mul(DeadlineTree::FANOUT) > self.cycle.len() {
            self.cycle_deadlines.rebuild(|pos| self.deadline_at(pos));
            self.pickable_deadlines
                .rebuild(|j| self.pickable_deadline(j));
        } else {
            for index in in_force {
                self.raise_bounds(index);
            }
        }
    }

    /// Stores the deadline of the instance at `index`, which only rises, then the bounds over
    /// it. Callers raise the pickers' horizon first (`Picker::eject_until`).
    pub(crate) fn store_deadline(&self, index: usize, until_ms: u64) {
        self.ejected_until[index].store(until_ms, Ordering::Release);
        self.raise_bounds(index);
    }

    /// Recomputes the bounds over the deadline of the instance at `index`, which has risen:
    /// O(its cycle positions + log n), never a scan of the list.
    fn raise_bounds(&self, index: usize) {
        self.cycle_deadlines
            .raise(self.positions_of(index), |pos| self.deadline_at(pos));
        if let Ok(j) = self.pickable.binary_search(&(index as u32)) {
            self.pickable_deadlines
                .raise(&[j as u32], |j| self.pickable_deadline(j));
        }
    }

    fn positions_of(&self, index: usize) -> &[u32] {
        let (start, end) = (self.position_starts[index], self.position_starts[index + 1]);
        &self.positions[start as usize..end as usize]
    }

    #[inline]
    fn deadline_at(&self, pos: usize) -> u64 {
        self.ejected_until[self.cycle[pos] as usize].load(Ordering::Acquire)
    }

    fn pickable_deadline(&self, j: usize) -> u64 {
        self.ejected_until[self.pickable[j] as usize].load(Ordering::Acquire)
    }

    /// A pick while an ejection may be in force at `now_ms`: the first entry from `*cursor`
    /// whose instance is not ejected; when every instance is ejected, the entry at the cursor
    /// (panic mode: picks go on in weighted order). Moves the cursor past the entry it picks.
    /// O(log n) at any share of instances ejected. The cycle must not be empty.
    pub fn next_unejected(&self, cursor: &mut u32, hint: &mut SkipHint, now_ms: u64) -> usize {
        let start = *cursor as usize;
        let pos = self.find_unejected(start, hint, now_ms).unwrap_or(start);
        *cursor = next_pos(pos, self.cycle.len());
        self.cycle[pos] as usize
    }

    /// A pick that returns no instance whose id is in `exclude` and takes no turn from the
    /// cursor: the first entry from `cursor` that is neither excluded nor ejected at `now_ms`
    /// (`None`: no ejection in force). When every candidate is ejected, the first candidate
    /// (panic mode). After `EXCLUDED_HITS` excluded entries it looks in address order from
    /// the cursor's instance instead, so that its cost stays O(exclusions x log n) even when
    /// excluded instances hold most of the cycle. `None` when no candidate is left.
    #[inline]
    pub fn pick_excluding(
        &self,
        cursor: u32,
        hint: &mut SkipHint,
        exclude: &[u64],
        now_ms: Option<u64>,
    ) -> Option<usize> {
        let start = cursor as usize;
        let index = self.cycle[start] as usize;
        let Some(now) = now_ms else {
            if !self.is_excluded(index, exclude) {
                return Some(index); // the common retry: the entry at the cursor will do
            }
            return self.first_candidate(start, exclude);
        };
        if self.ejected_until[index].load(Ordering::Acquire) <= now {
            if !self.is_excluded(index, exclude) {
                return Some(index);
            }
        } else if hint.from as usize == start && now < hint.until {
            // The entries from the cursor are still ejected: on from where the last search
            // from here ended.
            let found = self.cycle[hint.to as usize] as usize;
            let in_time = self.ejected_until[found].load(Ordering::Acquire) <= now;
            if in_time && !self.is_excluded(found, exclude) {
                return Some(found);
            }
        }
        self.pick_excluding_further(start, hint, exclude, now)
    }

    fn pick_excluding_further(
        &self,
        start: usize,
        hint: &mut SkipHint,
        exclude: &[u64],
        now: u64,
    ) -> Option<usize> {
        if self.cycle_deadlines.root() > now {
            return self.first_candidate(start, exclude); // every candidate is ejected
        }
        let mut from = start;
        let mut scratch = SkipHint::default();
        for hit in 0..EXCLUDED_HITS {
            // The thread's hint is about searches from its cursor only.
            let hint = if hit == 0 { &mut *hint } else { &mut scratch };
            let Some(pos) = self.find_unejected(from, hint, now) else {
                return self.first_candidate(start, exclude); // every candidate is ejected
            };
            let index = self.cycle[pos] as usize;
            if !self.is_excluded(index, exclude) {
                return Some(index);
            }
            from = next_pos(pos, self.cycle.len()) as usize;
        }
        self.first_unejected_by_address(start, exclude, now)
            .or_else(|| self.first_candidate(start, exclude))
    }

    /// The first cycle position from `start` (going round) whose instance is not ejected at
    /// `now`; `None` when none is.
    #[inline]
    fn find_unejected(&self, start: usize, hint: &mut SkipHint, now: u64) -> Option<usize> {
        let first = self.deadline_at(start);
        if first <= now {
            return Some(start);
        }
        if hint.from as usize == start && now < hint.until {
            let to = hint.to as usize;
            if self.deadline_at(to) <= now {
                return Some(to);
            }
        }
        if self.cycle_deadlines.root() > now {
            return None; // every entry is ejected: known at once (panic mode)
        }
        self.search_unejected(start, first, hint, now)
    }

    #[cold]
    fn search_unejected(
        &self,
        start: usize,
        first: u64,
        hint: &mut SkipHint,
        now: u64,
    ) -> Option<usize> {
        let leaf = |pos: usize| self.deadline_at(pos);
        let mut skipped = first;
        let len = self.cycle.len();
        let found = self
            .cycle_deadlines
            .first_at_most(start + 1, len, now, &leaf, &mut skipped)
            .or_else(|| {
                self.cycle_deadlines
                    .first_at_most(0, start, now, &leaf, &mut skipped)
            })?;
        *hint = SkipHint {
            from: start as u32,
            to: found as u32,
            until: skipped,
        };
        Some(found)
    }

    fn is_excluded(&self, index: usize, exclude: &[u64]) -> bool {
        exclude.contains(&self.instances[index].id)
    }

    /// The first instance that is not excluded, ejected or not: in cycle order from `start`
    /// for a few entries, then in address order from the instance at `start`.
    #[inline]
    fn first_candidate(&self, start: usize, exclude: &[u64]) -> Option<usize> {
        let len = self.cycle.len();
        let mut pos = start;
        for _ in 0..EXCLUDED_HITS.min(len) {
            let index = self.cycle[pos] as usize;
            if !self.is_excluded(index, exclude) {
                return Some(index);
            }
            pos = next_pos(pos, len) as usize;
        }
        let m = self.pickable.len();
        let from = self.pickable_rank(start);
        // Among exclude.len() + 1 distinct instances one at least is not excluded.
        (0..m.min(exclude.len() + 1))
            .map(|k| self.pickable[(from + k) % m] as usize)
            .find(|&index| !self.is_excluded(index, exclude))
    }

    /// The first instance in address order from the instance at cycle position `start` that
    /// is neither excluded nor ejected at `now`.
    fn first_unejected_by_address(&self, start: usize, exclude: &[u64], now: u64) -> Option<usize> {
        let from = self.pickable_rank(start);
        let leaf = |j: usize| self.pickable_deadline(j);
        let mut skipped = u64::MAX;
        let (mut lo, mut hi) = (from, self.pickable.len());
        loop {
            match self
                .pickable_deadlines
                .first_at_most(lo, hi, now, &leaf, &mut skipped)
            {
                Some(j) => {
                    let index = self.pickable[j] as usize;
                    if !self.is_excluded(index, exclude) {
                        return Some(index);
                    }
                    lo = j + 1;
                }
                None if hi == from => return None,
                None => (lo, hi) = (0, from),
            }
        }
    }

    /// Where the instance at cycle position `pos` stands in `pickable`.
    fn pickable_rank(&self, pos: usize) -> usize {
        let index = self.cycle[pos];
        self.pickable.binary_search(&index).unwrap_or_else(|at| at)
    }
}

/// Lower bounds of the deadlines of blocks of leaves (cycle positions, or pickable instances),
/// in levels of `FANOUT`-entry blocks up to one root. A bound above `now` means that every leaf
/// under it is ejected, so a search skips the block. Deadlines only rise while a snapshot is
/// published and a bound is written after the deadlines it covers, so a bound a reader sees is
/// at most the true minimum (stale only by being too low, which costs a look, never a wrong
/// skip). Expiry needs no writer: time passing makes bounds fall behind `now` by itself.
struct DeadlineTree {
    /// Every level, one after the other: in level 0 entry b bounds leaves `b x FANOUT ..`;
    /// in level l + 1 entry b bounds entries `b x FANOUT ..` of level l; the last level is
    /// the root alone, the last entry.
    bounds: Box<[AtomicU64]>,
    /// Where each level starts in `bounds`, and where the last one ends.
    level_starts: Box<[usize]>,
    leaves: usize,
}

impl DeadlineTree {
    const FANOUT: usize = 16;
    const SHIFT: u32 = 4;

    fn new(leaves: usize) -> DeadlineTree {
        // No leaf at all: the root says "all ejected", and searches find nothing.
        let initial = if leaves == 0 { u64::MAX } else { 0 };
        let mut level_starts = vec![0];
        let mut len = leaves.div_ceil(Self::FANOUT).max(1);
        loop {
            level_starts.push(level_starts[level_starts.len() - 1] + len);
            if len == 1 {
                break;
            }
            len = len.div_ceil(Self::FANOUT);
        }
        let total = level_starts[level_starts.len() - 1];
        DeadlineTree {
            bounds: (0..total).map(|_| AtomicU64::new(initial)).collect(),
            level_starts: level_starts.into(),
            leaves,
        }
    }

    #[inline]
    fn root(&self) -> u64 {
        self.bounds[self.bounds.len() - 1].load(Ordering::Acquire)
    }

    fn levels(&self) -> usize {
        self.level_starts.len() - 1
    }

    #[inline]
    fn level(&self, level: usize) -> &[AtomicU64] {
        &self.bounds[self.level_starts[level]..self.level_starts[level + 1]]
    }

    /// Whether entry `idx` of `level` starts at or after leaf `hi`.
    #[inline]
    fn starts_at_or_after(level: usize, idx: usize, hi: usize) -> bool {
        (idx as u64) << (Self::SHIFT * (level as u32 + 1)) >= hi as u64
    }

    /// The minimum over entry `block` of `level`'s children.
    fn block_min(&self, level: usize, block: usize, leaf: &impl Fn(usize) -> u64) -> u64 {
        let start = block * Self::FANOUT;
        if level == 0 {
            let end = (start + Self::FANOUT).min(self.leaves);
            (start..end).map(leaf).min().unwrap_or(u64::MAX)
        } else {
            let below = self.level(level - 1);
            let end = (start + Self::FANOUT).min(below.len());
            below[start..end]
                .iter()
                .map(|b| b.load(Ordering::Acquire))
                .min()
                .unwrap_or(u64::MAX)
        }
    }

    /// Recomputes the bounds over `changed` (ascending leaves whose deadlines have risen).
    fn raise(&self, changed: &[u32], leaf: impl Fn(usize) -> u64) {
        for level in 0..self.levels() {
            let entries = self.level(level);
            let shift = Self::SHIFT * (level as u32 + 1);
            let mut last = None;
            for &q in changed {
                let block = (u64::from(q) >> shift) as usize;
                if last == Some(block) {
                    continue;
                }
                last = Some(block);
                entries[block].store(self.block_min(level, block, &leaf), Ordering::Release);
            }
        }
    }

    /// Recomputes every bound.
    fn rebuild(&self, leaf: impl Fn(usize) -> u64) {
        for level in 0..self.levels() {
            for (block, entry) in self.level(level).iter().enumerate() {
                entry.store(self.block_min(level, block, &leaf), Ordering::Release);
            }
        }
    }

    /// The first leaf in `lo..hi` whose deadline is at most `now`. `skipped` takes the
    /// minimum of the deadlines and bounds it passed over (all above `now`). Costs
    /// O(FANOUT x levels) reads when the bounds are exact.
    fn first_at_most(
        &self,
        lo: usize,
        hi: usize,
        now: u64,
        leaf: &impl Fn(usize) -> u64,
        skipped: &mut u64,
    ) -> Option<usize> {
        let hi = hi.min(self.leaves);
        if lo >= hi {
            return None;
        }
        let scan = |from: usize, block: usize, skipped: &mut u64| {
            let end = ((block + 1) * Self::FANOUT).min(hi);
            for q in from..end {
                let deadline = leaf(q);
                if deadline <= now {
                    return Some(q);
                }
                *skipped = (*skipped).min(deadline);
            }
            None
        };
        // The rest of `lo`'s own block first.
        let (mut level, mut idx) = (0, lo / Self::FANOUT);
        let bound = self.level(0)[idx].load(Ordering::Acquire);
        if bound > now {
            *skipped = (*skipped).min(bound);
        } else if let Some(q) = scan(lo, idx, skipped) {
            return Some(q);
        }
        loop {
            // Step right, climbing while at the start of a parent's block.
            idx += 1;
            while idx % Self::FANOUT == 0 && level + 1 < self.levels() {
                level += 1;
                idx /= Self::FANOUT;
            }
            // Look into entries that may hold a leaf in time, leftmost first.
            loop {
                let entries = self.level(level);
                if Self::starts_at_or_after(level, idx, hi) || idx >= entries.len() {
                    return None;
                }
                let bound = entries[idx].load(Ordering::Acquire);
                if bound > now {
                    *skipped = (*skipped).min(bound);
                    break;
                }
                if level == 0 {
                    if let Some(q) = scan(idx * Self::FANOUT, idx, skipped) {
                        return Some(q);
                    }
                    break; // a stale bound: nothing in time here after all
                }
                level -= 1;
                idx *= Self::FANOUT;
            }
        }
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
            .map(|(i, &w)| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0001 + i as u32);
                Instance::new(ip.into(), 80, w)
            })
            .collect()
    }

    fn ids(snap: &Snapshot) -> Vec<u64> {
        snap.instances.iter().map(|i| i.id).collect()
    }

    /// The reference: the first entry from `cursor` that is neither excluded nor ejected at
    /// `now`; else the first one not excluded (panic mode); by a plain scan of the cycle.
    fn scan(snap: &Snapshot, cursor: usize, exclude: &[u64], now: u64) -> Option<usize> {
        let len = snap.cycle.len();
        let candidates = (0..len)
            .map(|k| snap.cycle[(cursor + k) % len] as usize)
            .filter(|&i| !exclude.contains(&snap.instances[i].id));
        let mut first = None;
        for index in candidates {
            first.get_or_insert(index);
            if snap.ejected_until[index].load(Ordering::Relaxed) <= now {
                return Some(index);
            }
        }
        first
    }

    fn plain(snap: &Snapshot, cursor: &mut u32, hint: &mut SkipHint, now: u64) -> usize {
        snap.next_unejected(cursor, hint, now)
    }

    #[test]
    fn picks_skip_excluded_and_ejected_and_fall_back_to_panic_mode() {
        let snap = Snapshot::new(1, list(&[1, 1, 1]));
        let ids = ids(&snap);
        let mut hint = SkipHint::default();
        let pick = |cursor, exclude: &[u64], now, hint: &mut SkipHint| {
            snap.pick_excluding(cursor, hint, exclude, now)
        };
        assert_eq!(pick(0, &[ids[0]], None, &mut hint), Some(1));
        snap.store_deadline(2, 1000);
        assert_eq!(pick(2, &[ids[0]], Some(10), &mut hint), Some(1));
        // Once the ejection is over, the instance is picked again.
        assert_eq!(pick(2, &[ids[0]], Some(2000), &mut hint), Some(2));
        // Every candidate ejected: panic mode picks in weighted order.
        snap.store_deadline(1, 1000);
        assert_eq!(pick(1, &[ids[0]], Some(10), &mut hint), Some(1));
        assert_eq!(pick(2, &[ids[0]], Some(10), &mut hint), Some(2));
        assert_eq!(pick(0, &ids, Some(10), &mut hint), None);
        assert_eq!(pick(0, &ids, None, &mut hint), None);
    }

    #[test]
    fn a_wholly_ejected_block_is_skipped() {
        // 20,000 instances of equal weight: the cycle is the address order, so one address
        // block is one block of the cycle.
        let snap = Snapshot::new(1, list(&vec![1; 20_000]));
        assert_eq!(snap.cycle.len(), 20_000);
        for index in 5_000..15_000 {
            snap.store_deadline(index, 1_000 + index as u64);
        }
        let mut hint = SkipHint::default();
        let mut cursor = 5_000;
        assert_eq!(plain(&snap, &mut cursor, &mut hint, 10), 15_000);
        assert_eq!(cursor, 15_001);
        // From inside the block, with the cursor kept (a retry), again and again.
        for _ in 0..3 {
            let picked = snap.pick_excluding(9_000, &mut hint, &[snap.instances[0].id], Some(10));
            assert_eq!(picked, Some(15_000));
        }
        // The ejection of the instance at the cursor ends (at 10,000): it is picked again at
        // once, hint or no hint; entries after it are still skipped.
        let retry = |now, hint: &mut SkipHint| snap.pick_excluding(9_000, hint, &[], Some(now));
        assert_eq!(retry(9_999, &mut hint), Some(15_000));
        assert_eq!(retry(10_000, &mut hint), Some(9_000));
        let mut cursor = 12_000;
        assert_eq!(plain(&snap, &mut cursor, &mut hint, 10_000), 15_000);
        // Going round: from the end of the cycle to the first entry.
        for index in 15_000..20_000 {
            snap.store_deadline(index, 50_000);
        }
        let mut cursor = 19_999;
        assert_eq!(plain(&snap, &mut cursor, &mut hint, 10), 0);
    }

    #[test]
    fn every_instance_ejected_means_panic_mode_in_weighted_order() {
        let snap = Snapshot::new(1, list(&[5, 1, 1]));
        for index in 0..3 {
            snap.store_deadline(index, 100);
        }
        let mut hint = SkipHint::default();
        let mut cursor = 0;
        let picks: Vec<usize> = (0..14)
            .map(|_| plain(&snap, &mut cursor, &mut hint, 10))
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
        // The ejections end: the same cycle, no longer in panic mode.
        assert_eq!(plain(&snap, &mut cursor, &mut hint, 100), 0);
    }

    #[test]
    fn excluded_instances_holding_most_of_the_cycle_cost_a_bounded_search() {
        // Two heavy instances hold 2,000 of 2,002 entries; excluding them must not mean a
        // walk over the cycle, and must still find the light ones.
        let snap = Snapshot::new(1, list(&[1_000, 1, 1_000, 1]));
        let ids = ids(&snap);
        let heavy = [ids[0], ids[2]];
        let mut hint = SkipHint::default();
        for cursor in [0u32, 1, 500, 1_000, 2_001] {
            let picked = snap
                .pick_excluding(cursor, &mut hint, &heavy, None)
                .unwrap();
            assert!(picked == 1 || picked == 3, "{picked}");
            let picked = snap
                .pick_excluding(cursor, &mut hint, &heavy, Some(10))
                .unwrap();
            assert!(picked == 1 || picked == 3, "{picked}");
        }
        // One light instance ejected: the other one, by address.
        snap.store_deadline(1, 100);
        for cursor in [0u32, 700, 1_500] {
            assert_eq!(
                snap.pick_excluding(cursor, &mut hint, &heavy, Some(10)),
                Some(3)
            );
        }
        // Both ejected: panic mode among the candidates, never an excluded one.
        snap.store_deadline(3, 100);
        for cursor in [0u32, 700, 1_500] {
            let picked = snap
                .pick_excluding(cursor, &mut hint, &heavy, Some(10))
                .unwrap();
            assert!(picked == 1 || picked == 3, "{picked}");
        }
        let all = ids;
        assert_eq!(snap.pick_excluding(5, &mut hint, &all, Some(10)), None);
    }

    #[test]
    fn picks_equal_a_scan_of_the_cycle_for_random_ejections() {
        // Skewed weights, some ejected blocks, a few exclusions: the tree's answer is the
        // plain scan's, at every cursor and at several times (expiry included).
        let weights: Vec<u32> = (0..700u32)
            .map(|i| [1, 2, 3, 50, 0][(i % 5) as usize])
            .collect();
        let snap = Snapshot::new(1, list(&weights));
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for (index, &weight) in weights.iter().enumerate() {
            if next(3) > 0 && weight > 0 {
                snap.store_deadline(index, 10 + next(40));
            }
        }
        let ids = ids(&snap);
        let exclude: Vec<u64> = (0..3).map(|_| ids[next(700) as usize]).collect();
        for now in [0u64, 20, 35, 49, 50] {
            for cursor in (0..snap.cycle.len()).step_by(7) {
                let mut hint = SkipHint::default();
                let mut c = cursor as u32;
                let want = scan(&snap, cursor, &[], now).unwrap();
                assert_eq!(
                    plain(&snap, &mut c, &mut hint, now),
                    want,
                    "now {now} cursor {cursor}"
                );
                let picked = snap.pick_excluding(cursor as u32, &mut hint, &exclude, Some(now));
                assert_eq!(picked, scan(&snap, cursor, &exclude, now));
            }
        }
    }

    #[test]
    fn a_hint_is_not_trusted_past_the_earliest_deadline_it_skipped() {
        let snap = Snapshot::new(1, list(&[1, 1, 1, 1]));
        snap.store_deadline(0, 50);
        snap.store_deadline(1, 30);
        let mut hint = SkipHint::default();
        assert_eq!(snap.pick_excluding(0, &mut hint, &[], Some(10)), Some(2));
        assert_eq!(snap.pick_excluding(0, &mut hint, &[], Some(29)), Some(2));
        assert_eq!(snap.pick_excluding(0, &mut hint, &[], Some(30)), Some(1));
        // The instance found got ejected meanwhile: searched again.
        snap.store_deadline(2, 100);
        assert_eq!(snap.pick_excluding(0, &mut hint, &[], Some(20)), Some(3));
    }

    #[test]
    fn restored_deadlines_are_honoured_whether_few_or_many() {
        let instances = list(&vec![1; 1_000]);
        let few = Snapshot::new(1, instances.clone());
        few.restore_deadlines([(instances[0].id, 100), (instances[1].id, 5)], 10);
        let mut hint = SkipHint::default();
        assert_eq!(few.pick_excluding(0, &mut hint, &[], Some(10)), Some(1));
        let many = Snapshot::new(1, instances.clone());
        many.restore_deadlines(instances[..999].iter().map(|i| (i.id, 100)), 10);
        assert_eq!(many.pick_excluding(0, &mut hint, &[], Some(10)), Some(999));
        many.restore_deadlines(std::iter::once((instances[999].id, 100)), 10);
        assert_eq!(many.cycle_deadlines.root(), 100, "every instance ejected");
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
