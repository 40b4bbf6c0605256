//! A client: one target's discovery, its published snapshots, ejection state and subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::affinity::RingCache;
use crate::call::Call;
use crate::callback::CallbackGate;
pub use crate::callback::EndFn;
use crate::config::{CallSettings, Options, Settings, SourceKind};
use crate::eject::{monotonic_ms, EjectionPolicy, Ejector};
use crate::error::{Error, ErrorKind};
use crate::instance::Instance;
use crate::load::{InstanceStats, LoadTable};
use crate::pick::Picker;
use crate::redact;
use crate::refresher::{self, fork_generation, gated};
use crate::snapshot::Snapshot;
use crate::snapshot_file;
use crate::source::build::{self, SourceFactory};
use crate::source::callback::{CallbackShared, CallbackSource, FetchFn};
use crate::source::{normalize, Source};
use crate::target::{Target, TargetSpec};

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
    /// Builds the source again where the old one cannot be used (in a child after fork).
    make_source: SourceFactory,
    /// The target as it may be printed.
    display: String,
    refreshes: bool,
    /// The fork generation whose pool runs this client's refreshes.
    fork_generation: AtomicU64,
    ready: AtomicBool,
    refresh_ok: AtomicU64,
    refresh_failed: AtomicU64,
    last_ok_unix_ms: AtomicU64,
    dispatching: AtomicBool,
    dirty: AtomicBool,
    state: Mutex<State>,
    /// The caller's fetch function, for a callback source: ended on close.
    callback_source: Option<Arc<CallbackShared>>,
    /// Writes each new list to `snapshot_file`, when set.
    snapshot_saver: Option<Arc<snapshot_file::Saver>>,
    /// The service the target names ("" for static and callback sources).
    service: String,
    /// Per-instance load state of calls, by instance id.
    pub(crate) loads: LoadTable,
    /// The affinity ring of the current list.
    pub(crate) rings: RingCache,
}

struct State {
    source: Option<Box<dyn Source>>,
    source_fork_generation: u64,
    ejector: Ejector,
    last_error: Option<String>,
    snapshot_file_note: Option<String>,
    generation: u64,
    subscriptions: Vec<Arc<Subscription>>,
    /// Subscriptions that an unsubscribe or a close is ending, until their end is over: a
    /// close that races with either still finds them, and waits for their `on_end`.
    ending: Vec<Arc<Subscription>>,
    next_subscription: u64,
}

