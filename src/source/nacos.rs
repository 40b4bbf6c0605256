//! Nacos naming over HTTP: `GET {context}/v3/client/ns/instance/list` (Nacos 3.x, answering
//! `{"code":0,"data":[...]}`), falling back on 404 or 410 to `GET {context}/v1/ns/instance/list`
//! (Nacos 1.x to 3.1, answering a ServiceInfo with `hosts`). Servers come from a fixed list
//! (random start, round-robin failover) or an address server; auth is a username/password
//! login (`accessToken`, renewed before `tokenTtl` runs out and on 403) or MSE AK/SK signing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::Sha1;

use super::http::{describe_transport, read_body};
use super::{item_address, Source};
use crate::callback::{CallbackGate, EndFn};
use crate::instance::{weight_from_f64, Instance};
use crate::redact;

/// Default Nacos server port.
pub const DEFAULT_PORT: u16 = 8848;
/// Default address-server port.
pub const DEFAULT_ADDRESS_SERVER_PORT: u16 = 8080;
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

/// Everything a Nacos source needs, resolved from the target and options. No `Debug`: it holds
/// secrets.
#[derive(Clone)]
pub struct NacosConfig {
    pub https: bool,
    pub servers: Servers,
    pub context_path: String,
    pub namespace: String,
    pub group: String,
    pub clusters: String,
    pub service: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    V3,
    V1,
}

struct Token {
    value: String,
    renew_at: Instant,
}

pub struct NacosSource {
    config: NacosConfig,
    agent: ureq::Agent,
    servers: Vec<String>,
    servers_fetched_at: Option<Instant>,
    next: usize,
    api: Api,
    token: Option<Token>,
}

enum Failure {
    Status(u16, String),
    Other(String),
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Status(_, m) | Failure::Other(m) => m,
        }
    }
}

impl NacosSource {
    pub fn new(
        config: NacosConfig,
        timeout: Duration,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> NacosSource {
        let servers = match &config.servers {
            Servers::Fixed(list) => list.clone(),
            Servers::AddressServer(_) | Servers::Provider(_) => Vec::new(),
        };
        // A random start, so that clients spread over the servers.
        let next = if servers.is_empty() {
            0
        } else {
            (crate::pick::random_unit() * servers.len() as f64) as usize % servers.len()
        };
        NacosSource {
            config,
            agent: super::http::agent(timeout, tls),
            servers,
            servers_fetched_at: None,
            next,
            api: Api::V3,
            token: None,
        }
    }

    fn scheme(&self) -> &'static str {
        if self.config.https {
            "https"
        } else {
            "http"
        }
    }

    /// Takes a changed list, with a new random start.
    fn use_servers(&mut self, list: Vec<String>) {
        if list != self.servers {
            self.next = (crate::pick::random_unit() * list.len() as f64) as usize % list.len();
            self.servers = list;
        }
    }

    fn refresh_server_list(&mut self) -> Result<(), String> {
        if let Servers::Provider(provider) = &self.config.servers {
            return match provider.servers() {
                Ok(list) => {
                    self.use_servers(list);
                    Ok(())
                }
                // A failing provider leaves the last list in use.
                Err(_) if !self.servers.is_empty() => Ok(()),
                Err(why) => Err(why),
            };
        }
        let Servers::AddressServer(address) = &self.config.servers else {
            return Ok(());
        };
        let due = self
            .servers_fetched_at
            .is_none_or(|at| at.elapsed() >= SERVER_LIST_REFRESH);
        if !due && !self.servers.is_empty() {
            return Ok(());
        }
        let url = format!("http://{address}{}/serverlist", self.config.context_path);
        let fetched = get_text(&self.agent, &url, &[]).and_then(|body| {
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
                self.use_servers(list);
                self.servers_fetched_at = Some(Instant::now());
                Ok(())
            }
            // An address server that fails leaves the last list in use.
            Err(_) if !self.servers.is_empty() => Ok(()),
            Err(f) => Err(f.message()),
        }
    }

