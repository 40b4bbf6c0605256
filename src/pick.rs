//! The pick table: one full cycle of nginx's smooth weighted round-robin, computed once per
//! published list, so that a pick is an index into an array.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::eject::{monotonic_ms, monotonic_ns};
use crate::error::ErrorKind;
use crate::instance::Instance;
use crate::snapshot::{next_pos, SkipHint, Snapshot, SnapshotCell};

/// Smallest cap on the cycle length; the cap is `max(MIN_CYCLE_CAP, 16 * n)`.
pub const MIN_CYCLE_CAP: usize = 65_536;

/// The cycle for `weights`: indexes into `weights`, each appearing in proportion to its weight
/// (after reduction by the common divisor and, above the cap, proportional scaling), interleaved
/// as nginx's smooth weighted round-robin does (5,1,1 gives 0 0 1 0 2 0 0). Weight-0 entries
/// never appear. Empty when no weight is positive.
///
/// Costs O(total x log(distinct weights)) steps plus O(n log n) to group the weights.
pub fn build_cycle(weights: &[u32]) -> Vec<u32> {
    let scaled = scale_weights(weights);
    let total: u64 = scaled.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return Vec::new();
    }
    // Instances of equal weight are picked among themselves in index order, so nginx's scan
    // over n instances reduces to one over the distinct weights, each group keeping how many
    // picks it has had. Ties between groups go to the lowest instance index, as in nginx.
    let mut members: Vec<u32> = (0..scaled.len() as u32)
        .filter(|&i| scaled[i as usize] > 0)
        .collect();
    members.sort_unstable_by_key(|&i| (scaled[i as usize], i));
    let mut groups: Vec<Group> = Vec::new();
    let mut group_weights: Vec<u64> = Vec::new();
    for (at, &index) in members.iter().enumerate() {
        let weight = u64::from(scaled[index as usize]);
        match (groups.last_mut(), group_weights.last()) {
            (Some(g), Some(&w)) if w == weight => g.len += 1,
            _ => {
                groups.push(Group {
                    start: at as u32,
                    len: 1,
                    next: 0,
                });
                group_weights.push(weight);
            }
        }
    }
    Tournament::new(groups, group_weights, &members, total).run()
}

/// The instances of one weight: `members[start..start + len]`, ascending.
struct Group {
    start: u32,
    len: u32,
    /// Picks in the current round: the best member is `members[start + next]`.
    next: u32,
}

/// A group as the tournament sees it: the best member of a group holds
/// `step x weight + offset` after `step` rounds of "current += weight", where the offset is
/// -(rounds the group completed) x total.
#[derive(Clone, Copy)]
#[repr(align(32))]
struct Entry {
    weight: i64,
    offset: i64,
    /// The group's best member (the least-picked one, lowest index first).
    member: u32,
    group: u32,
    /// The earliest step at which a certificate in this node's subtree fails (u64::MAX:
    /// never; leaves never fail).
    due: u64,
}

impl Entry {
    /// A leaf with no group: it loses to every group.
    const NONE: Entry = Entry {
        weight: 0,
        offset: i64::MIN / 4,
        member: u32::MAX,
        group: u32::MAX,
        due: u64::MAX,
    };

    #[inline]
    fn value(&self, step: u64) -> i64 {
        step as i64 * self.weight + self.offset
    }
}

/// A kinetic tournament over the weight groups. A group's value is linear in the step; each
/// inner node holds the winner of its two children (a copy, so that deciding a node reads only
/// its children) and, through `due`, the step at which its loser overtakes it (its
/// certificate). A step settles the path of the group just picked and the nodes whose
/// certificate has failed, so the whole cycle costs O(total x log(groups)) node settlements;
/// certificate failures are few (each needs two lines to cross).
struct Tournament<'a> {
    groups: Vec<Group>,
    members: &'a [u32],
    total: i64,
    /// Leaves (a power of two): group g is node `leaves + g`; node 1 is the root.
    leaves: usize,
    nodes: Vec<Entry>,
}

