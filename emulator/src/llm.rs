//! LLM-like backends: a few concurrent slots, a FIFO queue behind them, a service time that
//! grows with the tokens asked for, optional SSE streaming, and vLLM's `endpoint-load-metrics`
//! load reports. Benches and tests use them to see how a client balances uneven, slow, queued
//! work; their counters are the oracle.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::http::{chunk, Conn, Request, Response};
use crate::server::{lock, Flow};

/// The request header that sets a request's token count (a non-negative integer).
pub const TOKENS_HEADER: &str = "x-tokens";
/// The request header that asks for a streamed answer (`true` or `1`), like `"stream": true`.
pub const STREAM_HEADER: &str = "x-stream";
/// The request header that asks for a load report (`text` or `json`, any case).
pub const LOAD_FORMAT_HEADER: &str = "endpoint-load-metrics-format";
/// The response header that carries it.
pub const LOAD_HEADER: &str = "endpoint-load-metrics";

/// The most slots a backend may have.
const MAX_SLOTS: u32 = 4096;
/// The largest `max_tokens` setting.
const MAX_TOKENS_LIMIT: u32 = 1_000_000;
/// The longest `base` or `per_token` setting.
const MAX_STEP: Duration = Duration::from_secs(3600);
/// Served requests kept for [`Llm::take_served`]; older ones are dropped first.
const MAX_SAMPLES: usize = 100_000;
/// How often a waiting or sleeping request checks that its client is still there.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// How an LLM-like backend serves. Every field can be changed while it runs
/// ([`Llm::set_config`]); a request takes the settings in force when it gets its slot.
///
/// A request's service time is `(base + per_token x tokens) / speed`, spent holding a slot.
/// Its tokens come from the `x-tokens` header, else from a JSON body's `max_tokens`, else from a
/// log-normal draw with mean `mean_tokens` and shape `tokens_sigma` (seeded by `seed`, so the
/// sequence of draws repeats); all are capped at `max_tokens`.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmConfig {
    /// Requests served at once (1-4096); the others wait in arrival order.
    pub slots: u32,
    /// Time to the first token (the prefill), also the whole time of a zero-token request.
    pub base: Duration,
    /// Time per generated token.
    pub per_token: Duration,
    /// Mean of the token draw for requests that name no count (at least 1).
    pub mean_tokens: u32,
    /// Sigma of the log-normal draw (0-4): 0 gives `mean_tokens` always, 1 a tail where one
    /// request in a hundred asks about ten times the median.
    pub tokens_sigma: f64,
    /// Cap of any request's tokens (1-1,000,000).
    pub max_tokens: u32,
    /// Speed factor (above 0, at most 1000): 0.33 serves three times slower.
    pub speed: f64,
    /// Seed of the token draw; setting a different seed restarts the sequence.
    pub seed: u64,
    /// Whether load reports carry `num_requests_running` besides vLLM's two figures
    /// (`kv_cache_usage_perc` and `num_requests_waiting`); off, they are exactly vLLM's.
    pub report_running: bool,
}

