//! Load-aware balancing under open-loop load (`make bench-lb`, issue 13).
//!
//! Eight LLM-like emulator backends (4 slots each, service by sleeping: 2 ms + 0.08 ms a token,
//! 100 tokens on average, so about 10 ms) get Poisson arrivals at 70% of the fleet's capacity
//! (`sum(slots x speed) / mean service time`), through the call API (`Client::call`, `next`,
//! `record`, `finish`) with each `lb_policy`, and through an oracle: a central dispatcher that
//! sends each request to the backend with the lowest `(running + waiting + 1) / (slots x speed)`,
//! read from the backends' own counters, plus the requests it sent that have not arrived yet.
//!
//! Scenarios: `uniform`; `slow` (backend 0 at speed 0.33); `heavy` (log-normal sizes of sigma
//! 1.5 instead of 0.5); `shared` (a child process, A, offers 90% of the capacity of backends
//! 0-2 to those three only, round-robin over plain HTTP without the library, while B, this
//! process, offers 30% of the fleet's capacity over all eight through the call API, with and
//! without load reports).
//!
//! Open loop: every request has a scheduled arrival on a seeded Poisson timeline and its size
//! drawn beforehand (the same timeline and sizes for every policy of a run); a pool of workers
//! takes arrivals in order, each sleeping until its arrival's time; latency runs from the
//! scheduled arrival to the end of the response body, so a late start (no worker free) counts
//! in it. Throughput over offered: requests answered 200 by the time of the last scheduled
//! arrival, over the requests scheduled (what is still queued at the end of the window is not
//! achieved); every request is then drained and counts in the latencies.
//!
//! Environment: `LB_REQUESTS` (per cell, default 20000), `LB_RUNS` (default 3; each figure is
//! the median of the runs), `LB_SCENARIOS` (comma list, default all four), `LB_WORKERS`
//! (workers at the start of a cell, default 512; more are added, up to 2048, whenever an
//! arrival is due and every worker is busy, so that the load stays open-loop).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use easdirect::{Body, Client, ErrorKind, Options, Outcome};
use easdirect_emulator::{Backend, Llm, LlmConfig, SplitMix64};

const BACKENDS: usize = 8;
const SLOTS: u32 = 4;
const BASE: Duration = Duration::from_millis(2);
const PER_TOKEN: Duration = Duration::from_micros(80);
const MEAN_TOKENS: u32 = 100;
const MAX_TOKENS: u32 = 4000;
const LOAD: f64 = 0.70;
const SHARED_A_LOAD: f64 = 0.90;
const SHARED_A_BACKENDS: usize = 3;
const SHARED_B_LOAD: f64 = 0.30;
/// A starts this long before B and goes on this long after B's last arrival.
const SHARED_LEAD: Duration = Duration::from_secs(2);
const SHARED_TAIL: Duration = Duration::from_secs(1);
/// A start later than this behind its scheduled arrival counts as a late start.
const LATE: Duration = Duration::from_millis(1);
/// The most workers a run may use, and how many are added at a time when all are busy.
const MAX_WORKERS: usize = 2048;
const GROW_BY: usize = 32;

// ---------------------------------------------------------------------------------------------
// Plans: a seeded Poisson timeline and the sizes of its requests.

fn service_ms(tokens: f64) -> f64 {
    (BASE.as_secs_f64() + PER_TOKEN.as_secs_f64() * tokens) * 1e3
}

/// Request sizes first (their mean sets the capacity), then arrivals at `load` of the capacity
/// of `slots_x_speed`; `requests` of them, or as many as fit in `span` when given.
struct Plan {
    /// Scheduled arrivals, from the start of the run.
    at: Vec<Duration>,
    tokens: Vec<u32>,
    rate: f64,
    mean_service_ms: f64,
}

fn plan(seed: u64, sigma: f64, slots_x_speed: f64, load: f64, count: Count) -> Plan {
    let mut rng = SplitMix64(seed);
    // The mean comes from a long draw of the same distribution (then the plan's own sizes), so
    // that the rate does not depend on how many requests are planned.
    let mut probe = SplitMix64(seed ^ 0x5EED);
    let probe_n = 200_000;
    let mean_tokens = (0..probe_n)
        .map(|_| f64::from(probe.log_normal(MEAN_TOKENS, sigma, MAX_TOKENS)))
        .sum::<f64>()
        / probe_n as f64;
    let mean_service_ms = service_ms(mean_tokens);
    let rate = load * slots_x_speed / (mean_service_ms / 1e3);
    let (mut at, mut tokens) = (Vec::new(), Vec::new());
    let mut t = 0.0f64;
    loop {
        t += -rng.unit().ln() / rate;
        let done = match count {
            Count::Requests(n) => at.len() >= n,
            Count::Span(d) => t > d.as_secs_f64(),
        };
        if done {
            break;
        }
        at.push(Duration::from_secs_f64(t));
        tokens.push(rng.log_normal(MEAN_TOKENS, sigma, MAX_TOKENS));
    }
    Plan {
        at,
        tokens,
        rate,
        mean_service_ms,
    }
}