impl<'a> Tournament<'a> {
    fn new(groups: Vec<Group>, weights: Vec<u64>, members: &'a [u32], total: u64) -> Self {
        // Values stay within a few totals of 0 and steps are at most `total`, so total^2 must
        // fit in an i64 (the cap keeps totals far below this: 16 entries per instance).
        assert!(total <= 1 << 31, "a cycle of {total} entries is too long");
        let leaves = groups.len().next_power_of_two();
        let mut nodes = vec![Entry::NONE; 2 * leaves];
        for (g, (group, &weight)) in groups.iter().zip(&weights).enumerate() {
            nodes[leaves + g] = Entry {
                weight: weight as i64,
                offset: 0,
                member: members[group.start as usize],
                group: g as u32,
                due: u64::MAX,
            };
        }
        let mut tournament = Tournament {
            groups,
            members,
            total: total as i64,
            leaves,
            nodes,
        };
        for node in (1..leaves).rev() {
            tournament.settle(node, 1);
        }
        tournament
    }

    fn run(mut self) -> Vec<u32> {
        let total = self.total as u64;
        let mut cycle = Vec::with_capacity(total as usize);
        for step in 1..=total {
            let winner = self.nodes[1];
            cycle.push(winner.member);
            if step == total {
                break;
            }
            let g = winner.group as usize;
            let leaf = &mut self.nodes[self.leaves + g];
            let group = &mut self.groups[g];
            group.next += 1;
            if group.next == group.len {
                group.next = 0;
                leaf.offset -= self.total;
            }
            leaf.member = self.members[(group.start + group.next) as usize];
            // The picked group holds less from now on: its path is settled again for the
            // next step, and with it every subtree beside the path whose certificate failed.
            let next = step + 1;
            let mut node = self.leaves + g;
            while node > 1 {
                let sibling = node ^ 1;
                if self.nodes[sibling].due <= next {
                    self.repair(sibling, next);
                }
                node /= 2;
                self.settle(node, next);
            }
        }
        cycle
    }

    /// Brings the subtree of `node` up to date for `step`.
    fn repair(&mut self, node: usize, step: u64) {
        if self.nodes[node].due > step {
            return;
        }
        self.repair(2 * node, step);
        self.repair(2 * node + 1, step);
        self.settle(node, step);
    }

    /// Decides `node` at `step` from its children, which are up to date: the higher value
    /// wins, on a tie the lower member index (nginx's order).
    #[inline]
    fn settle(&mut self, node: usize, step: u64) {
        let (a, b) = (&self.nodes[2 * node], &self.nodes[2 * node + 1]);
        let (va, vb) = (a.value(step), b.value(step));
        let (win, lose) = if vb > va || (vb == va && b.member < a.member) {
            (b, a)
        } else {
            (a, b)
        };
        let due = overtaken_at(win, lose, step).min(a.due).min(b.due);
        self.nodes[node] = Entry { due, ..*win };
    }
}

/// The first step after `step` at which `lose` beats `win` (which beats it at `step`), if
/// neither is picked meanwhile.
#[inline]
fn overtaken_at(win: &Entry, lose: &Entry, step: u64) -> u64 {
    if lose.weight <= win.weight {
        return u64::MAX; // the gap never narrows (an empty leaf has weight 0)
    }
    let gap = (win.value(step) - lose.value(step)) as u64;
    let narrowing = (lose.weight - win.weight) as u64;
    let (quotient, remainder) = (gap / narrowing, gap % narrowing);
    // On a tie the lower member index wins: then an equal value is enough to overtake.
    let steps = if lose.member < win.member {
        quotient + u64::from(remainder != 0)
    } else {
        quotient + 1
    };
    step + steps
}

