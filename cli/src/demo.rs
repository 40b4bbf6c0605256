//! `easdirect demo`: a scripted story of the library at work against the built-in emulator.
//!
//! The emulator lists a service whose instances are real local backends; a request loop picks
//! an instance, sends it an HTTP request and reports the outcome to the client (in the last
//! phase each request is a call, balanced on load); the main thread plays the story (scale up,
//! a failing backend, a misbehaving discovery service, scale down, a slow backend) and shows
//! what the client does about it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use easdirect::{Body, Client, Instance, Options, Outcome, Stats};
use easdirect_emulator::{Backend, BackendMode, Emulator, Endpoint, Fault, LlmConfig};

use crate::common::{catch_stop_signals, from_lib, parse_seconds, stop_requested, Failure};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Length of the whole story in seconds (3 to 3600); the phases scale with it.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_seconds)]
    pub duration: Duration,

    /// Print plain lines (phase announcements and one status line per second), no escape
    /// codes. The default when the output is not a terminal.
    #[arg(long)]
    pub plain: bool,
}

const SERVICE: &str = "demo-llm";
const BACKENDS: usize = 5;
/// The request loop's pace: about 200 requests a second, from this many threads.
const REQUEST_EVERY: Duration = Duration::from_millis(5);
const WORKERS: u32 = 16;
/// Share of the duration each phase takes.
const PHASE_SHARES: [f64; PHASES] = [0.16, 0.12, 0.20, 0.20, 0.12, 0.20];
const PHASES: usize = 6;
/// Which backend fails in phase 3: the weight-200 one, so that much traffic has to move.
const FAILING: usize = 2;
/// Which backend becomes slow in phase 6.
const SLOW: usize = 0;
/// A backend's service time, and the slow one's speed in phase 6.
const SERVICE_MS: u64 = 20;
const SLOW_SPEED: f64 = 0.33;

