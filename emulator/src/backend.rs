//! Backends: real local HTTP servers standing in for a service's instances.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;

use crate::http::{Conn, Head, Parked, Response};
use crate::llm::{Llm, LlmConfig};
use crate::server::{lock, Flow, Handler, Server};

/// How a [`Backend`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendMode {
    /// 200 with the JSON description of the request (the default); an LLM backend serves it
    /// as an LLM would (see [`Llm`]).
    #[default]
    Ok,
    /// This status (e.g. 503, 429, 404) with the same JSON body plus `"status"`, at once (an
    /// LLM backend neither queues nor serves the request).
    Status(u16),
    /// This status (429 or 503, say) with a `Retry-After` of these seconds, otherwise as
    /// [`Status`](BackendMode::Status).
    Throttle(u16, u32),
    /// Reads the request and never answers; a parked request is answered under the new mode
    /// when the mode changes, and its connection closes when the backend stops.
    Hang,
    /// Takes the request's head and closes the connection with the request unread, so the
    /// kernel resets it: the client sees a reset before any response byte.
    Reset,
}

impl BackendMode {
    /// The control-API name: `ok`, `status` (with or without `retry_after`), `hang` or
    /// `reset`.
    pub fn name(self) -> &'static str {
        match self {
            BackendMode::Ok => "ok",
            BackendMode::Status(_) | BackendMode::Throttle(..) => "status",
            BackendMode::Hang => "hang",
            BackendMode::Reset => "reset",
        }
    }
}

struct BackendShared {
    port: u16,
    mode: Mutex<(BackendMode, u64)>,
    hits: AtomicU64,
    received: Mutex<VecDeque<Received>>,
    llm: Option<Llm>,
}

/// The most requests a backend remembers for [`Backend::received`]; older ones go first.
const MAX_RECEIVED: usize = 64;

/// A request as a backend received it (see [`Backend::received`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The request method.
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Body bytes after de-chunking; `None` when the backend did not read the body (`reset`).
    pub body_len: Option<usize>,
    /// Header names in lower case, with their values, in the order sent.
    pub headers: Vec<(String, String)>,
}

impl Received {
    /// `{"method","path","body_len","headers":{name: value}}` (a repeated header: its last
    /// value).
    pub fn to_json(&self) -> serde_json::Value {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({"method": self.method, "path": self.target, "body_len": self.body_len,
               "headers": headers})
    }
}

impl BackendShared {
    fn mode(&self) -> (BackendMode, u64) {
        *lock(&self.mode)
    }

    fn mode_changed(&self, seen: u64) -> bool {
        lock(&self.mode).1 != seen
    }

    fn remember(&self, head: &Head, body_len: Option<usize>) {
        let r = Received {
            method: head.method.clone(),
            target: head.target.clone(),
            body_len,
            headers: head
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        };
        let mut q = lock(&self.received);
        if q.len() == MAX_RECEIVED {
            q.pop_front();
        }
        q.push_back(r);
    }
}

impl Handler for BackendShared {
    fn handle(&self, conn: &mut Conn, head: Head) -> Flow {
        let arrived = Instant::now();
        if self.mode().0 == BackendMode::Reset {
            // The head stays unread in the socket: closing now makes the kernel reset it.
            self.hits.fetch_add(1, Ordering::SeqCst);
            self.remember(&head, None);
            return Flow::Close;
        }
        let Ok(req) = conn.read_request(head) else {
            return Flow::Close;
        };
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.remember(&req.head, Some(req.body.len()));
        let keep = req.head.keep_alive();
        let head_only = req.head.method == "HEAD";
        let mut body = json!({
            "backend": format!("127.0.0.1:{}", self.port),
            "path": req.head.target,
            "method": req.head.method,
            "body_len": req.body.len(),
        });
        loop {
            let (mode, generation) = self.mode();
            let mut retry_after = None;
            let status = match mode {
                BackendMode::Ok => match &self.llm {
                    Some(llm) => {
                        let me = format!("127.0.0.1:{}", self.port);
                        return llm.serve(conn, req, arrived, &me);
                    }
                    None => 200,
                },
                BackendMode::Status(s) => {
                    body["status"] = json!(s);
                    s
                }
                BackendMode::Throttle(s, secs) => {
                    body["status"] = json!(s);
                    retry_after = Some(secs.to_string());
                    s
                }
                BackendMode::Hang => match conn.park(&|| self.mode_changed(generation)) {
                    Parked::Aborted => continue,
                    Parked::Gone => return Flow::Close,
                },
                // Set while this request was parked: it was read, so close it unanswered.
                BackendMode::Reset => return Flow::Close,
            };
            let mut resp = Response::json(status, &body);
            if let Some(secs) = retry_after {
                resp.headers.push(("Retry-After", secs));
            }
            return match conn.send(&resp, keep, head_only) {
                Ok(()) => Flow::keep_if(keep),
                Err(_) => Flow::Close,
            };
        }
    }
}

/// An HTTP/1.1 server on `127.0.0.1:0` that answers any request (any method and path, with
/// keep-alive, bodies by Content-Length or chunked) with 200 and a small JSON body
/// `{"backend":"127.0.0.1:PORT","path":TARGET,"method":M,"body_len":N}`.
/// Dropping it stops it, like [`Backend::stop`].
///
/// [`Backend::start_llm`] starts one that serves like an LLM inference server instead.
pub struct Backend {
    server: Server,
    shared: Arc<BackendShared>,
}

impl Backend {
    /// Starts a backend on `127.0.0.1` and a free port.
    pub fn start() -> io::Result<Backend> {
        Backend::start_kind(None)
    }

    /// Starts an LLM-like backend on `127.0.0.1` and a free port: slots, a queue, service times
    /// by tokens, streaming and load reports as [`LlmConfig`] and [`Llm`] describe.
    ///
    /// # Panics
    /// When `config` does not [`validate`](LlmConfig::validate).
    pub fn start_llm(config: LlmConfig) -> io::Result<Backend> {
        Backend::start_kind(Some(Llm::new(config)))
    }

    fn start_kind(llm: Option<Llm>) -> io::Result<Backend> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let (server, shared) = Server::bind(addr, "easdirect-backend", |addr| {
            Arc::new(BackendShared {
                port: addr.port(),
                mode: Mutex::new((BackendMode::Ok, 0)),
                hits: AtomicU64::new(0),
                received: Mutex::new(VecDeque::new()),
                llm,
            })
        })?;
        Ok(Backend { server, shared })
    }

    /// The LLM side (settings, counters) of a backend started by [`Backend::start_llm`].
    pub fn llm(&self) -> Option<&Llm> {
        self.shared.llm.as_ref()
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Changes how it answers, from the next request on (and for requests parked by
    /// [`BackendMode::Hang`]).
    pub fn set_mode(&self, mode: BackendMode) {
        let mut m = lock(&self.shared.mode);
        *m = (mode, m.1 + 1);
    }

    /// The current mode.
    pub fn mode(&self) -> BackendMode {
        self.shared.mode().0
    }

    /// Requests received so far (answered, answered with an error status, or parked).
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// The last requests received (at most 64), oldest first.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).iter().cloned().collect()
    }

    /// Stops it and returns its final hit count.
    pub(crate) fn stop_counting(mut self) -> u64 {
        self.server.shutdown();
        self.hits()
    }

    /// Stops it: the listener is closed (connections are refused afterwards) and open
    /// connections are closed. Returns within about 100 ms.
    pub fn stop(self) {}
}
