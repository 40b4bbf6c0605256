//! Where a Nacos source's servers come from (a fixed list, an address server, the caller's
//! function), the one check every listed server goes through, and the failover order.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::{get_text, Failure};
use super::DEFAULT_PORT;
use crate::callback::{CallbackGate, EndFn};
use crate::redact;

/// How often an address server is asked for the server list.
const SERVER_LIST_REFRESH: Duration = Duration::from_secs(30);

/// Where the Nacos servers come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Servers {
    /// `host[:port]` entries (scheme-less, port defaulted).
    Fixed(Vec<String>),
    /// An address server `host[:port]` answering `{context}/serverlist`.
    AddressServer(String),
    /// The caller's function (the Nacos clients' `ServerListProvider` idea), asked at each fetch.
    Provider(ServerListProvider),
}

/// Fills the list of Nacos servers (`host[:port]` entries) or says why it could not.
pub type ServerListFn = Box<dyn Fn(&mut Vec<String>) -> Result<(), String> + Send + Sync>;

struct ProviderInner {
    gate: CallbackGate,
    fetch: ServerListFn,
}

impl Drop for ProviderInner {
    fn drop(&mut self) {
        // The last holder is gone (the options and every client made from them).
        self.gate.end();
    }
}

/// A server-list function shared by the options that carry it and the clients made from them;
/// its end function runs once the last of them has let go.
#[derive(Clone)]
pub struct ServerListProvider(Arc<ProviderInner>);

impl ServerListProvider {
    pub fn new(fetch: ServerListFn, on_end: Option<EndFn>) -> ServerListProvider {
        ServerListProvider(Arc::new(ProviderInner {
            gate: CallbackGate::new(on_end),
            fetch,
        }))
    }

    /// The servers the function lists now, ports defaulted.
    fn servers(&self) -> Result<Vec<String>, String> {
        let mut list = Vec::new();
        match self.0.gate.run(|| (self.0.fetch)(&mut list)) {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(why))) => return Err(format!("the server-list callback failed: {why}")),
            Some(Err(())) => return Err("the server-list callback panicked".into()),
            None => return Err("the server-list callback has ended".into()),
        }
        let list = server_entries(list.iter().flat_map(|entry| entry.split([',', ';'])));
        if list.is_empty() {
            return Err("the server-list callback listed no valid server (host[:port])".into());
        }
        Ok(list)
    }
}

impl PartialEq for ServerListProvider {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for ServerListProvider {}

impl std::fmt::Debug for ServerListProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerListProvider")
    }
}

/// The servers a client's sources last learnt (`host:port`), shared by the sources of one client
/// (its polling one and its push subscription): an address server's or a callback's list
/// reaches the push stream through it.
pub(crate) type KnownServers = Arc<Mutex<Vec<String>>>;

/// The servers in use and where the next request goes: a random start (clients spread over the
/// servers), then round-robin failover.
pub(super) struct ServerList {
    from: Servers,
    known: KnownServers,
    servers: Vec<String>,
    fetched_at: Option<Instant>,
    next: usize,
}

impl ServerList {
    pub(super) fn new(from: Servers, known: KnownServers) -> ServerList {
        let servers = match &from {
            Servers::Fixed(list) => list.clone(),
            // What this client learnt already (another of its sources asked), else nothing yet.
            Servers::AddressServer(_) | Servers::Provider(_) => {
                known.lock().unwrap_or_else(|p| p.into_inner()).clone()
            }
        };
        if matches!(from, Servers::Fixed(_)) {
            *known.lock().unwrap_or_else(|p| p.into_inner()) = servers.clone();
        }
        let next = random_start(servers.len());
        ServerList {
            from,
            known,
            servers,
            fetched_at: None,
            next,
        }
    }

