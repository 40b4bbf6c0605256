//! A client's ejection state and what holds instances out of picks: failure reports (the
//! callers' and the calls'), successes, back-offs, and the swap of a new snapshot, which carries
//! every deadline in force over to it.
//!
//! Invariants, all kept here: a deadline only rises within a snapshot (the later of an ejection
//! and a back-off holds); a publish and a failure report never interleave (both hold the lock),
//! so no report lands on a list already replaced; the pickers' horizon covers every deadline a
//! picker may still see.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::eject::{monotonic_ms, EjectionPolicy, Ejector};
use crate::error::ErrorKind;
use crate::load::LoadTable;
use crate::log::{Level, Logger};
use crate::pick::Picker;
use crate::refresher::gated;
use crate::snapshot::Snapshot;

pub(super) struct Health {
    state: Mutex<State>,
    log: Logger,
    /// Whether the ejector holds any failure history: while it holds none (the steady state),
    /// a success has nothing to reset and takes no lock.
    history: AtomicBool,
}

struct State {
    ejector: Ejector,
    /// Generation of the last snapshot published.
    generation: u64,
    /// Instances whose hold-out (ejection or back-off) was logged, by id, with their address:
    /// their return is logged once the hold-out is over. Kept only while logging.
    held: HashMap<u64, String>,
}

impl Health {
    pub(super) fn new(policy: EjectionPolicy, log: Logger) -> Health {
        Health {
            log,
            state: Mutex::new(State {
                ejector: Ejector::new(policy),
                generation: 0,
                held: HashMap::new(),
            }),
            history: AtomicBool::new(false),
        }
    }

    /// Records a failure of `id`; may eject it. `UnknownInstance` when the current list does
    /// not hold it.
    pub(super) fn failure(&self, picker: &Picker, id: u64) -> Result<(), ErrorKind> {
        let (_gate, mut state) = gated(&self.state);
        // Loaded under the lock, so that a publish cannot slip in between.
        let snapshot = picker.current().ok_or(ErrorKind::UnknownInstance)?;
        let index = snapshot.index_of(id).ok_or(ErrorKind::UnknownInstance)?;
        if snapshot.instances[index].weight == 0 {
            return Ok(()); // never picked, so never ejected
        }
        if let Some(load) = snapshot.loads.get(index) {
            load.count_failure();
        }
        // O(log n) under the lock: the count in force comes from the ejector's ordered set,
        // the pickable count from the snapshot, and an ejection touches only the instance's own
        // cycle positions.
        let now = monotonic_ms();
        let ejected = state.ejector.on_failure(id, now, snapshot.pickable());
        self.history.store(true, Ordering::Release);
        if let Some(until) = ejected {
            // Raising the horizon is enough here; a refresh lowers it exactly.
            hold_out(picker, &snapshot, index, until);
            if self.log.enabled(Level::Info) {
                let host = snapshot.instances[index].host_str();
                self.log.log(Level::Info, || {
                    format!(
                        "instance {host} ejected for {} ms after failures",
                        until.saturating_sub(now)
                    )
                });
                state.held.insert(id, host.to_owned());
            }
        }
        Ok(())
    }

    /// Records a success of `id`: its failure count and ejection doubling start over. A
    /// success racing a failure of the same instance may miss it, as if it came first.
    pub(super) fn success(&self, id: u64) {
        if !self.history.load(Ordering::Acquire) {
            return;
        }
        let (_gate, mut state) = gated(&self.state);
        state.ejector.on_success(id, monotonic_ms());
        self.history
            .store(!state.ejector.is_empty(), Ordering::Release);
    }

    /// Keeps `id` out of picks for `wait_ms`: not a failure (no doubling, not counted against
    /// max_ejection_percent). Under the lock, so that a publish carries it to the next list.
    pub(super) fn back_off(&self, picker: &Picker, id: u64, wait_ms: u64) {
        if wait_ms == 0 {
            return;
        }
        let (_gate, mut state) = gated(&self.state);
        let Some(snapshot) = picker.current() else {
            return;
        };
        let Some(index) = snapshot.index_of(id) else {
            return;
        };
        let Some(load) = snapshot.loads.get(index) else {
            return;
        };
        let until = load.back_off_until(monotonic_ms().saturating_add(wait_ms));
        hold_out(picker, &snapshot, index, until);
        if self.log.enabled(Level::Info) && !state.held.contains_key(&id) {
            let host = snapshot.instances[index].host_str();
            self.log.log(Level::Info, || {
                format!("instance {host} backing off for {wait_ms} ms, as it asked (429, or 503 with Retry-After)")
            });
            state.held.insert(id, host.to_owned());
        }
    }

