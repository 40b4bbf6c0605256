//! Runs rnacos (a Nacos server in Rust) on loopback ports and registers instances in it over
//! its HTTP API, with heartbeats. Shared by tests/nacos_rnacos.rs and benches/nacos.rs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const GROUP: &str = "pai-eas";
/// rnacos marks an ephemeral instance unhealthy after this long without a heartbeat.
pub const HEALTH_TIMEOUT_S: u64 = 3;

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

pub struct Rnacos {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    /// Whether the open API wants a login (user `admin`, password `admin`).
    auth: bool,
}

impl Rnacos {
    pub fn start() -> Rnacos {
        Rnacos::start_as(false)
    }

    /// A server whose HTTP and gRPC APIs want a login token (user `admin`, password `admin`).
    #[allow(dead_code)]
    pub fn start_with_auth() -> Rnacos {
        Rnacos::start_as(true)
    }

    fn start_as(auth: bool) -> Rnacos {
        let port = free_port_triple();
        let dir =
            std::env::temp_dir().join(format!("easdirect-rnacos-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Rnacos {
            child: None,
            port,
            dir,
            auth,
        };
        server.spawn();
        server
    }

    pub fn spawn(&mut self) {
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
            .env("RNACOS_ENABLE_OPEN_API_AUTH", self.auth.to_string())
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

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/nacos", self.port)
    }

    pub fn addr(&self) -> String {
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
pub struct Registry {
    service: String,
    servers: Vec<String>,
    weights: Mutex<BTreeMap<u16, f64>>,
    beating: Mutex<BTreeMap<u16, bool>>,
    stop: AtomicBool,
    /// The login token every request carries, for a server that wants one.
    token: Mutex<Option<String>>,
}

impl Registry {
    pub fn new(service: &str, servers: &[&Rnacos]) -> Arc<Registry> {
        let registry = Arc::new(Registry {
            service: service.to_owned(),
            servers: servers.iter().map(|s| s.base()).collect(),
            weights: Mutex::default(),
            beating: Mutex::default(),
            stop: AtomicBool::new(false),
            token: Mutex::default(),
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

    /// Logs in at the first server; every request carries the token from now on.
    #[allow(dead_code)]
    pub fn login(&self, username: &str, password: &str) {
        let url = format!("{}/v1/auth/users/login", self.servers[0]);
        // A server just started has no users until its store is up (seconds; longer while many
        // servers start at once on a loaded machine): tried for a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(45);
        let body = loop {
            match ureq::post(&url).send_form(&[("username", username), ("password", password)]) {
                Ok(answer) => break answer.into_string().expect("an answer"),
                Err(e) if std::time::Instant::now() > deadline => panic!("login: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let answer: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
        let token = answer["accessToken"].as_str().expect("a token").to_owned();
        *self.token.lock().unwrap() = Some(token);
    }

    fn params(&self, port: u16, weight: f64) -> Vec<(&'static str, String)> {
        let token = self.token.lock().unwrap().clone();
        let mut params = self.instance_params(port, weight);
        params.extend(token.map(|t| ("accessToken", t)));
        params
    }

    fn instance_params(&self, port: u16, weight: f64) -> Vec<(&'static str, String)> {
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

    /// One request, tried again twice when it timed out (a loaded machine can make rnacos
    /// miss a 2 s timeout); a stopped server's refusal is final.
    fn send(&self, method: &str, base: &str, path: &str, params: &[(&str, String)]) -> bool {
        for _ in 0..3 {
            let mut req =
                ureq::request(method, &format!("{base}{path}")).timeout(Duration::from_secs(2));
            for (k, v) in params {
                req = req.query(k, v);
            }
            match req.call() {
                Ok(_) => return true,
                Err(ureq::Error::Transport(t)) if t.kind() != ureq::ErrorKind::ConnectionFailed => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(_) => return false,
            }
        }
        false
    }

    pub fn register(&self, port: u16, weight: f64) {
        self.weights.lock().unwrap().insert(port, weight);
        self.beating.lock().unwrap().insert(port, true);
        self.on_servers("POST", &self.params(port, weight));
    }

    pub fn set_weight(&self, port: u16, weight: f64) {
        self.weights.lock().unwrap().insert(port, weight);
        self.on_servers("PUT", &self.params(port, weight));
    }

    pub fn deregister(&self, port: u16) {
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

    pub fn stop_heartbeats(&self, port: u16) {
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