/// Reduces weights by their greatest common divisor and scales them down proportionally when
/// their sum exceeds the cycle cap; a positive weight stays at least 1.
fn scale_weights(weights: &[u32]) -> Vec<u32> {
    let cap = MIN_CYCLE_CAP.max(16 * weights.len()) as u64;
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let mut scaled: Vec<u32> = if total > cap {
        // Room for the +1 given to weights that would round to 0 keeps the sum within the cap.
        let budget = cap - weights.len() as u64;
        weights
            .iter()
            .map(|&w| {
                if w == 0 {
                    0
                } else {
                    ((u64::from(w) * budget / total) as u32).max(1)
                }
            })
            .collect()
    } else {
        weights.to_vec()
    };
    let divisor = scaled.iter().fold(0u32, |g, &w| gcd(g, w));
    if divisor > 1 {
        for w in &mut scaled {
            *w /= divisor;
        }
    }
    scaled
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// What a pick reads: the current snapshot, whether any ejection is in force, whether the client
/// is closed. All three are rarely written, so a pick only reads this line. Per-thread cursors
/// hold a `Weak` to it, which keeps its address from being reused while they remember it.
pub struct Picker {
    cell: SnapshotCell,
    /// The latest deadline (monotonic ms) of any ejection in force; 0 when there is none.
    eject_horizon: AtomicU64,
    closed: AtomicBool,
}

impl Default for Picker {
    fn default() -> Self {
        Picker {
            cell: SnapshotCell::new(),
            eject_horizon: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }
}

/// This thread's place in one client's cycle.
struct Cursor {
    picker: Weak<Picker>,
    snapshot: Arc<Snapshot>,
    generation: u64,
    position: u32,
    /// What this thread's last search past ejected entries of `snapshot` found.
    hint: SkipHint,
}

/// Per-thread cursors, most recently used first.
struct ThreadCursors {
    cursors: Vec<Cursor>,
    rng: u64,
}

thread_local! {
    static CURSORS: RefCell<ThreadCursors> = const {
        RefCell::new(ThreadCursors { cursors: Vec::new(), rng: 0 })
    };
}

impl Picker {
    /// Picks the next instance for this thread, skipping `exclude`d ids and ejected instances.
    /// On the common path (the same snapshot as this thread's last pick on this client, nothing
    /// excluded, no ejection in force) it takes no lock, allocates nothing, makes no system call
    /// and writes only this thread's memory.
    #[inline]
    pub fn select(self: &Arc<Self>, exclude: &[u64], out: &mut Instance) -> Result<(), ErrorKind> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(ErrorKind::Closed);
        }
        let generation = self.cell.generation();
        if generation == 0 {
            return Err(ErrorKind::NoInstance);
        }
        let now = self.ejection_clock();
        let picked = CURSORS.try_with(|cursors| {
            // Busy only when a pick runs inside `with_current`: then as if exiting.
            let Ok(mut cursors) = cursors.try_borrow_mut() else {
                return Err(());
            };
            let Some(cursor) = cursors.find(self, generation) else {
                return Ok(None);
            };
            let snapshot = &cursor.snapshot;
            let len = snapshot.cycle.len();
            if len == 0 {
                return Ok(None);
            }
            if exclude.is_empty() && now.is_none() {
                let pos = cursor.position as usize;
                let index = snapshot.cycle[pos] as usize;
                cursor.position = next_pos(pos, len);
                *out = snapshot.instances[index];
                return Ok(Some(()));
            }
            Ok(cursor.pick_carefully(exclude, now, out))
        });
        match picked {
            Ok(Ok(Some(()))) => Ok(()),
            Ok(Ok(None)) => Err(ErrorKind::NoInstance),
            // This thread is exiting and its cursors are gone (or in use): pick from a random
            // place.
            _ => {
                let snapshot = self.cell.load().ok_or(ErrorKind::NoInstance)?;
                if snapshot.cycle.is_empty() {
                    return Err(ErrorKind::NoInstance);
                }
                let mut position = (seed() % snapshot.cycle.len() as u64) as u32;
                let mut hint = SkipHint::default();
                let index = match now {
                    Some(now) if exclude.is_empty() => {
                        snapshot.next_unejected(&mut position, &mut hint, now)
                    }
                    _ => snapshot
                        .pick_excluding(position, &mut hint, exclude, now)
                        .ok_or(ErrorKind::NoInstance)?,
                };
                *out = snapshot.instances[index];
                Ok(())
            }
        }
    }

    /// The current snapshot, `None` before the first.
    #[inline]
    pub(crate) fn current(&self) -> Option<Arc<Snapshot>> {
        self.cell.load()
    }

    /// `f` of the current snapshot as this thread's cursor holds it: no epoch pin and no
    /// reference count on the common path (the same snapshot as this thread's last use of the
    /// client); `None` before the first snapshot. A pick inside `f` (the thread's cursors are
    /// in use) picks from a random place of the cell's snapshot.
    pub(crate) fn with_current<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&Arc<Snapshot>) -> R,
    ) -> Option<R> {
        let generation = self.cell.generation();
        if generation == 0 {
            return None;
        }
        let mut f = Some(f);
        let held = CURSORS.try_with(|cursors| {
            let mut cursors = cursors.try_borrow_mut().ok()?;
            let cursor = cursors.find(self, generation)?;
            let f = f.take()?;
            Some(f(&cursor.snapshot))
        });
        match held {
            Ok(Some(out)) => Some(out),
            // The thread is exiting (its cursors are gone) or they are in use.
            _ => {
                let snapshot = self.cell.load()?;
                Some(f.take()?(&snapshot))
            }
        }
    }

    /// Makes `snapshot` the current one. The caller has raised the horizon over its deadlines.
    pub(crate) fn publish(&self, snapshot: Arc<Snapshot>) {
        self.cell.store(snapshot);
    }

    /// From now on every pick returns `Closed`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ejects the instance at `index` of `snapshot` until `deadline_ms`. Raises the horizon
    /// first, then stores the deadline (Release) and the bounds over it: a picker that sees the
    /// deadline, or a bound that covers it, also sees a horizon that covers it.
    pub(crate) fn eject_until(&self, snapshot: &Snapshot, index: usize, deadline_ms: u64) {
        self.eject_horizon.fetch_max(deadline_ms, Ordering::AcqRel);
        snapshot.store_deadline(index, deadline_ms);
    }

    /// Raises the horizon to `horizon_ms` (a publish: a picker may still be on the previous
    /// snapshot for an instant, and its ejections must still be honoured).
    pub(crate) fn raise_horizon(&self, horizon_ms: u64) {
        self.eject_horizon.fetch_max(horizon_ms, Ordering::AcqRel);
    }

    /// Sets the horizon to `horizon_ms`, the latest deadline in force, lowering it when
    /// ejections have ended, so that picks stop reading the clock.
    pub(crate) fn set_horizon(&self, horizon_ms: u64) {
        self.eject_horizon.store(horizon_ms, Ordering::Release);
    }

    /// `Some(now)` while an ejection may be in force, so that only then a pick reads the clock.
    #[inline]
    fn ejection_clock(&self) -> Option<u64> {
        let horizon = self.eject_horizon.load(Ordering::Relaxed);
        if horizon == 0 {
            return None;
        }
        let now = monotonic_ms();
        (now < horizon).then_some(now)
    }
}