    /// Logs in (or renews the token) when a username is configured.
    fn ensure_token(&mut self, server: &str, force: bool) -> Result<(), Failure> {
        let (Some(username), Some(password)) = (&self.config.username, &self.config.password)
        else {
            return Ok(());
        };
        if !force
            && self
                .token
                .as_ref()
                .is_some_and(|t| Instant::now() < t.renew_at)
        {
            return Ok(());
        }
        let base = format!("{}://{server}{}", self.scheme(), self.config.context_path);
        let login = |path: &str| -> Result<ureq::Response, Failure> {
            let url = format!("{base}{path}");
            match self
                .agent
                .post(&url)
                .query("username", username)
                .send_form(&[("password", password.as_str())])
            {
                Ok(r) => Ok(r),
                Err(ureq::Error::Status(code, _)) => Err(Failure::Status(
                    code,
                    format!(
                        "POST {} (login as {username:?}) answered HTTP {code}",
                        redact::url(&url)
                    ),
                )),
                Err(ureq::Error::Transport(t)) => Err(Failure::Other(format!(
                    "POST {}: {}",
                    redact::url(&url),
                    describe_transport(&t)
                ))),
            }
        };
        let response = match login("/v3/auth/user/login") {
            Err(Failure::Status(404 | 501, _)) => login("/v1/auth/users/login")?,
            other => other?,
        };
        let base = redact::url(&base);
        let body = read_body(response, &format!("login at {base}")).map_err(Failure::Other)?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|_| Failure::Other(format!("login at {base}: the answer is not JSON")))?;
        // Nacos 1.x/2.x answer the token at the top level; 3.x may wrap it in `data`.
        let data = value
            .get("data")
            .filter(|d| d.is_object())
            .unwrap_or(&value);
        let token = data
            .get("accessToken")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Failure::Other(format!("login at {base}: no accessToken in the answer"))
            })?;
        let ttl = data
            .get("tokenTtl")
            .and_then(Value::as_u64)
            .unwrap_or(18_000);
        // Renew ahead of expiry, as the Nacos clients do (a window of ttl/15 to ttl/10).
        let window = ttl / 15 + (crate::pick::random_unit() * (ttl / 10 - ttl / 15) as f64) as u64;
        self.token = Some(Token {
            value: token.to_owned(),
            renew_at: Instant::now() + Duration::from_secs(ttl.saturating_sub(window).max(1)),
        });
        Ok(())
    }

    /// Query parameters that identify the caller: the token, or the AK/SK signature.
    fn identity(&self) -> Vec<(&'static str, String)> {
        let mut params = Vec::new();
        if let Some(token) = &self.token {
            params.push(("accessToken", token.value.clone()));
        }
        if let (Some(ak), Some(sk)) = (&self.config.access_key, &self.config.secret_key) {
            let data = format!(
                "{}@@{}@@{}",
                unix_ms(),
                self.config.group,
                self.config.service
            );
            params.push(("signature", sign(&data, sk)));
            params.push(("data", data));
            params.push(("ak", ak.clone()));
        }
        params
    }

    fn list_from(&mut self, server: &str) -> Result<Vec<Instance>, Failure> {
        self.ensure_token(server, false)?;
        match self.list_once(server) {
            Err(Failure::Status(403, _)) if self.config.username.is_some() => {
                self.ensure_token(server, true)?;
                self.list_once(server)
            }
            other => other,
        }
    }

    fn list_once(&mut self, server: &str) -> Result<Vec<Instance>, Failure> {
        if self.api == Api::V3 {
            match self.request(server, Api::V3) {
                Err(Failure::Status(404 | 410, _)) => self.api = Api::V1,
                other => return other,
            }
        }
        match self.request(server, Api::V1) {
            // A server that has dropped v1 (3.2+) may answer v3 after all.
            Err(Failure::Status(404 | 410, m)) => match self.request(server, Api::V3) {
                Ok(list) => {
                    self.api = Api::V3;
                    Ok(list)
                }
                Err(_) => Err(Failure::Other(m)),
            },
            other => other,
        }
    }

    fn request(&self, server: &str, api: Api) -> Result<Vec<Instance>, Failure> {
        let c = &self.config;
        let (path, mut params) = match api {
            Api::V3 => (
                "/v3/client/ns/instance/list",
                vec![
                    ("namespaceId", c.namespace.clone()),
                    ("groupName", c.group.clone()),
                    ("serviceName", c.service.clone()),
                    ("clusterName", c.clusters.clone()),
                ],
            ),
            Api::V1 => (
                "/v1/ns/instance/list",
                vec![
                    ("namespaceId", c.namespace.clone()),
                    ("groupName", c.group.clone()),
                    ("serviceName", format!("{}@@{}", c.group, c.service)),
                    ("clusters", c.clusters.clone()),
                    ("healthyOnly", "false".into()),
                ],
            ),
        };
        params.extend(self.identity());
        let url = format!("{}://{server}{}{path}", self.scheme(), c.context_path);
        let body = get_text(&self.agent, &url, &params)?;
        let parsed = match api {
            Api::V3 => parse_v3(body.as_bytes()),
            Api::V1 => parse_v1(body.as_bytes()),
        };
        parsed.map_err(|why| Failure::Other(format!("GET {}: {why}", shown_url(&url, &params))))
    }
}

