//! Nacos against EAS on the same snapshot path; how soon a registration is picked, by push and
//! by polling, beside the official Python client's subscribe callback; what one idle client asks
//! of the server per minute; what 100 clients cost a process.
//! Run: `make bench-nacos` (needs rnacos and the nacos-sdk-python venv; `make tools` installs
//! them). Plain program: prints tables.

use std::hint::black_box;
use std::time::{Duration, Instant};

use easdirect::{Client, Options, Transport};
use easdirect_emulator::{Emulator, Endpoint};

#[path = "../tests/support/rnacos.rs"]
mod rnacos;
use rnacos::{Registry, Rnacos};

const N: u16 = 100;
const PICKS: u32 = 2_000_000;
const RUNS: usize = 9;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ns_per_pick(c: &Client) -> f64 {
    let mut out = c.select().unwrap();
    median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..PICKS {
                    c.select_into(&[], &mut out).unwrap();
                    black_box(&out);
                }
                start.elapsed().as_nanos() as f64 / f64::from(PICKS)
            })
            .collect(),
    )
}

fn options(refresh_ms: u32) -> Options {
    let mut o = Options::new();
    o.set("refresh_interval_ms", &refresh_ms.to_string())
        .unwrap();
    o
}

fn main() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(
        "svc",
        (0..N)
            .map(|i| Endpoint::new("127.0.0.1", 20_000 + i, 100))
            .collect(),
    );
    let server = Rnacos::start();
    let reg = Registry::new("svc", &[&server]);
    for i in 0..N {
        reg.register(20_000 + i, 1.0);
    }
    let eas = Client::new(&format!("eas://{}/svc", emu.endpoint()), &options(1000)).unwrap();
    let nacos = Client::new(&format!("nacos://{}/svc", server.addr()), &options(1000)).unwrap();
    eas.wait_ready(Duration::from_secs(10)).unwrap();
    nacos.wait_ready(Duration::from_secs(10)).unwrap();
    while nacos.instances().unwrap().len() < usize::from(N) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (e, n) = (ns_per_pick(&eas), ns_per_pick(&nacos));
    println!("select, {N} instances, 1 thread, median of {RUNS} x {PICKS} picks:");
    println!("  eas://   {e:6.2} ns/pick");
    println!("  nacos:// {n:6.2} ns/pick   (nacos/eas = {:.2})", n / e);

    registration_to_pick(&server, &reg);
    server_requests(&server);
    many_clients(&server);
}

/// Milliseconds at the median and the 99th percentile (the largest of 20).
fn p50_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.99))
}

const ROUNDS: u16 = 20;