    /// Publishes `snapshot` with the next generation, its loads attached from `loads`, and
    /// every ejection and back-off in force carried over; returns the generation.
    pub(super) fn publish(
        &self,
        picker: &Picker,
        loads: &LoadTable,
        mut snapshot: Snapshot,
    ) -> u64 {
        let (_gate, mut state) = gated(&self.state);
        state.generation += 1;
        snapshot.generation = state.generation;
        state.ejector.retain(|id| snapshot.index_of(id).is_some());
        state.held.retain(|id, _| snapshot.index_of(*id).is_some());
        self.history
            .store(!state.ejector.is_empty(), Ordering::Release);
        snapshot.loads = loads.attach(&snapshot.instances);
        let now = monotonic_ms();
        // Back-offs hold instances out of picks as ejections do; the later of the two holds.
        // The ejector never sees back-offs (they are no failure and do not count against
        // max_ejection_percent), so they are merged in here.
        let mut deadlines: HashMap<u64, u64> = state.ejector.deadlines().collect();
        for (inst, load) in snapshot.instances.iter().zip(snapshot.loads.iter()) {
            let backoff = load.backoff_until();
            if backoff > now {
                let until = deadlines.entry(inst.id).or_default();
                *until = (*until).max(backoff);
            }
        }
        snapshot.restore_deadlines(deadlines, now);
        // Never lowered here: a picker may still be on the previous snapshot for an instant,
        // and its ejections must still be honoured. The next refresh lowers it.
        picker.raise_horizon(state.ejector.horizon(now).max(loads.backoff_horizon(now)));
        picker.publish(Arc::new(snapshot));
        state.generation
    }

    /// Sets the pickers' horizon to the latest deadline in force, lowering it when ejections
    /// have ended (a publish only ever raises it).
    /// Logs the return of the instances whose hold-out is over.
    pub(super) fn refresh_horizon(&self, picker: &Picker, loads: &LoadTable) {
        let (_gate, mut state) = gated(&self.state);
        let now = monotonic_ms();
        let horizon = state.ejector.horizon(now).max(loads.backoff_horizon(now));
        picker.set_horizon(horizon);
        if state.held.is_empty() {
            return;
        }
        let snapshot = picker.current();
        let log = &self.log;
        state.held.retain(|id, host| {
            let until = snapshot.as_ref().and_then(|s| {
                let i = s.index_of(*id)?;
                Some(s.ejected_until[i].load(Ordering::Acquire))
            });
            match until {
                None => false, // left the list
                Some(until) if until > now => true,
                Some(_) => {
                    log.log(Level::Info, || format!("instance {host} back in rotation"));
                    false
                }
            }
        });
    }

    /// Instances ejected now (back-offs not counted).
    pub(super) fn ejected(&self) -> usize {
        let (_gate, mut state) = gated(&self.state);
        state.ejector.ejected(monotonic_ms())
    }

    /// The ejection deadline (monotonic ms) of each instance of `snapshot`, 0 for none, in its
    /// order.
    pub(super) fn ejection_deadlines(&self, snapshot: &Snapshot) -> Vec<u64> {
        let (_gate, state) = gated(&self.state);
        let ejector = &state.ejector;
        snapshot
            .instances
            .iter()
            .map(|i| ejector.until(i.id))
            .collect()
    }
}

/// Keeps the instance at `index` of `snapshot` out of picks until `until_ms`, unless a later
/// deadline (an ejection or a back-off) already holds: deadlines only rise within a snapshot.
/// Called under the health lock.
fn hold_out(picker: &Picker, snapshot: &Snapshot, index: usize, until_ms: u64) {
    if until_ms > snapshot.ejected_until[index].load(Ordering::Acquire) {
        picker.eject_until(snapshot, index, until_ms);
    }
}