impl Cursor {
    /// A pick while an ejection may be in force or with exclusions: out of line, so that the
    /// common path stays small (not `#[cold]`: that would keep its own callees out of line).
    #[inline(never)]
    fn pick_carefully(
        &mut self,
        exclude: &[u64],
        now: Option<u64>,
        out: &mut Instance,
    ) -> Option<()> {
        let snapshot = &self.snapshot;
        let index = match now {
            Some(now) if exclude.is_empty() => {
                snapshot.next_unejected(&mut self.position, &mut self.hint, now)
            }
            // A pick with exclusions (a retry) takes no turn from this thread's cycle, so that
            // plain picks keep their exact proportions around it.
            _ => snapshot.pick_excluding(self.position, &mut self.hint, exclude, now)?,
        };
        *out = snapshot.instances[index];
        Some(())
    }
}

impl ThreadCursors {
    /// This thread's cursor on `picker`, moved to the front and brought to `generation`.
    #[inline]
    fn find(&mut self, picker: &Arc<Picker>, generation: u64) -> Option<&mut Cursor> {
        let key = Arc::as_ptr(picker);
        let found = match self.cursors.first() {
            Some(c) if c.picker.as_ptr() == key => Some(0),
            _ => self.cursors.iter().position(|c| c.picker.as_ptr() == key),
        };
        match found {
            Some(0) => {}
            Some(i) => self.cursors.swap(0, i),
            None => {
                let snapshot = picker.cell.load()?;
                // Cursors of clients that are gone are dropped when a new one is added.
                self.cursors.retain(|c| c.picker.strong_count() > 0);
                let position = self.random_position(&snapshot);
                self.cursors.push(Cursor {
                    picker: Arc::downgrade(picker),
                    generation: snapshot.generation,
                    snapshot,
                    position,
                    hint: SkipHint::default(),
                });
                let last = self.cursors.len() - 1;
                self.cursors.swap(0, last);
            }
        }
        if self.cursors[0].generation != generation {
            let snapshot = picker.cell.load()?;
            let position = self.random_position(&snapshot);
            let cursor = &mut self.cursors[0];
            cursor.generation = snapshot.generation;
            cursor.snapshot = snapshot;
            cursor.position = position;
            cursor.hint = SkipHint::default();
        }
        Some(&mut self.cursors[0])
    }