impl Default for LlmConfig {
    /// 4 slots, 20 ms base, 1 ms a token, 100 tokens on average (sigma 1), at most 4096 tokens,
    /// speed 1, seed 1, running reported.
    fn default() -> LlmConfig {
        LlmConfig {
            slots: 4,
            base: Duration::from_millis(20),
            per_token: Duration::from_millis(1),
            mean_tokens: 100,
            tokens_sigma: 1.0,
            max_tokens: 4096,
            speed: 1.0,
            seed: 1,
            report_running: true,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl LlmConfig {
    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_SLOTS).contains(&self.slots) {
            return Err(format!("field \"slots\" must be 1-{MAX_SLOTS}"));
        }
        if self.base > MAX_STEP {
            return Err("field \"base_ms\" must be at most an hour".into());
        }
        if self.per_token > MAX_STEP {
            return Err("field \"per_token_ms\" must be at most an hour".into());
        }
        if !(1..=MAX_TOKENS_LIMIT).contains(&self.max_tokens) {
            return Err(format!("field \"max_tokens\" must be 1-{MAX_TOKENS_LIMIT}"));
        }
        if !(1..=MAX_TOKENS_LIMIT).contains(&self.mean_tokens) {
            return Err(format!(
                "field \"mean_tokens\" must be 1-{MAX_TOKENS_LIMIT}"
            ));
        }
        if !(0.0..=4.0).contains(&self.tokens_sigma) {
            return Err("field \"tokens_sigma\" must be 0-4".into());
        }
        if !(self.speed > 0.0 && self.speed <= 1000.0) {
            return Err("field \"speed\" must be above 0 and at most 1000".into());
        }
        Ok(())
    }

    /// The control-API form: `{"slots":4,"base_ms":20.0,"per_token_ms":1.0,"mean_tokens":100,
    /// "tokens_sigma":1.0,"max_tokens":4096,"speed":1.0,"seed":1,"report_running":true}`.
    pub fn to_json(&self) -> Value {
        json!({
            "slots": self.slots,
            "base_ms": ms(self.base),
            "per_token_ms": ms(self.per_token),
            "mean_tokens": self.mean_tokens,
            "tokens_sigma": self.tokens_sigma,
            "max_tokens": self.max_tokens,
            "speed": self.speed,
            "seed": self.seed,
            "report_running": self.report_running,
        })
    }

    /// This configuration with the fields of a JSON object (the form of
    /// [`to_json`](LlmConfig::to_json), any subset) changed, validated. Unknown fields are
    /// refused, so that a misspelt one is not silently ignored.
    pub fn updated(&self, v: &Value) -> Result<LlmConfig, String> {
        let obj = v
            .as_object()
            .ok_or("the LLM settings must be a JSON object")?;
        let mut c = self.clone();
        for (k, v) in obj {
            let uint = |max: u64| {
                v.as_u64()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| format!("field {k:?} must be an integer 0-{max}"))
            };
            let float = || {
                v.as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| format!("field {k:?} must be a number"))
            };
            let millis = || {
                let f = float()?;
                if !(0.0..=ms(MAX_STEP)).contains(&f) {
                    return Err(format!("field {k:?} must be 0-{} ms", ms(MAX_STEP)));
                }
                Ok(Duration::from_secs_f64(f / 1000.0))
            };
            match k.as_str() {
                "slots" => c.slots = uint(u64::from(MAX_SLOTS))? as u32,
                "base_ms" => c.base = millis()?,
                "per_token_ms" => c.per_token = millis()?,
                "mean_tokens" => c.mean_tokens = uint(u64::from(MAX_TOKENS_LIMIT))? as u32,
                "tokens_sigma" => c.tokens_sigma = float()?,
                "max_tokens" => c.max_tokens = uint(u64::from(MAX_TOKENS_LIMIT))? as u32,
                "speed" => c.speed = float()?,
                "seed" => c.seed = uint(u64::MAX)?,
                "report_running" => {
                    c.report_running = v
                        .as_bool()
                        .ok_or_else(|| format!("field {k:?} must be a boolean"))?
                }
                other => return Err(format!("unknown LLM setting {other:?}")),
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// The service time of a request of `tokens` tokens under these settings.
    pub fn service_time(&self, tokens: u32) -> Duration {
        (self.base + self.per_token * tokens).div_f64(self.speed)
    }
}

/// A snapshot of an LLM backend's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LlmCounters {
    /// Requests holding a slot now.
    pub running: u32,
    /// Requests waiting for one.
    pub waiting: u32,
    /// Requests served to the end of their answer.
    pub served: u64,
    /// Requests whose client went away, or whose backend stopped, before the end.
    pub abandoned: u64,
}

/// One request served to the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedRequest {
    /// Tokens it generated.
    pub tokens: u32,
    /// Whether it was streamed.
    pub streamed: bool,
    /// Time from its arrival (its head read) to its slot.
    pub queued: Duration,
    /// Time holding the slot, to the end of its answer.
    pub service: Duration,
}

