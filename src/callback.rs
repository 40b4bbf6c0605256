//! The life of a user callback (a change subscriber, a discovery source): it runs at most once at
//! a time, it ends exactly once, and ending it waits for a run in progress, except from inside
//! that very run, where the end happens as soon as the run returns.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Runs once when a callback ends (the C ABI's `free_user_data`).
pub type EndFn = Box<dyn FnOnce() + Send>;

const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const ENDED: u8 = 2;
/// Ended from inside its own run: the run's caller ends it once the run returns.
const END_AFTER_RUN: u8 = 3;

thread_local! {
    /// The callback this thread is running, if any (its address).
    static RUNNING_HERE: Cell<usize> = const { Cell::new(0) };
}

/// See the module documentation.
pub struct CallbackGate {
    state: AtomicU8,
    on_end: Mutex<Option<EndFn>>,
}

impl CallbackGate {
    pub fn new(on_end: Option<EndFn>) -> CallbackGate {
        CallbackGate {
            state: AtomicU8::new(IDLE),
            on_end: Mutex::new(on_end),
        }
    }

    /// Runs `f` unless the callback has ended (then `None`). A panic in `f` is contained and
    /// reported as `Some(Err(()))`.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> Option<Result<R, ()>> {
        if self
            .state
            .compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        let me = self as *const CallbackGate as usize;
        let outer = RUNNING_HERE.with(|r| r.replace(me));
        // The caller's code may block for good: the pool carries on without this thread.
        let outside = crate::refresher::outside_pool();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| ());
        drop(outside);
        RUNNING_HERE.with(|r| r.set(outer));
        if self
            .state
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Ended from inside the run.
            self.state.store(ENDED, Ordering::Release);
            self.finish();
        }
        Some(result)
    }

    /// Ends the callback: `on_end` has run when this returns, or, when called from inside the
    /// callback's own run, runs as soon as that run returns. Later calls do nothing.
    pub fn end(&self) {
        let me = self as *const CallbackGate as usize;
        loop {
            match self
                .state
                .compare_exchange(IDLE, ENDED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.finish();
                    return;
                }
                Err(RUNNING) if RUNNING_HERE.with(Cell::get) == me => {
                    let _ = self.state.compare_exchange(
                        RUNNING,
                        END_AFTER_RUN,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    return;
                }
                // Another thread is running it: wait for that run to return.
                Err(RUNNING) => std::thread::sleep(Duration::from_micros(100)),
                Err(_) => return,
            }
        }
    }

    fn finish(&self) {
        let on_end = self.on_end.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(on_end) = on_end {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(on_end));
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
