//! Log lines for operators (`eas_options_set_log`): what a client's discovery and ejection state
//! do, never a line per request.
//!
//! A line goes from the thread that saw the event (a refresh, a failure report, the push
//! runtime) into one bounded, process-wide queue, and one log thread hands it to the callback:
//! a slow callback delays no refresh and no pick, and calls to one callback never overlap. Each
//! client sends at most [`LINES_PER_SECOND`] lines a second; what it drops (over that rate, or
//! with the queue full) is counted, and the count goes out with its next line. Closing a client
//! waits for a line of its being delivered; no line of it is delivered after close returns, and
//! the log function's end never runs on the log thread (queued lines hold their client weakly).
//!
//! Messages are built from what is already printable (the redacted target, redacted URLs,
//! addresses, counts): no secret reaches them.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use crate::callback::{CallbackGate, EndFn};
use crate::eject::monotonic_ms;
use crate::refresher::per_fork;

/// Lines one client may send in one second; the rest are dropped and counted.
pub(crate) const LINES_PER_SECOND: u32 = 10;
/// Lines waiting for the log thread, over every client; more are dropped and counted.
const QUEUE_CAP: usize = 1024;

/// How much a line matters; the C ABI's levels 1-4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    /// The level of a C ABI number (1 error .. 4 debug).
    pub fn from_i32(level: i32) -> Option<Level> {
        Some(match level {
            1 => Level::Error,
            2 => Level::Warn,
            3 => Level::Info,
            4 => Level::Debug,
            _ => return None,
        })
    }

    /// `error`, `warn`, `info` or `debug`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// The caller's log function: a level and one line (no trailing newline).
pub type LogFn = Box<dyn Fn(Level, &str) + Send + Sync>;

struct SinkInner {
    gate: CallbackGate,
    write: LogFn,
    max_level: Level,
}

impl Drop for SinkInner {
    fn drop(&mut self) {
        // The last holder (the options, a client, a queued line) let go.
        self.gate.end();
    }
}

/// A log function shared by the options that carry it, the clients made from them and their
/// queued lines; its end function runs once, when the last of them lets go.
#[derive(Clone)]
pub struct LogSink(Arc<SinkInner>);

impl LogSink {
    /// Lines up to `max_level` go to `write`; `on_end` runs once the last holder lets go.
    pub fn new(write: LogFn, on_end: Option<EndFn>, max_level: Level) -> LogSink {
        LogSink(Arc::new(SinkInner {
            gate: CallbackGate::new(on_end),
            write,
            max_level,
        }))
    }
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogSink(up to {})", self.0.max_level.as_str())
    }
}

impl PartialEq for LogSink {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for LogSink {}

/// One client's side: its callback, the rate limit and the close handshake.
struct ClientLog {
    sink: LogSink,
    /// `target: ` before each message.
    prefix: String,
    closed: AtomicBool,
    limit: Mutex<Limit>,
    /// Shared with the queued lines, which hold the client only weakly: the log thread takes
    /// a strong hold only under this lock while the client is not closed, and lets go before it
    /// says the delivery is over, so the client's last holder (and so the log function's end,
    /// `free_user_data`) is never the log thread.
    delivery: Arc<DeliveryState>,
    /// Lines dropped so far, for the metrics.
    dropped: AtomicU64,
}

#[derive(Default)]
struct Limit {
    window_start_ms: u64,
    in_window: u32,
    /// Dropped since the last line that went out; that count goes out with the next one.
    unreported: u64,
}

#[derive(Default)]
struct Delivery {
    closed: bool,
    delivering: bool,
}

#[derive(Default)]
struct DeliveryState {
    state: Mutex<Delivery>,
    over: Condvar,
}

/// How a line names its client: the printable target, with a static list of more than three
/// addresses cut to its first three and their count (a list of 1,000 would make every line
/// 20 kB long).
fn line_name(target: &str) -> std::borrow::Cow<'_, str> {
    const SHOWN: usize = 3;
    let Some(list) = target.strip_prefix("static://") else {
        return target.into();
    };
    let count = list.split(',').count();
    if count <= SHOWN {
        return target.into();
    }
    let first: Vec<&str> = list.split(',').take(SHOWN).collect();
    format!("static://{},... ({count} addresses)", first.join(",")).into()
}

/// A client's logger; without a log function every call is a no-op that formats nothing.
#[derive(Clone, Default)]
pub(crate) struct Logger(Option<Arc<ClientLog>>);

impl Logger {
    /// A logger for the client of `target` (printable), sending to `sink` if any.
    pub(crate) fn new(sink: Option<LogSink>, target: &str) -> Logger {
        Logger(sink.map(|sink| {
            Arc::new(ClientLog {
                sink,
                prefix: format!("{}: ", line_name(target)),
                closed: AtomicBool::new(false),
                limit: Mutex::new(Limit::default()),
                delivery: Arc::default(),
                dropped: AtomicU64::new(0),
            })
        }))
    }