/// The queue and the settings, under one lock so that a request sees them consistently.
struct State {
    config: LlmConfig,
    rng: SplitMix64,
    running: u32,
    /// Waiting requests, first come first: each one's ticket and the condition variable it
    /// waits on (with `state`'s lock). Only the head can take a slot, so only the head is
    /// woken: a slot freed behind a long queue wakes one thread, not the whole queue.
    queue: VecDeque<(u64, Arc<Condvar>)>,
    next_ticket: u64,
    samples: VecDeque<ServedRequest>,
}

struct Inner {
    state: Mutex<State>,
    served: AtomicU64,
    abandoned: AtomicU64,
}

/// The LLM side of a backend started with [`Backend::start_llm`](crate::Backend::start_llm) or
/// [`Emulator::add_llm_backends`](crate::Emulator::add_llm_backends): its settings and counters.
/// Clones share the same backend; every method is cheap (one short lock).
#[derive(Clone)]
pub struct Llm {
    inner: Arc<Inner>,
}

/// A held slot; dropping it frees the slot.
struct Slot<'a> {
    llm: &'a Llm,
    config: LlmConfig,
    since: Instant,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut st = self.llm.state();
        st.running -= 1;
        st.wake_head();
    }
}

/// What a request asks for.
struct Ask {
    tokens: u32,
    stream: bool,
    report: Option<ReportFormat>,
}

#[derive(Clone, Copy)]
enum ReportFormat {
    Text,
    Json,
}

impl Llm {
    /// # Panics
    /// When `config` does not [`validate`](LlmConfig::validate).
    pub(crate) fn new(config: LlmConfig) -> Llm {
        if let Err(e) = config.validate() {
            panic!("invalid LlmConfig: {e}");
        }
        Llm {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    rng: SplitMix64(config.seed),
                    config,
                    running: 0,
                    queue: VecDeque::new(),
                    next_ticket: 0,
                    samples: VecDeque::new(),
                }),
                served: AtomicU64::new(0),
                abandoned: AtomicU64::new(0),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// The settings in force.
    pub fn config(&self) -> LlmConfig {
        self.state().config.clone()
    }

    /// Replaces the settings, for requests that get a slot from now on (more slots admit waiting
    /// requests at once). A different `seed` restarts the token draw.
    pub fn set_config(&self, config: LlmConfig) -> Result<(), String> {
        config.validate()?;
        let mut st = self.state();
        if config.seed != st.config.seed {
            st.rng = SplitMix64(config.seed);
        }
        st.config = config;
        st.wake_head();
        Ok(())
    }

    /// Changes the speed factor alone (0.33: three times slower).
    ///
    /// # Panics
    /// When `speed` is not above 0 and at most 1000.
    pub fn set_speed(&self, speed: f64) {
        let mut config = self.config();
        config.speed = speed;
        if let Err(e) = self.set_config(config) {
            panic!("{e}");
        }
    }

    /// Changes the number of slots alone.
    ///
    /// # Panics
    /// When `slots` is not 1-4096.
    pub fn set_slots(&self, slots: u32) {
        let mut config = self.config();
        config.slots = slots;
        if let Err(e) = self.set_config(config) {
            panic!("{e}");
        }
    }

    /// Running, waiting, served and abandoned requests.
    pub fn counters(&self) -> LlmCounters {
        let st = self.state();
        LlmCounters {
            running: st.running,
            waiting: st.queue.len() as u32,
            served: self.inner.served.load(Ordering::SeqCst),
            abandoned: self.inner.abandoned.load(Ordering::SeqCst),
        }
    }

    /// Requests that have reached the queue since the backend started (each waits for, or
    /// holds, a slot from then on; served and abandoned ones included), read under the same
    /// lock as `running` and `waiting`: `(running, waiting, arrived)`. A central dispatcher
    /// subtracts `arrived` from what it sent to count its requests still on the way.
    pub fn occupancy(&self) -> (u32, u32, u64) {
        let st = self.state();
        (st.running, st.queue.len() as u32, st.next_ticket)
    }

