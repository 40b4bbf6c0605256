//! The background threads every client of a process shares, and what keeps them working across
//! `fork()`.
//!
//! Thread model: one process-wide pool runs timed jobs (each client's next refresh, subscriber
//! deliveries). It starts a thread only when a job is due and no thread is idle, up to
//! `MAX_THREADS`, and a thread that has had nothing to do for a while exits. A fetch that hangs
//! holds one thread for at most its `request_timeout_ms`, so one client's slow upstream delays
//! another client's refresh by at most that timeout, and only when every thread is busy.
//!
//! Callers' code (a callback source's fetch, a change subscriber, a server-list function) has no
//! timeout the library can enforce, so a pool thread that runs it leaves the pool's count for
//! the duration (`outside_pool`): when it blocks, another thread takes over the pool's work, and
//! a hung callback holds its own thread, never the other clients' refreshes. Threads outside the
//! pool are bounded too (`MAX_OUTSIDE`); past that, callers' code runs counted, as any job.
//!
//! Blocking calls the library makes that may hang with no timeout of their own (system name
//! lookups, snapshot-file I/O) run on the lanes of [`crate::blocking`], never on a thread of
//! their own: the pool thread that needs one waits at most its request timeout, and a lookup
//! or a file operation that hangs holds a lane thread, not a pool thread.
//!
//! The bound, whatever upstreams, DNS, file systems and callers' code do: at most
//! `MAX_THREADS` (8) pool threads, plus at most `MAX_OUTSIDE` (56) threads running callers'
//! code, plus at most `blocking::MAX_LOOKUP_THREADS` (4) name-lookup threads, plus at most
//! `blocking::MAX_FILE_THREADS` (2) snapshot-file threads: 70 in all, and 14 when no caller's
//! code is running. Every one of them exits after a while with nothing to do.
//!
//! Fork: the child gets a new, empty pool (the parent's threads do not exist there, and the
//! parent's pool locks are never touched again). A client notices the new fork generation on its
//! next call and schedules its refresh in the child's pool. Every lock a client's state takes
//! is entered through a gate that `fork()` closes in its prepare handler, so that no such lock
//! is held by a thread that the child does not have.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

/// The most background threads a process runs for all its clients together.
pub const MAX_THREADS: usize = 8;
/// The most threads running callers' code outside the pool's count at once.
pub const MAX_OUTSIDE: usize = 56;
/// An idle thread exits after this long with nothing to do.
const IDLE_EXIT: Duration = Duration::from_secs(30);

pub type Job = Box<dyn FnOnce() + Send + 'static>;

struct Timed {
    at: Instant,
    seq: u64,
    job: Job,
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct PoolState {
    timers: BinaryHeap<Reverse<Timed>>,
    due: VecDeque<Job>,
    seq: u64,
    /// Threads counted against `MAX_THREADS`.
    threads: usize,
    idle: usize,
    /// Threads running callers' code, not counted in `threads`.
    outside: usize,
}

struct Pool {
    fork_generation: u64,
    state: Mutex<PoolState>,
    wake: Condvar,
}

/// Incremented in the child after each `fork()`.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static POOL: AtomicPtr<Pool> = AtomicPtr::new(std::ptr::null_mut());
static ATFORK: Once = Once::new();

/// The fork generation this process is in (0 in a process that never forked).
#[inline]
pub fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

fn pool() -> &'static Pool {
    per_fork(
        &POOL,
        |pool| pool.fork_generation,
        |generation| Pool {
            fork_generation: generation,
            state: Mutex::new(PoolState::default()),
            wake: Condvar::new(),
        },
    )
}