impl Source for NacosSource {
    fn fetch(&mut self) -> Result<Vec<Instance>, String> {
        self.refresh_server_list()?;
        if self.servers.is_empty() {
            return Err("no Nacos server to ask".into());
        }
        let mut errors = Vec::new();
        for _ in 0..self.servers.len() {
            let server = self.servers[self.next % self.servers.len()].clone();
            match self.list_from(&server) {
                Ok(list) => return Ok(list),
                Err(f) => {
                    errors.push(f.message());
                    // Round-robin failover: the next server, from here on.
                    self.next = (self.next + 1) % self.servers.len();
                }
            }
        }
        Err(errors.join("; "))
    }

    fn describe(&self) -> String {
        let server = self
            .servers
            .get(self.next % self.servers.len().max(1))
            .map_or("(no server)", String::as_str);
        let path = match self.api {
            Api::V3 => "/v3/client/ns/instance/list",
            Api::V1 => "/v1/ns/instance/list",
        };
        let url = format!(
            "{}://{server}{}{path}",
            self.scheme(),
            self.config.context_path
        );
        format!(
            "GET {} ({}/{}/{})",
            redact::url(&url),
            self.config.namespace,
            self.config.group,
            self.config.service
        )
    }
}

fn sign(data: &str, secret_key: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret_key.as_bytes()).expect("HMAC takes any key");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The URL with its query parameters as it may be printed (see [`redact::url`]).
fn shown_url(url: &str, params: &[(&str, String)]) -> String {
    let mut full = url.to_owned();
    for (i, (k, v)) in params.iter().enumerate() {
        full.push(if i == 0 && !url.contains('?') {
            '?'
        } else {
            '&'
        });
        full.push_str(k);
        full.push('=');
        full.push_str(v);
    }
    redact::url(&full)
}

fn get_text(agent: &ureq::Agent, url: &str, params: &[(&str, String)]) -> Result<String, Failure> {
    let mut request = agent.get(url);
    for (k, v) in params {
        request = request.query(k, v);
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => {
            return Err(Failure::Status(
                code,
                format!("GET {} answered HTTP {code}", shown_url(url, params)),
            ))
        }
        Err(ureq::Error::Transport(t)) => {
            return Err(Failure::Other(format!(
                "GET {}: {}",
                shown_url(url, params),
                describe_transport(&t)
            )))
        }
    };
    if !(200..300).contains(&response.status()) {
        let code = response.status();
        return Err(Failure::Status(
            code,
            format!("GET {} answered HTTP {code}", shown_url(url, params)),
        ));
    }
    let body = read_body(response, &shown_url(url, params)).map_err(Failure::Other)?;
    String::from_utf8(body).map_err(|_| {
        Failure::Other(format!(
            "GET {}: the body is not UTF-8",
            shown_url(url, params)
        ))
    })
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

/// Parses a 3.x answer: `{"code":0,"data":[instance...]}`.
pub fn parse_v3(body: &[u8]) -> Result<Vec<Instance>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON ({e})"))?;
    match value.get("code").and_then(Value::as_i64) {
        Some(0) => {}
        Some(code) => {
            let message = value.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(format!(
                "Nacos answered code {code}: {}",
                super::quoted_upstream(message)
            ));
        }
        None => return Err("body has no code".into()),
    }
    match value.get("data") {
        Some(Value::Array(items)) => Ok(items.iter().filter_map(parse_instance).collect()),
        Some(Value::Null) | None => Ok(Vec::new()),
        Some(_) => Err("data is not an array".into()),
    }
}

/// Parses a 1.x-3.1 ServiceInfo: `{"hosts":[instance...], "checksum":..., ...}`.
pub fn parse_v1(body: &[u8]) -> Result<Vec<Instance>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON ({e})"))?;
    match value.get("hosts") {
        Some(Value::Array(items)) => Ok(items.iter().filter_map(parse_instance).collect()),
        Some(Value::Null) => Ok(Vec::new()),
        _ => Err("body has no hosts array".into()),
    }
}

