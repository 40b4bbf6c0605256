//! A client: one target's discovery, its published snapshots, ejection state and subscribers.
//! Each job has its module: `refresh` (fetch, publish, the snapshot file), `health` (ejection
//! reports, back-offs, what a publish carries over), `subscribers` (change callbacks). This
//! file holds the public API and the client's life (start, fork, close).

mod health;
mod refresh;
mod subscribers;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::affinity::RingCache;
use crate::call::Call;
use crate::callback::CallbackGate;
pub use crate::callback::EndFn;
use crate::config::{CallSettings, Options, Settings, SourceKind};
use crate::eject::{monotonic_ms, unix_ms, EjectionPolicy};
use crate::error::{Error, ErrorKind};
use crate::instance::Instance;
use crate::load::{InstanceStats, LoadTable, StatsClock};
use crate::log::Logger;
use crate::pick::Picker;
use crate::redact;
use crate::refresher::{self, fork_generation};
use crate::snapshot::Snapshot;
use crate::source::build::{self, SourceFactory};
use crate::source::callback::{CallbackShared, CallbackSource, FetchFn};
use crate::target::{Target, TargetSpec};
use health::Health;
use refresh::{refresh, Fetcher};
use subscribers::Subscribers;

/// Counters of a client, as `eas_stats` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub generation: u64,
    pub refresh_ok: u64,
    pub refresh_failed: u64,
    pub last_ok_unix_ms: u64,
    pub instances: u32,
    pub ejected: u32,
}

/// What delivers a client's list now (`eas_client_transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Polling the source.
    Poll,
    /// A push stream (Nacos over gRPC).
    Push,
}

/// A change subscriber's callback, called with each new list.
pub type ChangeFn = Box<dyn Fn(&[Instance]) + Send + Sync>;

/// Discovery, selection and ejection for one target. Cheap to share between threads.
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// This client's own Arc, for the jobs it schedules.
    me: Weak<Inner>,
    picker: Arc<Picker>,
    settings: Settings,
    /// The target as it may be printed.
    display: String,
    /// The service the target names ("" for static and callback sources).
    service: String,
    refreshes: bool,
    /// The fork generation whose pool runs this client's refreshes.
    fork_generation: AtomicU64,
    ready: AtomicBool,
    fetcher: Fetcher,
    health: Health,
    subscribers: Subscribers,
    /// The caller's fetch function, for a callback source: ended on close.
    callback_source: Option<Arc<CallbackShared>>,
    /// Per-instance load state of calls, by instance id.
    pub(crate) loads: LoadTable,
    /// The affinity ring of the current list.
    pub(crate) rings: RingCache,
    /// Lines for the caller's log function, if it gave one.
    log: Logger,
}

impl Client {
    /// Parses `target`, applies `options` over its query parameters, and starts discovery.
    /// Returns at once; a `static://` target is ready at once.
    pub fn new(target: &str, options: &Options) -> Result<Client, Error> {
        let parsed = Target::parse(target)?;
        let mut merged = parsed.query.clone();
        for (key, value) in options.iter() {
            merged.set(key, value)?;
        }
        merged.nacos_server_list = options.nacos_server_list.clone();
        let settings = Settings::resolve(parsed.kind, &merged)?;
        let service = match &parsed.spec {
            TargetSpec::Eas { service, .. } | TargetSpec::Nacos { service, .. } => service.clone(),
            TargetSpec::Dns { name, .. } => name.clone(),
            TargetSpec::Static(_) => String::new(),
        };
        let make_source = build::source_factory(&parsed.spec, &merged, &settings)?;
        // The call clock's one-time set-up, here rather than in a call.
        crate::clock::now_ns();
        Ok(Client::start(
            settings,
            make_source,
            redact::accepted_target(target),
            parsed.kind != SourceKind::Static,
            None,
            service,
            options.log.clone(),
        ))
    }