#[derive(Clone, Copy)]
enum Count {
    Requests(usize),
    Span(Duration),
}

// ---------------------------------------------------------------------------------------------
// Drivers: how one request is sent.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Policy {
    Oracle,
    RoundRobin,
    LeastRequest,
    PeakEwma,
    /// peak_ewma with `ewma_decay_ms=1000` instead of the default 10,000 (a diagnostic row).
    PeakEwmaFastDecay,
    /// least_request, backends not asked for load reports and nothing passed to record.
    LeastRequestBlind,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Oracle => "oracle",
            Policy::RoundRobin => "round_robin",
            Policy::LeastRequest => "least_request",
            Policy::PeakEwma => "peak_ewma",
            Policy::PeakEwmaFastDecay => "peak_ewma, decay 1 s",
            Policy::LeastRequestBlind => "least_request, no reports",
        }
    }

    fn option(self) -> Option<&'static str> {
        match self {
            Policy::Oracle => None,
            Policy::RoundRobin => Some("round_robin"),
            Policy::LeastRequest | Policy::LeastRequestBlind => Some("least_request"),
            Policy::PeakEwma | Policy::PeakEwmaFastDecay => Some("peak_ewma"),
        }
    }
}

/// The oracle: one lock around every pick, the backends' counters, and what it sent.
struct Oracle {
    llms: Vec<Llm>,
    capacity: Vec<f64>,
    state: Mutex<OracleState>,
}

struct OracleState {
    /// Per backend: requests sent by the oracle, and the backend's arrival count at the start
    /// (requests sent minus arrivals since then are still on the way).
    sent: Vec<u64>,
    arrived0: Vec<u64>,
    rng: SplitMix64,
}

impl Oracle {
    fn new(llms: Vec<Llm>) -> Oracle {
        let capacity = llms
            .iter()
            .map(|l| {
                let c = l.config();
                f64::from(c.slots) * c.speed
            })
            .collect();
        let arrived0 = llms.iter().map(|l| l.occupancy().2).collect();
        Oracle {
            state: Mutex::new(OracleState {
                sent: vec![0; llms.len()],
                arrived0,
                rng: SplitMix64(7),
            }),
            llms,
            capacity,
        }
    }

    fn pick(&self) -> usize {
        let mut st = self.state.lock().unwrap();
        let n = self.llms.len();
        // Ties go to a random one of the lowest (a rotating start, then strict improvement).
        let start = (st.rng.next_u64() % n as u64) as usize;
        let mut best = (f64::INFINITY, start);
        for k in 0..n {
            let i = (start + k) % n;
            let (running, waiting, arrived) = self.llms[i].occupancy();
            // Another process's arrivals (the shared scenario) make this 0, not negative.
            let on_the_way = st.sent[i].saturating_sub(arrived - st.arrived0[i]);
            let load = f64::from(running) + f64::from(waiting) + on_the_way as f64;
            let cost = (load + 1.0) / self.capacity[i];
            if cost < best.0 {
                best = (cost, i);
            }
        }
        st.sent[best.1] += 1;
        best.1
    }
}

enum Driver {
    Client {
        client: Client,
        reports: bool,
    },
    Oracle(Oracle),
    /// Plain round-robin over these backends, no library (process A of the shared scenario).
    Plain(AtomicUsize),
}

/// One finished request: latency from its scheduled arrival, end from the start of the run,
/// how late its worker started it, the backend that answered (or none), whether it got a 200.
#[derive(Clone, Copy)]
struct Done {
    index: usize,
    latency: Duration,
    end: Duration,
    late: Duration,
    /// No worker was free at the arrival's time (it was taken later than that).
    queued: bool,
    backend: Option<usize>,
    ok: bool,
}

fn outcome_of(t: &ureq::Transport) -> Outcome {
    match t.kind() {
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => Outcome::ConnectFailed,
        _ => Outcome::Reset,
    }
}

/// Sends one request of `tokens` to `host`: the status, the load report, whether the body
/// was read to its end; or the outcome of a failed attempt.
fn send(
    agent: &ureq::Agent,
    host: &str,
    tokens: u32,
    reports: bool,
) -> Result<(u16, Option<String>, bool), Outcome> {
    let mut req = agent
        .get(&format!("http://{host}/v1/completions"))
        .set("x-tokens", &tokens.to_string());
    if reports {
        req = req.set("endpoint-load-metrics-format", "text");
    }
    let resp = match req.call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Err(outcome_of(&t)),
    };
    let status = resp.status();
    let report = resp.header("endpoint-load-metrics").map(str::to_owned);
    let mut sink = Vec::new();
    let body_ok = resp.into_reader().read_to_end(&mut sink).is_ok();
    Ok((status, report, body_ok))
}