/// A present instance: healthy and enabled (either missing counts as true). When the server
/// reached its protection threshold it already reports every instance as healthy; like the
/// Nacos Java client, we take them as they come (and ejection handles the dead ones).
fn parse_instance(item: &Value) -> Option<Instance> {
    let flag = |key: &str| item.get(key).and_then(Value::as_bool).unwrap_or(true);
    if !flag("healthy") || !flag("enabled") {
        return None;
    }
    let (ip, port) = item_address(item)?;
    let weight = match item.get("weight") {
        None | Some(Value::Null) => 1000,
        Some(w) => weight_from_f64(w.as_f64()? * 1000.0)?,
    };
    Some(Instance::new(ip, port, weight))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[Instance]) -> Vec<(String, u32)> {
        list.iter()
            .map(|i| (i.host_str().to_owned(), i.weight))
            .collect()
    }

    #[test]
    fn v1_service_info_keeps_healthy_enabled_instances_with_weights_times_1000() {
        let body = br#"{"name":"pai-eas@@svc","clusters":"DEFAULT","cacheMillis":10000,
            "checksum":"abc","reachProtectionThreshold":false,"hosts":[
            {"ip":"10.0.0.1","port":8080,"weight":1.0,"healthy":true,"enabled":true},
            {"ip":"10.0.0.2","port":8080,"weight":0.5,"healthy":false,"enabled":true},
            {"ip":"10.0.0.3","port":8080,"weight":2.5,"healthy":true,"enabled":false},
            {"ip":"10.0.0.4","port":8080,"weight":0.0001},
            {"ip":"10.0.0.5","port":8080,"weight":0},
            {"ip":"10.0.0.6","port":8080,"weight":-1},
            {"ip":"10.0.0.7","port":8080,"weight":1e309},
            {"ip":"10.0.0.8","port":8080,"weight":1e306},
            {"ip":"10.0.0.9","port":1e309,"metadata":{"big":1e400}},
            {"ip":"bad","port":8080}]}"#;
        assert_eq!(
            hosts(&parse_v1(body).unwrap()),
            vec![
                ("10.0.0.1:8080".into(), 1000),
                ("10.0.0.4:8080".into(), 1),
                ("10.0.0.5:8080".into(), 0)
            ]
        );
    }

    #[test]
    fn v3_result_is_unwrapped_and_a_nonzero_code_is_an_error() {
        let body = br#"{"code":0,"message":"success","data":[
            {"ip":"10.0.0.1","port":8080,"weight":1.5,"healthy":true,"enabled":true}]}"#;
        assert_eq!(
            hosts(&parse_v3(body).unwrap()),
            vec![("10.0.0.1:8080".into(), 1500)]
        );
        let err = parse_v3(br#"{"code":20004,"message":"service not found","data":null}"#);
        assert!(err.unwrap_err().contains("20004"));
        assert!(parse_v3(b"{\"code\":0,\"data\":{}}").is_err());
        assert!(parse_v1(b"<html>").is_err());
    }

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
    fn signature_is_base64_hmac_sha1() {
        // RFC 2202 test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?").
        assert_eq!(
            sign("what do ya want for nothing?", "Jefe"),
            base64::engine::general_purpose::STANDARD.encode([
                0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
                0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79
            ])
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

    #[test]
    fn a_server_message_is_quoted_escaped_and_bounded() {
        let body = format!(
            r#"{{"code":500,"message":"boom\r\n2026-12-01 WARN forged line {}"}}"#,
            "x".repeat(10_000)
        );
        let err = parse_v3(body.as_bytes()).unwrap_err();
        assert!(!err.contains('\n') && !err.contains('\r'), "{err}");
        assert!(err.contains("boom\\r\\n") && err.len() < 400, "{err}");
    }

    #[test]
    fn printed_urls_carry_no_secret() {
        let shown = shown_url(
            "http://h/nacos/v1/ns/instance/list",
            &[
                ("serviceName", "s".into()),
                ("accessToken", "TOKEN".into()),
                ("signature", "SIG".into()),
            ],
        );
        assert!(
            !shown.contains("TOKEN") && !shown.contains("SIG"),
            "{shown}"
        );
        assert!(shown.contains("serviceName=s"));
    }
}
