//! The life of a user callback (a change subscriber, a discovery source): it runs at most once at
//! a time, it ends exactly once, and ending it waits until the end is over (its `on_end` has
//! returned), whoever started it: a run in progress, another thread's end, an end asked for from
//! inside the run. Only from inside the callback's own run (or its own `on_end`) does `end`
//! return at once; then the end happens as soon as that run returns.
//!
//! Fork: a run or an end in progress in the parent has no thread in the child, so there it never
//! returns. Each state records the fork generation it was entered in; in a child, a run of an
//! older generation counts as over (the callback is idle, or ended if it asked to be), and so does
//! an older end (its `on_end` was taken out by the parent's thread).

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::Duration;

use crate::refresher::fork_generation;

/// Runs once when a callback ends (the C ABI's `free_user_data`).
pub type EndFn = Box<dyn FnOnce() + Send>;

const IDLE: u64 = 0;
const RUNNING: u64 = 1;
/// `on_end` is running (on the thread that ended the callback).
const ENDING: u64 = 2;
/// Ended from inside its own run: the run's caller ends it once the run returns.
const END_AFTER_RUN: u64 = 3;
/// Over: `on_end` has returned.
const ENDED: u64 = 4;
const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

/// A state and the fork generation it was entered in.
fn pack(state: u64) -> u64 {
    (fork_generation() << STATE_BITS) | state
}

fn unpack(word: u64) -> (u64, bool) {
    (
        word & STATE_MASK,
        word >> STATE_BITS == fork_generation() & (u64::MAX >> STATE_BITS),
    )
}

thread_local! {
    /// The callback this thread is running, if any (its address).
    static RUNNING_HERE: Cell<usize> = const { Cell::new(0) };
    /// The callback whose `on_end` this thread is running, if any (its address).
    static ENDING_HERE: Cell<usize> = const { Cell::new(0) };
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
                        .compare_exchange(
                            current,
                            pack(ENDING),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
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
            self.state.store(pack(ENDING), Ordering::Release);
            self.finish();
        }
        Some(result)
    }

    /// Ends the callback: `on_end` has run when this returns, whoever ended it first, or, when
    /// called from inside the callback's own run (or its own `on_end`), runs as soon as that
    /// returns. Later calls do nothing more (they wait as the first does).
    pub fn end(&self) {
        let mut current = self.state.load(Ordering::Acquire);
        let inside = RUNNING_HERE.with(Cell::get) == self.me();
        loop {
            let (state, this_process) = unpack(current);
            let next = match state {
                ENDED => return,
                IDLE => pack(ENDING),
                RUNNING if inside => current & !STATE_MASK | END_AFTER_RUN,
                END_AFTER_RUN if inside => return,
                // A run in the parent at fork (see `run`).
                RUNNING | END_AFTER_RUN if !this_process => pack(ENDING),
                // An end in the parent at fork: its `on_end` was taken there.
                ENDING if !this_process => return,
                // This thread's own `on_end` ends the callback again: it cannot wait for itself.
                ENDING if ENDING_HERE.with(Cell::get) == self.me() => return,
                // Another thread runs the callback, or its end: wait until the end is over.
                _ => {
                    std::thread::sleep(Duration::from_micros(100));
                    current = self.state.load(Ordering::Acquire);
                    continue;
                }
            };
            match self
                .state
                .compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next & STATE_MASK == ENDING => return self.finish(),
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether the end is over (`on_end` has returned), or was in progress at a fork.
    pub fn is_ended(&self) -> bool {
        match unpack(self.state.load(Ordering::Acquire)) {
            (ENDED, _) => true,
            (ENDING, this_process) => !this_process,
            _ => false,
        }
    }

    /// Runs `on_end` (state ENDING, entered by this thread), then marks the end over.
    fn finish(&self) {
        let on_end = self.on_end.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !on_end.is_null() {
            // SAFETY: a pointer from `Box::into_raw` in `new`, taken out exactly once by the
            // swap above.
            let on_end = unsafe { Box::from_raw(on_end) };
            let outer = ENDING_HERE.with(|e| e.replace(self.me()));
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(*on_end));
            ENDING_HERE.with(|e| e.set(outer));
        }
        self.state.store(pack(ENDED), Ordering::Release);
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

    /// An `on_end` that takes a while and says when it is over.
    fn slow_end(over: &Arc<AtomicUsize>) -> CallbackGate {
        let over = over.clone();
        CallbackGate::new(Some(Box::new(move || {
            std::thread::sleep(Duration::from_millis(30));
            over.fetch_add(1, Ordering::SeqCst);
        })))
    }

    #[test]
    fn every_concurrent_end_returns_after_on_end_has_returned() {
        for _ in 0..20 {
            let over = Arc::new(AtomicUsize::new(0));
            let gate = Arc::new(slow_end(&over));
            let barrier = Arc::new(std::sync::Barrier::new(8));
            let enders: Vec<_> = (0..8)
                .map(|_| {
                    let (gate, over, barrier) = (gate.clone(), over.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        gate.end();
                        over.load(Ordering::SeqCst)
                    })
                })
                .collect();
            for ender in enders {
                assert_eq!(
                    ender.join().unwrap(),
                    1,
                    "an end returned before on_end did"
                );
            }
            assert!(gate.is_ended());
        }
    }

    #[test]
    fn an_end_asked_for_inside_a_run_is_waited_for_by_other_threads() {
        let over = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(slow_end(&over));
        let (inside_tx, inside_rx) = std::sync::mpsc::channel();
        let g = gate.clone();
        let runner = std::thread::spawn(move || {
            g.run(|| {
                g.end(); // from inside: returns at once
                inside_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            })
        });
        inside_rx.recv().unwrap();
        gate.end();
        assert_eq!(over.load(Ordering::SeqCst), 1);
        assert!(runner.join().unwrap().is_some());
    }

    #[test]
    fn on_end_may_end_its_own_callback_again() {
        let gate = Arc::new(std::sync::OnceLock::<Arc<CallbackGate>>::new());
        let g = gate.clone();
        let made = Arc::new(CallbackGate::new(Some(Box::new(move || {
            g.get().unwrap().end(); // must not wait for itself
        }))));
        gate.set(made.clone()).ok().unwrap();
        made.end();
        assert!(made.is_ended());
    }

    #[test]
    fn a_panic_in_the_callback_is_contained() {
        let (_, gate) = counted();
        assert_eq!(gate.run(|| panic!("user code")), Some(Err::<(), ()>(())));
        assert_eq!(gate.run(|| 1), Some(Ok(1)));
    }
}