fn drive(
    driver: &Driver,
    agent: &ureq::Agent,
    ports: &[u16],
    tokens: u32,
) -> (Option<usize>, bool) {
    let index_of = |port: u16| ports.iter().position(|p| *p == port);
    match driver {
        Driver::Oracle(oracle) => {
            let i = oracle.pick();
            let ok = matches!(
                send(agent, &format!("127.0.0.1:{}", ports[i]), tokens, false),
                Ok((200, _, true))
            );
            (Some(i), ok)
        }
        Driver::Plain(next) => {
            let i = next.fetch_add(1, Ordering::Relaxed) % ports.len();
            let ok = matches!(
                send(agent, &format!("127.0.0.1:{}", ports[i]), tokens, false),
                Ok((200, _, true))
            );
            (Some(i), ok)
        }
        Driver::Client { client, reports } => {
            let Ok(mut call) = client.call(None, 0) else {
                return (None, false);
            };
            loop {
                let instance = match call.next() {
                    Ok(i) => i,
                    Err(ErrorKind::NoInstance) | Err(_) => return (None, false),
                };
                let backend = index_of(instance.port);
                match send(agent, instance.host_str(), tokens, *reports) {
                    Ok((status, report, body_ok)) => {
                        let headers: Vec<(&str, &str)> = match (&report, reports) {
                            (Some(r), true) => vec![("endpoint-load-metrics", r.as_str())],
                            _ => Vec::new(),
                        };
                        let retry = call
                            .record(Outcome::Response(status), &headers)
                            .unwrap_or(false);
                        let _ = call.finish(if body_ok { Body::Done } else { Body::Broken });
                        if status == 200 && body_ok {
                            return (backend, true);
                        }
                        if !retry {
                            return (backend, false);
                        }
                    }
                    Err(outcome) => {
                        if !call.record(outcome, &[]).unwrap_or(false) {
                            return (backend, false);
                        }
                    }
                }
            }
        }
    }
}

fn agent(workers: usize) -> ureq::Agent {
    // One agent, shared by the workers: one keep-alive pool, so that connections (each one a
    // backend thread) follow the requests in flight rather than workers x backends.
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .max_idle_connections(workers * 2)
        .max_idle_connections_per_host(workers)
        .redirects(0)
        .build()
}

/// Runs `plan` through `driver`, starting with `workers` workers and adding more whenever the
/// next arrival is due and no worker has taken it (so that arrivals never wait for one), up to
/// `MAX_WORKERS`; `started` is called at the run's start (the shared scenario's child prints
/// it). Returns every request and the number of workers the run ended with.
fn run_plan(
    plan: &Plan,
    driver: &Driver,
    ports: &[u16],
    workers: usize,
    started: impl FnOnce(),
) -> (Vec<Done>, usize) {
    let agent = agent(MAX_WORKERS);
    let next = AtomicUsize::new(0);
    // The start is set once every first worker runs (spawning hundreds of threads on a busy
    // machine can take longer than any fixed lead, which would make the first arrivals late).
    let start = OnceLock::new();
    let ready = Barrier::new(workers.min(MAX_WORKERS) + 1);
    let results = Mutex::new(Vec::with_capacity(plan.at.len()));
    let work = |first: bool| {
        if first {
            ready.wait();
        }
        let t0: Instant = *start.get().expect("the start is set");
        let mut mine = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= plan.at.len() {
                break;
            }
            let due = t0 + plan.at[i];
            let now = Instant::now();
            let queued = now > due + LATE;
            if now < due {
                thread::sleep(due - now);
            }
            let late = Instant::now().saturating_duration_since(due);
            let (backend, ok) = drive(driver, &agent, ports, plan.tokens[i]);
            let end = Instant::now();
            mine.push(Done {
                index: i,
                latency: end.saturating_duration_since(due),
                end: end.saturating_duration_since(t0),
                late,
                queued,
                backend,
                ok,
            });
        }
        results.lock().unwrap().extend(mine);
    };
    let mut spawned = workers.min(MAX_WORKERS);
    thread::scope(|s| {
        for _ in 0..spawned {
            s.spawn(move || work(true));
        }
        let t0 = Instant::now() + Duration::from_millis(50);
        start.set(t0).expect("set once");
        ready.wait();
        let now = Instant::now();
        if now < t0 {
            thread::sleep(t0 - now);
        }
        started();
        // Every worker busy (the next arrival is due and untaken): add some.
        loop {
            let i = next.load(Ordering::Relaxed);
            if i >= plan.at.len() {
                break;
            }
            if spawned < MAX_WORKERS && Instant::now() > t0 + plan.at[i] {
                for _ in 0..GROW_BY.min(MAX_WORKERS - spawned) {
                    s.spawn(move || work(false));
                }
                spawned += GROW_BY.min(MAX_WORKERS - spawned);
            }
            thread::sleep(Duration::from_micros(500));
        }
    });
    let mut v = results.into_inner().unwrap();
    v.sort_by_key(|d| d.index);
    (v, spawned)
}

