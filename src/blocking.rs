//! Blocking calls that may hang (system name lookups, snapshot-file I/O), run on a few threads
//! the whole process shares.
//!
//! getaddrinfo has no timeout the library controls, and a file on a hung network mount blocks
//! `open` and `read` for as long as the server is gone. Such a call runs on a *lane*: a small
//! fixed cap of threads with a queue in front of it. The caller waits at most its own timeout
//! and then goes on; the call itself cannot be cancelled, so a hung one holds its lane thread
//! until the system gives up, but never more threads than the lane's cap:
//! - [`lookups`]: at most [`MAX_LOOKUP_THREADS`] threads for name resolution;
//! - [`file_io`]: at most [`MAX_FILE_THREADS`] threads for `snapshot_file` loads and saves.
//!
//! Identical calls in flight (same key) are coalesced: the many clients of one name share one
//! lookup. A queued call whose every caller gave up is dropped without running. Work submitted
//! without a waiting caller (a save) is coalesced per key too: a newer submission replaces the
//! queued one, so only the newest list of a path is written. A full queue refuses at once
//! ([`Refused::Saturated`]). Nothing a pick needs waits on a lane.
//!
//! Fork: as for the refresher's pool (see [`crate::refresher`]), a child gets fresh lanes
//! lazily; the parent's threads do not exist there and the parent's lane locks are never
//! touched again.

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicPtr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::refresher::{self, fork_generation};

/// The most threads that resolve names at once, for every client of the process together.
pub const MAX_LOOKUP_THREADS: usize = 4;
/// The most threads that read or write snapshot files at once.
pub const MAX_FILE_THREADS: usize = 2;
/// Calls waiting for a thread, per lane; past that a call is refused at once.
const MAX_QUEUED: usize = 64;
/// A lane thread exits after this long with nothing to do.
const IDLE_EXIT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a call gave no result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The caller's timeout passed. `started`: the call was running (else it was still queued,
    /// behind `running` calls that had not finished, and it was dropped).
    TimedOut { started: bool, running: usize },
    /// Every thread of the lane was busy and its queue full: not queued.
    Saturated { running: usize, queued: usize },
}

/// A lane: a few threads, a queue, coalescing by key.
pub struct Lane {
    thread_name: &'static str,
    max_threads: usize,
    idle_exit: Duration,
    fork_generation: u64,
    state: Mutex<LaneState>,
    wake: Condvar,
}

#[derive(Default)]
struct LaneState {
    queue: VecDeque<Queued>,
    seq: u64,
    /// Calls queued or running, by their result type and key.
    calls: HashMap<(TypeId, String), Call>,
    /// Submitted work still queued, by key: its sequence number.
    submitted: HashMap<String, u64>,
    threads: usize,
    idle: usize,
    running: usize,
}

struct Queued {
    seq: u64,
    job: Job,
    kind: Kind,
}

enum Kind {
    Call((TypeId, String)),
    Submit(String),
}

struct Call {
    seq: u64,
    /// A `Slot<T>` for the call's result type.
    slot: Arc<dyn Any + Send + Sync>,
    waiters: usize,
    started: bool,
}

/// Where a call's result lands; its waiters sleep on `done`.
struct Slot<T> {
    result: Mutex<Option<T>>,
    done: Condvar,
}

struct Lanes {
    fork_generation: u64,
    lookups: &'static Lane,
    file_io: &'static Lane,
}

static LANES: AtomicPtr<Lanes> = AtomicPtr::new(std::ptr::null_mut());

/// This process's lanes, made afresh in a child after fork (see `refresher::per_fork`).
fn lanes() -> &'static Lanes {
    refresher::per_fork(
        &LANES,
        |lanes| lanes.fork_generation,
        |generation| Lanes {
            fork_generation: generation,
            lookups: Lane::leaked("easdirect-lookup", MAX_LOOKUP_THREADS),
            file_io: Lane::leaked("easdirect-file", MAX_FILE_THREADS),
        },
    )
}

/// The lane for system name lookups.
pub fn lookups() -> &'static Lane {
    lanes().lookups
}

/// The lane for snapshot-file loads and saves.
pub fn file_io() -> &'static Lane {
    lanes().file_io
}

impl Lane {
    fn leaked(thread_name: &'static str, max_threads: usize) -> &'static Lane {
        Lane::with_idle_exit(thread_name, max_threads, IDLE_EXIT)
    }

    fn with_idle_exit(
        thread_name: &'static str,
        max_threads: usize,
        idle_exit: Duration,
    ) -> &'static Lane {
        Box::leak(Box::new(Lane {
            thread_name,
            max_threads,
            idle_exit,
            fork_generation: fork_generation(),
            state: Mutex::new(LaneState::default()),
            wake: Condvar::new(),
        }))
    }

