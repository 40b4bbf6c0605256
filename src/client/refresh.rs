//! A client's refreshes: fetch from the source on the shared pool, keep the last good list on
//! any failure, publish what changed, save it to the snapshot file, fall back to that file on
//! the first refresh.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::Inner;
use crate::eject::{monotonic_ms, unix_ms};
use crate::instance::Instance;
use crate::log::{Level, Logger};
use crate::refresher::{self, fork_generation, gated};
use crate::snapshot::Snapshot;
use crate::snapshot_file;
use crate::source::build::SourceFactory;
use crate::source::nacos::{PushEvent, PushSink};
use crate::source::{normalize, Source};

/// The fetching side of a client: its source, what the last fetches said, and their counters.
pub(super) struct Fetcher {
    /// Builds the source again where the old one cannot be used (in a child after fork).
    make_source: SourceFactory,
    slot: Mutex<Slot>,
    notes: Mutex<Notes>,
    pub(super) ok: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) last_ok_unix_ms: AtomicU64,
    /// Writes each new list to `snapshot_file`, when set.
    saver: Option<Arc<snapshot_file::Saver>>,
    /// Whether the source is polled (false: push only).
    polls: bool,
    /// The push subscription, while one runs.
    push: Mutex<Option<crate::push::Task>>,
    /// A push stream is up: lists come by push, polling is the safety net.
    pub(super) pushing: AtomicBool,
    /// Lists pushed so far; a poll answer is dropped when a push came in meanwhile.
    pushes: AtomicU64,
    /// Monotonic ms of the last poll.
    last_poll_ms: AtomicU64,
    /// Failed fetches in a row (0 while they succeed): one warning per streak.
    streak: AtomicU64,
    /// Whether a push stream's loss (or failure to come up) was logged since it was last up.
    push_down_logged: AtomicBool,
    log: Logger,
}

/// The source between fetches (taken out while one runs).
struct Slot {
    source: Option<Box<dyn Source>>,
    /// The fork generation the source was made in.
    fork_generation: u64,
}

#[derive(Default)]
pub(super) struct Notes {
    /// The last fetch's error, `None` when it succeeded.
    pub(super) last_error: Option<String>,
    /// Why the snapshot file could not stand in for a failed first fetch.
    pub(super) snapshot_file_note: Option<String>,
}

impl Fetcher {
    pub(super) fn new(
        make_source: SourceFactory,
        snapshot_file: Option<&str>,
        log: &Logger,
    ) -> Fetcher {
        let source = make_source();
        Fetcher {
            streak: AtomicU64::new(0),
            push_down_logged: AtomicBool::new(false),
            log: log.clone(),
            polls: source.polls(),
            push: Mutex::new(None),
            pushing: AtomicBool::new(false),
            pushes: AtomicU64::new(0),
            last_poll_ms: AtomicU64::new(0),
            slot: Mutex::new(Slot {
                source: Some(source),
                fork_generation: fork_generation(),
            }),
            make_source,
            notes: Mutex::new(Notes::default()),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_ok_unix_ms: AtomicU64::new(0),
            saver: snapshot_file.map(|path| snapshot_file::Saver::new(path, log.clone())),
        }
    }

    /// A fetch (or push) brought a list: the end of a failure streak is logged once.
    fn note_success(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        self.last_ok_unix_ms.store(unix_ms(), Ordering::Relaxed);
        self.note(|n| n.last_error = None);
        let failed = self.streak.swap(0, Ordering::AcqRel);
        if failed > 0 {
            self.log.log(Level::Info, || {
                format!("discovery recovered after {failed} failed fetches")
            });
        }
    }

    /// A fetch failed: the first of a streak is logged (as a warning), the rest are counted.
    fn note_failure(&self, failure: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if self.streak.fetch_add(1, Ordering::AcqRel) == 0 {
            self.log.log(Level::Warn, || {
                format!("discovery failed, keeping the last list: {failure}")
            });
        }
        self.note(|n| n.last_error = Some(failure));
    }

    /// What the last fetches said.
    pub(super) fn notes<R>(&self, read: impl FnOnce(&Notes) -> R) -> R {
        let (_gate, notes) = gated(&self.notes);
        read(&notes)
    }

    fn note(&self, write: impl FnOnce(&mut Notes)) {
        let (_gate, mut notes) = gated(&self.notes);
        write(&mut notes);
    }

    /// Fetches once from the source (made again when inherited across fork).
    fn fetch(&self) -> Result<Vec<Instance>, String> {
        let mut source = self.take_source();
        let result = source.fetch();
        let describe = source.describe();
        self.put_source(source);
        let list = normalize(result?);
        if !list.iter().any(|i| i.weight > 0) {
            return Err(format!(
                "{describe}: no pickable instance in the answer ({} listed, none of positive weight); keeping the last list",
                list.len()
            ));
        }
        Ok(list)
    }