/// A registration in rnacos, then the first pick of the new instance (or the Python client's
/// subscribe callback naming it), over ROUNDS registrations spread over the refresh cycle.
fn registration_to_pick(server: &Rnacos, reg: &Registry) {
    println!("registration in rnacos -> first pick of the new instance, {ROUNDS} registrations:");
    let modes: [(&str, &str, u32); 3] = [
        ("push (auto), polling 60 s", "auto", 60_000),
        ("polling 1 s", "http", 1000),
        ("polling 5 s", "http", 5000),
    ];
    for (m, (label, transport, refresh_ms)) in modes.iter().enumerate() {
        let mut o = options(*refresh_ms);
        o.set("nacos_transport", transport).unwrap();
        let c = Client::new(&format!("nacos://{}/svc", server.addr()), &o).unwrap();
        c.wait_ready(Duration::from_secs(10)).unwrap();
        if *transport == "auto" {
            while c.transport().unwrap() != Transport::Push {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let mut samples = Vec::new();
        for round in 0..ROUNDS {
            let port = 30_000 + m as u16 * 100 + round;
            // Registrations at evenly spread points of the refresh cycle (the last poll saw the
            // previous deregistration); of a second for push (rnacos pushes on a 500 ms tick).
            let cycle = if *transport == "auto" {
                1000
            } else {
                u64::from(*refresh_ms)
            };
            std::thread::sleep(Duration::from_millis(
                cycle * u64::from(round) / u64::from(ROUNDS),
            ));
            let start = Instant::now();
            reg.register(port, 1000.0); // heavy, so that it is picked as soon as it is known
            while c.select().unwrap().port != port {
                std::thread::sleep(Duration::from_micros(200));
            }
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
            reg.deregister(port);
            while c.instances().unwrap().iter().any(|i| i.port == port) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let (p50, p99) = p50_p99(samples);
        println!("  {label:<28} p50 {p50:7.1} ms  p99 {p99:7.1} ms");
    }
    match python_subscriber(server, reg) {
        Ok((p50, p99)) => println!(
            "  {:<28} p50 {p50:7.1} ms  p99 {p99:7.1} ms",
            "nacos-sdk-python callback"
        ),
        Err(why) => println!("  nacos-sdk-python callback: not measured ({why})"),
    }
}

/// The same registrations seen through the official Python client's subscribe callback.
fn python_subscriber(server: &Rnacos, reg: &Registry) -> Result<(f64, f64), String> {
    use std::io::BufRead;
    let python = std::env::var_os("EASDIRECT_NACOS_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap();
            std::path::Path::new(&home).join(".cache/easdirect/nacos-py/bin/python")
        });
    if !python.exists() {
        return Err(format!("no {}", python.display()));
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nacos/subscribe_grpc.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .arg(server.addr())
        .args(["svc", rnacos::GROUP])
        .arg(&server.dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send((Instant::now(), line));
        }
    });
    let wait = |until: &dyn Fn(&str) -> bool| -> Result<Instant, String> {
        loop {
            let (at, line) = rx
                .recv_timeout(Duration::from_secs(20))
                .map_err(|_| "no callback within 20 s".to_string())?;
            if until(&line) {
                return Ok(at);
            }
        }
    };
    wait(&|l: &str| l == "subscribed")?;
    let mut samples = Vec::new();
    for round in 0..ROUNDS {
        let port = 30_900 + round;
        std::thread::sleep(Duration::from_millis(
            1000 * u64::from(round) / u64::from(ROUNDS),
        ));
        let start = Instant::now();
        reg.register(port, 1000.0);
        let has =
            |l: &str| l.starts_with("ports") && l.split([' ', ',']).any(|p| p == port.to_string());
        let at = wait(&has)?;
        samples.push(at.duration_since(start).as_secs_f64() * 1000.0);
        reg.deregister(port);
        wait(&|l: &str| l.starts_with("ports") && !has(l))?;
    }
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(p50_p99(samples))
}

/// Requests one idle client makes to the server in 30 s, scaled to a minute: HTTP requests, and
/// gRPC calls (HTTP/2 HEADERS frames of new streams, the push stream's answers not counted),
/// counted by a proxy in front of the server's two ports.
fn server_requests(server: &Rnacos) {
    println!("requests the server receives from one idle client, per minute (30 s counted):");
    for (label, transport) in [("push (auto)", "auto"), ("polling 5 s", "http")] {
        let proxy = CountingProxy::start(server.port);
        let mut o = options(5000);
        o.set("nacos_transport", transport).unwrap();
        o.set("grpc_port", &proxy.grpc_port.to_string()).unwrap();
        let c = Client::new(&format!("nacos://127.0.0.1:{}/svc", proxy.http_port), &o).unwrap();
        c.wait_ready(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let (h0, g0) = proxy.counts();
        std::thread::sleep(Duration::from_secs(30));
        let (h1, g1) = proxy.counts();
        println!(
            "  {label:<14} HTTP {:5.1}/min  gRPC {:5.1}/min",
            (h1 - h0) as f64 * 2.0,
            (g1 - g0) as f64 * 2.0
        );
        drop(c);
    }
}

/// 100 clients of one service in this process: threads and resident memory they add.
fn many_clients(server: &Rnacos) {
    println!("100 nacos:// clients in one process (threads, resident memory added):");
    for (label, transport) in [("push (auto)", "auto"), ("polling 5 s", "http")] {
        let (t0, m0) = (threads(), rss_kib());
        let mut o = options(5000);
        o.set("nacos_transport", transport).unwrap();
        let clients: Vec<Client> = (0..100)
            .map(|_| Client::new(&format!("nacos://{}/svc", server.addr()), &o).unwrap())
            .collect();
        for c in &clients {
            c.wait_ready(Duration::from_secs(20)).unwrap();
            if transport == "auto" {
                while c.transport().unwrap() != Transport::Push {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        std::thread::sleep(Duration::from_secs(6)); // a refresh cycle and a keep-alive
        let (t1, m1) = (threads(), rss_kib());
        println!(
            "  {label:<14} threads +{} (now {t1}), memory +{:.1} MiB",
            t1.saturating_sub(t0),
            (m1.saturating_sub(m0)) as f64 / 1024.0
        );
        drop(clients);
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Forwards two loopback ports to rnacos's HTTP and gRPC ports and counts the requests.
struct CountingProxy {
    http_port: u16,
    grpc_port: u16,
    http: std::sync::Arc<std::sync::atomic::AtomicU64>,
    grpc: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CountingProxy {
    fn start(rnacos_http: u16) -> CountingProxy {
        use std::sync::atomic::AtomicU64;
        use std::sync::Arc;
        let http = Arc::new(AtomicU64::new(0));
        let grpc = Arc::new(AtomicU64::new(0));
        let http_port = forward(rnacos_http, http.clone(), count_http, 0);
        // The client's HTTP/2 connection preface (24 bytes) comes before the frames.
        let grpc_port = forward(rnacos_http + 1000, grpc.clone(), count_h2_headers, 24);
        CountingProxy {
            http_port,
            grpc_port,
            http,
            grpc,
        }
    }

    fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.http.load(Ordering::Relaxed),
            self.grpc.load(Ordering::Relaxed),
        )
    }
}

/// Counts request lines in a client's bytes (each chunk scanned on its own: good enough for
/// small requests).
fn count_http(state: &mut Vec<u8>, bytes: &[u8]) -> u64 {
    let _ = state;
    bytes.windows(10).filter(|w| w == b" HTTP/1.1\r").count() as u64
}

/// Counts HTTP/2 HEADERS frames opening a stream (new requests) in a client's bytes.
fn count_h2_headers(state: &mut Vec<u8>, bytes: &[u8]) -> u64 {
    state.extend_from_slice(bytes);
    let mut n = 0;
    loop {
        if state.len() < 9 {
            return n;
        }
        let len =
            (usize::from(state[0]) << 16) | (usize::from(state[1]) << 8) | usize::from(state[2]);
        if state.len() < 9 + len {
            return n;
        }
        if state[3] == 1 {
            n += 1;
        }
        state.drain(..9 + len);
    }
}

fn forward(
    to: u16,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
    count: fn(&mut Vec<u8>, &[u8]) -> u64,
    preface: usize,
) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut down) = conn else { continue };
            let Ok(mut up) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let (mut down2, mut up2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                let mut state = Vec::new();
                let mut preface = preface;
                while let Ok(n) = down.read(&mut buf) {
                    if n == 0 || up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let skip = preface.min(n);
                    preface -= skip;
                    let got = count(&mut state, &buf[skip..n]);
                    counter.fetch_add(got, std::sync::atomic::Ordering::Relaxed);
                }
                let _ = up.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n) = up2.read(&mut buf) {
                    if n == 0 || down2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = down2.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}