    /// A fresh random start for each new snapshot, so that threads and processes do not herd.
    fn random_position(&mut self, snapshot: &Snapshot) -> u32 {
        if self.rng == 0 {
            self.rng = seed() | 1;
        }
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        match snapshot.cycle.len() as u64 {
            0 => 0,
            len => ((r >> 32) % len) as u32,
        }
    }
}

/// A uniform random number in [0, 1), for jitter.
pub fn random_unit() -> f64 {
    (seed() >> 11) as f64 / (1u64 << 53) as f64
}

/// A seed that differs between threads, processes and calls.
fn seed() -> u64 {
    let local = 0u8;
    let addr = &local as *const u8 as u64;
    let mut x = addr ^ monotonic_ns() ^ (u64::from(std::process::id()) << 32);
    // splitmix64 finalizer
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain nginx algorithm, as a reference.
    fn nginx(weights: &[u32], picks: usize) -> Vec<u32> {
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        let mut current = vec![0i64; weights.len()];
        (0..picks)
            .map(|_| {
                let mut best: Option<usize> = None;
                for (i, &w) in weights.iter().enumerate() {
                    if w == 0 {
                        continue;
                    }
                    current[i] += i64::from(w);
                    if best.is_none_or(|b| current[i] > current[b]) {
                        best = Some(i);
                    }
                }
                let b = best.unwrap();
                current[b] -= total;
                b as u32
            })
            .collect()
    }

    /// Weight sets of every shape: many distinct weights, zeros, ties, and weights large
    /// enough to hit the cap.
    fn weight_sets() -> impl proptest::strategy::Strategy<Value = Vec<u32>> {
        use proptest::prelude::*;
        prop_oneof![
            prop::collection::vec(0u32..8, 1..40),
            prop::collection::vec(0u32..2_000, 1..60),
            prop::collection::vec(prop_oneof![Just(0u32), 1u32..5, 900u32..1_100], 1..80),
            prop::collection::vec(prop_oneof![1u32..3, 1_000_000u32..50_000_000], 1..30),
            prop::collection::vec(any::<u32>(), 1..8),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 400, ..Default::default() })]

        #[test]
        fn random_weight_sets_give_exactly_the_nginx_sequence(weights in weight_sets()) {
            let cycle = build_cycle(&weights);
            let scaled = scale_weights(&weights);
            let total: u64 = scaled.iter().map(|&w| u64::from(w)).sum();
            proptest::prop_assert_eq!(cycle.len() as u64, total);
            proptest::prop_assert_eq!(cycle, nginx(&scaled, total as usize));
        }
    }

    #[test]
    fn two_thousand_distinct_weights_give_exactly_the_nginx_sequence() {
        // 2,000 instances, 2,000 distinct weights, a tie at each weight: under the cap.
        let weights: Vec<u32> = (0..4_000u32).map(|i| 1 + (i * 7919) % 2_000).collect();
        let cycle = build_cycle(&weights);
        let scaled = scale_weights(&weights);
        assert_eq!(cycle, nginx(&scaled, cycle.len()));
    }

    #[test]
    fn five_one_one_interleaves_as_nginx_does() {
        assert_eq!(build_cycle(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn the_cycle_equals_nginx_for_many_weight_sets() {
        let sets: &[&[u32]] = &[
            &[1],
            &[100, 100, 100],
            &[3, 2, 1],
            &[7, 0, 3, 3, 5],
            &[10, 20, 30, 40],
            &[1, 1, 1, 1, 9],
            &[13, 17, 19, 23, 29, 31],
            &[1000, 1, 1],
            &[2, 4, 6, 8, 8, 6, 4, 2],
        ];
        for &weights in sets {
            let cycle = build_cycle(weights);
            let divisor = weights.iter().fold(0, |g, &w| gcd(g, w));
            let reduced: Vec<u32> = weights.iter().map(|w| w / divisor).collect();
            assert_eq!(cycle, nginx(&reduced, cycle.len()), "weights {weights:?}");
        }
    }

    #[test]
    fn proportions_are_exact_over_a_cycle() {
        let weights = [50, 30, 0, 20, 100];
        let cycle = build_cycle(&weights);
        assert_eq!(cycle.len(), 20);
        let mut counts = [0u32; 5];
        for &i in &cycle {
            counts[i as usize] += 1;
        }
        assert_eq!(counts, [5, 3, 0, 2, 10]);
    }

    #[test]
    fn heavy_instance_never_runs_longer_than_four() {
        let cycle = build_cycle(&[5, 1, 1]);
        let twice: Vec<u32> = cycle.iter().chain(cycle.iter()).copied().collect();
        let longest = twice
            .chunk_by(|a, b| a == b)
            .filter(|run| run[0] == 0)
            .map(<[u32]>::len)
            .max();
        assert!(longest.unwrap() <= 4, "{cycle:?}");
    }

    #[test]
    fn no_positive_weight_gives_an_empty_cycle() {
        assert!(build_cycle(&[]).is_empty());
        assert!(build_cycle(&[0, 0]).is_empty());
    }

    #[test]
    fn large_weights_are_scaled_to_the_cap_and_stay_positive() {
        let mut weights = vec![1u32; 100];
        weights.push(10_000_000);
        let cycle = build_cycle(&weights);
        assert!(cycle.len() <= MIN_CYCLE_CAP);
        for i in 0..101u32 {
            assert!(cycle.contains(&i), "instance {i} lost its place");
        }
        let heavy = cycle.iter().filter(|&&i| i == 100).count();
        assert!(heavy > MIN_CYCLE_CAP * 9 / 10);
    }

    #[test]
    fn ten_thousand_instances_fit_in_sixteen_per_instance() {
        let weights: Vec<u32> = (0..10_000).map(|i| 1 + (i % 7) * 100).collect();
        let cycle = build_cycle(&weights);
        assert!(cycle.len() <= 160_000);
        assert!(cycle.len() >= 10_000);
    }

    fn picker_with(weights: &[u32]) -> (Arc<Picker>, Arc<Snapshot>) {
        let instances = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Instance::new(
                    std::net::Ipv4Addr::from(0x0a00_0001 + i as u32).into(),
                    80,
                    w,
                )
            })
            .collect();
        let picker = Arc::new(Picker::default());
        let snapshot = Arc::new(Snapshot::new(1, instances));
        picker.cell.store(snapshot.clone());
        (picker, snapshot)
    }

    fn pick(picker: &Arc<Picker>, exclude: &[u64]) -> Option<u64> {
        let mut out = Instance::ZEROED;
        picker.select(exclude, &mut out).ok().map(|()| out.id)
    }

    #[test]
    fn an_ejection_raises_the_horizon_and_the_instance_is_skipped() {
        let (picker, snap) = picker_with(&[1, 1, 1]);
        let far = monotonic_ms() + 60_000;
        picker.eject_until(&snap, 1, far);
        assert_eq!(picker.eject_horizon.load(Ordering::Relaxed), far);
        for _ in 0..30 {
            assert_ne!(pick(&picker, &[]), Some(snap.instances[1].id));
        }
        // Every one ejected: panic mode, still in weighted order.
        picker.eject_until(&snap, 0, far);
        picker.eject_until(&snap, 2, far);
        let mut counts = [0; 3];
        for _ in 0..30 {
            let id = pick(&picker, &[]).unwrap();
            counts[snap.index_of(id).unwrap()] += 1;
        }
        assert_eq!(counts, [10, 10, 10]);
    }

    #[test]
    fn retries_with_skewed_weights_never_return_an_excluded_id_nor_take_a_turn() {
        let (picker, snap) = picker_with(&[1_000, 1, 0, 3, 1_000]);
        let ids: Vec<u64> = snap.instances.iter().map(|i| i.id).collect();
        let heavy = [ids[0], ids[4]];
        let far = monotonic_ms() + 60_000;
        let mut plain = std::collections::HashMap::new();
        for round in 0..2 * snap.cycle.len() {
            *plain.entry(pick(&picker, &[]).unwrap()).or_insert(0) += 1;
            let retried = pick(&picker, &heavy).unwrap();
            assert!(retried == ids[1] || retried == ids[3]);
            if round == snap.cycle.len() {
                picker.eject_until(&snap, 3, far);
            }
            assert_eq!(pick(&picker, &ids), None);
        }
        // The retries took no turn: plain picks kept their proportions (minus the ejected
        // one's turns in the second cycle, which went to the next entries).
        assert!(plain[&ids[1]] >= 2);
        assert!(plain[&ids[0]] >= 1_000 && plain[&ids[4]] >= 1_000);
    }

    #[test]
    fn retries_keep_exact_proportions_of_plain_picks() {
        let (picker, snap) = picker_with(&[5, 1, 1]);
        let mut counts = [0; 3];
        for _ in 0..70 {
            let id = pick(&picker, &[]).unwrap();
            counts[snap.index_of(id).unwrap()] += 1;
            let _ = pick(&picker, &[id]);
        }
        assert_eq!(counts, [50, 10, 10]);
    }

    #[test]
    fn with_current_lends_the_cursors_snapshot_and_a_pick_inside_it_still_picks() {
        let (picker, snap) = picker_with(&[1, 1, 1]);
        let ids: Vec<u64> = snap.instances.iter().map(|i| i.id).collect();
        let inner = picker
            .with_current(|current| {
                assert!(Arc::ptr_eq(current, &snap));
                // The thread's cursors are lent out: this pick loads the cell instead.
                pick(&picker, &[ids[0]])
            })
            .unwrap();
        assert!(inner == Some(ids[1]) || inner == Some(ids[2]), "{inner:?}");
        // A new list is what the next use lends.
        let next = Arc::new(Snapshot::new(2, snap.instances[..1].to_vec()));
        picker.cell.store(next.clone());
        assert!(picker.with_current(|c| Arc::ptr_eq(c, &next)).unwrap());
        assert_eq!(Arc::new(Picker::default()).with_current(|_| ()), None);
    }
}