    /// Runs `work` on a lane thread and waits at most `timeout` for its result. While a call
    /// with the same result type and `key` is queued or running, this one waits for that one's
    /// result instead of running `work`.
    pub fn call<T, F>(&'static self, key: &str, timeout: Duration, work: F) -> Result<T, Refused>
    where
        T: Clone + Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let deadline = Instant::now() + timeout;
        let full_key = (TypeId::of::<T>(), key.to_owned());
        let (slot, seq) = {
            let mut state = lock(&self.state);
            let joined = state.calls.get_mut(&full_key).and_then(|call| {
                let slot = call.slot.clone().downcast::<Slot<T>>().ok()?;
                call.waiters += 1;
                Some((slot, call.seq))
            });
            match joined {
                Some(joined) => joined,
                None => {
                    if state.queue.len() >= MAX_QUEUED {
                        return Err(Refused::Saturated {
                            running: state.running,
                            queued: state.queue.len(),
                        });
                    }
                    let slot = Arc::new(Slot {
                        result: Mutex::new(None),
                        done: Condvar::new(),
                    });
                    let filled = slot.clone();
                    let job: Job = Box::new(move || {
                        let result = work();
                        *lock(&filled.result) = Some(result);
                        filled.done.notify_all();
                    });
                    state.seq += 1;
                    let seq = state.seq;
                    state.calls.insert(
                        full_key.clone(),
                        Call {
                            seq,
                            slot: slot.clone(),
                            waiters: 1,
                            started: false,
                        },
                    );
                    let kind = Kind::Call(full_key.clone());
                    self.enqueue(&mut state, Queued { seq, job, kind });
                    (slot, seq)
                }
            }
        };
        {
            let guard = lock(&slot.result);
            let left = deadline.saturating_duration_since(Instant::now());
            let (guard, _) = slot
                .done
                .wait_timeout_while(guard, left, |result| result.is_none())
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(result) = guard.as_ref() {
                return Ok(result.clone());
            }
        }
        // Gave up: the last caller to give up on a call still queued takes it off the queue.
        let mut state = lock(&self.state);
        if let Some(result) = lock(&slot.result).as_ref() {
            return Ok(result.clone()); // it landed meanwhile
        }
        let running = state.running;
        let Some(call) = state.calls.get_mut(&full_key).filter(|c| c.seq == seq) else {
            return Err(Refused::TimedOut {
                started: true,
                running,
            });
        };
        call.waiters -= 1;
        let started = call.started;
        if call.waiters == 0 && !started {
            state.calls.remove(&full_key);
            state.queue.retain(|q| q.seq != seq);
        }
        Err(Refused::TimedOut { started, running })
    }

    /// Queues `work` to run on a lane thread, with nobody waiting for it. While work submitted
    /// with the same `key` is still queued, `work` replaces it. False when the queue is full
    /// (`work` is dropped without running).
    pub fn submit(&'static self, key: &str, work: impl FnOnce() + Send + 'static) -> bool {
        let mut state = lock(&self.state);
        if let Some(&seq) = state.submitted.get(key) {
            if let Some(queued) = state.queue.iter_mut().find(|q| q.seq == seq) {
                queued.job = Box::new(work);
                return true;
            }
        }
        if state.queue.len() >= MAX_QUEUED {
            return false;
        }
        state.seq += 1;
        let seq = state.seq;
        state.submitted.insert(key.to_owned(), seq);
        let kind = Kind::Submit(key.to_owned());
        let job = Box::new(work);
        self.enqueue(&mut state, Queued { seq, job, kind });
        true
    }

    fn enqueue(&'static self, state: &mut LaneState, queued: Queued) {
        state.queue.push_back(queued);
        if state.idle > 0 {
            self.wake.notify_one();
        } else if state.threads < self.max_threads {
            self.spawn_thread(state);
        }
    }

    fn spawn_thread(&'static self, state: &mut LaneState) {
        let started = std::thread::Builder::new()
            .name(self.thread_name.into())
            .spawn(move || self.worker());
        if started.is_ok() {
            state.threads += 1;
        }
    }