pub fn run(args: DemoArgs) -> Result<ExitCode, Failure> {
    let total = args.duration;
    if total < Duration::from_secs(3) || total > Duration::from_secs(3600) {
        return Err(Failure::Usage(
            "--duration must be 3 to 3600 seconds".into(),
        ));
    }
    let live = !args.plain && io::stdout().is_terminal();
    catch_stop_signals();

    // The cast: an emulator, five real backends, and a client.
    let emu = Emulator::start()
        .map_err(|e| Failure::Runtime(format!("cannot start the emulator: {e}")))?;
    // LLM-like backends with a fixed service time and room for every request at once, so that
    // only a slowed one makes requests wait.
    let llm = LlmConfig {
        slots: 64,
        base: Duration::from_millis(SERVICE_MS),
        per_token: Duration::ZERO,
        tokens_sigma: 0.0,
        ..LlmConfig::default()
    };
    let backends = (0..BACKENDS)
        .map(|_| Backend::start_llm(llm.clone()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| Failure::Runtime(format!("cannot start a backend: {e}")))?;
    let endpoint = |i: usize, weight: u32| Endpoint::new("127.0.0.1", backends[i].port(), weight);
    emu.set_endpoints(
        SERVICE,
        vec![endpoint(0, 100), endpoint(1, 100), endpoint(2, 200)],
    );

    let total_ms = total.as_millis() as u64;
    let refresh_ms = (total_ms / 60).clamp(100, 500);
    let phase_ms: Vec<u64> = PHASE_SHARES
        .iter()
        .map(|s| (total_ms as f64 * s) as u64)
        .collect();
    let ejection_ms = (phase_ms[2] / 3).max(200);
    let mut options = Options::new();
    for (key, value) in [
        ("refresh_interval_ms", refresh_ms.to_string()),
        ("request_timeout_ms", "1000".to_string()),
        ("failures_before_ejection", "1".to_string()),
        ("ejection_base_ms", ejection_ms.to_string()),
        ("ejection_max_ms", (ejection_ms * 16).to_string()),
    ] {
        options.set(key, &value).map_err(from_lib)?;
    }
    let target = emu.target(SERVICE);
    let client = Client::new(&target, &options).map_err(from_lib)?;
    client
        .wait_ready(Duration::from_secs(5))
        .map_err(|e| Failure::Runtime(e.message))?;

    let labels: HashMap<String, String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("127.0.0.1:{}", b.port()), format!("#{}", i + 1)))
        .collect();
    let failing_host = format!("127.0.0.1:{}", backends[FAILING].port());
    let slow_host = format!("127.0.0.1:{}", backends[SLOW].port());
    let story = Story::new(&failing_host, &slow_host, refresh_ms, ejection_ms);
    let mut screen = Screen::new(live);
    let mut view = View {
        target: &target,
        labels: &labels,
        total,
        phase: 0,
        title: "",
        started: Instant::now(),
    };

    screen.note(&intro(&view, emu.endpoint(), refresh_ms), " ");

    let tally = Mutex::new(Tally::default());
    let stop = AtomicBool::new(false);
    let calls = AtomicBool::new(false);
    let interrupted = std::thread::scope(|s| {
        for worker in 0..WORKERS {
            let (client, tally, stop, calls) = (&client, &tally, &stop, &calls);
            s.spawn(move || request_loop(client, tally, stop, calls, worker));
        }
        // Ends the request loop however this closure ends (a panic included).
        let _stop_loop = SetOnDrop(&stop);

        // Phase boundaries, from the start.
        let mut bounds = Vec::with_capacity(PHASES + 1);
        let mut at = 0;
        bounds.push(0);
        for ms in &phase_ms {
            at += ms;
            bounds.push(at);
        }
        let discovery_empty_at = bounds[3] + phase_ms[3] / 2;
        let mut entered = 0; // phases entered so far
        let mut empty_applied = false;
        let mut last_draw: Option<Instant> = None;
        let mut last_status = Instant::now();
        let mut interrupted = false;
        let mut seen_deadlines: HashMap<u64, u64> = HashMap::new();
        loop {
            let elapsed = view.started.elapsed();
            let ms = elapsed.as_millis() as u64;
            while entered < PHASES && ms >= bounds[entered] {
                match entered {
                    0 => {}
                    1 => emu.set_endpoints(
                        SERVICE,
                        vec![
                            endpoint(0, 100),
                            endpoint(1, 100),
                            endpoint(2, 200),
                            endpoint(3, 100),
                            endpoint(4, 100),
                        ],
                    ),
                    2 => backends[FAILING].set_mode(BackendMode::Status(503)),
                    3 => emu.set_fault(Fault::Status(500)),
                    4 => {
                        emu.set_fault(Fault::None);
                        emu.set_endpoints(
                            SERVICE,
                            vec![
                                endpoint(0, 100),
                                endpoint(1, 100),
                                endpoint(3, 100),
                                endpoint(4, 100),
                            ],
                        );
                    }
                    _ => {
                        if let Some(llm) = backends[SLOW].llm() {
                            llm.set_speed(SLOW_SPEED);
                        }
                        calls.store(true, Ordering::SeqCst);
                    }
                }
                view.phase = entered;
                lock(&tally).phase = entered;
                view.title = &story.phases[entered].title;
                screen.announce(&view, &story.phases[entered]);
                entered += 1;
            }
            if entered == 4 && !empty_applied && ms >= discovery_empty_at {
                emu.set_fault(Fault::EmptyList);
                empty_applied = true;
                screen.note(&story.empty_list, "   ");
            }
            let done = ms >= total_ms;
            if stop_requested() {
                interrupted = true;
            }
            // Ejections as they happen (with their doubling times), above the display.
            let now = unix_ms();
            let deadlines = ejection_deadlines(&client);
            for (id, host) in instance_hosts(&client) {
                let until = deadlines.get(&id).copied().unwrap_or(0);
                let at = view.started.elapsed().as_secs_f64();
                let label = view.label(&host);
                // A deadline read twice may differ by the clocks' granularity (a few ms): only
                // a later one is a new ejection.
                let seen = seen_deadlines.get(&id).copied();
                if until > now && seen.is_none_or(|s| until > s + DEADLINE_SLACK_MS) {
                    screen.note(
                        &format!(
                            "[{at:5.1}s] {label} EJECTED for {} ms after a failed request",
                            until - now
                        ),
                        " ",
                    );
                    seen_deadlines.insert(id, until);
                } else if until <= now && seen_deadlines.remove(&id).is_some() {
                    screen.note(
                        &format!("[{at:5.1}s] {label} ejection over: it may be picked again"),
                        " ",
                    );
                }
            }
            if live {
                if done
                    || interrupted
                    || last_draw.is_none_or(|t| t.elapsed() >= Duration::from_millis(200))
                {
                    screen.draw(&view.frame(&client, &tally));
                    last_draw = Some(Instant::now());
                }
            } else if last_status.elapsed() >= Duration::from_secs(1) {
                screen.note(&view.status_line(&client, &tally), "");
                last_status += Duration::from_secs(1);
            }
            if done || interrupted {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        interrupted
    });

    let stats = client.stats().unwrap_or_default();
    let listed: HashSet<String> = client
        .instances()
        .unwrap_or_default()
        .iter()
        .map(|i| i.host_str().to_string())
        .collect();
    client.close();
    screen.finish();
    let tally = tally.into_inner().unwrap_or_else(|p| p.into_inner());
    print!(
        "{}",
        summary(
            &view,
            &tally,
            &stats,
            &listed,
            &slow_host,
            interrupted,
            live
        )
    );
    let _ = io::stdout().flush();
    drop(backends);
    emu.stop();
    Ok(if interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// One phase's announcement.
struct PhaseText {
    title: String,
    text: String,
}

struct Story {
    phases: Vec<PhaseText>,
    empty_list: String,
}

impl Story {
    fn new(failing: &str, slow: &str, refresh_ms: u64, ejection_ms: u64) -> Story {
        let p = |title: &str, text: String| PhaseText {
            title: title.to_string(),
            text,
        };
        Story {
            phases: vec![
                p(
                    "3 instances, weights 100/100/200",
                    "The client fetched the list from the discovery emulator and picks by \
                     smooth weighted round-robin, with no lock per pick. Notice #3 (weight 200) \
                     getting half of the requests, #1 and #2 a quarter each."
                        .to_string(),
                ),
                p(
                    "scale up to 5 instances",
                    format!(
                        "Two instances join the service. The client sees them at its next \
                         refresh (every {refresh_ms} ms, in the background) and traffic \
                         spreads over all five, no restart: 1/3 for #3, 1/6 for each other."
                    ),
                ),
                p(
                    "#3 starts failing",
                    format!(
                        "#3 ({failing}) now answers HTTP 503. Each failed request is reported \
                         to the client, which ejects #3 at once for {ejection_ms} ms: its share \
                         drops to 0 and the others take its traffic. When the ejection ends it \
                         gets a request again, fails, and is ejected for twice as long."
                    ),
                ),
                p(
                    "the discovery service misbehaves",
                    "Discovery now answers HTTP 500. The client keeps its cached list: \
                     \"refresh failed\" counts up, the instance list stays intact and requests \
                     keep flowing."
                        .to_string(),
                ),
                p(
                    "scale down to 4 instances",
                    "Discovery is healthy again and #3 leaves the service; the other four \
                     have weight 100. At the next refresh #3 stops getting traffic and its \
                     ejection state is dropped: a quarter of the requests each."
                        .to_string(),
                ),
                p(
                    "#1 becomes 3x slower, and requests become calls",
                    format!(
                        "#1 ({slow}) now takes {} ms per request instead of {SERVICE_MS}, and \
                         keeps answering: no failure to eject it for. Round-robin would still \
                         send it a quarter of the requests. From now on each request is a call \
                         (eas_call_*, lb_policy least_request, the calls' default): the client \
                         counts every instance's requests in flight, #1's stay in flight three \
                         times as long, and the power of two choices sends it fewer. Notice #1's \
                         share fall well below 25% while the median latency stays near {SERVICE_MS} ms.",
                        (SERVICE_MS as f64 / SLOW_SPEED) as u64
                    ),
                ),
            ],
            empty_list: "Discovery now answers 200 with an EMPTY list (the official Python and \
                         Go SDKs clear their cache on it). The client keeps its list."
                .to_string(),
        }
    }
}

/// What the display needs to know besides the client and the tally.
struct View<'a> {
    target: &'a str,
    labels: &'a HashMap<String, String>,
    total: Duration,
    phase: usize,
    /// The current phase's title.
    title: &'a str,
    started: Instant,
}

fn intro(view: &View, endpoint: String, refresh_ms: u64) -> String {
    format!(
        "easdirect demo: a local EAS discovery emulator at {endpoint} lists service {SERVICE}, \
         whose instances are real HTTP backends on this machine. The client ({}) refreshes \
         the list every {refresh_ms} ms; a request loop picks an instance about 200 times a \
         second, sends it a request and reports the outcome. {:.0} s in all; Ctrl-C stops.",
        view.target,
        view.total.as_secs_f64()
    )
}

/// Requests sent by the request loop.
#[derive(Default)]
struct Tally {
    /// Per host, in order of first request: (host, sent, failed).
    hosts: Vec<(String, u64, u64)>,
    index: HashMap<u64, usize>,
    /// (time, id, latency in µs) of the requests of the last second.
    recent: VecDeque<(Instant, u64, u64)>,
    sent: u64,
    failed: u64,
    /// The phase being played, and per phase: requests per id, latencies (µs).
    phase: usize,
    by_phase: [PhaseTally; PHASES],
}

#[derive(Default)]
struct PhaseTally {
    requests: HashMap<u64, u64>,
    latencies_us: Vec<u64>,
}

impl PhaseTally {
    /// Share of this phase's requests that went to `id`, and the median latency in ms.
    fn share_and_median(&self, id: u64) -> (f64, f64) {
        let total: u64 = self.requests.values().sum();
        let share = match total {
            0 => 0.0,
            n => self.requests.get(&id).copied().unwrap_or(0) as f64 / n as f64,
        };
        (share, median_ms(&self.latencies_us))
    }
}

/// The median of latencies in µs, in ms (0 for none).
fn median_ms(latencies_us: &[u64]) -> f64 {
    if latencies_us.is_empty() {
        return 0.0;
    }
    let mut sorted = latencies_us.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2] as f64 / 1000.0
}

impl Tally {
    fn record(&mut self, id: u64, host: &str, ok: bool, latency: Duration) {
        let now = Instant::now();
        let latency_us = latency.as_micros() as u64;
        let phase = &mut self.by_phase[self.phase];
        *phase.requests.entry(id).or_default() += 1;
        phase.latencies_us.push(latency_us);
        let at = *self.index.entry(id).or_insert_with(|| {
            self.hosts.push((host.to_string(), 0, 0));
            self.hosts.len() - 1
        });
        self.hosts[at].1 += 1;
        self.sent += 1;
        if !ok {
            self.hosts[at].2 += 1;
            self.failed += 1;
        }
        self.recent.push_back((now, id, latency_us));
        self.prune(now);
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(t, _, _)) = self.recent.front() {
            if now.duration_since(t) > Duration::from_secs(1) {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    /// Requests per id over the last second, and their total.
    fn last_second(&mut self) -> (HashMap<u64, u64>, u64) {
        self.prune(Instant::now());
        let mut counts = HashMap::new();
        for &(_, id, _) in &self.recent {
            *counts.entry(id).or_insert(0) += 1;
        }
        (counts, self.recent.len() as u64)
    }

    /// The median latency over the last second, in ms.
    fn last_second_median_ms(&mut self) -> f64 {
        self.prune(Instant::now());
        let latencies: Vec<u64> = self.recent.iter().map(|&(_, _, l)| l).collect();
        median_ms(&latencies)
    }

    fn totals_of(&self, id: u64) -> (u64, u64) {
        self.index
            .get(&id)
            .map_or((0, 0), |&i| (self.hosts[i].1, self.hosts[i].2))
    }
}

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Picks, requests and reports until `stop`, at about one request per [`REQUEST_EVERY`] over
/// the [`WORKERS`] threads (this is thread `worker`): plain picks, reported, until `calls` is
/// set, then calls.
fn request_loop(
    client: &Client,
    tally: &Mutex<Tally>,
    stop: &AtomicBool,
    calls: &AtomicBool,
    worker: u32,
) {
    let every = REQUEST_EVERY * WORKERS;
    // The threads start spread over one period, so the requests are spread too.
    let mut next = Instant::now() + every * worker / WORKERS;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_millis(100) {
            next = now; // fell behind (a slow backend): do not burst to catch up
        }
        next += every;
        let started = Instant::now();
        let done = if calls.load(Ordering::SeqCst) {
            call_once(client)
        } else {
            pick_once(client)
        };
        if let Some((instance, ok)) = done {
            lock(tally).record(instance.id, instance.host_str(), ok, started.elapsed());
        }
    }
}

/// A plain pick, a request, its outcome reported: (instance, whether it succeeded).
fn pick_once(client: &Client) -> Option<(Instance, bool)> {
    let instance = client.select().ok()?;
    let ok = matches!(request(instance.host_str()), Ok(status) if status < 500 && status != 429);
    let _ = if ok {
        client.report_success(instance.id)
    } else {
        client.report_failure(instance.id)
    };
    Some((instance, ok))
}

/// A call: attempts until one answers or the call says to stop: (last instance, success).
fn call_once(client: &Client) -> Option<(Instance, bool)> {
    let mut call = client.call(None, 0).ok()?;
    let mut last = None;
    while let Ok(instance) = call.next() {
        let (outcome, ok) = match request(instance.host_str()) {
            Ok(status) => (Outcome::Response(status), status < 500 && status != 429),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                (Outcome::ConnectFailed, false)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                (Outcome::Timeout, false)
            }
            Err(_) => (Outcome::Reset, false),
        };
        last = Some((instance, ok));
        if !call.record(outcome, &[]).unwrap_or(false) {
            break;
        }
    }
    let _ = call.finish(Body::Done);
    last
}

/// Sends `GET /api/predict/{SERVICE}` to `host` and returns the status of the answer.
fn request(host: &str) -> io::Result<u16> {
    let addr: SocketAddr = host
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not an address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    write!(
        stream,
        "GET /api/predict/{SERVICE} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::with_capacity(512);
    let read = stream.read_to_end(&mut answer);
    // "HTTP/1.1 200 OK"
    let status = answer
        .get(9..12)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<u16>().ok());
    match (status, read) {
        (Some(s), _) if answer.starts_with(b"HTTP/1.") => Ok(s),
        (_, Err(e)) => Err(e),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an HTTP answer",
        )),
    }
}