/// This process's value of a facility that lives once per fork generation (the refresher pool,
/// the `blocking` lanes): `cell` holds a leaked one, `made_in` says which generation it was made
/// in, and a child after fork makes its own with `make`. The parent's is left as it is, never
/// freed: its locks may be held by threads that do not exist in the child.
pub(crate) fn per_fork<T>(
    cell: &AtomicPtr<T>,
    made_in: impl Fn(&T) -> u64,
    make: impl FnOnce(u64) -> T,
) -> &'static T {
    ATFORK.call_once(register_atfork);
    let generation = fork_generation();
    let current = cell.load(Ordering::Acquire);
    // SAFETY: values put in `cell` are leaked, never freed, so any non-null pointer stays
    // valid.
    if let Some(value) = unsafe { current.as_ref() } {
        if made_in(value) == generation {
            return value;
        }
    }
    let fresh = Box::into_raw(Box::new(make(generation)));
    match cell.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: `fresh` was just leaked from a Box and is never freed.
        Ok(_) => unsafe { &*fresh },
        Err(winner) => {
            // SAFETY: `fresh` was never shared (what it holds may leak: a lost race happens at
            // most once per fork generation); `winner` is leaked like every other.
            unsafe {
                drop(Box::from_raw(fresh));
                &*winner
            }
        }
    }
}

/// Runs `job` on a background thread at `at`.
pub fn schedule(at: Instant, job: Job) {
    let pool = pool();
    let mut state = lock(&pool.state);
    state.seq += 1;
    let seq = state.seq;
    state.timers.push(Reverse(Timed { at, seq, job }));
    if state.idle > 0 {
        pool.wake.notify_one();
    } else if state.threads < MAX_THREADS {
        spawn_thread(pool, &mut state);
    }
}

/// Runs `job` on a background thread soon.
pub fn spawn(job: Job) {
    schedule(Instant::now(), job);
}

fn spawn_thread(pool: &'static Pool, state: &mut PoolState) {
    let started = std::thread::Builder::new()
        .name("easdirect-refresh".into())
        .spawn(move || worker(pool));
    if started.is_ok() {
        state.threads += 1;
    }
}

thread_local! {
    /// The pool this thread works for (null on other threads).
    static WORKER_OF: std::cell::Cell<*const Pool> = const { std::cell::Cell::new(std::ptr::null()) };
}

fn worker(pool: &'static Pool) {
    WORKER_OF.with(|w| w.set(pool));
    let mut state = lock(&pool.state);
    loop {
        // Back from callers' code with the pool full again: this thread is one too many.
        if state.threads > MAX_THREADS {
            state.threads -= 1;
            return;
        }
        let now = Instant::now();
        while state.timers.peek().is_some_and(|Reverse(t)| t.at <= now) {
            let Reverse(timed) = state.timers.pop().expect("peeked");
            state.due.push_back(timed.job);
        }
        if let Some(job) = state.due.pop_front() {
            // More work is due than threads free to do it: add a thread while under the cap.
            if !state.due.is_empty() && state.idle == 0 && state.threads < MAX_THREADS {
                spawn_thread(pool, &mut state);
            }
            drop(state);
            // A job contains its own panics (see `client`); this is a last line of defence, so
            // that a thread is never lost.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            if pool.fork_generation != fork_generation() {
                // The job forked and this is the child: the parent's pool (and its lock) is
                // not this process's to use.
                return;
            }
            state = lock(&pool.state);
            continue;
        }
        let wait = match state.timers.peek() {
            Some(Reverse(t)) => t.at.saturating_duration_since(now),
            None => IDLE_EXIT,
        };
        state.idle += 1;
        let (next, timeout) = pool
            .wake
            .wait_timeout(state, wait)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state = next;
        state.idle -= 1;
        if timeout.timed_out() && state.timers.is_empty() && state.due.is_empty() {
            state.threads -= 1;
            return;
        }
    }
}

/// While it lives, the current pool thread does not count against `MAX_THREADS` (see the module
/// documentation); a thread is started for the pool's work if none is idle.
pub struct OutsidePool {
    pool: &'static Pool,
}

/// Leaves the pool's count around callers' code; `None` on a thread that is not a pool
/// thread, or when `MAX_OUTSIDE` threads are already out.
pub fn outside_pool() -> Option<OutsidePool> {
    let pool = WORKER_OF.with(|w| w.get());
    // SAFETY: pools are leaked, never freed; a non-null pointer is one this thread works for.
    let pool: &'static Pool = unsafe { pool.as_ref() }?;
    if pool.fork_generation != fork_generation() {
        return None; // an inherited thread record; this process has no such pool thread
    }
    let mut state = lock(&pool.state);
    if state.outside >= MAX_OUTSIDE {
        return None;
    }
    state.threads -= 1;
    state.outside += 1;
    let pending = !state.due.is_empty() || !state.timers.is_empty();
    if pending && state.idle == 0 && state.threads < MAX_THREADS {
        spawn_thread(pool, &mut state);
    }
    Some(OutsidePool { pool })
}