    /// Push only: keeps fresh what the push needs (see `Source::maintain`).
    fn maintain(&self) {
        let mut source = self.take_source();
        source.maintain();
        self.put_source(source);
    }

    /// The source, out of its slot for one fetch (made again when inherited across fork).
    fn take_source(&self) -> Box<dyn Source> {
        let generation = fork_generation();
        let source = {
            let (_gate, mut slot) = gated(&self.slot);
            if slot.fork_generation != generation {
                // Inherited across fork: its connections are shared with the parent, so it is
                // neither used nor dropped (dropping could write to those sockets).
                if let Some(old) = slot.source.take() {
                    std::mem::forget(old);
                }
                slot.fork_generation = generation;
            }
            slot.source.take()
        };
        source.unwrap_or_else(|| (self.make_source)())
    }

    fn put_source(&self, source: Box<dyn Source>) {
        gated(&self.slot).1.source = Some(source);
    }

    /// Stops the push subscription, if one runs.
    pub(super) fn stop_push(&self) {
        let task = gated(&self.push).1.take();
        drop(task);
    }

    /// In a child after fork: the parent's push task is not ours to touch.
    pub(super) fn forget_push(&self) {
        std::mem::forget(gated(&self.push).1.take());
        self.pushing.store(false, Ordering::Release);
    }

    /// The newest list reaches the file, waiting at most `timeout` (see `Saver::flush`).
    pub(super) fn flush(&self, timeout: Duration) {
        if let Some(saver) = &self.saver {
            saver.flush(timeout);
        }
    }
}

/// One refresh of the client behind `weak`, then the next one scheduled.
pub(super) fn refresh(weak: Weak<Inner>, first: bool) {
    let Some(inner) = weak.upgrade() else { return };
    if inner.picker.is_closed()
        || inner.fork_generation.load(Ordering::Acquire) != fork_generation()
    {
        return; // closed, or a job of the parent's line after fork (it restarts separately)
    }
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.refresh_once(first)));
    if outcome.is_err() {
        inner.fetcher.failed.fetch_add(1, Ordering::Relaxed);
    }
    inner.schedule_next(weak);
}

impl Inner {
    pub(super) fn schedule_next(&self, weak: Weak<Inner>) {
        if self.picker.is_closed() {
            return;
        }
        let interval = self.settings.refresh_interval.as_secs_f64();
        // +-20% jitter, so that clients started together do not poll together.
        let jitter = 0.8 + 0.4 * (crate::pick::random_unit());
        let at = Instant::now() + Duration::from_secs_f64(interval * jitter);
        refresher::schedule(at, Box::new(move || refresh(weak, false)));
    }

    /// Starts the source's push subscription when it has one (Nacos over gRPC); lists and
    /// stream changes come to `on_push`.
    pub(super) fn start_push(&self) {
        if self.picker.is_closed() {
            return;
        }
        let weak = self.me.clone();
        let sink: PushSink = Arc::new(move |event| {
            if let Some(inner) = weak.upgrade() {
                inner.on_push(event);
            }
        });
        let task = {
            // The source in the slot (at start it is there); a fresh one when a fetch has it
            // out, or when it is the parent's after fork. Push only reads its settings.
            let (_gate, slot) = gated(&self.fetcher.slot);
            match &slot.source {
                Some(source) if slot.fork_generation == fork_generation() => {
                    source.start_push(sink)
                }
                _ => (self.fetcher.make_source)().start_push(sink),
            }
        };
        *gated(&self.fetcher.push).1 = task;
    }

    /// What the push subscription says (on the push runtime's thread: nothing here blocks).
    fn on_push(&self, event: PushEvent) {
        let fetcher = &self.fetcher;
        match event {
            PushEvent::Up => {
                fetcher.pushing.store(true, Ordering::Release);
                fetcher.push_down_logged.store(false, Ordering::Relaxed);
                fetcher.log.log(Level::Info, || {
                    "push stream up: lists come by push, polling is the safety net".into()
                });
            }
            PushEvent::List(list) => {
                let list = normalize(list);
                if !list.iter().any(|i| i.weight > 0) {
                    return; // nothing pickable: the last list is kept, as for a poll
                }
                fetcher.pushes.fetch_add(1, Ordering::AcqRel);
                fetcher.note_success();
                if let Some(generation) = self.publish(list.clone()) {
                    if let Some(saver) = &fetcher.saver {
                        saver.queue(generation, list);
                    }
                }
            }
            PushEvent::Down(why) => {
                let was_up = fetcher.pushing.swap(false, Ordering::AcqRel);
                // Once when it was up, and once when it does not come up: not per reconnect.
                if !fetcher.push_down_logged.swap(true, Ordering::Relaxed) {
                    let then = if fetcher.polls {
                        "polling until it is back"
                    } else {
                        "reconnecting"
                    };
                    let what = if was_up {
                        "push stream lost"
                    } else {
                        "push stream not up"
                    };
                    fetcher
                        .log
                        .log(Level::Warn, || format!("{what} ({why}); {then}"));
                }
                if !fetcher.polls {
                    fetcher.note(|n| n.last_error = Some(why));
                } else if was_up {
                    // Polling resumes at once, not at the next tick.
                    let weak = self.me.clone();
                    refresher::spawn(Box::new(move || {
                        if let Some(inner) = weak.upgrade() {
                            if !inner.picker.is_closed() {
                                inner.refresh_once(false);
                            }
                        }
                    }));
                }
            }
        }
    }

