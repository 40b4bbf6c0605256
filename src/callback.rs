//! The life of a user callback (a change subscriber, a discovery source): it runs at most once at
//! a time, it ends exactly once, and ending it waits for a run in progress, except from inside
//! that very run, where the end happens as soon as the run returns.
//!
//! Fork: a run in progress in the parent has no thread in the child, so there it never returns.
//! Each state records the fork generation it was entered in; in a child, a run of an older
//! generation counts as over (the callback is idle, or ended if it asked to be).

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::Duration;

use crate::refresher::fork_generation;

/// Runs once when a callback ends (the C ABI's `free_user_data`).
pub type EndFn = Box<dyn FnOnce() + Send>;

const IDLE: u64 = 0;
const RUNNING: u64 = 1;
const ENDED: u64 = 2;
/// Ended from inside its own run: the run's caller ends it once the run returns.
const END_AFTER_RUN: u64 = 3;

/// A state and the fork generation it was entered in.
fn pack(state: u64) -> u64 {
    (fork_generation() << 2) | state
}

fn unpack(word: u64) -> (u64, bool) {
    (word & 3, word >> 2 == fork_generation() & (u64::MAX >> 2))
}

thread_local! {
    /// The callback this thread is running, if any (its address).
    static RUNNING_HERE: Cell<usize> = const { Cell::new(0) };
}

/// See the module documentation.
pub struct CallbackGate {
    state: AtomicU64,
    /// A leaked `Box<EndFn>` until taken (an atomic, not a lock: no lock a parent thread held
    /// at fork can stop the child from ending the callback).
    on_end: AtomicPtr<EndFn>,
}

impl CallbackGate {
    pub fn new(on_end: Option<EndFn>) -> CallbackGate {
        CallbackGate {
            state: AtomicU64::new(pack(IDLE)),
            on_end: AtomicPtr::new(
                on_end.map_or(std::ptr::null_mut(), |f| Box::into_raw(Box::new(f))),
            ),
        }
    }

    fn me(&self) -> usize {
        self as *const CallbackGate as usize
    }

    /// Runs `f` unless the callback has ended or is running (then `None`). A panic in `f` is
    /// contained and reported as `Some(Err(()))`.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> Option<Result<R, ()>> {
        let mut current = self.state.load(Ordering::Acquire);
        let inside = RUNNING_HERE.with(Cell::get) == self.me();
        let running = loop {
            let (state, this_process) = unpack(current);
            let running = pack(RUNNING);
            let next = match state {
                IDLE => running,
                // A run in the parent at fork: over here (unless this thread is that run, which
                // forked from inside it).
                RUNNING if !this_process && !inside => running,
                END_AFTER_RUN if !this_process && !inside => {
                    if self
                        .state
                        .compare_exchange(current, pack(ENDED), Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.finish();
                    }
                    return None;
                }
                _ => return None,
            };
            match self
                .state
                .compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break running,
                Err(actual) => current = actual,
            }
        };
        let outer = RUNNING_HERE.with(|r| r.replace(self.me()));
        // The caller's code may block for good: the pool carries on without this thread.
        let outside = crate::refresher::outside_pool();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| ());
        drop(outside);
        RUNNING_HERE.with(|r| r.set(outer));
        if self
            .state
            .compare_exchange(running, pack(IDLE), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Ended from inside the run.
            self.state.store(pack(ENDED), Ordering::Release);
            self.finish();
        }
        Some(result)
    }

    /// Ends the callback: `on_end` has run when this returns, or, when called from inside the
    /// callback's own run, runs as soon as that run returns. Later calls do nothing.
    pub fn end(&self) {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let (state, this_process) = unpack(current);
            let inside = RUNNING_HERE.with(Cell::get) == self.me();
            let next = match state {
                IDLE => pack(ENDED),
                RUNNING if inside => current & !3 | END_AFTER_RUN,
                END_AFTER_RUN if inside => return,
                // A run in the parent at fork (see `run`).
                RUNNING | END_AFTER_RUN if !this_process => pack(ENDED),
                // Another thread is running it: wait for that run to return.
                RUNNING => {
                    std::thread::sleep(Duration::from_micros(100));
                    current = self.state.load(Ordering::Acquire);
                    continue;
                }
                _ => return,
            };
            match self
                .state
                .compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next & 3 == ENDED => return self.finish(),
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn finish(&self) {
        let on_end = self.on_end.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !on_end.is_null() {
            // SAFETY: a pointer from `Box::into_raw` in `new`, taken out exactly once by the
            // swap above.
            let on_end = unsafe { Box::from_raw(on_end) };
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(*on_end));
        }
    }
}

impl Drop for CallbackGate {
    fn drop(&mut self) {
        let on_end = *self.on_end.get_mut();
        if !on_end.is_null() {
            // SAFETY: never taken by `finish` (it would have left null): still ours to free.
            drop(unsafe { Box::from_raw(on_end) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    fn counted() -> (Arc<AtomicUsize>, CallbackGate) {
        let ended = Arc::new(AtomicUsize::new(0));
        let e = ended.clone();
        (
            ended,
            CallbackGate::new(Some(Box::new(move || {
                e.fetch_add(1, Ordering::SeqCst);
            }))),
        )
    }

    #[test]
    fn ends_exactly_once_and_never_runs_after() {
        let (ended, gate) = counted();
        assert_eq!(gate.run(|| 7), Some(Ok(7)));
        gate.end();
        gate.end();
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        assert_eq!(gate.run(|| 7), None);
    }

    #[test]
    fn ending_from_inside_the_run_ends_after_it_returns() {
        let (ended, gate) = counted();
        let seen_inside = gate.run(|| {
            gate.end();
            ended.load(Ordering::SeqCst)
        });
        assert_eq!(seen_inside, Some(Ok(0)));
        assert_eq!(ended.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn ending_from_another_thread_waits_for_the_run() {
        let (ended, gate) = counted();
        let gate = Arc::new(gate);
        let g = gate.clone();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let runner = std::thread::spawn(move || {
            g.run(|| {
                started_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            })
        });
        started_rx.recv().unwrap();
        gate.end();
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        assert!(runner.join().unwrap().is_some());
    }

    #[test]
    fn a_panic_in_the_callback_is_contained() {
        let (_, gate) = counted();
        assert_eq!(gate.run(|| panic!("user code")), Some(Err::<(), ()>(())));
        assert_eq!(gate.run(|| 1), Some(Ok(1)));
    }
}