impl Drop for OutsidePool {
    fn drop(&mut self) {
        if self.pool.fork_generation != fork_generation() {
            return; // the callback forked: see `worker`
        }
        let mut state = lock(&self.pool.state);
        state.outside -= 1;
        state.threads += 1;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code under these locks can leave their data half-updated, so poisoning carries no
    // information here.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---- the fork gate ----------------------------------------------------------------------

/// Low bits: threads inside the gate. High bit: a fork is waiting for them to leave.
static GATE: AtomicU64 = AtomicU64::new(0);
const FORKING: u64 = 1 << 63;

/// Proof that the current thread is inside the gate; dropping it leaves.
pub struct GateGuard(());

impl Drop for GateGuard {
    fn drop(&mut self) {
        GATE.fetch_sub(1, Ordering::Release);
    }
}

/// Enters the gate: no `fork()` completes while the guard lives. Never nest it.
pub fn enter_gate() -> GateGuard {
    ATFORK.call_once(register_atfork);
    let mut current = GATE.load(Ordering::Relaxed);
    loop {
        if current & FORKING != 0 {
            std::thread::yield_now();
            current = GATE.load(Ordering::Relaxed);
            continue;
        }
        match GATE.compare_exchange_weak(current, current + 1, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => return GateGuard(()),
            Err(actual) => current = actual,
        }
    }
}

/// Locks `mutex` inside the gate.
pub fn gated<T>(mutex: &Mutex<T>) -> (GateGuard, MutexGuard<'_, T>) {
    let gate = enter_gate();
    (gate, lock(mutex))
}

extern "C" fn before_fork() {
    GATE.fetch_or(FORKING, Ordering::AcqRel);
    while GATE.load(Ordering::Acquire) & !FORKING != 0 {
        std::thread::yield_now();
    }
}

extern "C" fn after_fork_in_parent() {
    GATE.fetch_and(!FORKING, Ordering::AcqRel);
}

extern "C" fn after_fork_in_child() {
    GATE.store(0, Ordering::Release);
    FORK_GENERATION.fetch_add(1, Ordering::AcqRel);
}

fn register_atfork() {
    // SAFETY: the three handlers are plain functions that only touch atomics, as handlers run
    // around fork() must.
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(after_fork_in_child),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_in_deadline_order() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        for (i, ms) in [(2, 60u64), (1, 30), (0, 0)] {
            let tx = tx.clone();
            schedule(
                now + Duration::from_millis(ms),
                Box::new(move || tx.send(i).unwrap()),
            );
        }
        let got: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, vec![0, 1, 2]);
    }

    #[test]
    fn callers_code_that_hangs_on_every_pool_thread_stops_no_other_job() {
        // More hung callbacks than the pool has threads, each outside the pool's count.
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Arc::new(Mutex::new(release_rx));
        let (out_tx, out_rx) = mpsc::channel();
        for _ in 0..MAX_THREADS + 2 {
            let (release_rx, out_tx) = (release_rx.clone(), out_tx.clone());
            spawn(Box::new(move || {
                let outside = outside_pool();
                out_tx.send(outside.is_some()).unwrap();
                let _ = release_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(20));
            }));
        }
        for _ in 0..MAX_THREADS + 2 {
            let left = out_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("every callback runs");
            assert!(left, "a pool thread leaves the count");
        }
        let (done_tx, done_rx) = mpsc::channel();
        schedule(
            Instant::now() + Duration::from_millis(20),
            Box::new(move || done_tx.send(()).unwrap()),
        );
        assert!(done_rx.recv_timeout(Duration::from_secs(5)).is_ok());
        drop(release_tx);
        assert!(outside_pool().is_none(), "not on a pool thread");
    }

    #[test]
    fn a_stuck_job_does_not_stop_the_others() {
        let (tx, rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        spawn(Box::new(move || {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }));
        spawn(Box::new(move || done_tx.send(()).unwrap()));
        assert!(done_rx.recv_timeout(Duration::from_secs(2)).is_ok());
        drop(tx);
    }
}