    /// The servers in use.
    pub(super) fn len(&self) -> usize {
        self.servers.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The server the next request goes to, `None` with none known.
    pub(super) fn current(&self) -> Option<&str> {
        self.servers
            .get(self.next % self.servers.len().max(1))
            .map(String::as_str)
    }

    /// Fails over: the next server, from here on.
    pub(super) fn advance(&mut self) {
        self.next = (self.next + 1) % self.servers.len().max(1);
    }

    /// Takes a changed list, with a new random start.
    fn take(&mut self, list: Vec<String>) {
        if list != self.servers {
            self.next = random_start(list.len());
            *self.known.lock().unwrap_or_else(|p| p.into_inner()) = list.clone();
            self.servers = list;
        }
    }

    /// Asks the provider (each time) or the address server (when due) for the list; a source
    /// that fails leaves the last list in use.
    pub(super) fn refresh(
        &mut self,
        agent: &ureq::Agent,
        context_path: &str,
    ) -> Result<(), String> {
        if let Servers::Provider(provider) = &self.from {
            return match provider.servers() {
                Ok(list) => {
                    self.take(list);
                    Ok(())
                }
                Err(_) if !self.servers.is_empty() => Ok(()),
                Err(why) => Err(why),
            };
        }
        let Servers::AddressServer(address) = &self.from else {
            return Ok(());
        };
        let due = self
            .fetched_at
            .is_none_or(|at| at.elapsed() >= SERVER_LIST_REFRESH);
        if !due && !self.servers.is_empty() {
            return Ok(());
        }
        let url = format!("http://{address}{context_path}/serverlist");
        let fetched = get_text(agent, &url, &[]).and_then(|body| {
            let list = parse_server_list(&body);
            if list.is_empty() {
                Err(Failure::Other(format!(
                    "GET {}: the address server lists no server",
                    redact::url(&url)
                )))
            } else {
                Ok(list)
            }
        });
        match fetched {
            Ok(list) => {
                self.take(list);
                self.fetched_at = Some(Instant::now());
                Ok(())
            }
            Err(_) if !self.servers.is_empty() => Ok(()),
            Err(f) => Err(f.message()),
        }
    }
}

fn random_start(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (crate::pick::random_unit() * len as f64) as usize % len
    }
}

/// One `ip[:port]` a line; blank lines and `#` comments ignored; port defaults to 8848; a line
/// that is no server (an HTML error page, a path, userinfo) is skipped and the rest are used.
pub fn parse_server_list(body: &str) -> Vec<String> {
    server_entries(body.lines().filter(|l| !l.trim_start().starts_with('#')))
}

/// The most servers taken from one list (an address server's answer, a callback's).
pub const MAX_SERVERS: usize = 256;

/// The valid `host[:port]` entries of `entries`, ports defaulted, the first `MAX_SERVERS`
/// distinct ones in their order: whatever lists servers goes through this one check.
fn server_entries<'a>(entries: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut list: Vec<String> = Vec::new();
    for entry in entries.map(str::trim).filter(|e| !e.is_empty()) {
        if let Some(server) = server_entry(entry, DEFAULT_PORT) {
            if !list.contains(&server) {
                list.push(server);
            }
            if list.len() == MAX_SERVERS {
                break;
            }
        }
    }
    list
}

/// `entry` as `host:port` (port defaulted, a leading `http://` dropped), or `None` when it is
/// no server.
pub fn server_entry(entry: &str, port: u16) -> Option<String> {
    let server = with_default_port(entry, port);
    crate::target::authority_problem(&server)
        .is_none()
        .then_some(server)
}

/// `host` or `host:port` or `[v6]:port`, with `port` added when missing; a leading scheme is
/// dropped.
pub fn with_default_port(entry: &str, port: u16) -> String {
    let entry = entry
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let has_port = if entry.starts_with('[') {
        entry.contains("]:")
    } else {
        entry.matches(':').count() == 1
    };
    if has_port {
        entry.to_owned()
    } else if entry.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{entry}]:{port}")
    } else {
        format!("{entry}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_default_the_port() {
        assert_eq!(
            parse_server_list("10.0.0.1\n10.0.0.2:9000\n\n# comment\nhttp://nacos.local\n::1\n"),
            vec![
                "10.0.0.1:8848",
                "10.0.0.2:9000",
                "nacos.local:8848",
                "[::1]:8848"
            ]
        );
    }

    #[test]
    fn server_lists_skip_what_is_no_server_and_keep_the_rest() {
        let body = "<html>\n<body>502 Bad Gateway</body>\n10.0.0.1\n# comment\n\
                    user:pw@10.0.0.2:8848\n10.0.0.3:99999\nh/path\n[::1]:9000\n10.0.0.1\n\
                    nacos-2.local:8848\n";
        assert_eq!(
            parse_server_list(body),
            vec!["10.0.0.1:8848", "[::1]:9000", "nacos-2.local:8848"]
        );
        let many: String = (0..1000)
            .map(|i| format!("10.0.{}.{}\n", i / 256, i % 256))
            .collect();
        assert_eq!(parse_server_list(&many).len(), MAX_SERVERS);
    }
}