/// Until when (unix ms) each instance that is out of picks now is ejected or backing off.
fn ejection_deadlines(client: &Client) -> HashMap<u64, u64> {
    let Ok(stats) = client.instance_stats() else {
        return HashMap::new();
    };
    stats
        .iter()
        .filter(|s| s.ejected_until_unix_ms > 0)
        .map(|s| (s.id, s.ejected_until_unix_ms))
        .collect()
}

/// Ids of the instances ejected now.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Deadlines closer than this are the same ejection read twice.
const DEADLINE_SLACK_MS: u64 = 20;

fn ejected_ids(client: &Client) -> HashSet<u64> {
    ejection_deadlines(client).into_keys().collect()
}

/// (id, host) of the instances the client lists.
fn instance_hosts(client: &Client) -> Vec<(u64, String)> {
    client
        .instances()
        .unwrap_or_default()
        .iter()
        .map(|i| (i.id, i.host_str().to_string()))
        .collect()
}

// ANSI escapes of the live display.
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

impl View<'_> {
    fn label(&self, host: &str) -> String {
        match self.labels.get(host) {
            Some(l) => format!("{l} {host}"),
            None => host.to_string(),
        }
    }

    /// The client's list, in the order of the labels.
    fn instances(&self, client: &Client) -> Vec<easdirect::Instance> {
        let mut list = client.instances().unwrap_or_default();
        list.sort_by_key(|i| {
            (
                self.labels.get(i.host_str()).cloned().unwrap_or_default(),
                i.host_str().to_string(),
            )
        });
        list
    }

    fn phase_name(&self, story_title: &str) -> String {
        format!("Phase {}/{PHASES}: {story_title}", self.phase + 1)
    }

    /// The live display: a few lines redrawn in place.
    fn frame(&self, client: &Client, tally: &Mutex<Tally>) -> Vec<String> {
        let instances = self.instances(client);
        let stats = client.stats().unwrap_or_default();
        let last_error = client.last_error().ok().flatten();
        let ejected = ejected_ids(client);
        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
        let (recent, recent_total) = t.last_second();

        let elapsed = self.started.elapsed().min(self.total);
        let done = elapsed.as_secs_f64() / self.total.as_secs_f64();
        let mut lines = vec![
            String::new(),
            format!(
                " {BOLD}{CYAN}{}{RESET}  {DIM}{}{RESET}",
                self.phase_name(self.title),
                self.target
            ),
            format!(
                " {GREEN}{}{RESET} {:5.1} s / {:.0} s",
                bar(done, 56),
                elapsed.as_secs_f64(),
                self.total.as_secs_f64()
            ),
            String::new(),
            format!(
                "   {BOLD}{:<21}{:>6}  {:<21}{:>8}{:>8}{RESET}",
                "instance", "weight", "requests, last second", "total", "failed"
            ),
        ];
        for i in &instances {
            let host = i.host_str();
            let n = recent.get(&i.id).copied().unwrap_or(0);
            let share = if recent_total == 0 {
                0.0
            } else {
                n as f64 / recent_total as f64
            };
            let (sent, failed) = t.totals_of(i.id);
            let is_ejected = ejected.contains(&i.id);
            let color = if is_ejected { RED } else { GREEN };
            let failed_text = if failed > 0 {
                format!("{YELLOW}{failed:>8}{RESET}")
            } else {
                format!("{failed:>8}")
            };
            lines.push(format!(
                "   {:<21}{:>6}  {color}{}{RESET}{:>4.0}%{sent:>8}{failed_text}{}",
                self.label(host),
                i.weight,
                bar(share, 16),
                share * 100.0,
                if is_ejected {
                    format!("  {BOLD}{RED}EJECTED{RESET}")
                } else {
                    String::new()
                }
            ));
        }
        lines.push(String::new());
        let failed_refreshes = if stats.refresh_failed > 0 {
            format!("{YELLOW}{}{RESET}", stats.refresh_failed)
        } else {
            "0".to_string()
        };
        lines.push(format!(
            " {BOLD}discovery{RESET}  {} instances · {} ejected · generation {} · refreshes {} ok, {failed_refreshes} failed",
            stats.instances, stats.ejected, stats.generation, stats.refresh_ok
        ));
        lines.push(match last_error {
            Some(e) => format!(
                " {BOLD}last error{RESET} {YELLOW}{}{RESET}",
                clip(&e.message, 66)
            ),
            None => format!(" {BOLD}last error{RESET} {DIM}none (the last fetch succeeded){RESET}"),
        });
        let median = t.last_second_median_ms();
        lines.push(format!(
            " {BOLD}requests{RESET}   {} sent · {} failed · {recent_total}/s · median latency {median:.0} ms · {}",
            t.sent,
            t.failed,
            if t.phase + 1 == PHASES {
                "calls (least_request)"
            } else {
                "plain picks (round-robin)"
            }
        ));
        lines
    }

    /// One plain status line (plain mode, once a second).
    fn status_line(&self, client: &Client, tally: &Mutex<Tally>) -> String {
        let instances = self.instances(client);
        let stats = client.stats().unwrap_or_default();
        let ejected = ejected_ids(client);
        let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
        let (recent, recent_total) = t.last_second();
        let mut picks = Vec::new();
        for i in &instances {
            let n = recent.get(&i.id).copied().unwrap_or(0);
            let pct = (n * 100 + recent_total / 2)
                .checked_div(recent_total)
                .unwrap_or(0);
            let label = self
                .labels
                .get(i.host_str())
                .cloned()
                .unwrap_or_else(|| i.host_str().to_string());
            picks.push(format!(
                "{label} {pct}%{}",
                if ejected.contains(&i.id) {
                    " EJECTED"
                } else {
                    ""
                }
            ));
        }
        let median = t.last_second_median_ms();
        format!(
            "[{:5.1}s] phase {}/{PHASES} | last second: {} | discovery: {} instances, generation {}, refreshes {} ok / {} failed | requests: {} sent, {} failed, median {:.0} ms",
            self.started.elapsed().as_secs_f64(),
            self.phase + 1,
            picks.join(", "),
            stats.instances,
            stats.generation,
            stats.refresh_ok,
            stats.refresh_failed,
            t.sent,
            t.failed,
            median
        )
    }
}