    /// The requests served since the last call, oldest first (at most the last 100,000).
    pub fn take_served(&self) -> Vec<ServedRequest> {
        self.state().samples.drain(..).collect()
    }

    /// The control-API form: the settings plus `"running"`, `"waiting"`, `"served"`,
    /// `"abandoned"`.
    pub fn to_json(&self) -> Value {
        let mut v = self.config().to_json();
        let c = self.counters();
        v["running"] = json!(c.running);
        v["waiting"] = json!(c.waiting);
        v["served"] = json!(c.served);
        v["abandoned"] = json!(c.abandoned);
        v
    }

    /// Reads what the request asks for; a malformed token count is a 400.
    fn ask(&self, req: &Request) -> Result<Ask, Response> {
        let bad = |msg: String| Response::json(400, &json!({ "error": msg }));
        let body: Option<Map<String, Value>> = serde_json::from_slice(&req.body).ok();
        let body_field = |k: &str| body.as_ref().and_then(|b| b.get(k));
        let asked = match req.head.header(TOKENS_HEADER) {
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| bad(format!("header {TOKENS_HEADER} must be an integer")))?,
            ),
            None => match body_field("max_tokens") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .ok_or_else(|| bad("field \"max_tokens\" must be an integer".into()))?,
                ),
            },
        };
        let stream = req
            .head
            .header(STREAM_HEADER)
            .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
            .unwrap_or(false)
            || body_field("stream")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        let report = match req.head.header(LOAD_FORMAT_HEADER) {
            Some(f) if f.eq_ignore_ascii_case("text") => Some(ReportFormat::Text),
            Some(f) if f.eq_ignore_ascii_case("json") => Some(ReportFormat::Json),
            _ => None,
        };
        let mut st = self.state();
        let tokens = match asked {
            Some(n) => n.min(u64::from(st.config.max_tokens)) as u32,
            None => {
                let (mean, sigma, max) = (
                    st.config.mean_tokens,
                    st.config.tokens_sigma,
                    st.config.max_tokens,
                );
                st.rng.log_normal(mean, sigma, max)
            }
        };
        Ok(Ask {
            tokens,
            stream,
            report,
        })
    }

    /// Waits in line for a slot; `None` when the client leaves or the server stops first.
    fn acquire(&self, conn: &Conn) -> Option<Slot<'_>> {
        let mut st = self.state();
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        let woken = Arc::new(Condvar::new());
        st.queue.push_back((ticket, woken.clone()));
        let mut probed = Instant::now();
        loop {
            if st.queue.front().map(|w| w.0) == Some(ticket) && st.running < st.config.slots {
                st.queue.pop_front();
                st.running += 1;
                // The next in line may fit too.
                st.wake_head();
                return Some(Slot {
                    llm: self,
                    config: st.config.clone(),
                    since: Instant::now(),
                });
            }
            let mut gone = conn.stopped();
            if !gone && probed.elapsed() >= PROBE_EVERY {
                drop(st);
                gone = conn.client_closed();
                probed = Instant::now();
                st = self.state();
            }
            if gone {
                st.queue.retain(|w| w.0 != ticket);
                st.wake_head();
                return None;
            }
            st = woken
                .wait_timeout(st, PROBE_EVERY)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The load report value now, in vLLM's form: KV-cache use as running / slots.
    fn report(&self, format: ReportFormat) -> String {
        let st = self.state();
        let kv = (f64::from(st.running) / f64::from(st.config.slots)).min(1.0);
        // Python writes floats with a fraction (`3.0`); Rust's `{:?}` does the same.
        let waiting = st.queue.len() as f64;
        let running = f64::from(st.running);
        match format {
            ReportFormat::Text => {
                let mut s = format!(
                    "TEXT named_metrics.kv_cache_usage_perc={kv:?}, \
                     named_metrics.num_requests_waiting={waiting:?}"
                );
                if st.config.report_running {
                    let _ = write!(s, ", named_metrics.num_requests_running={running:?}");
                }
                s
            }
            ReportFormat::Json => {
                let mut named = json!({
                    "kv_cache_usage_perc": kv,
                    "num_requests_waiting": waiting,
                });
                if st.config.report_running {
                    named["num_requests_running"] = json!(running);
                }
                format!("JSON {}", json!({ "named_metrics": named }))
            }
        }
    }

    /// Sleeps until `deadline`; false when the client leaves or the server stops first.
    fn sleep_until(&self, conn: &Conn, deadline: Instant) -> bool {
        let mut probed = Instant::now();
        loop {
            if conn.stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            if now - probed >= PROBE_EVERY {
                if conn.client_closed() {
                    return false;
                }
                probed = now;
            }
            thread::sleep((deadline - now).min(PROBE_EVERY));
        }
    }

    fn record(&self, sample: ServedRequest) {
        self.inner.served.fetch_add(1, Ordering::SeqCst);
        let mut st = self.state();
        if st.samples.len() >= MAX_SAMPLES {
            st.samples.pop_front();
        }
        st.samples.push_back(sample);
    }

    fn abandon(&self) -> Flow {
        self.inner.abandoned.fetch_add(1, Ordering::SeqCst);
        Flow::Close
    }

    /// Serves one request whose head arrived at `arrived`.
    pub(crate) fn serve(
        &self,
        conn: &mut Conn,
        req: Request,
        arrived: Instant,
        backend: &str,
    ) -> Flow {
        let keep = req.head.keep_alive();
        let head_only = req.head.method == "HEAD";
        let ask = match self.ask(&req) {
            Ok(a) => a,
            Err(resp) => {
                return match conn.send(&resp, keep, head_only) {
                    Ok(()) => Flow::keep_if(keep),
                    Err(_) => Flow::Close,
                }
            }
        };
        let Some(slot) = self.acquire(conn) else {
            return self.abandon();
        };
        let queued = slot.since - arrived;
        let cfg = &slot.config;
        let sent = if ask.stream && !head_only {
            self.stream(conn, &slot, &ask, keep, backend)
        } else {
            let deadline = slot.since + cfg.service_time(ask.tokens);
            if !self.sleep_until(conn, deadline) {
                return self.abandon();
            }
            let body = json!({
                "backend": backend,
                "object": "text_completion",
                "path": req.head.target,
                "tokens": ask.tokens,
                "queued_ms": ms(queued),
                "choices": [{"index": 0, "text": "tok ".repeat(ask.tokens as usize),
                             "finish_reason": "length"}],
                "usage": {"completion_tokens": ask.tokens},
            });
            let mut resp = Response::json(200, &body);
            if let Some(f) = ask.report {
                resp = resp.with_header("endpoint-load-metrics", self.report(f));
            }
            conn.send(&resp, keep, head_only).is_ok()
        };
        if !sent {
            return self.abandon();
        }
        let service = slot.since.elapsed();
        drop(slot);
        self.record(ServedRequest {
            tokens: ask.tokens,
            streamed: ask.stream && !head_only,
            queued,
            service,
        });
        Flow::keep_if(keep)
    }

    /// Sends the SSE answer: the head at the first token's time, then one event a token, then
    /// `data: [DONE]`. False when the client left or the server stopped.
    fn stream(
        &self,
        conn: &mut Conn,
        slot: &Slot<'_>,
        ask: &Ask,
        keep: bool,
        backend: &str,
    ) -> bool {
        let cfg = &slot.config;
        let first = slot.since + cfg.base.div_f64(cfg.speed);
        let step = cfg.per_token.div_f64(cfg.speed);
        if !self.sleep_until(conn, first) {
            return false;
        }
        let mut resp = Response::new(200, "text/event-stream", "")
            .with_header("Cache-Control", "no-cache")
            .with_header("X-Backend", backend.to_string());
        if let Some(f) = ask.report {
            resp = resp.with_header("endpoint-load-metrics", self.report(f));
        }
        if conn.write_all(&resp.chunked_head_bytes(keep)).is_err() {
            return false;
        }
        for i in 1..=ask.tokens {
            if !self.sleep_until(conn, first + step * i) {
                return false;
            }
            let event = format!(
                "data: {}\n\n",
                json!({"object": "text_completion", "choices": [{"index": 0, "text": "tok "}]})
            );
            if conn.write_all(&chunk(event.as_bytes())).is_err() {
                return false;
            }
        }
        let mut end = chunk(b"data: [DONE]\n\n");
        end.extend_from_slice(&chunk(b""));
        conn.write_all(&end).is_ok()
    }
}