    /// Whether a line at `level` would go anywhere.
    pub(crate) fn enabled(&self, level: Level) -> bool {
        matches!(&self.0, Some(c) if level <= c.sink.0.max_level && !c.closed.load(Ordering::Relaxed))
    }

    /// Sends the line `message()` builds (only built when it would go anywhere).
    pub(crate) fn log(&self, level: Level, message: impl FnOnce() -> String) {
        if !self.enabled(level) {
            return;
        }
        let Some(client) = &self.0 else { return };
        let dropped_before = {
            let mut limit = lock(&client.limit);
            let now = monotonic_ms();
            if now.saturating_sub(limit.window_start_ms) >= 1000 {
                limit.window_start_ms = now;
                limit.in_window = 0;
            }
            if limit.in_window >= LINES_PER_SECOND {
                limit.unreported += 1;
                client.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            limit.in_window += 1;
            std::mem::take(&mut limit.unreported)
        };
        let mut line = String::with_capacity(client.prefix.len() + 64);
        line.push_str(&client.prefix);
        line.push_str(&message());
        if dropped_before > 0 {
            line.push_str(&format!(
                " ({dropped_before} earlier lines dropped: at most {LINES_PER_SECOND} a second)"
            ));
        }
        if !queue().push(Entry {
            client: Arc::downgrade(client),
            delivery: client.delivery.clone(),
            level,
            line,
        }) {
            lock(&client.limit).unreported += 1 + dropped_before;
            client.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped so far (over the rate, or with the queue full).
    pub(crate) fn dropped(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |c| c.dropped.load(Ordering::Relaxed))
    }

    /// No line is delivered after this returns; a line being delivered is waited for (except
    /// from inside the callback itself, which cannot wait for itself).
    pub(crate) fn close(&self) {
        let Some(client) = &self.0 else { return };
        client.closed.store(true, Ordering::Relaxed);
        let inside = DELIVERING.with(Cell::get) == Arc::as_ptr(client) as usize;
        let mut delivery = lock(&client.delivery.state);
        delivery.closed = true;
        while delivery.delivering && !inside {
            delivery = client
                .delivery
                .over
                .wait(delivery)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(c) => write!(f, "Logger({:?})", c.sink),
            None => f.write_str("Logger(off)"),
        }
    }
}

thread_local! {
    /// The client whose line this thread is delivering (its `ClientLog` address), if any.
    static DELIVERING: Cell<usize> = const { Cell::new(0) };
}

struct Entry {
    client: Weak<ClientLog>,
    delivery: Arc<DeliveryState>,
    level: Level,
    line: String,
}

/// The process's queue and its one log thread (made afresh in a child after fork).
struct Queue {
    fork_generation: u64,
    lines: Mutex<VecDeque<Entry>>,
    ready: Condvar,
    started: AtomicBool,
}

static QUEUE: AtomicPtr<Queue> = AtomicPtr::new(std::ptr::null_mut());

fn queue() -> &'static Queue {
    per_fork(
        &QUEUE,
        |q| q.fork_generation,
        |generation| Queue {
            fork_generation: generation,
            lines: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            started: AtomicBool::new(false),
        },
    )
}

impl Queue {
    /// False when full (the line is dropped) or when no log thread can be started.
    fn push(&'static self, entry: Entry) -> bool {
        if !self.started.swap(true, Ordering::AcqRel) {
            let spawned = std::thread::Builder::new()
                .name("easdirect-log".into())
                .spawn(move || self.run());
            if spawned.is_err() {
                self.started.store(false, Ordering::Release);
                return false;
            }
        }
        let mut lines = lock(&self.lines);
        if lines.len() >= QUEUE_CAP {
            return false;
        }
        lines.push_back(entry);
        drop(lines);
        self.ready.notify_one();
        true
    }