fn summary(
    view: &View,
    tally: &Tally,
    stats: &Stats,
    listed: &HashSet<String>,
    slow_host: &str,
    interrupted: bool,
    live: bool,
) -> String {
    let (b, r) = if live { (BOLD, RESET) } else { ("", "") };
    let elapsed = view.started.elapsed().as_secs_f64();
    let mut out = format!(
        "\n{b}Summary{r} after {elapsed:.1} s{}\n",
        if interrupted { " (interrupted)" } else { "" }
    );
    let pct = if tally.sent == 0 {
        0.0
    } else {
        tally.failed as f64 * 100.0 / tally.sent as f64
    };
    out.push_str(&format!(
        "  requests sent {}, failed {} ({pct:.1}%), each failure reported to the client\n",
        tally.sent, tally.failed
    ));
    let mut hosts = tally.hosts.clone();
    hosts.sort_by_key(|(h, _, _)| view.labels.get(h).cloned().unwrap_or_default());
    for (host, sent, failed) in &hosts {
        out.push_str(&format!(
            "    {:<21} {sent:>7} requests {failed:>6} failed{}\n",
            view.label(host),
            if listed.contains(host) {
                ""
            } else {
                "  (removed)"
            }
        ));
    }
    // The slow backend's share and the latency, before and after it slowed.
    let slow_id = tally
        .index
        .iter()
        .find(|&(_, &i)| tally.hosts[i].0 == slow_host)
        .map(|(&id, _)| id);
    if let (Some(id), false) = (slow_id, tally.by_phase[PHASES - 1].latencies_us.is_empty()) {
        let label = view.label(slow_host);
        for (phase, how) in [
            (PHASES - 2, "plain picks, all as fast"),
            (PHASES - 1, "calls, #1 3x slower"),
        ] {
            let (share, median) = tally.by_phase[phase].share_and_median(id);
            out.push_str(&format!(
                "  phase {} ({how}): {label} served {:.0}% of the requests, median latency {median:.0} ms\n",
                phase + 1,
                share * 100.0
            ));
        }
    }
    out.push_str(&format!(
        "  discovery: {} refreshes ok, {} failed{}\n  generation {}, {} instances listed at the end\n",
        stats.refresh_ok,
        stats.refresh_failed,
        if stats.refresh_failed > 0 {
            " (the cached list was kept each time)"
        } else {
            ""
        },
        stats.generation,
        stats.instances
    ));
    out
}