impl State {
    /// Wakes the queue's head (after a slot freed, the head left, or the settings changed).
    fn wake_head(&self) {
        if let Some((_, woken)) = self.queue.front() {
            woken.notify_one();
        }
    }
}

/// A small seedable generator (splitmix64): no dependency, and the same seed gives the same
/// draws on every machine. The token draw of the backends; benches draw their plans with it.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1), never 0 (the logarithm below needs that).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A log-normal draw of mean `mean` (so its median is `mean x exp(-sigma^2/2)`), rounded,
    /// within 1..=max.
    pub fn log_normal(&mut self, mean: u32, sigma: f64, max: u32) -> u32 {
        let (u1, u2) = (self.unit(), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let mu = f64::from(mean).ln() - sigma * sigma / 2.0;
        let x = (mu + sigma * z).exp().round();
        x.clamp(1.0, f64::from(max)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_draw_has_the_mean_asked_and_repeats_with_its_seed() {
        let mut a = SplitMix64(7);
        let draws: Vec<u32> = (0..20_000)
            .map(|_| a.log_normal(100, 1.0, 100_000))
            .collect();
        let mean = draws.iter().map(|d| f64::from(*d)).sum::<f64>() / draws.len() as f64;
        assert!((85.0..115.0).contains(&mean), "{mean}");
        let mut sorted = draws.clone();
        sorted.sort_unstable();
        let (median, p99) = (sorted[10_000], sorted[19_800]);
        assert!(p99 > 5 * median, "heavy tail: median {median}, p99 {p99}");
        let mut b = SplitMix64(7);
        assert!(draws.iter().all(|d| *d == b.log_normal(100, 1.0, 100_000)));
        let mut c = SplitMix64(7);
        assert!((0..100).all(|_| c.log_normal(100, 0.0, 4096) == 100));
        assert!((0..1000).all(|_| c.log_normal(100, 4.0, 300) <= 300));
    }

    #[test]
    fn settings_update_from_json_and_name_the_bad_field() {
        let c = LlmConfig::default();
        let u = c
            .updated(
                &json!({"slots": 2, "speed": 0.33, "per_token_ms": 0.5, "report_running": false}),
            )
            .unwrap();
        assert_eq!((u.slots, u.speed, u.report_running), (2, 0.33, false));
        assert_eq!(u.per_token, Duration::from_micros(500));
        assert_eq!(u.base, c.base);
        assert_eq!(LlmConfig::default().updated(&u.to_json()).unwrap(), u);
        for (bad, field) in [
            (json!({"slots": 0}), "slots"),
            (json!({"slots": "2"}), "slots"),
            (json!({"speed": 0}), "speed"),
            (json!({"speed": -1.0}), "speed"),
            (json!({"base_ms": -1}), "base_ms"),
            (json!({"tokens_sigma": 9}), "tokens_sigma"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"report_running": 1}), "report_running"),
            (json!({"spede": 1}), "spede"),
        ] {
            let e = c.updated(&bad).unwrap_err();
            assert!(e.contains(field), "{bad}: {e}");
        }
        assert!(c.updated(&json!([])).is_err());
    }

    #[test]
    fn service_time_is_divided_by_the_speed() {
        let c = LlmConfig {
            base: Duration::from_millis(10),
            per_token: Duration::from_millis(2),
            speed: 0.5,
            ..LlmConfig::default()
        };
        assert_eq!(c.service_time(5), Duration::from_millis(40));
    }
}
