//! The emulator: discovery answers, faults, and the state the control API changes.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::backend::{Backend, BackendMode};
use crate::http::{chunk, Conn, Head, Parked, Response};
use crate::llm::{Llm, LlmConfig};
use crate::script::{Action, Script, ScriptHandle};
use crate::server::{lock, reachable, Flow, Handler, Server};
use crate::types::{Endpoint, Fault, Paths};

/// The documented discovery path, up to the service name.
pub const DOCUMENTED_PREFIX: &str = "/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/";
/// The newer discovery path, up to the service name.
pub const NEW_PREFIX: &str = "/api/v1/servicediscovery/upstreams/";

/// Size of the padding [`Fault::Oversize`] puts before the answer.
const OVERSIZE_PADDING: usize = 17 * 1024 * 1024;

/// A backend started through the emulator, and what became of it.
pub(crate) struct BackendEntry {
    pub service: String,
    pub port: u16,
    /// `None` once killed ("dead").
    pub backend: Option<Backend>,
    /// Hits counted when it was killed.
    pub final_hits: u64,
    /// The LLM side of an LLM backend; it outlives a kill, so its counters stay readable.
    pub llm: Option<Llm>,
}

impl BackendEntry {
    pub fn to_json(&self) -> Value {
        let kind = if self.llm.is_some() { "llm" } else { "echo" };
        let (mode, hits) = match &self.backend {
            Some(b) => (Some(b.mode()), b.hits()),
            None => (None, self.final_hits),
        };
        let mut v = json!({"ip": "127.0.0.1", "port": self.port, "service": self.service,
                           "kind": kind, "mode": mode.map_or("dead", BackendMode::name),
                           "hits": hits});
        match mode {
            Some(BackendMode::Status(s)) => v["status"] = json!(s),
            Some(BackendMode::Throttle(s, secs)) => {
                v["status"] = json!(s);
                v["retry_after"] = json!(secs);
            }
            _ => {}
        }
        let received = self
            .backend
            .as_ref()
            .map_or_else(Vec::new, Backend::received);
        v["requests"] = Value::Array(received.iter().map(|r| r.to_json()).collect());
        if let Some(llm) = &self.llm {
            v["llm"] = llm.to_json();
        }
        v
    }
}

#[derive(Default)]
pub(crate) struct State {
    /// Service name -> items array, sent verbatim.
    pub services: BTreeMap<String, Value>,
    pub fault: Fault,
    pub paths: Paths,
    pub requests: u64,
    pub last_target: Option<String>,
    pub backends: Vec<BackendEntry>,
    /// A script started through the control API.
    pub script: Option<ScriptHandle>,
}

/// Everything the connection threads share.
pub(crate) struct Shared {
    /// Itself, for the scripts the control API starts.
    pub me: std::sync::Weak<Shared>,
    pub addr: SocketAddr,
    pub state: Mutex<State>,
    requests_cond: Condvar,
    /// Bumped on every fault change, so that parked requests notice without a lock.
    fault_gen: AtomicU64,
}

/// Which discovery path a request used.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Documented,
    New,
}

pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The discovery path kind and the service name of a request path, if it is one.
fn discovery_target(path: &str) -> Option<(Kind, String)> {
    let (kind, rest) = if let Some(rest) = path.strip_prefix(DOCUMENTED_PREFIX) {
        (Kind::Documented, rest)
    } else if let Some(rest) = path.strip_prefix(NEW_PREFIX) {
        (Kind::New, rest)
    } else {
        return None;
    };
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    Some((kind, percent_decode(rest)?))
}

/// The discovery answer body for `service` with these items.
fn answer_body(service: &str, items: &Value) -> Vec<u8> {
    json!({"correlative": [service], "endpoints": {"items": items}})
        .to_string()
        .into_bytes()
}

impl Shared {
    pub fn set_fault(&self, fault: Fault) {
        let mut st = lock(&self.state);
        st.fault = fault;
        self.fault_gen.fetch_add(1, Ordering::SeqCst);
    }

    fn fault(&self) -> (Fault, u64) {
        let st = lock(&self.state);
        (st.fault.clone(), self.fault_gen.load(Ordering::SeqCst))
    }

    fn fault_changed(&self, seen: u64) -> bool {
        self.fault_gen.load(Ordering::SeqCst) != seen
    }