// ---------------------------------------------------------------------------------------------
// Figures.

#[derive(Clone, Debug, Default)]
struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    /// Answered 200 by the last scheduled arrival, over the requests scheduled.
    throughput: f64,
    failed: usize,
    /// Arrivals that found no free worker (taken more than 1 ms after their time).
    queued: usize,
    /// The 99th percentile of start delays (scheduled arrival to the worker's start): the
    /// machine's wake-up latency, plus any wait for a worker.
    late_p99_ms: f64,
    /// Process CPU time over the cell's wall time, in cores (of 2).
    cpu: f64,
    /// Workers the run ended with.
    workers: usize,
    /// Share of the answered requests per backend.
    share: Vec<f64>,
    /// Share of the slowest 1% of requests that backend 0 answered, and backend 0's median.
    top1_on_b0: f64,
    b0_p50_ms: f64,
    requests: usize,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[k]
}

/// Figures of the requests of `done` whose arrivals fall in `window` (all when `None`).
fn figures(plan: &Plan, done: &[Done], window: Option<(Duration, Duration)>) -> Figures {
    let (from, to) = window.unwrap_or((Duration::ZERO, *plan.at.last().unwrap()));
    let chosen: Vec<&Done> = done
        .iter()
        .filter(|d| (from..=to).contains(&plan.at[d.index]))
        .collect();
    // A failed request's latency counts as infinite.
    let mut lat: Vec<f64> = chosen
        .iter()
        .map(|d| {
            if d.ok {
                d.latency.as_secs_f64() * 1e3
            } else {
                f64::INFINITY
            }
        })
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let in_window = chosen.iter().filter(|d| d.ok && d.end <= to).count();
    let mut share = vec![0.0; BACKENDS];
    for d in &chosen {
        if let (true, Some(b)) = (d.ok, d.backend) {
            share[b] += 1.0;
        }
    }
    let answered: f64 = share.iter().sum();
    let mut by_latency: Vec<&&Done> = chosen.iter().collect();
    by_latency.sort_by_key(|d| (!d.ok, d.latency));
    let top = (by_latency.len() / 100).max(1);
    let top1_on_b0 = by_latency[by_latency.len() - top..]
        .iter()
        .filter(|d| d.backend == Some(0))
        .count() as f64
        / top as f64;
    let mut b0: Vec<f64> = chosen
        .iter()
        .filter(|d| d.ok && d.backend == Some(0))
        .map(|d| d.latency.as_secs_f64() * 1e3)
        .collect();
    b0.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for s in &mut share {
        *s /= answered.max(1.0);
    }
    Figures {
        p50_ms: quantile(&lat, 0.50),
        p99_ms: quantile(&lat, 0.99),
        throughput: in_window as f64 / chosen.len().max(1) as f64,
        failed: chosen.iter().filter(|d| !d.ok).count(),
        queued: chosen.iter().filter(|d| d.queued).count(),
        late_p99_ms: {
            let mut late: Vec<f64> = chosen.iter().map(|d| d.late.as_secs_f64() * 1e3).collect();
            late.sort_by(|a, b| a.partial_cmp(b).unwrap());
            quantile(&late, 0.99)
        },
        cpu: 0.0,
        workers: 0,
        share,
        top1_on_b0,
        b0_p50_ms: quantile(&b0, 0.5),
        requests: chosen.len(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median of each figure over the runs (shares: the median of each backend's share).
fn median_figures(runs: &[Figures]) -> Figures {
    let m = |f: &dyn Fn(&Figures) -> f64| median(runs.iter().map(f).collect());
    Figures {
        p50_ms: m(&|f| f.p50_ms),
        p99_ms: m(&|f| f.p99_ms),
        throughput: m(&|f| f.throughput),
        failed: runs.iter().map(|f| f.failed).max().unwrap_or(0),
        queued: runs.iter().map(|f| f.queued).max().unwrap_or(0),
        late_p99_ms: m(&|f| f.late_p99_ms),
        cpu: m(&|f| f.cpu),
        workers: runs.iter().map(|f| f.workers).max().unwrap_or(0),
        share: (0..BACKENDS)
            .map(|b| median(runs.iter().map(|f| f.share[b]).collect()))
            .collect(),
        top1_on_b0: m(&|f| f.top1_on_b0),
        b0_p50_ms: m(&|f| f.b0_p50_ms),
        requests: runs.iter().map(|f| f.requests).min().unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Uniform,
    Slow,
    Heavy,
    Shared,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Uniform => "uniform",
            Scenario::Slow => "slow",
            Scenario::Heavy => "heavy",
            Scenario::Shared => "shared",
        }
    }

    fn sigma(self) -> f64 {
        if self == Scenario::Heavy {
            1.5
        } else {
            0.5
        }
    }

    fn speeds(self) -> Vec<f64> {
        let mut s = vec![1.0; BACKENDS];
        if self == Scenario::Slow {
            s[0] = 0.33;
        }
        s
    }

    fn policies(self) -> &'static [Policy] {
        match self {
            // No round_robin: it sends B's 3/8 to A's three backends, 120/s over the 80/s they
            // have left, and the queues (A's and B's, thousands of connections) grow for the
            // whole cell.
            Scenario::Shared => &[
                Policy::Oracle,
                Policy::LeastRequest,
                Policy::LeastRequestBlind,
                Policy::PeakEwma,
            ],
            _ => &[
                Policy::Oracle,
                Policy::RoundRobin,
                Policy::LeastRequest,
                Policy::PeakEwma,
                Policy::PeakEwmaFastDecay,
            ],
        }
    }
}

struct Backends {
    list: Vec<Backend>,
    ports: Vec<u16>,
}

fn start_backends(speeds: &[f64], seed: u64) -> Backends {
    let list: Vec<Backend> = speeds
        .iter()
        .map(|&speed| {
            Backend::start_llm(LlmConfig {
                slots: SLOTS,
                base: BASE,
                per_token: PER_TOKEN,
                mean_tokens: MEAN_TOKENS,
                tokens_sigma: 0.5,
                max_tokens: MAX_TOKENS,
                speed,
                seed,
                report_running: true,
            })
            .expect("start a backend")
        })
        .collect();
    let ports = list.iter().map(Backend::port).collect();
    Backends { list, ports }
}

fn driver_for(policy: Policy, backends: &Backends) -> Driver {
    match policy.option() {
        None => Driver::Oracle(Oracle::new(
            backends
                .list
                .iter()
                .map(|b| b.llm().unwrap().clone())
                .collect(),
        )),
        Some(lb) => {
            let target = format!(
                "static://{}",
                backends
                    .ports
                    .iter()
                    .map(|p| format!("127.0.0.1:{p}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let mut options = Options::new();
            options.set("lb_policy", lb).unwrap();
            if policy == Policy::PeakEwmaFastDecay {
                options.set("ewma_decay_ms", "1000").unwrap();
            }
            let client = Client::new(&target, &options).expect("client");
            client.wait_ready(Duration::from_secs(5)).expect("ready");
            Driver::Client {
                client,
                reports: policy != Policy::LeastRequestBlind,
            }
        }
    }
}

struct Config {
    requests: usize,
    runs: usize,
    workers: usize,
    scenarios: Vec<Scenario>,
}

/// One cell's figures: this process's (B's), and A's beside them in the shared scenario.
struct CellResult {
    main: Figures,
    other: Option<Figures>,
    rate: f64,
    mean_service_ms: f64,
}

fn run_cell(cfg: &Config, scenario: Scenario, policy: Policy, run: usize) -> CellResult {
    let seed = 1000 + run as u64 * 17 + scenario as u64;
    let speeds = scenario.speeds();
    let backends = start_backends(&speeds, seed);
    let fleet: f64 = speeds.iter().map(|s| f64::from(SLOTS) * s).sum();
    let driver = driver_for(policy, &backends);
    if scenario != Scenario::Shared {
        let plan = plan(
            seed,
            scenario.sigma(),
            fleet,
            LOAD,
            Count::Requests(cfg.requests),
        );
        let cpu = Cpu::now(libc::RUSAGE_SELF);
        let (done, workers) = run_plan(&plan, &driver, &backends.ports, cfg.workers, || {});
        let mut main = figures(&plan, &done, None);
        main.cpu = cpu.cores(libc::RUSAGE_SELF);
        main.workers = workers;
        return CellResult {
            main,
            other: None,
            rate: plan.rate,
            mean_service_ms: plan.mean_service_ms,
        };
    }
    let plan = plan(
        seed,
        scenario.sigma(),
        fleet,
        SHARED_B_LOAD,
        Count::Requests(cfg.requests),
    );
    let span = *plan.at.last().unwrap();
    // Process A: this program again, as a plain load generator over backends 0-2.
    let a_ports: Vec<String> = backends.ports[..SHARED_A_BACKENDS]
        .iter()
        .map(u16::to_string)
        .collect();
    let mut child = Command::new(std::env::current_exe().expect("the bench's path"))
        .env("LB_LOADGEN_PORTS", a_ports.join(","))
        .env("LB_LOADGEN_SEED", (seed ^ 0xA).to_string())
        .env("LB_LOADGEN_SIGMA", scenario.sigma().to_string())
        .env("LB_LOADGEN_LOAD", SHARED_A_LOAD.to_string())
        .env(
            "LB_LOADGEN_SPAN_MS",
            (SHARED_LEAD + span + SHARED_TAIL).as_millis().to_string(),
        )
        .env(
            "LB_LOADGEN_WINDOW_MS",
            format!(
                "{},{}",
                SHARED_LEAD.as_millis(),
                (SHARED_LEAD + span).as_millis()
            ),
        )
        .env("LB_WORKERS", cfg.workers.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start process A");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, "started", "process A");
    thread::sleep(SHARED_LEAD - Duration::from_millis(100));
    let cpu = Cpu::now(libc::RUSAGE_SELF);
    let (done, workers) = run_plan(&plan, &driver, &backends.ports, cfg.workers, || {});
    let mut main = figures(&plan, &done, None);
    main.cpu = cpu.cores(libc::RUSAGE_SELF);
    main.workers = workers;
    let mut a = None;
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("figures ") {
            a = Some(parse_figures(rest));
        }
    }
    let status = child.wait().expect("process A");
    assert!(status.success(), "process A: {status}");
    CellResult {
        main,
        other: Some(a.expect("process A's figures")),
        rate: plan.rate,
        mean_service_ms: plan.mean_service_ms,
    }
}

/// CPU time used since a point, over the wall time since then.
struct Cpu {
    wall: Instant,
    used: f64,
}

impl Cpu {
    fn used(who: libc::c_int) -> f64 {
        // SAFETY: getrusage writes the struct it is given and nothing else.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    }

    fn now(who: libc::c_int) -> Cpu {
        Cpu {
            wall: Instant::now(),
            used: Cpu::used(who),
        }
    }

    /// Cores used on average since `now`.
    fn cores(&self, who: libc::c_int) -> f64 {
        (Cpu::used(who) - self.used) / self.wall.elapsed().as_secs_f64()
    }
}

fn print_figures_line(f: &Figures) -> String {
    format!(
        "{} {} {} {} {} {} {} {}",
        f.p50_ms, f.p99_ms, f.throughput, f.failed, f.queued, f.late_p99_ms, f.cpu, f.workers
    )
}

fn parse_figures(s: &str) -> Figures {
    let v: Vec<f64> = s.split(' ').map(|x| x.parse().unwrap()).collect();
    Figures {
        p50_ms: v[0],
        p99_ms: v[1],
        throughput: v[2],
        failed: v[3] as usize,
        queued: v[4] as usize,
        late_p99_ms: v[5],
        cpu: v[6],
        workers: v[7] as usize,
        share: vec![0.0; BACKENDS],
        top1_on_b0: 0.0,
        b0_p50_ms: 0.0,
        requests: 0,
    }
}

/// Process A of the shared scenario: Poisson arrivals at LB_LOADGEN_LOAD of the capacity of
/// the backends it is given, round-robin over them, no library; prints `started` when its run
/// starts, then `figures p50 p99 throughput failed late max_late` of the arrivals in its window.
fn loadgen(ports: &str) {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}"));
    let ports: Vec<u16> = ports.split(',').map(|p| p.parse().unwrap()).collect();
    let seed: u64 = var("LB_LOADGEN_SEED").parse().unwrap();
    let sigma: f64 = var("LB_LOADGEN_SIGMA").parse().unwrap();
    let load: f64 = var("LB_LOADGEN_LOAD").parse().unwrap();
    let span = Duration::from_millis(var("LB_LOADGEN_SPAN_MS").parse().unwrap());
    let window = var("LB_LOADGEN_WINDOW_MS");
    let (from, to) = window.split_once(',').unwrap();
    let window = (
        Duration::from_millis(from.parse().unwrap()),
        Duration::from_millis(to.parse().unwrap()),
    );
    let workers: usize = var("LB_WORKERS").parse().unwrap();
    let capacity = f64::from(SLOTS) * ports.len() as f64;
    let plan = plan(seed, sigma, capacity, load, Count::Span(span));
    let driver = Driver::Plain(AtomicUsize::new(0));
    let cpu = Cpu::now(libc::RUSAGE_SELF);
    let (done, workers) = run_plan(&plan, &driver, &ports, workers, || {
        println!("started");
        let _ = std::io::stdout().flush();
    });
    let mut f = figures(&plan, &done, Some(window));
    f.cpu = cpu.cores(libc::RUSAGE_SELF);
    f.workers = workers;
    println!("figures {}", print_figures_line(&f));
}

// ---------------------------------------------------------------------------------------------
// Tables.

fn env_usize(k: &str, default: usize) -> usize {
    match std::env::var(k) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{k} must be a positive integer")),
        Err(_) => default,
    }
}

fn describe(s: Scenario) -> &'static str {
    match s {
        Scenario::Uniform => "8 identical backends, sizes log-normal sigma 0.5, 70% of capacity",
        Scenario::Slow => "backend 0 at speed 0.33 (3x slower), sigma 0.5, 70% of capacity",
        Scenario::Heavy => "8 identical backends, sizes log-normal sigma 1.5, 70% of capacity",
        Scenario::Shared => {
            "process A (child, no library, round-robin) offers 90% of the capacity of backends \
             0-2 to them only; B (this process, shown) offers 30% of the fleet's over all 8"
        }
    }
}

fn main() {
    if let Ok(ports) = std::env::var("LB_LOADGEN_PORTS") {
        loadgen(&ports);
        return;
    }
    let scenarios = match std::env::var("LB_SCENARIOS") {
        Ok(v) => v
            .split(',')
            .map(|s| match s.trim() {
                "uniform" => Scenario::Uniform,
                "slow" => Scenario::Slow,
                "heavy" => Scenario::Heavy,
                "shared" => Scenario::Shared,
                other => panic!("LB_SCENARIOS: unknown scenario {other:?}"),
            })
            .collect(),
        Err(_) => vec![
            Scenario::Uniform,
            Scenario::Slow,
            Scenario::Heavy,
            Scenario::Shared,
        ],
    };
    let cfg = Config {
        requests: env_usize("LB_REQUESTS", 20_000).max(100),
        runs: env_usize("LB_RUNS", 3).max(1),
        workers: env_usize("LB_WORKERS", 512).max(1),
        scenarios,
    };
    let began = Instant::now();
    println!(
        "bench-lb: {} backends x {SLOTS} slots, service {} ms + {} ms/token, {} requests a cell, \
         median of {} run(s), {} workers",
        BACKENDS,
        BASE.as_secs_f64() * 1e3,
        PER_TOKEN.as_secs_f64() * 1e3,
        cfg.requests,
        cfg.runs,
        cfg.workers
    );
    type Key = (Scenario, Policy);
    let mut results: BTreeMap<Key, Vec<CellResult>> = BTreeMap::new();
    // Runs outermost, so that a slow spell of the machine spreads over every cell.
    for run in 0..cfg.runs {
        for &scenario in &cfg.scenarios {
            for &policy in scenario.policies() {
                let t = Instant::now();
                let r = run_cell(&cfg, scenario, policy, run);
                let f = &r.main;
                eprintln!(
                    "run {} {:8} {:26} p50 {:7.2} ms  p99 {:8.2} ms  thr {:.4}  no worker {}  \
                     start delay p99 {:.2} ms  cpu {:.2} cores  workers {}  ({:.1} s)",
                    run + 1,
                    scenario.name(),
                    policy.name(),
                    f.p50_ms,
                    f.p99_ms,
                    f.throughput,
                    f.queued,
                    f.late_p99_ms,
                    f.cpu,
                    f.workers,
                    t.elapsed().as_secs_f64()
                );
                if let Some(a) = &r.other {
                    eprintln!(
                        "      process A beside it:             p50 {:7.2} ms  p99 {:8.2} ms  thr {:.4}  \
                         no worker {}  cpu {:.2} cores",
                        a.p50_ms, a.p99_ms, a.throughput, a.queued, a.cpu
                    );
                }
                results.entry((scenario, policy)).or_default().push(r);
            }
        }
    }
    let mut medians: BTreeMap<Key, (Figures, Option<Figures>)> = BTreeMap::new();
    for (k, rs) in &results {
        let main: Vec<Figures> = rs.iter().map(|r| r.main.clone()).collect();
        let other: Vec<Figures> = rs.iter().filter_map(|r| r.other.clone()).collect();
        medians.insert(
            *k,
            (
                median_figures(&main),
                (!other.is_empty()).then(|| median_figures(&other)),
            ),
        );
    }
    for &scenario in &cfg.scenarios {
        let first = &results[&(scenario, Policy::Oracle)][0];
        println!();
        println!(
            "## {}: {}\noffered {:.0}/s (mean service {:.2} ms), {} requests a cell, median of {} run(s)",
            scenario.name(),
            describe(scenario),
            first.rate,
            first.mean_service_ms,
            cfg.requests,
            cfg.runs
        );
        println!();
        println!(
            "| policy | p50 ms | p99 ms | throughput / offered | p99 / oracle | p99 / round_robin \
             | failed | no free worker | start delay p99 ms | workers | CPU cores |{}",
            if scenario == Scenario::Shared {
                " A p50 ms | A p99 ms | A throughput / offered |"
            } else {
                ""
            }
        );
        println!(
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{}",
            if scenario == Scenario::Shared {
                "---:|---:|---:|"
            } else {
                ""
            }
        );
        let oracle = &medians[&(scenario, Policy::Oracle)].0;
        let rr_p99 = medians
            .get(&(scenario, Policy::RoundRobin))
            .map_or(f64::NAN, |m| m.0.p99_ms);
        for &policy in scenario.policies() {
            let (f, a) = &medians[&(scenario, policy)];
            let mut line = format!(
                "| {} | {:.2} | {:.2} | {:.4} | {:.2} | {} | {} | {} | {:.2} | {} | {:.2} |",
                policy.name(),
                f.p50_ms,
                f.p99_ms,
                f.throughput,
                f.p99_ms / oracle.p99_ms,
                if rr_p99.is_nan() {
                    "-".to_string()
                } else {
                    format!("{:.2}", f.p99_ms / rr_p99)
                },
                f.failed,
                f.queued,
                f.late_p99_ms,
                f.workers,
                f.cpu
            );
            if let Some(a) = a {
                line += &format!(" {:.2} | {:.2} | {:.4} |", a.p50_ms, a.p99_ms, a.throughput);
            }
            println!("{line}");
        }
        if scenario == Scenario::Slow || scenario == Scenario::Shared {
            println!();
            println!(
                "Share of answered requests per backend (%, median of runs; backend{} first):",
                if scenario == Scenario::Slow {
                    " 0, the slow one,"
                } else {
                    "s 0-2, A's,"
                }
            );
            println!();
            let slow = scenario == Scenario::Slow;
            println!(
                "| policy |{}{}",
                (0..BACKENDS)
                    .map(|b| format!(" b{b} |"))
                    .collect::<String>(),
                if slow {
                    " b0 p50 ms | b0's part of the slowest 1% |"
                } else {
                    ""
                }
            );
            println!(
                "|---|{}{}",
                "---:|".repeat(BACKENDS),
                if slow { "---:|---:|" } else { "" }
            );
            for &policy in scenario.policies() {
                let f = &medians[&(scenario, policy)].0;
                println!(
                    "| {} |{}{}",
                    policy.name(),
                    f.share
                        .iter()
                        .map(|s| format!(" {:.1} |", s * 100.0))
                        .collect::<String>(),
                    if slow {
                        format!(" {:.2} | {:.0}% |", f.b0_p50_ms, f.top1_on_b0 * 100.0)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    // The targets.
    println!();
    println!("## Targets");
    let get = |s, p| medians.get(&(s, p)).map(|m| &m.0);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    if let (Some(o), Some(rr)) = (
        get(Scenario::Slow, Policy::Oracle),
        get(Scenario::Slow, Policy::RoundRobin),
    ) {
        for p in [Policy::LeastRequest, Policy::PeakEwma] {
            let f = get(Scenario::Slow, p).unwrap();
            println!(
                "- slow, {}: throughput/offered {:.4} (>= 0.97: {}), p99 {:.2} ms = {:.2}x the \
                 oracle's (<= 1.3: {}); round_robin beside it: {:.4}, p99 {:.2} ms",
                p.name(),
                f.throughput,
                verdict(f.throughput >= 0.97),
                f.p99_ms,
                f.p99_ms / o.p99_ms,
                verdict(f.p99_ms <= 1.3 * o.p99_ms),
                rr.throughput,
                rr.p99_ms
            );
        }
    }
    if let Some(rr) = get(Scenario::Uniform, Policy::RoundRobin) {
        for p in [Policy::LeastRequest, Policy::PeakEwma, Policy::Oracle] {
            let f = get(Scenario::Uniform, p).unwrap();
            println!(
                "- uniform, {}: p99 {:.2} ms = {:.2}x round_robin's {:.2} ms (<= 1.1: {})",
                p.name(),
                f.p99_ms,
                f.p99_ms / rr.p99_ms,
                rr.p99_ms,
                verdict(f.p99_ms <= 1.1 * rr.p99_ms)
            );
        }
    }
    if let (Some(with), Some(without)) = (
        get(Scenario::Shared, Policy::LeastRequest),
        get(Scenario::Shared, Policy::LeastRequestBlind),
    ) {
        println!(
            "- shared, B (least_request): p99 with load reports {:.2} ms = {:.2}x without ({:.2} \
             ms) (<= 0.7: {})",
            with.p99_ms,
            with.p99_ms / without.p99_ms,
            without.p99_ms,
            verdict(with.p99_ms <= 0.7 * without.p99_ms)
        );
    }
    println!();
    println!("bench-lb: {:.0} s in all", began.elapsed().as_secs_f64());
}