/// A bar of `width` cells filled to `fraction` (eighths of a cell for smoothness).
fn bar(fraction: f64, width: usize) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (fraction.clamp(0.0, 1.0) * (width * 8) as f64).round() as usize;
    let (full, part) = (eighths / 8, eighths % 8);
    let mut s = "█".repeat(full);
    if full < width {
        if part > 0 {
            s.push(PARTS[part]);
        }
        let used = full + usize::from(part > 0);
        s.push_str(DIM);
        s.push_str(&"·".repeat(width - used));
        s.push_str(RESET);
    }
    s
}

/// `text` cut to `max` characters by an ellipsis in the middle (the end of an error message,
/// with the HTTP status, matters as much as its start).
fn clip(text: &str, max: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= max {
        return text.to_string();
    }
    let head = max.saturating_sub(1) / 3;
    let tail = max.saturating_sub(1) - head;
    let mut s: String = chars[..head].iter().collect();
    s.push('…');
    s.extend(&chars[chars.len() - tail..]);
    s
}

/// Words of `text` in lines of at most `width` characters, each starting with `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(format!("{indent}{line}"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(format!("{indent}{line}"));
    }
    lines
}

/// The output: in live mode a block of lines redrawn in place under the scrolling
/// announcements; in plain mode lines only.
struct Screen {
    live: bool,
    /// Lines of the live block on screen now.
    drawn: usize,
    frame: Vec<String>,
}