    fn worker(&'static self) {
        let mut state = lock(&self.state);
        loop {
            if let Some(queued) = state.queue.pop_front() {
                match &queued.kind {
                    Kind::Call(key) => match state.calls.get_mut(key) {
                        Some(call) if call.seq == queued.seq => call.started = true,
                        _ => continue, // every caller gave up
                    },
                    Kind::Submit(key) => {
                        if state.submitted.get(key) == Some(&queued.seq) {
                            state.submitted.remove(key);
                        }
                    }
                }
                // More queued than threads free to take it: add a thread while under the cap.
                if !state.queue.is_empty() && state.idle == 0 && state.threads < self.max_threads {
                    self.spawn_thread(&mut state);
                }
                state.running += 1;
                drop(state);
                // The work is ours (lookups, file I/O): a panic would be a bug, but it must not
                // cost the lane a thread.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(queued.job));
                if self.fork_generation != fork_generation() {
                    return; // forked from inside the work: this lane is the parent's
                }
                state = lock(&self.state);
                state.running -= 1;
                if let Kind::Call(key) = &queued.kind {
                    if state.calls.get(key).is_some_and(|c| c.seq == queued.seq) {
                        state.calls.remove(key);
                    }
                }
                continue;
            }
            state.idle += 1;
            let (next, timeout) = self
                .wake
                .wait_timeout(state, self.idle_exit)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.queue.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code under these locks can leave their data half-updated (work runs outside them).
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    /// A lane of its own, so that tests do not share the process's lanes.
    fn lane(threads: usize) -> &'static Lane {
        Lane::with_idle_exit("easdirect-test", threads, Duration::from_millis(200))
    }

    /// Occupies every thread of `lane` until the returned sender is dropped.
    fn hang(lane: &'static Lane, threads: usize) -> mpsc::Sender<()> {
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let (started_tx, started) = mpsc::channel();
        for i in 0..threads {
            let (released, started_tx) = (released.clone(), started_tx.clone());
            assert!(lane.submit(&format!("hang {i}"), move || {
                started_tx.send(()).unwrap();
                let _ = lock(&released).recv();
            }));
        }
        for _ in 0..threads {
            started.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        release
    }

    #[test]
    fn a_call_returns_its_result() {
        let lane = lane(2);
        assert_eq!(lane.call("k", Duration::from_secs(5), || 7), Ok(7));
    }

    #[test]
    fn a_hung_file_system_costs_the_caller_its_timeout_and_no_more() {
        let lane = lane(1);
        let (release, released) = mpsc::channel::<()>();
        let t = Instant::now();
        let got = lane.call(
            "load /mnt/hung/list.json",
            Duration::from_millis(150),
            move || {
                let _ = released.recv(); // an open() that the file server never answers
                1
            },
        );
        let waited = t.elapsed();
        assert_eq!(
            got,
            Err(Refused::TimedOut {
                started: true,
                running: 1
            })
        );
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        drop(release);
    }

    #[test]
    fn a_queued_call_whose_caller_gave_up_never_runs() {
        let lane = lane(1);
        let release = hang(lane, 1);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let got = lane.call("late", Duration::from_millis(50), move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(
            got,
            Err(Refused::TimedOut {
                started: false,
                running: 1
            })
        );
        drop(release);
        // The lane is free again and runs what comes next, but never the dropped call.
        assert_eq!(lane.call("next", Duration::from_secs(5), || 2), Ok(2));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn identical_calls_in_flight_share_one_run() {
        let lane = lane(4);
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let (runs, released) = (runs.clone(), released.clone());
                std::thread::spawn(move || {
                    lane.call("lookup svc.example:80", Duration::from_secs(5), move || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = lock(&released).recv_timeout(Duration::from_secs(5));
                        "10.0.0.1".to_owned()
                    })
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100)); // every caller has joined
        drop(release);
        for caller in callers {
            assert_eq!(caller.join().unwrap(), Ok("10.0.0.1".to_owned()));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn threads_never_pass_the_cap_and_a_full_queue_refuses_at_once() {
        let lane = lane(2);
        let release = hang(lane, 2);
        // Distinct keys, nobody waiting long: each one queues, then leaves the queue.
        for i in 0..10 {
            let got = lane.call(&format!("k{i}"), Duration::from_millis(5), || ());
            assert!(matches!(got, Err(Refused::TimedOut { started: false, .. })));
        }
        for i in 0..MAX_QUEUED {
            assert!(lane.submit(&format!("save {i}"), || ()));
        }
        let t = Instant::now();
        let got = lane.call("one more", Duration::from_secs(5), || ());
        assert_eq!(
            got,
            Err(Refused::Saturated {
                running: 2,
                queued: MAX_QUEUED
            })
        );
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(!lane.submit("one more save", || ()));
        assert_eq!(lock(&lane.state).threads, 2);
        drop(release);
    }

    #[test]
    fn only_the_newest_submission_of_a_key_runs() {
        let lane = lane(1);
        let release = hang(lane, 1);
        let (tx, rx) = mpsc::channel();
        for list in 1..=5 {
            let tx = tx.clone();
            assert!(lane.submit("save /tmp/list.json", move || tx.send(list).unwrap()));
        }
        drop(release);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(5));
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }

    #[test]
    fn idle_threads_exit() {
        let lane = lane(3);
        let release = hang(lane, 3);
        drop(release);
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(&lane.state).threads > 0 {
            assert!(Instant::now() < deadline, "idle threads stayed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_forked_child_gets_lanes_of_its_own() {
        // Every lookup thread of the parent hangs; the child has none of them and must not wait
        // for them (nor touch the parent's lane lock).
        let parent = lookups();
        let release = hang(parent, MAX_LOOKUP_THREADS);
        // SAFETY: the child only calls `lookups` and a lane call, then leaves through _exit
        // without unwinding or running the parent's atexit handlers.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let lane = lookups();
            let fresh = !std::ptr::eq(lane, parent);
            let ok = lane.call("in the child", Duration::from_secs(5), || 3) == Ok(3);
            // SAFETY: ends the child at once, as a forked child of a threaded process must.
            unsafe { libc::_exit(if fresh && ok { 0 } else { 1 }) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut status = 0;
        loop {
            // SAFETY: `pid` is our child; `status` is a valid out pointer.
            let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if got == pid {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: our own child, not yet reaped.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                panic!("the child hung: it waited for the parent's lookup threads");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(release);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