struct Subscription {
    id: u64,
    callback: ChangeFn,
    gate: CallbackGate,
    delivered: AtomicU64,
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
        Ok(Client::start(
            settings,
            make_source,
            redact::accepted_target(target),
            parsed.kind != SourceKind::Static,
            None,
            service,
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
        ))
    }

    fn start(
        settings: Settings,
        make_source: SourceFactory,
        display: String,
        refreshes: bool,
        callback_source: Option<Arc<CallbackShared>>,
        service: String,
    ) -> Client {
        let policy = EjectionPolicy {
            failures_before_ejection: settings.failures_before_ejection,
            base_ms: settings.ejection_base_ms,
            max_ms: settings.ejection_max_ms,
            max_percent: settings.max_ejection_percent,
        };
        let snapshot_saver = settings
            .snapshot_file
            .as_deref()
            .map(snapshot_file::Saver::new);
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            picker: Arc::new(Picker::default()),
            refreshes,
            display,
            settings,
            fork_generation: AtomicU64::new(fork_generation()),
            ready: AtomicBool::new(false),
            refresh_ok: AtomicU64::new(0),
            refresh_failed: AtomicU64::new(0),
            last_ok_unix_ms: AtomicU64::new(0),
            dispatching: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            state: Mutex::new(State {
                source: Some(make_source()),
                source_fork_generation: fork_generation(),
                ejector: Ejector::new(policy),
                last_error: None,
                snapshot_file_note: None,
                generation: 0,
                subscriptions: Vec::new(),
                ending: Vec::new(),
                next_subscription: 1,
            }),
            make_source,
            callback_source,
            snapshot_saver,
            service,
            loads: LoadTable::default(),
            rings: RingCache::default(),
        });
        if inner.refreshes {
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
        let Some(snapshot) = self.inner.picker.cell.load() else {
            return Ok(Vec::new());
        };
        let (now, unix_now) = (monotonic_ms(), unix_ms());
        let (_gate, state) = gated(&self.inner.state);
        Ok(snapshot
            .instances
            .iter()
            .zip(snapshot.loads.iter())
            .map(|(inst, load)| {
                let until = state.ejector.until(inst.id).max(load.backoff_until());
                let until_unix = if until > now {
                    unix_now + (until - now)
                } else {
                    0
                };
                InstanceStats::of(inst, load, until_unix)
            })
            .collect())
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
                let (_gate, state) = gated(&self.inner.state);
                let mut message = format!(
                    "no instance list for {} within {} ms: {}",
                    self.inner.display,
                    timeout.as_millis(),
                    state
                        .last_error
                        .as_deref()
                        .unwrap_or("no discovery fetch has finished yet")
                );
                if let Some(note) = &state.snapshot_file_note {
                    message.push_str("; ");
                    message.push_str(note);
                }
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
        self.inner.report_failure(id)
    }

    /// Records a successful call to `id`: its failure count and ejection doubling start over.
    pub fn report_success(&self, id: u64) -> Result<(), ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        let (_gate, mut state) = gated(&self.inner.state);
        let snapshot = self
            .inner
            .picker
            .cell
            .load()
            .ok_or(ErrorKind::UnknownInstance)?;
        snapshot.index_of(id).ok_or(ErrorKind::UnknownInstance)?;
        state.ejector.on_success(id);
        Ok(())
    }

    /// The current snapshot (every known instance, ejected or not), `None` before the first.
    pub fn snapshot(&self) -> Result<Option<Arc<Snapshot>>, ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        Ok(self.inner.picker.cell.load())
    }

    /// Every known instance, ejected or not; empty before the first list.
    pub fn instances(&self) -> Result<Vec<Instance>, ErrorKind> {
        Ok(self
            .snapshot()?
            .map(|s| s.instances.clone())
            .unwrap_or_default())
    }

    /// The last fetch's error, `None` when it succeeded or none has finished.
    pub fn last_error(&self) -> Result<Option<Error>, ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        let (_gate, state) = gated(&self.inner.state);
        Ok(state
            .last_error
            .as_ref()
            .map(|m| Error::new(ErrorKind::DiscoveryFailed, m.clone())))
    }

    pub fn stats(&self) -> Result<Stats, ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        let snapshot = self.inner.picker.cell.load();
        let ejected = {
            let (_gate, mut state) = gated(&self.inner.state);
            state.ejector.ejected(monotonic_ms())
        };
        Ok(Stats {
            generation: snapshot.as_ref().map_or(0, |s| s.generation),
            refresh_ok: self.inner.refresh_ok.load(Ordering::Relaxed),
            refresh_failed: self.inner.refresh_failed.load(Ordering::Relaxed),
            last_ok_unix_ms: self.inner.last_ok_unix_ms.load(Ordering::Relaxed),
            instances: snapshot.map_or(0, |s| s.instances.len() as u32),
            ejected: ejected as u32,
        })
    }

    /// Calls `callback` on a background thread with each new list, and once soon when a list
    /// is already known. `on_end` runs exactly once when the subscription ends. On error
    /// (closed client) neither runs and `on_end` is dropped without being called.
    pub fn subscribe(&self, callback: ChangeFn, on_end: Option<EndFn>) -> Result<u64, ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        let id = {
            let (_gate, mut state) = gated(&self.inner.state);
            // Checked again under the lock: close takes the list under it.
            if self.inner.picker.closed.load(Ordering::Acquire) {
                return Err(ErrorKind::Closed);
            }
            let id = state.next_subscription;
            state.next_subscription += 1;
            state.subscriptions.push(Arc::new(Subscription {
                id,
                callback,
                gate: CallbackGate::new(on_end),
                delivered: AtomicU64::new(0),
            }));
            id
        };
        if self.inner.ready.load(Ordering::Acquire) {
            self.inner.notify_subscribers();
        }
        Ok(id)
    }

    /// Ends a subscription; its `on_end` has run when this returns (or, when called from inside
    /// its own callback, once that callback returns).
    pub fn unsubscribe(&self, id: u64) -> Result<(), ErrorKind> {
        self.inner.alive().map_err(|e| e.kind)?;
        let found = {
            let (_gate, mut state) = gated(&self.inner.state);
            let at = state.subscriptions.iter().position(|s| s.id == id);
            let found = at.map(|i| state.subscriptions.remove(i));
            if let Some(subscription) = &found {
                state.ending.push(subscription.clone());
            }
            found
        };
        let subscription = found.ok_or(ErrorKind::InvalidArgument)?;
        subscription.gate.end();
        self.inner.forget_ended();
        Ok(())
    }

    /// Stops refreshes and callbacks; later calls return `Closed`. Idempotent, and safe to race
    /// with any call: every close returns once every subscription's end is over (from inside a
    /// callback, that callback's own end comes when it returns).
    pub fn close(&self) {
        self.inner.picker.closed.store(true, Ordering::Release);
        let ending = {
            let (_gate, mut state) = gated(&self.inner.state);
            let closed = std::mem::take(&mut state.subscriptions);
            state.ending.extend(closed);
            state.ending.clone()
        };
        for subscription in &ending {
            subscription.gate.end();
        }
        self.inner.forget_ended();
        if let Some(source) = &self.inner.callback_source {
            source.gate.end();
        }
        // The newest list reaches the file before close returns (a short-lived process keeps
        // it), waiting at most the request timeout when the file system hangs.
        if let Some(saver) = &self.inner.snapshot_saver {
            saver.flush(self.inner.settings.request_timeout);
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

/// One refresh of the client behind `weak`, then the next one scheduled.
fn refresh(weak: Weak<Inner>, first: bool) {
    let Some(inner) = weak.upgrade() else { return };
    if inner.picker.closed.load(Ordering::Acquire)
        || inner.fork_generation.load(Ordering::Acquire) != fork_generation()
    {
        return; // closed, or a job of the parent's line after fork (it restarts separately)
    }
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.refresh_once(first)));
    if outcome.is_err() {
        inner.refresh_failed.fetch_add(1, Ordering::Relaxed);
    }
    inner.schedule_next(weak);
}