    /// While a push stream is up, polling is a safety net this far apart.
    fn safety_net_ms(&self) -> u64 {
        (self.settings.refresh_interval.as_millis() as u64)
            .saturating_mul(10)
            .max(60_000)
    }

    /// Fetches once and publishes what changed. `first`: falls back to the snapshot file.
    pub(super) fn refresh_once(&self, first: bool) {
        // Ejections that ended since the last refresh stop making picks read the clock.
        self.health.refresh_horizon(&self.picker, &self.loads);
        let fetcher = &self.fetcher;
        if !fetcher.polls {
            fetcher.maintain(); // push only
            return;
        }
        let now = monotonic_ms();
        if fetcher.pushing.load(Ordering::Acquire)
            && now.saturating_sub(fetcher.last_poll_ms.load(Ordering::Relaxed))
                < self.safety_net_ms()
        {
            // No poll, but the list of servers stays fresh (an address server, a callback): the
            // stream follows it.
            fetcher.maintain();
            return;
        }
        fetcher.last_poll_ms.store(now, Ordering::Relaxed);
        let pushes = fetcher.pushes.load(Ordering::Acquire);
        match fetcher.fetch() {
            Ok(_) if fetcher.pushes.load(Ordering::Acquire) != pushes => {
                // A push came while this poll was out: its list may be newer than the answer.
                fetcher.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(list) => {
                fetcher.note_success();
                if let Some(generation) = self.publish(list.clone()) {
                    if let Some(saver) = &fetcher.saver {
                        // Queued, never waited for: a failed or dropped write never disturbs
                        // discovery.
                        saver.queue(generation, list);
                    }
                }
            }
            Err(failure) => {
                fetcher.note_failure(failure);
                if first && !self.ready.load(Ordering::Acquire) {
                    self.fall_back_to_file();
                }
            }
        }
    }

    /// The first fetch failed: the snapshot file's list, when it has one.
    fn fall_back_to_file(&self) {
        let Some(path) = &self.settings.snapshot_file else {
            return;
        };
        // Waited for at most the request timeout: a hung file system delays this refresh by
        // that much, and never the next ones.
        match snapshot_file::load_within(path, self.settings.request_timeout) {
            Ok(list) => {
                self.fetcher.log.log(Level::Warn, || {
                    format!(
                        "serving the list saved in the snapshot file {path} until a fetch succeeds"
                    )
                });
                self.publish(normalize(list));
            }
            Err(note) => {
                self.fetcher
                    .log
                    .log(Level::Warn, || format!("snapshot file: {note}"));
                self.fetcher.note(|n| n.snapshot_file_note = Some(note));
            }
        }
    }

    /// Publishes `list` unless it equals the current one; its generation when it published.
    pub(super) fn publish(&self, list: Vec<Instance>) -> Option<u64> {
        if self.picker.is_closed() {
            return None;
        }
        let current = self.picker.current();
        if let Some(current) = &current {
            if current.same_list(&list) {
                return None;
            }
        }
        let change = self
            .log
            .enabled(Level::Info)
            .then(|| list_change(current.as_deref(), &list));
        // The cycle is computed outside the lock; only the swap is under it.
        let snapshot = Snapshot::new(0, list);
        let generation = self.health.publish(&self.picker, &self.loads, snapshot);
        if let Some((n, added, removed)) = change {
            self.log.log(Level::Info, || {
                format!("list {generation}: {n} instances (+{added} -{removed})")
            });
        }
        self.ready.store(true, Ordering::Release);
        self.subscribers.notify(self.me.clone());
        Some(generation)
    }
}

/// The size of `list` and how many instances it adds to and removes from `current`.
fn list_change(current: Option<&Snapshot>, list: &[Instance]) -> (usize, usize, usize) {
    let Some(current) = current else {
        return (list.len(), list.len(), 0);
    };
    let added = list
        .iter()
        .filter(|i| current.index_of(i.id).is_none())
        .count();
    let kept = list.len() - added;
    (list.len(), added, current.instances.len() - kept)
}
