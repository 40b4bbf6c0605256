//! The Nacos source against a real Nacos-compatible server: rnacos (a Nacos server in Rust
//! speaking the 1.x HTTP API), installed by `make test` into ~/.cache/easdirect and started here
//! on loopback ports the test picks. Instances are registered over its HTTP API and kept alive
//! by heartbeats, as ephemeral instances are in production.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use easdirect::{Client, Options};

const GROUP: &str = "pai-eas";
/// rnacos marks an ephemeral instance unhealthy after this long without a heartbeat.
const HEALTH_TIMEOUT_S: u64 = 3;

fn rnacos_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EASDIRECT_RNACOS") {
        return path.into();
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    Path::new(&home).join(".cache/easdirect/tools/rnacos-0.8.8/bin/rnacos")
}

fn free_port_triple() -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p > 60_000 {
            continue;
        }
        let others: Vec<_> = [p + 1000, p + 2000]
            .iter()
            .filter_map(|q| TcpListener::bind(("127.0.0.1", *q)).ok())
            .collect();
        if others.len() == 2 {
            return p;
        }
    }
    panic!("no free port triple");
}

struct Rnacos {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Rnacos {
    fn start() -> Rnacos {
        let port = free_port_triple();
        let dir =
            std::env::temp_dir().join(format!("easdirect-rnacos-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Rnacos {
            child: None,
            port,
            dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let binary = rnacos_binary();
        assert!(
            binary.exists(),
            "rnacos not found at {}: `make test` installs it (or set EASDIRECT_RNACOS)",
            binary.display()
        );
        let p = self.port;
        let child = Command::new(binary)
            .current_dir(&self.dir) // rnacos reads a .env file from its working directory
            .env("RNACOS_HTTP_PORT", p.to_string())
            .env("RNACOS_GRPC_PORT", (p + 1000).to_string())
            .env("RNACOS_HTTP_CONSOLE_PORT", (p + 2000).to_string())
            .env("RNACOS_SDK_HOST", "127.0.0.1")
            .env("RNACOS_CONSOLE_HOST", "127.0.0.1")
            .env("RNACOS_RAFT_NODE_ADDR", format!("127.0.0.1:{}", p + 1000))
            .env("RNACOS_DATA_DIR", self.dir.join("data"))
            .env(
                "RNACOS_NAMING_HEALTH_TIMEOUT_SECOND",
                HEALTH_TIMEOUT_S.to_string(),
            )
            .env("RNACOS_NAMING_INSTANCE_TIMEOUT_SECOND", "60")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rnacos starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/v1/ns/instance/list?serviceName=probe", self.base());
        loop {
            match ureq::get(&url).timeout(Duration::from_secs(1)).call() {
                Ok(_) | Err(ureq::Error::Status(..)) => return,
                Err(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "rnacos did not come up on port {p}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/nacos", self.port)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Rnacos {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Registered instances (port -> weight) of one service, kept alive by a heartbeat thread on
/// every server given; an instance taken out of `beating` stops getting heartbeats.
struct Registry {
    service: String,
    servers: Vec<String>,
    weights: Mutex<BTreeMap<u16, f64>>,
    beating: Mutex<BTreeMap<u16, bool>>,
    stop: AtomicBool,
}

impl Registry {
    fn new(service: &str, servers: &[&Rnacos]) -> Arc<Registry> {
        let registry = Arc::new(Registry {
            service: service.to_owned(),
            servers: servers.iter().map(|s| s.base()).collect(),
            weights: Mutex::default(),
            beating: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let r = registry.clone();
        std::thread::spawn(move || {
            while !r.stop.load(Ordering::Relaxed) {
                r.beat_all();
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        registry
    }

    fn params(&self, port: u16, weight: f64) -> Vec<(&'static str, String)> {
        vec![
            ("namespaceId", "public".into()),
            ("groupName", GROUP.into()),
            ("serviceName", self.service.clone()),
            ("clusterName", "DEFAULT".into()),
            ("ip", "127.0.0.1".into()),
            ("port", port.to_string()),
            ("weight", weight.to_string()),
            ("ephemeral", "true".into()),
            ("enabled", "true".into()),
            ("healthy", "true".into()),
        ]
    }

    fn send(&self, method: &str, base: &str, path: &str, params: &[(&str, String)]) -> bool {
        let mut req =
            ureq::request(method, &format!("{base}{path}")).timeout(Duration::from_secs(2));
        for (k, v) in params {
            req = req.query(k, v);
        }
        req.call().is_ok()
    }

    fn register(&self, port: u16, weight: f64) {
        self.weights.lock().unwrap().insert(port, weight);
        self.beating.lock().unwrap().insert(port, true);
        self.on_servers("POST", &self.params(port, weight));
    }

    fn set_weight(&self, port: u16, weight: f64) {
        self.weights.lock().unwrap().insert(port, weight);
        self.on_servers("PUT", &self.params(port, weight));
    }

    fn deregister(&self, port: u16) {
        let weight = self.weights.lock().unwrap().remove(&port).unwrap();
        self.beating.lock().unwrap().remove(&port);
        self.on_servers("DELETE", &self.params(port, weight));
    }

    /// Sends to every server; at least one (the running ones) must accept.
    fn on_servers(&self, method: &str, params: &[(&str, String)]) {
        let accepted = self
            .servers
            .iter()
            .filter(|base| self.send(method, base, "/v1/ns/instance", params))
            .count();
        assert!(
            accepted > 0,
            "{method} /v1/ns/instance accepted by no server"
        );
    }

    fn stop_heartbeats(&self, port: u16) {
        self.beating.lock().unwrap().insert(port, false);
    }

    fn beat_all(&self) {
        let weights = self.weights.lock().unwrap().clone();
        let beating = self.beating.lock().unwrap().clone();
        for (port, weight) in weights {
            if !beating.get(&port).copied().unwrap_or(false) {
                continue;
            }
            let beat = serde_json::json!({
                "serviceName": format!("{GROUP}@@{}", self.service),
                "ip": "127.0.0.1", "port": port, "cluster": "DEFAULT", "weight": weight,
                "ephemeral": true,
            })
            .to_string();
            let mut params = self.params(port, weight);
            params.retain(|(k, _)| *k != "serviceName");
            params.push(("serviceName", format!("{GROUP}@@{}", self.service)));
            params.push(("beat", beat));
            for base in &self.servers {
                // A server that lost the instance (restarted) gets it registered again.
                if !self.send("PUT", base, "/v1/ns/instance/beat", &params) {
                    self.send("POST", base, "/v1/ns/instance", &self.params(port, weight));
                }
            }
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn client(servers: &[&Rnacos], service: &str) -> Client {
    let mut o = Options::new();
    o.set("refresh_interval_ms", "100").unwrap();
    o.set("request_timeout_ms", "1000").unwrap();
    let hosts: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    Client::new(&format!("nacos://{}/{service}", hosts.join(",")), &o).unwrap()
}

fn listed(c: &Client) -> Vec<(u16, u32)> {
    let mut v: Vec<(u16, u32)> = c
        .instances()
        .unwrap()
        .iter()
        .map(|i| (i.port, i.weight))
        .collect();
    v.sort_unstable();
    v
}

fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn follows_registrations_weights_and_health() {
    let server = Rnacos::start();
    let reg = Registry::new("svc-follow", &[&server]);
    for port in [9001, 9002, 9003] {
        reg.register(port, 1.0);
    }
    let c = client(&[&server], "svc-follow");
    c.wait_ready(Duration::from_secs(10)).unwrap();
    let five = Duration::from_secs(5);
    eventually("three instances", five, || listed(&c).len() == 3);
    assert_eq!(listed(&c), vec![(9001, 1000), (9002, 1000), (9003, 1000)]);

    reg.register(9004, 0.5);
    eventually("scale-up", five, || listed(&c).contains(&(9004, 500)));
    reg.set_weight(9001, 3.0);
    eventually("a weight change", five, || {
        listed(&c).contains(&(9001, 3000))
    });
    reg.deregister(9002);
    eventually("scale-down", five, || {
        !listed(&c).iter().any(|&(p, _)| p == 9002)
    });

    // No more heartbeats: rnacos marks it unhealthy, and unhealthy is not present.
    reg.stop_heartbeats(9003);
    eventually(
        "an instance without heartbeats leaves",
        Duration::from_secs(HEALTH_TIMEOUT_S + 10),
        || !listed(&c).iter().any(|&(p, _)| p == 9003),
    );
    assert_eq!(listed(&c), vec![(9001, 3000), (9004, 500)]);

    // The same selection, ejection and exclusion behaviour as an eas:// target.
    let all = c.instances().unwrap();
    let heavy = all.iter().find(|i| i.port == 9001).unwrap().id;
    let picks: Vec<u16> = (0..7).map(|_| c.select().unwrap().port).collect();
    assert_eq!(
        picks.iter().filter(|&&p| p == 9001).count(),
        6,
        "3000:500 is 6:1"
    );
    c.report_failure(heavy).unwrap();
    for _ in 0..20 {
        assert_eq!(c.select().unwrap().port, 9004);
    }
    let mut out = all[0];
    let ids: Vec<u64> = all.iter().map(|i| i.id).collect();
    assert!(c.select_into(&ids, &mut out).is_err());
}

#[test]
fn keeps_its_list_while_the_server_is_stopped_and_restarted() {
    let mut server = Rnacos::start();
    let reg = Registry::new("svc-restart", &[&server]);
    reg.register(9101, 1.0);
    reg.register(9102, 1.0);
    let c = client(&[&server], "svc-restart");
    c.wait_ready(Duration::from_secs(10)).unwrap();
    eventually("two instances", Duration::from_secs(5), || {
        listed(&c).len() == 2
    });
    let before = listed(&c);

    server.stop();
    let failed = c.stats().unwrap().refresh_failed;
    eventually("fetches fail", Duration::from_secs(5), || {
        c.stats().unwrap().refresh_failed > failed + 3
    });
    assert_eq!(listed(&c), before, "the cache is kept");
    assert!(c.select().is_ok());
    assert!(c.last_error().unwrap().is_some());

    server.spawn();
    let ok = c.stats().unwrap().refresh_ok;
    eventually("fetches succeed again", Duration::from_secs(15), || {
        c.stats().unwrap().refresh_ok > ok && c.last_error().unwrap().is_none()
    });
    eventually("the list is back", Duration::from_secs(10), || {
        listed(&c) == before
    });
}

#[test]
fn discovery_goes_on_through_the_other_server_when_one_stops() {
    let mut first = Rnacos::start();
    let second = Rnacos::start();
    let reg = Registry::new("svc-two", &[&first, &second]);
    reg.register(9201, 1.0);
    reg.register(9202, 2.0);
    let c = client(&[&first, &second], "svc-two");
    c.wait_ready(Duration::from_secs(10)).unwrap();
    eventually("both instances", Duration::from_secs(5), || {
        listed(&c).len() == 2
    });
    first.stop();
    let (ok, failed) = {
        let s = c.stats().unwrap();
        (s.refresh_ok, s.refresh_failed)
    };
    eventually("ten more good fetches", Duration::from_secs(10), || {
        c.stats().unwrap().refresh_ok >= ok + 10
    });
    assert_eq!(
        c.stats().unwrap().refresh_failed,
        failed,
        "failover within each fetch"
    );
    reg.register(9203, 1.0);
    eventually(
        "a change seen through the second server",
        Duration::from_secs(5),
        || listed(&c).len() == 3,
    );
}

/// The Python interpreter of a venv with nacos-sdk-python (`make test` prepares it).
fn nacos_python() -> PathBuf {
    if let Some(path) = std::env::var_os("EASDIRECT_NACOS_PYTHON") {
        return path.into();
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    Path::new(&home).join(".cache/easdirect/nacos-py/bin/python")
}

#[test]
fn sees_instances_registered_by_the_official_python_client_over_grpc() {
    let python = nacos_python();
    assert!(
        python.exists(),
        "no Python with nacos-sdk-python at {}: `make test` prepares it (or set EASDIRECT_NACOS_PYTHON)",
        python.display()
    );
    let server = Rnacos::start();
    // One instance over HTTP with heartbeats, two over gRPC by the Python client.
    let reg = Registry::new("svc-grpc", &[&server]);
    reg.register(9300, 1.0);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nacos/register_grpc.py");
    let mut registrar = Command::new(&python)
        .arg(script)
        .arg(format!("127.0.0.1:{}", server.port))
        .args(["svc-grpc", GROUP])
        .arg(&server.dir)
        .args(["9301", "9302*2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the registrar starts");
    let mut line = String::new();
    BufReader::new(registrar.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "registered",
        "the Python client could not register"
    );

    let c = client(&[&server], "svc-grpc");
    c.wait_ready(Duration::from_secs(10)).unwrap();
    eventually("all three", Duration::from_secs(10), || {
        listed(&c) == vec![(9300, 1000), (9301, 1000), (9302, 2000)]
    });
    // The Python client goes away: its gRPC connection closes and its instances leave.
    drop(registrar.stdin.take());
    let _ = registrar.wait();
    eventually(
        "the gRPC instances leave",
        Duration::from_secs(HEALTH_TIMEOUT_S + 20),
        || listed(&c) == vec![(9300, 1000)],
    );
}