    /// A client whose list comes from `fetch`, called on the refresher thread at each refresh
    /// (see `eas_client_new_with_source`). `on_end` runs once when the client is closed, after
    /// a fetch in progress returns; on error it is dropped without being called.
    pub fn with_source(
        fetch: FetchFn,
        on_end: Option<EndFn>,
        options: &Options,
    ) -> Result<Client, Error> {
        let settings = Settings::resolve(SourceKind::Callback, options)?;
        let shared = CallbackShared::new(fetch, CallbackGate::new(on_end));
        let for_factory = shared.clone();
        let make_source: SourceFactory =
            Box::new(move || Box::new(CallbackSource(for_factory.clone())));
        Ok(Client::start(
            settings,
            make_source,
            "source callback".into(),
            true,
            Some(shared),
            String::new(),
            options.log.clone(),
        ))
    }

    fn start(
        settings: Settings,
        make_source: SourceFactory,
        display: String,
        refreshes: bool,
        callback_source: Option<Arc<CallbackShared>>,
        service: String,
        log: Option<crate::log::LogSink>,
    ) -> Client {
        let log = Logger::new(log, &display);
        let policy = EjectionPolicy {
            failures_before_ejection: settings.failures_before_ejection,
            base_ms: settings.ejection_base_ms,
            max_ms: settings.ejection_max_ms,
            max_percent: settings.max_ejection_percent,
        };
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            picker: Arc::new(Picker::default()),
            refreshes,
            display,
            service,
            fork_generation: AtomicU64::new(fork_generation()),
            ready: AtomicBool::new(false),
            fetcher: Fetcher::new(make_source, settings.snapshot_file.as_deref(), &log),
            health: Health::new(policy, log.clone()),
            subscribers: Subscribers::default(),
            settings,
            callback_source,
            loads: LoadTable::default(),
            rings: RingCache::default(),
            log,
        });
        if inner.refreshes {
            inner.start_push();
            let weak = Arc::downgrade(&inner);
            refresher::spawn(Box::new(move || refresh(weak, true)));
        } else {
            // A fixed list: fetched once, here, so that the client is ready on return.
            inner.refresh_once(true);
        }
        Client { inner }
    }

    /// The target, without userinfo or query.
    pub fn target(&self) -> &str {
        &self.inner.display
    }

    /// The service the target names: eas and nacos give the service, dns:// its name; ""
    /// for static:// and callback sources.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Begins a call: one logical request and its attempts (see [`Call`]). `key`: affinity
    /// key bytes, `None` for none (a keyed call picks by affinity whatever lb_policy says);
    /// `flags`: [`crate::CALL_NOT_IDEMPOTENT`] or 0.
    pub fn call(&self, key: Option<&[u8]>, flags: u32) -> Result<Call, ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        Ok(Call::new(self.inner.clone(), key, flags))
    }

    /// One record per instance of the current list (empty before the first).
    pub fn instance_stats(&self) -> Result<Vec<InstanceStats>, ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        let Some(snapshot) = self.inner.picker.current() else {
            return Ok(Vec::new());
        };
        Ok(self.stats_of(&snapshot))
    }

    /// Prometheus text (format 0.0.4) of the client's stats and every instance's stats (see
    /// the README for the names).
    pub fn metrics_text(&self) -> Result<String, ErrorKind> {
        // One snapshot for the client's figures and the instances', so that they agree.
        self.inner.alive().map_err(|e| e.kind)?;
        let snapshot = self.inner.picker.current();
        let stats = self.stats_with(snapshot.as_deref());
        let per_instance = snapshot
            .as_ref()
            .map(|s| self.stats_of(s))
            .unwrap_or_default();
        let instances = match &snapshot {
            Some(s) => s
                .instances
                .iter()
                .map(Instance::host_str)
                .zip(per_instance)
                .collect(),
            None => Vec::new(),
        };
        Ok(crate::metrics::text(&crate::metrics::ClientFigures {
            target: &self.inner.display,
            stats,
            pushing: self.inner.fetcher.pushing.load(Ordering::Acquire),
            malformed_load_reports: self.inner.loads.malformed_reports(),
            log_lines_dropped: self.inner.log.dropped(),
            instances,
            now_unix_ms: unix_ms(),
        }))
    }

    /// The stats of each instance of `snapshot`, in its order.
    fn stats_of(&self, snapshot: &Snapshot) -> Vec<InstanceStats> {
        let (now, unix_now) = (monotonic_ms(), unix_ms());
        let clock = StatsClock::now();
        let ejections = self.inner.health.ejection_deadlines(snapshot);
        snapshot
            .instances
            .iter()
            .zip(snapshot.loads.iter())
            .zip(ejections)
            .map(|((inst, load), ejected_until)| {
                let until = ejected_until.max(load.backoff_until());
                let until_unix = if until > now {
                    unix_now + (until - now)
                } else {
                    0
                };
                InstanceStats::of(inst, load, until_unix, clock)
            })
            .collect()
    }

    /// Load reports the calls of this client ignored, in whole or in part, as malformed.
    pub fn malformed_load_reports(&self) -> u64 {
        self.inner.loads.malformed_reports()
    }

    /// Waits until a list is known, at most `timeout`; a zero timeout only checks.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            self.inner.alive()?;
            if self.inner.ready.load(Ordering::Acquire) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                let message = self.inner.fetcher.notes(|notes| {
                    let mut message = format!(
                        "no instance list for {} within {} ms: {}",
                        self.inner.display,
                        timeout.as_millis(),
                        notes
                            .last_error
                            .as_deref()
                            .unwrap_or("no discovery fetch has finished yet")
                    );
                    if let Some(note) = &notes.snapshot_file_note {
                        message.push_str("; ");
                        message.push_str(note);
                    }
                    message
                });
                return Err(Error::new(ErrorKind::Timeout, message));
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// Picks an instance (see `Picker::select`); `exclude` lists ids not to return.
    #[inline]
    pub fn select_into(&self, exclude: &[u64], out: &mut Instance) -> Result<(), ErrorKind> {
        if self.inner.fork_generation.load(Ordering::Relaxed) != fork_generation() {
            self.inner.restart_after_fork();
        }
        self.inner.picker.select(exclude, out)
    }

    /// Picks an instance.
    pub fn select(&self) -> Result<Instance, ErrorKind> {
        let mut out = Instance::ZEROED;
        self.select_into(&[], &mut out)?;
        Ok(out)
    }

    /// Records a failed call to `id`; may eject it (see `Ejector::on_failure`).
    pub fn report_failure(&self, id: u64) -> Result<(), ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        self.inner.health.failure(&self.inner.picker, id)
    }

    /// Records a successful call to `id`: its failure count and ejection doubling start over.
    pub fn report_success(&self, id: u64) -> Result<(), ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        let snapshot = self
            .inner
            .picker
            .current()
            .ok_or(ErrorKind::UnknownInstance)?;
        snapshot.index_of(id).ok_or(ErrorKind::UnknownInstance)?;
        self.inner.health.success(id);
        Ok(())
    }

    /// The current snapshot (every known instance, ejected or not), `None` before the first.
    #[doc(hidden)]
    pub fn snapshot(&self) -> Result<Option<Arc<Snapshot>>, ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        Ok(self.inner.picker.current())
    }

    /// Every known instance, ejected or not; empty before the first list.
    pub fn instances(&self) -> Result<Vec<Instance>, ErrorKind> {
        Ok(self
            .snapshot()?
            .map(|s| s.instances.clone())
            .unwrap_or_default())
    }

    /// What delivers the list now: a push stream, or polling.
    pub fn transport(&self) -> Result<Transport, ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        Ok(if self.inner.fetcher.pushing.load(Ordering::Acquire) {
            Transport::Push
        } else {
            Transport::Poll
        })
    }

    /// The last fetch's error, `None` when it succeeded or none has finished.
    pub fn last_error(&self) -> Result<Option<Error>, ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        Ok(self.inner.fetcher.notes(|notes| {
            notes
                .last_error
                .as_ref()
                .map(|m| Error::new(ErrorKind::DiscoveryFailed, m.clone()))
        }))
    }

    pub fn stats(&self) -> Result<Stats, ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        Ok(self.stats_with(self.inner.picker.current().as_deref()))
    }

    /// The counters, with `snapshot`'s generation and size.
    fn stats_with(&self, snapshot: Option<&Snapshot>) -> Stats {
        let fetcher = &self.inner.fetcher;
        Stats {
            generation: snapshot.map_or(0, |s| s.generation),
            refresh_ok: fetcher.ok.load(Ordering::Relaxed),
            refresh_failed: fetcher.failed.load(Ordering::Relaxed),
            last_ok_unix_ms: fetcher.last_ok_unix_ms.load(Ordering::Relaxed),
            instances: snapshot.map_or(0, |s| s.instances.len() as u32),
            ejected: self.inner.health.ejected() as u32,
        }
    }

    /// Calls `callback` on a background thread with each new list, and once soon when a list
    /// is already known. `on_end` runs exactly once when the subscription ends. On error
    /// (closed client) neither runs and `on_end` is dropped without being called.
    pub fn subscribe(&self, callback: ChangeFn, on_end: Option<EndFn>) -> Result<u64, ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        let id = self.inner.subscribers.add(callback, on_end)?;
        if self.inner.ready.load(Ordering::Acquire) {
            self.inner.subscribers.notify(self.inner.me.clone());
        }
        Ok(id)
    }

    /// Ends a subscription; its `on_end` has run when this returns (or, when called from inside
    /// its own callback, once that callback returns).
    pub fn unsubscribe(&self, id: u64) -> Result<(), ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        self.inner.subscribers.remove(id)
    }

    /// Stops refreshes and callbacks; later calls return `Closed`. Idempotent, and safe to race
    /// with any call: every close returns once every subscription's end is over (from inside a
    /// callback, that callback's own end comes when it returns).
    pub fn close(&self) {
        self.inner.picker.close();
        self.inner.fetcher.stop_push();
        self.inner.subscribers.close();
        if let Some(source) = &self.inner.callback_source {
            source.gate.end();
        }
        // The newest list reaches the file before close returns (a short-lived process keeps
        // it), waiting at most the request timeout when the file system hangs.
        self.inner
            .fetcher
            .flush(self.inner.settings.request_timeout);
        // Last: a line about the flush still goes out; none after this returns.
        self.inner.log.close();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inner {
    pub(crate) fn is_closed(&self) -> bool {
        self.picker.is_closed()
    }

    pub(crate) fn call_settings(&self) -> &CallSettings {
        &self.settings.calls
    }

    pub(crate) fn ejection_max_ms(&self) -> u64 {
        self.settings.ejection_max_ms
    }

    /// The current snapshot, `None` before the first.
    pub(crate) fn current(&self) -> Option<Arc<Snapshot>> {
        self.picker.current()
    }

    /// `f` of the current snapshot as this thread's pick cursor holds it (see
    /// `Picker::with_current`); `None` before the first.
    pub(crate) fn with_current<R>(&self, f: impl FnOnce(&Arc<Snapshot>) -> R) -> Option<R> {
        self.picker.with_current(f)
    }

    /// A plain pick (smooth weighted round-robin) that skips `exclude`.
    pub(crate) fn select_excluding(
        &self,
        exclude: &[u64],
        out: &mut Instance,
    ) -> Result<(), ErrorKind> {
        self.picker.select(exclude, out)
    }

    /// A call attempt failed: the same consecutive-failure and ejection logic as
    /// `report_failure`. An instance no longer listed counts nothing.
    pub(crate) fn failure(&self, id: u64) {
        let _ = self.health.failure(&self.picker, id);
    }

    /// A call attempt succeeded: as `report_success`; no lock while no instance has a failure
    /// history.
    #[inline]
    pub(crate) fn success(&self, id: u64) {
        self.health.success(id);
    }

    /// Keeps `id` out of picks (plain and call picks) for `wait_ms`: not a failure (no
    /// doubling, not counted against max_ejection_percent); the later of a back-off and an
    /// ejection holds.
    pub(crate) fn back_off(&self, id: u64, wait_ms: u64) {
        self.health.back_off(&self.picker, id, wait_ms);
    }

    fn alive(&self) -> Result<(), Error> {
        if self.picker.is_closed() {
            return Err(ErrorKind::Closed.into());
        }
        if self.fork_generation.load(Ordering::Relaxed) != fork_generation() {
            self.restart_after_fork();
        }
        Ok(())
    }

    /// In a child after fork: schedule this client's refreshes in the child's own pool.
    #[cold]
    fn restart_after_fork(&self) {
        let generation = fork_generation();
        let previous = self.fork_generation.swap(generation, Ordering::AcqRel);
        if previous == generation || !self.refreshes {
            return;
        }
        // A dispatcher of the parent's does not run here, nor its push task.
        self.subscribers.forget_dispatcher();
        self.fetcher.forget_push();
        self.start_push();
        let weak = self.me.clone();
        refresher::spawn(Box::new(move || refresh(weak, false)));
    }
}