    fn run(&self) {
        loop {
            let entry = {
                let mut lines = lock(&self.lines);
                loop {
                    if let Some(e) = lines.pop_front() {
                        break e;
                    }
                    lines = self.ready.wait(lines).unwrap_or_else(|e| e.into_inner());
                }
            };
            deliver(entry);
        }
    }
}

fn deliver(entry: Entry) {
    let client = {
        let mut delivery = lock(&entry.delivery.state);
        if delivery.closed {
            return;
        }
        // Not closed, so the client (whose close sets `closed` under this lock before it can
        // be freed) is alive.
        let Some(client) = entry.client.upgrade() else {
            return;
        };
        delivery.delivering = true;
        client
    };
    DELIVERING.with(|d| d.set(Arc::as_ptr(&client) as usize));
    let sink = &client.sink.0;
    // A panic in the caller's function is contained (and the line lost).
    let _ = sink.gate.run(|| (sink.write)(entry.level, &entry.line));
    DELIVERING.with(|d| d.set(0));
    // Let go before saying the delivery is over: a close waiting for it then frees the client
    // on its own thread.
    drop(client);
    let mut delivery = lock(&entry.delivery.state);
    delivery.delivering = false;
    drop(delivery);
    entry.delivery.over.notify_all();
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn sink_to(tx: mpsc::Sender<(Level, String)>, max: Level) -> LogSink {
        let tx = Mutex::new(tx);
        LogSink::new(
            Box::new(move |level, line| {
                let _ = lock(&tx).send((level, line.to_owned()));
            }),
            None,
            max,
        )
    }

    #[test]
    fn a_long_static_list_is_named_by_its_first_addresses_and_count() {
        assert_eq!(line_name("static://a:1,b:2,c:3"), "static://a:1,b:2,c:3");
        assert_eq!(
            line_name("static://a:1,b:2,c:3,d:4,e:5"),
            "static://a:1,b:2,c:3,... (5 addresses)"
        );
        assert_eq!(line_name("eas://h/svc"), "eas://h/svc");
    }

    #[test]
    fn lines_carry_the_target_and_respect_the_level() {
        let (tx, rx) = mpsc::channel();
        let log = Logger::new(Some(sink_to(tx, Level::Info)), "eas://h/svc");
        log.log(Level::Debug, || unreachable!("not built above max_level"));
        log.log(Level::Warn, || "fetch failed".into());
        let (level, line) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            (level, line.as_str()),
            (Level::Warn, "eas://h/svc: fetch failed")
        );
    }

    #[test]
    fn over_ten_a_second_is_dropped_and_counted() {
        let (tx, rx) = mpsc::channel();
        let log = Logger::new(Some(sink_to(tx, Level::Debug)), "t");
        for i in 0..25 {
            log.log(Level::Info, || format!("line {i}"));
        }
        let got: Vec<String> = (0..LINES_PER_SECOND)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap().1)
            .collect();
        assert_eq!(got.last().unwrap(), "t: line 9");
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        assert_eq!(log.dropped(), 15);
        // The next window's first line says how many were dropped.
        std::thread::sleep(Duration::from_millis(1050));
        log.log(Level::Info, || "later".into());
        let (_, line) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            line,
            "t: later (15 earlier lines dropped: at most 10 a second)"
        );
    }

    #[test]
    fn close_waits_for_a_line_in_delivery_and_stops_the_rest() {
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let delivered = Arc::new(AtomicU64::new(0));
        let count = delivered.clone();
        let started_tx = Mutex::new(started_tx);
        let release_rx = Mutex::new(release_rx);
        let sink = LogSink::new(
            Box::new(move |_, _| {
                let _ = lock(&started_tx).send(());
                let _ = lock(&release_rx).recv_timeout(Duration::from_secs(5));
                count.fetch_add(1, Ordering::SeqCst);
            }),
            None,
            Level::Info,
        );
        let log = Logger::new(Some(sink), "t");
        log.log(Level::Info, || "one".into());
        log.log(Level::Info, || "two".into());
        started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let closer = {
            let log = log.clone();
            std::thread::spawn(move || log.close())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !closer.is_finished(),
            "close returned while a line was in delivery"
        );
        release_tx.send(()).unwrap();
        closer.join().unwrap();
        assert_eq!(delivered.load(Ordering::SeqCst), 1);
        // "two" was queued before close: it is never delivered.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(delivered.load(Ordering::SeqCst), 1);
        log.log(Level::Info, || unreachable!("closed"));
    }

    #[test]
    fn the_end_function_never_runs_on_the_log_thread() {
        for _ in 0..20 {
            let ended_on = Arc::new(Mutex::new(None::<String>));
            let e = ended_on.clone();
            let sink = LogSink::new(
                Box::new(|_, _| std::thread::sleep(Duration::from_millis(1))),
                Some(Box::new(move || {
                    let name = std::thread::current().name().map(str::to_owned);
                    *lock(&e) = Some(name.unwrap_or_default());
                })),
                Level::Info,
            );
            let log = Logger::new(Some(sink), "t");
            for i in 0..5 {
                log.log(Level::Info, || format!("line {i}"));
            }
            log.close();
            drop(log);
            let name = lock(&ended_on)
                .clone()
                .expect("ended when the logger was dropped");
            assert_ne!(name, "easdirect-log");
        }
    }

    #[test]
    fn the_end_function_runs_once_when_the_last_holder_lets_go() {
        let ended = Arc::new(AtomicU64::new(0));
        let e = ended.clone();
        let sink = LogSink::new(
            Box::new(|_, _| {}),
            Some(Box::new(move || {
                e.fetch_add(1, Ordering::SeqCst);
            })),
            Level::Info,
        );
        let log = Logger::new(Some(sink.clone()), "t");
        drop(sink);
        assert_eq!(ended.load(Ordering::SeqCst), 0);
        log.close();
        drop(log);
        assert_eq!(ended.load(Ordering::SeqCst), 1);
    }
}