impl Screen {
    fn new(live: bool) -> Screen {
        if live {
            // Hide the cursor; no line wrapping, so that a narrow terminal clips the block
            // instead of breaking the redraw.
            emit("\x1b[?25l\x1b[?7l");
        }
        Screen {
            live,
            drawn: 0,
            frame: Vec::new(),
        }
    }

    /// Moves to the top of the live block and clears it.
    fn erase(&mut self) -> String {
        let mut s = String::new();
        if self.drawn > 0 {
            s.push_str(&format!("\x1b[{}A\r\x1b[J", self.drawn));
        }
        self.drawn = 0;
        s
    }

    /// Prints lines above the live block (they scroll away as usual).
    fn print_above(&mut self, text: &str) {
        if self.live {
            let mut s = self.erase();
            s.push_str(text);
            for line in &self.frame {
                s.push_str(line);
                s.push_str("\x1b[K\n");
            }
            self.drawn = self.frame.len();
            emit(&s);
        } else {
            emit(text);
        }
    }

    fn note(&mut self, text: &str, indent: &str) {
        let text = if self.live {
            let mut s = wrap(text, 78, indent).join("\n");
            s.push('\n');
            s
        } else {
            format!("{text}\n")
        };
        self.print_above(&text);
    }

    fn announce(&mut self, view: &View, phase: &PhaseText) {
        let title = view.phase_name(&phase.title);
        let text = if self.live {
            let mut s = format!("\n {BOLD}{CYAN}▶ {title}{RESET}\n");
            for line in wrap(&phase.text, 76, "   ") {
                s.push_str(&line);
                s.push('\n');
            }
            s
        } else {
            format!("== {title} ==\n   {}\n", phase.text)
        };
        self.print_above(&text);
    }

    fn draw(&mut self, frame: &[String]) {
        self.frame = frame.to_vec();
        let mut s = self.erase();
        for line in frame {
            s.push_str(line);
            s.push_str("\x1b[K\n");
        }
        self.drawn = frame.len();
        emit(&s);
    }

    /// Leaves the last frame on screen and restores the terminal.
    fn finish(&mut self) {
        if self.live {
            emit("\x1b[?7h\x1b[?25h");
            self.live = false;
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.finish();
    }
}

fn emit(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars() {
        assert_eq!(bar(1.0, 4), "████");
        assert!(bar(0.0, 4).ends_with(&format!("····{RESET}")));
        assert!(bar(0.5, 4).starts_with("██\x1b"));
    }

    #[test]
    fn wrapping() {
        assert_eq!(wrap("aa bb cc", 5, "-"), vec!["-aa bb", "-cc"]);
        assert_eq!(clip("abcdefg", 4), "a…fg");
        assert_eq!(clip("abc", 4), "abc");
    }
}