    pub fn set_items(&self, service: &str, items: Value) {
        lock(&self.state)
            .services
            .insert(service.to_string(), items);
    }

    pub fn remove_service(&self, service: &str) {
        lock(&self.state).services.remove(service);
    }

    pub fn apply(&self, action: Action) {
        match action {
            Action::SetEndpoints { service, items } => {
                let items = items.iter().map(|e| e.to_item(&service)).collect();
                self.set_items(&service, Value::Array(items));
            }
            Action::SetRawItems { service, items } => self.set_items(&service, items),
            Action::Fault(f) => self.set_fault(f),
            Action::RemoveService(s) => self.remove_service(&s),
            Action::Paths(p) => lock(&self.state).paths = p,
        }
    }

    /// The answer body for `service`, or one with an empty list when it is unknown (faults
    /// that mangle an answer need one either way).
    fn body_or_empty(&self, service: &str) -> Vec<u8> {
        let st = lock(&self.state);
        let empty = Value::Array(Vec::new());
        answer_body(service, st.services.get(service).unwrap_or(&empty))
    }

    /// Starts `count` backends (LLM-like ones with `llm`) and lists them under `service`
    /// (weight 100), after the items it has (or instead of them when `replace`). Returns their
    /// ports.
    pub fn add_backends(
        &self,
        service: &str,
        count: usize,
        replace: bool,
        llm: Option<&LlmConfig>,
    ) -> io::Result<Vec<u16>> {
        let backends = (0..count)
            .map(|_| match llm {
                Some(c) => Backend::start_llm(c.clone()),
                None => Backend::start(),
            })
            .collect::<io::Result<Vec<_>>>()?;
        let ports: Vec<u16> = backends.iter().map(Backend::port).collect();
        let mut st = lock(&self.state);
        let items = st
            .services
            .entry(service.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if replace || !items.is_array() {
            *items = Value::Array(Vec::new());
        }
        if let Value::Array(items) = items {
            items.extend(
                ports
                    .iter()
                    .map(|p| Endpoint::new("127.0.0.1", *p, 100).to_item(service)),
            );
        }
        st.backends
            .extend(backends.into_iter().map(|b| BackendEntry {
                service: service.to_string(),
                port: b.port(),
                llm: b.llm().cloned(),
                backend: Some(b),
                final_hits: 0,
            }));
        Ok(ports)
    }

    /// Sets the mode of a backend started by the emulator; `None` kills it. False if no such
    /// backend. A dead backend's port may be given to a later one: the newest backend on a
    /// port is the one addressed.
    pub fn set_backend_mode(&self, port: u16, mode: Option<BackendMode>) -> bool {
        let killed = {
            let mut st = lock(&self.state);
            let Some(entry) = st.backends.iter_mut().rev().find(|e| e.port == port) else {
                return false;
            };
            match (mode, &entry.backend) {
                (Some(m), Some(b)) => {
                    b.set_mode(m);
                    None
                }
                // A dead backend stays dead.
                (Some(_), None) => None,
                (None, _) => {
                    let b = entry.backend.take();
                    entry.final_hits = b.as_ref().map_or(entry.final_hits, Backend::hits);
                    b
                }
            }
        };
        // Stopping joins its threads: do it outside the lock.
        if let Some(b) = killed {
            let hits = b.stop_counting();
            let mut st = lock(&self.state);
            if let Some(e) = st.backends.iter_mut().rev().find(|e| e.port == port) {
                e.final_hits = hits;
            }
        }
        true
    }

    pub fn llm(&self, port: u16) -> Option<Llm> {
        let st = lock(&self.state);
        st.backends
            .iter()
            .rev()
            .find(|e| e.port == port)?
            .llm
            .clone()
    }

    pub fn state_json(&self) -> Value {
        let st = lock(&self.state);
        let mut fault = st.fault.to_json();
        let obj = fault.as_object_mut().expect("an object");
        let mut v = json!({
            "services": st.services,
            "fault": obj.remove("fault").unwrap_or(Value::Null),
            "paths": st.paths.name(),
            "requests": st.requests,
            "last_request_target": st.last_target,
        });
        if let Some(s) = obj.remove("status") {
            v["status"] = s;
        }
        v
    }

    fn count_request(&self, target: &str) {
        let mut st = lock(&self.state);
        st.requests += 1;
        st.last_target = Some(target.to_string());
        self.requests_cond.notify_all();
    }

    /// Answers a discovery request (normally, or under the current fault).
    fn discovery(&self, conn: &mut Conn, head: Head, kind: Kind, service: &str) -> Flow {
        self.count_request(&head.target);
        let keep = head.keep_alive();
        let method = head.method.clone();
        let target = head.target.clone();
        let host = head.header("host").map(str::to_string);
        // Refuse and Reset close with the request unread; every other answer consumes it.
        let mut unread = Some(head);
        loop {
            let (fault, generation) = self.fault();
            let changed = || self.fault_changed(generation);
            if !matches!(fault, Fault::Refuse | Fault::Reset) {
                if let Some(h) = unread.take() {
                    if conn.read_request(h).is_err() {
                        return Flow::Close;
                    }
                }
            }
            let json = "application/json";
            let sent = match fault {
                Fault::None => self.normal(conn, &method, kind, service, keep),
                Fault::Refuse => return Flow::Close,
                Fault::Reset | Fault::Truncated => {
                    let body = self.body_or_empty(service);
                    let mut out = Response::new(200, json, "").head_bytes(body.len(), false);
                    out.extend_from_slice(&body[..body.len() / 2]);
                    if conn.write_all(&out).is_ok() && fault == Fault::Reset {
                        // Let the partial answer reach the client before the reset.
                        conn.sleep_unless(Duration::from_millis(20), &|| false);
                    }
                    return Flow::Close;
                }
                Fault::Status(s) => {
                    let text = format!("emulated fault: status {s}");
                    conn.send(&Response::text(s, &text), keep, false)
                }
                Fault::Html => conn.send(
                    &Response::new(200, "text/html; charset=utf-8", HTML),
                    keep,
                    false,
                ),
                Fault::InvalidJson => {
                    conn.send(&Response::new(200, json, "{not json"), keep, false)
                }
                Fault::WrongShape => conn.send(
                    &Response::new(200, json, r#"{"endpoints":{}}"#),
                    keep,
                    false,
                ),
                Fault::EmptyList => {
                    let body = answer_body(service, &json!([]));
                    conn.send(&Response::new(200, json, body), keep, false)
                }
                Fault::Hang => match conn.park(&changed) {
                    Parked::Aborted => continue,
                    Parked::Gone => return Flow::Close,
                },
                Fault::Trickle => {
                    let body = self.body_or_empty(service);
                    let head = Response::new(200, json, "").head_bytes(body.len(), false);
                    if conn.write_all_unless(&head, &changed).is_ok() {
                        for (i, b) in body.iter().enumerate() {
                            if i > 0 && !conn.sleep_unless(Duration::from_secs(1), &changed) {
                                break;
                            }
                            if conn.write_all_unless(&[*b], &changed).is_err() {
                                break;
                            }
                        }
                    }
                    return Flow::Close;
                }
                Fault::EndlessChunked => {
                    let _ = endless_chunked(conn, service, &changed);
                    return Flow::Close;
                }
                Fault::Oversize => oversize(conn, &self.body_or_empty(service), keep),
                Fault::Redirect => {
                    let host = host
                        .clone()
                        .unwrap_or_else(|| reachable(self.addr).to_string());
                    let resp = Response::empty(302)
                        .with_header("Location", format!("http://{host}{target}"));
                    conn.send(&resp, keep, false)
                }
            };
            return match sent {
                Ok(()) => Flow::keep_if(keep),
                Err(_) => Flow::Close,
            };
        }
    }

    /// The answer without a fault.
    fn normal(
        &self,
        conn: &mut Conn,
        method: &str,
        kind: Kind,
        service: &str,
        keep: bool,
    ) -> io::Result<()> {
        if method != "GET" && method != "HEAD" {
            let resp =
                Response::text(405, "discovery answers GET only").with_header("Allow", "GET, HEAD");
            return conn.send(&resp, keep, false);
        }
        let resp = {
            let st = lock(&self.state);
            let enabled = matches!(
                (st.paths, kind),
                (Paths::Both, _)
                    | (Paths::DocumentedOnly, Kind::Documented)
                    | (Paths::NewOnly, Kind::New)
            );
            match st.services.get(service) {
                Some(items) if enabled => {
                    Response::new(200, "application/json", answer_body(service, items))
                }
                Some(_) => Response::text(404, "this discovery path is disabled"),
                None => Response::text(404, &format!("service {service:?} not found")),
            }
        };
        conn.send(&resp, keep, method == "HEAD")
    }
}

/// The page [`Fault::Html`] sends.
const HTML: &str = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\
<body><h1>502 Bad Gateway</h1><p>emulated gateway page</p></body></html>\n";

fn endless_chunked(conn: &mut Conn, service: &str, changed: &dyn Fn() -> bool) -> io::Result<()> {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    conn.write_all_unless(head.as_bytes(), changed)?;
    let prefix = format!(
        "{{\"correlative\":[{}],\"endpoints\":{{\"items\":[",
        json!(service)
    );
    conn.write_all_unless(&chunk(prefix.as_bytes()), changed)?;
    let spaces = chunk(&[b' '; 16 * 1024]);
    loop {
        conn.write_all_unless(&spaces, changed)?;
    }
}

fn oversize(conn: &mut Conn, body: &[u8], keep: bool) -> io::Result<()> {
    let head =
        Response::new(200, "application/json", "").head_bytes(OVERSIZE_PADDING + body.len(), keep);
    conn.write_all(&head)?;
    let spaces = [b' '; 64 * 1024];
    let mut left = OVERSIZE_PADDING;
    while left > 0 {
        let k = left.min(spaces.len());
        conn.write_all(&spaces[..k])?;
        left -= k;
    }
    conn.write_all(body)
}

impl Handler for Shared {
    fn handle(&self, conn: &mut Conn, head: Head) -> Flow {
        let path = head.path().to_string();
        if path == "/_emulator" || path.starts_with("/_emulator/") {
            return crate::control::handle(self, conn, head);
        }
        if let Some((kind, service)) = discovery_target(&path) {
            return self.discovery(conn, head, kind, &service);
        }
        let Ok(req) = conn.read_request(head) else {
            return Flow::Close;
        };
        let keep = req.head.keep_alive();
        let head_only = req.head.method == "HEAD";
        match conn.send(&Response::text(404, "not found"), keep, head_only) {
            Ok(()) => Flow::keep_if(keep),
            Err(_) => Flow::Close,
        }
    }
}

/// An EAS discovery server on a local port, with faults on demand; see the crate documentation.
///
/// Thread-safe: every method takes `&self`. Dropping it stops it, like [`Emulator::stop`]: the
/// listener is closed, connection threads (parked ones included) end within about 100 ms and
/// are joined, and backends started through it are stopped.
pub struct Emulator {
    server: Server,
    shared: Arc<Shared>,
}

impl Emulator {
    /// Starts an emulator on `127.0.0.1` and a free port.
    pub fn start() -> io::Result<Emulator> {
        Emulator::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }

    /// Starts an emulator on `addr` (port 0 picks a free port).
    pub fn bind(addr: SocketAddr) -> io::Result<Emulator> {
        let (server, shared) = Server::bind(addr, "easdirect-emulator", |addr| {
            Arc::new_cyclic(|me| Shared {
                me: me.clone(),
                addr,
                state: Mutex::new(State::default()),
                requests_cond: Condvar::new(),
                fault_gen: AtomicU64::new(0),
            })
        })?;
        Ok(Emulator { server, shared })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `"127.0.0.1:PORT"`: the address to connect to (loopback when bound to a wildcard), as
    /// it goes after `eas://`.
    pub fn endpoint(&self) -> String {
        reachable(self.addr()).to_string()
    }

    /// `"eas://127.0.0.1:PORT/{service}"`: a libeasdirect target for `service`.
    pub fn target(&self, service: &str) -> String {
        format!("eas://{}/{service}", self.endpoint())
    }

    /// Replaces the instance list of `service` (an empty list keeps the service known: it
    /// answers an empty items array).
    pub fn set_endpoints(&self, service: &str, items: Vec<Endpoint>) {
        self.shared.apply(Action::SetEndpoints {
            service: service.to_string(),
            items,
        });
    }

    /// Replaces the items of `service` with `items`, sent verbatim as the `items` value (for
    /// malformed-item tests; it need not even be an array).
    pub fn set_raw_items(&self, service: &str, items: Value) {
        self.shared.set_items(service, items);
    }

    /// Forgets `service`: it answers 404 from now on.
    pub fn remove_service(&self, service: &str) {
        self.shared.remove_service(service);
    }

    /// Applies `fault` to every discovery request from now on (requests parked by
    /// [`Fault::Hang`] are answered under the new fault; trickling and endless answers end).
    pub fn set_fault(&self, fault: Fault) {
        self.shared.set_fault(fault);
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        self.shared.fault().0
    }

    /// Chooses which discovery paths answer.
    pub fn set_paths(&self, paths: Paths) {
        self.shared.apply(Action::Paths(paths));
    }

    /// Discovery requests received so far: every request on a discovery path whose head
    /// arrived, whatever the answer (404s and faults included, `Refuse` too); control-API and
    /// other requests are not counted.
    pub fn requests(&self) -> u64 {
        lock(&self.shared.state).requests
    }

    /// The target (path and query) of the last discovery request, e.g. to check
    /// `?internal=true`.
    pub fn last_request_target(&self) -> Option<String> {
        lock(&self.shared.state).last_target.clone()
    }

    /// Blocks until [`requests`](Emulator::requests) is at least `n`, at most `timeout`;
    /// returns whether it is.
    pub fn wait_for_requests(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        while st.requests < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .requests_cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Plays `script` on a background thread; the handle stops it when dropped.
    pub fn run_script(&self, script: Script) -> ScriptHandle {
        let shared = self.shared.clone();
        ScriptHandle::spawn(script, move |a| shared.apply(a))
    }

    /// The state as `GET /_emulator/state` reports it:
    /// `{"services":{name:items},"fault":"none","paths":"both","requests":N,"last_request_target":..}`
    /// (plus `"status"` for a status fault).
    pub fn state(&self) -> Value {
        self.shared.state_json()
    }

    /// Starts `count` [`Backend`]s and adds them to `service`'s list (weight 100), after the
    /// items it already has; returns their ports. They stop with the emulator.
    pub fn add_backends(&self, service: &str, count: usize) -> io::Result<Vec<u16>> {
        self.shared.add_backends(service, count, false, None)
    }

    /// Starts `count` LLM-like backends ([`Backend::start_llm`]) with `config` and adds them to
    /// `service`'s list like [`add_backends`](Emulator::add_backends); returns their ports.
    ///
    /// # Panics
    /// When `config` does not [`validate`](LlmConfig::validate).
    pub fn add_llm_backends(
        &self,
        service: &str,
        count: usize,
        config: &LlmConfig,
    ) -> io::Result<Vec<u16>> {
        self.shared
            .add_backends(service, count, false, Some(config))
    }

    /// The LLM side (settings, counters) of an LLM backend started by
    /// [`add_llm_backends`](Emulator::add_llm_backends), killed or not.
    pub fn llm(&self, port: u16) -> Option<Llm> {
        self.shared.llm(port)
    }

    /// Sets the mode of a backend started by [`add_backends`](Emulator::add_backends); false if
    /// there is none on `port` (a killed one stays dead).
    pub fn set_backend_mode(&self, port: u16, mode: BackendMode) -> bool {
        self.shared.set_backend_mode(port, Some(mode))
    }

    /// Stops a backend started by [`add_backends`](Emulator::add_backends), leaving it listed
    /// under its service (connections to it are refused); false if there is none on `port`.
    pub fn kill_backend(&self, port: u16) -> bool {
        self.shared.set_backend_mode(port, None)
    }

    /// Requests received by a backend started by [`add_backends`](Emulator::add_backends).
    pub fn backend_hits(&self, port: u16) -> Option<u64> {
        let st = lock(&self.shared.state);
        let e = st.backends.iter().rev().find(|e| e.port == port)?;
        Some(e.backend.as_ref().map_or(e.final_hits, Backend::hits))
    }

    /// Stops it (see [`Emulator`]); returns within about 100 ms plus the time to stop the
    /// backends it started.
    pub fn stop(self) {}
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.shutdown();
        let (script, backends) = {
            let mut st = lock(&self.shared.state);
            (st.script.take(), std::mem::take(&mut st.backends))
        };
        drop(script);
        drop(backends);
    }
}