impl Inner {
    /// Records a failure of `id` in its ejection state; may eject it.
    fn report_failure(&self, id: u64) -> Result<(), ErrorKind> {
        let (_gate, mut state) = gated(&self.state);
        // Loaded under the lock, so that a publish cannot slip in between.
        let snapshot = self.picker.cell.load().ok_or(ErrorKind::UnknownInstance)?;
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
        if let Some(until) = state.ejector.on_failure(id, now, snapshot.pickable()) {
            // Raising the horizon is enough here; a refresh lowers it exactly.
            self.hold_out(&snapshot, index, until);
        }
        Ok(())
    }

    /// Keeps the instance at `index` of `snapshot` out of picks until `until_ms`, unless a
    /// later deadline (an ejection or a back-off) already holds: deadlines only rise within a
    /// snapshot. Called under the state lock.
    fn hold_out(&self, snapshot: &Snapshot, index: usize, until_ms: u64) {
        if until_ms > snapshot.ejected_until[index].load(Ordering::Acquire) {
            self.picker.eject_until(snapshot, index, until_ms);
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.picker.closed.load(Ordering::Acquire)
    }

    pub(crate) fn call_settings(&self) -> &CallSettings {
        &self.settings.calls
    }

    pub(crate) fn ejection_max_ms(&self) -> u64 {
        self.settings.ejection_max_ms
    }

    /// The current snapshot, `None` before the first.
    pub(crate) fn current(&self) -> Option<Arc<Snapshot>> {
        self.picker.cell.load()
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
        let _ = self.report_failure(id);
    }

    /// A call attempt succeeded: as `report_success`.
    pub(crate) fn success(&self, id: u64) {
        let (_gate, mut state) = gated(&self.state);
        state.ejector.on_success(id);
    }

    /// Keeps `id` out of picks (plain and call picks) for `wait_ms`: not a failure (no
    /// doubling, not counted against max_ejection_percent); the later of a back-off and an
    /// ejection holds. Under the state lock, so that a publish carries it to the next list.
    pub(crate) fn back_off(&self, id: u64, wait_ms: u64) {
        if wait_ms == 0 {
            return;
        }
        let (_gate, _state) = gated(&self.state);
        let Some(snapshot) = self.picker.cell.load() else {
            return;
        };
        let Some(index) = snapshot.index_of(id) else {
            return;
        };
        let Some(load) = snapshot.loads.get(index) else {
            return;
        };
        let until = load.back_off_until(monotonic_ms().saturating_add(wait_ms));
        self.hold_out(&snapshot, index, until);
    }

    /// Drops the subscriptions whose end is over from the list of those ending.
    fn forget_ended(&self) {
        let (_gate, mut state) = gated(&self.state);
        state.ending.retain(|s| !s.gate.is_ended());
    }

    fn alive(&self) -> Result<(), Error> {
        if self.picker.closed.load(Ordering::Acquire) {
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
        self.dispatching.store(false, Ordering::Release);
        let weak = self.me.clone();
        refresher::spawn(Box::new(move || refresh(weak, false)));
    }

    fn schedule_next(&self, weak: Weak<Inner>) {
        if self.picker.closed.load(Ordering::Acquire) {
            return;
        }
        let interval = self.settings.refresh_interval.as_secs_f64();
        // +-20% jitter, so that clients started together do not poll together.
        let jitter = 0.8 + 0.4 * (crate::pick::random_unit());
        let at = Instant::now() + Duration::from_secs_f64(interval * jitter);
        refresher::schedule(at, Box::new(move || refresh(weak, false)));
    }

    /// Fetches once and publishes what changed. `first`: falls back to the snapshot file.
    fn refresh_once(&self, first: bool) {
        // Ejections that ended since the last refresh stop making picks read the clock.
        self.refresh_horizon();
        let generation = fork_generation();
        let source = {
            let (_gate, mut state) = gated(&self.state);
            if state.source_fork_generation != generation {
                // Inherited across fork: its connections are shared with the parent, so it is
                // neither used nor dropped (dropping could write to those sockets).
                if let Some(old) = state.source.take() {
                    std::mem::forget(old);
                }
                state.source_fork_generation = generation;
            }
            state.source.take()
        };
        let mut source = source.unwrap_or_else(|| (self.make_source)());
        let result = source.fetch();
        let describe = source.describe();
        {
            let (_gate, mut state) = gated(&self.state);
            state.source = Some(source);
        }
        let failure = match result {
            Ok(list) => {
                let list = normalize(list);
                if list.iter().any(|i| i.weight > 0) {
                    self.refresh_ok.fetch_add(1, Ordering::Relaxed);
                    self.last_ok_unix_ms.store(unix_ms(), Ordering::Relaxed);
                    {
                        let (_gate, mut state) = gated(&self.state);
                        state.last_error = None;
                    }
                    if let Some(generation) = self.publish(list.clone()) {
                        if let Some(saver) = &self.snapshot_saver {
                            // Queued, never waited for: a failed or dropped write never
                            // disturbs discovery.
                            saver.queue(generation, list);
                        }
                    }
                    return;
                }
                format!(
                    "{describe}: no pickable instance in the answer ({} listed, none of positive weight); keeping the last list",
                    list.len()
                )
            }
            Err(message) => message,
        };
        self.refresh_failed.fetch_add(1, Ordering::Relaxed);
        {
            let (_gate, mut state) = gated(&self.state);
            state.last_error = Some(failure);
        }
        if first && !self.ready.load(Ordering::Acquire) {
            if let Some(path) = &self.settings.snapshot_file {
                // Waited for at most the request timeout: a hung file system delays this
                // refresh by that much, and never the next ones.
                match snapshot_file::load_within(path, self.settings.request_timeout) {
                    Ok(list) => {
                        self.publish(normalize(list));
                    }
                    Err(note) => {
                        let (_gate, mut state) = gated(&self.state);
                        state.snapshot_file_note = Some(note);
                    }
                }
            }
        }
    }

    /// Publishes `list` unless it equals the current one; its generation when it published.
    fn publish(&self, list: Vec<Instance>) -> Option<u64> {
        if self.picker.closed.load(Ordering::Acquire) {
            return None;
        }
        if let Some(current) = self.picker.cell.load() {
            if current.same_list(&list) {
                return None;
            }
        }
        let generation;
        // The cycle is computed outside the lock; only the swap is under it.
        let mut snapshot = Snapshot::new(0, list);
        {
            let (_gate, mut state) = gated(&self.state);
            state.generation += 1;
            snapshot.generation = state.generation;
            generation = state.generation;
            state.ejector.retain(|id| snapshot.index_of(id).is_some());
            snapshot.loads = self.loads.attach(&snapshot.instances);
            let now = monotonic_ms();
            // Back-offs hold instances out of picks as ejections do; the later of the two
            // holds. The ejector never sees back-offs (they are no failure and do not count
            // against max_ejection_percent), so they are merged in here.
            let mut deadlines: HashMap<u64, u64> = state.ejector.deadlines().collect();
            for (inst, load) in snapshot.instances.iter().zip(snapshot.loads.iter()) {
                let backoff = load.backoff_until();
                if backoff > now {
                    let until = deadlines.entry(inst.id).or_default();
                    *until = (*until).max(backoff);
                }
            }
            snapshot.restore_deadlines(deadlines, now);
            // Never lowered here: a picker may still be on the previous snapshot for an
            // instant, and its ejections must still be honoured. The next refresh lowers it.
            self.picker.raise_horizon(
                state
                    .ejector
                    .horizon(now)
                    .max(self.loads.backoff_horizon(now)),
            );
            self.picker.cell.store(Arc::new(snapshot));
        }
        self.ready.store(true, Ordering::Release);
        self.notify_subscribers();
        Some(generation)
    }

    /// Sets the ejection horizon to the latest deadline in force, lowering it when ejections
    /// have ended (a publish only ever raises it).
    fn refresh_horizon(&self) {
        let (_gate, mut state) = gated(&self.state);
        let now = monotonic_ms();
        let horizon = state
            .ejector
            .horizon(now)
            .max(self.loads.backoff_horizon(now));
        self.picker.set_horizon(horizon);
    }

    fn notify_subscribers(&self) {
        self.dirty.store(true, Ordering::Release);
        if self.dispatching.swap(true, Ordering::AcqRel) {
            return; // the running dispatcher sees `dirty`
        }
        let me = self.me.clone();
        refresher::spawn(Box::new(move || deliver(me)));
    }
}

/// Delivers the current list to every subscriber that has not seen it, one dispatcher per
/// client at a time, so that callbacks of one client never overlap and arrive in order.
fn deliver(weak: Weak<Inner>) {
    let Some(inner) = weak.upgrade() else { return };
    loop {
        inner.dirty.store(false, Ordering::Release);
        let (subscriptions, snapshot) = {
            let (_gate, state) = gated(&inner.state);
            (state.subscriptions.clone(), inner.picker.cell.load())
        };
        if let Some(snapshot) = snapshot {
            for subscription in subscriptions {
                if subscription.delivered.load(Ordering::Acquire) >= snapshot.generation
                    || inner.picker.closed.load(Ordering::Acquire)
                {
                    continue;
                }
                let ran = subscription
                    .gate
                    .run(|| (subscription.callback)(&snapshot.instances));
                if ran.is_some() {
                    subscription
                        .delivered
                        .store(snapshot.generation, Ordering::Release);
                }
            }
        }
        inner.dispatching.store(false, Ordering::Release);
        if !inner.dirty.load(Ordering::Acquire) || inner.dispatching.swap(true, Ordering::AcqRel) {
            return;
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
