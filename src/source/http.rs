//! The HTTP agent every HTTP source uses: a whole-request timeout, no redirects, a small
//! connection pool, and name resolution that cannot outlast the timeout.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::MAX_BODY_BYTES;
use crate::blocking::{self, Refused};

/// An agent for discovery requests: every request ends within `timeout`, redirects are never
/// followed, and `tls` (when given) decides whom https trusts.
pub fn agent(timeout: Duration, tls: Option<Arc<rustls::ClientConfig>>) -> ureq::Agent {
    let mut builder = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .max_idle_connections(4)
        .max_idle_connections_per_host(1)
        .resolver(BoundedResolver { timeout })
        .user_agent(concat!("libeasdirect/", env!("CARGO_PKG_VERSION")));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls);
    }
    builder.build()
}

/// A transport error as a caller needs it: the kind and the cause (ureq's own text repeats the
/// URL, which the caller prints once, without secrets).
pub fn describe_transport(t: &ureq::Transport) -> String {
    match std::error::Error::source(t) {
        Some(source) => format!("{}: {source}", t.kind()),
        None => t.kind().to_string(),
    }
}

/// Reads a response body of at most 16 MiB (`MAX_BODY_BYTES`); `what` (e.g. "GET url")
/// starts the error message.
pub fn read_body(response: ureq::Response, what: &str) -> Result<Vec<u8>, String> {
    let announced = response
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = announced.filter(|&len| len > MAX_BODY_BYTES) {
        return Err(format!(
            "{what}: body of {len} bytes is over the 16 MiB limit"
        ));
    }
    let capacity = announced.map_or(8192, |len| (len as usize).min(1 << 20));
    match super::read_capped(&mut response.into_reader(), MAX_BODY_BYTES, capacity) {
        Ok(Some(body)) => Ok(body),
        Ok(None) => Err(format!("{what}: body is over the 16 MiB limit")),
        Err(e) => Err(format!("{what}: reading the body failed: {e}")),
    }
}

/// The system resolver (getaddrinfo) has no timeout of its own that we control, so names are
/// resolved on the process's lookup lane (`blocking::lookups`): a fetch waits at most `timeout`,
/// the lane's few threads are all a hung resolver can hold, and the agents of many clients of
/// one name share one lookup.
struct BoundedResolver {
    timeout: Duration,
}

impl ureq::Resolver for BoundedResolver {
    fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        resolve_bounded(netloc, self.timeout)
    }
}

/// Resolves `host:port` with the system resolver, waiting at most `timeout`.
pub fn resolve_bounded(netloc: &str, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
    // Addresses need no lookup.
    if let Ok(addr) = netloc.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let name = netloc.to_owned();
    let got = blocking::lookups().call(netloc, timeout, move || {
        name.to_socket_addrs()
            .map(Iterator::collect::<Vec<SocketAddr>>)
            .map_err(|e| (e.kind(), e.to_string()))
    });
    let ms = timeout.as_millis();
    match got {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err((kind, message))) => Err(io::Error::new(kind, message)),
        Err(Refused::TimedOut { started: true, .. }) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("resolving {netloc} took longer than {ms} ms"),
        )),
        Err(Refused::TimedOut { running, .. }) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "resolving {netloc} took longer than {ms} ms: it waited behind {running} \
                 lookups that have not finished (the system resolver is not answering)"
            ),
        )),
        Err(Refused::Saturated { running, queued }) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "resolving {netloc}: not started, the process's lookup threads are all busy \
                 ({running} lookups running, {queued} waiting; the system resolver is not \
                 answering)"
            ),
        )),
    }
}
