//! A client's push subscription: connect to a server's gRPC port, check it, set up the
//! bi-stream, subscribe, then take pushes until the stream ends; then the next server, after a
//! backoff, subscribing and fetching the list again on every reconnect. Runs as one task on
//! the push runtime and tells the client what happens through its sink.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{sleep, timeout};

use super::conn::{self, Conn};
use super::messages::{self, Pushed, Subscription};
use crate::instance::Instance;
use crate::source::nacos::auth::Auth;
use crate::source::nacos::NacosConfig;

/// What a push subscription tells its client.
#[derive(Debug)]
pub(crate) enum PushEvent {
    /// The stream is up: lists come by push from now on.
    Up,
    /// The service's list, from a subscription's answer or a push.
    List(Vec<Instance>),
    /// The stream is down (or never came up), with why; polling takes over.
    Down(String),
}

/// Called on the push runtime's thread; must not block.
pub(crate) type PushSink = Arc<dyn Fn(PushEvent) + Send + Sync>;

/// Everything a subscription needs. No `Debug`: the headers may hold a token.
#[derive(Clone)]
pub(crate) struct PushConfig {
    /// The servers, read at each connect.
    pub(crate) servers: PushServers,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) namespace: String,
    pub(crate) group: String,
    pub(crate) service: String,
    pub(crate) clusters: String,
    /// Each connect and each call waits at most this.
    pub(crate) timeout: Duration,
    /// Who the client is, when the servers want to know (a login, AK/SK signing).
    pub(crate) auth: Option<PushAuth>,
}

/// Where the servers are: the client's known list (HTTP `host:port`), and how to get from one to
/// its gRPC address and its HTTP base (for logins).
#[derive(Clone)]
pub(crate) struct PushServers {
    pub(crate) known: crate::source::nacos::KnownServers,
    /// Every server's gRPC port, when set; else its HTTP port + 1000.
    pub(crate) grpc_port: Option<u16>,
    pub(crate) scheme: &'static str,
    pub(crate) context_path: String,
}

impl PushServers {
    /// (gRPC address, HTTP base) of each server whose gRPC port is known, now.
    fn now(&self) -> Vec<(String, String)> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner()).clone();
        known
            .iter()
            .filter_map(|server| {
                let (host, port) = server.rsplit_once(':')?;
                let port: u16 = port.parse().ok()?;
                let grpc = match self.grpc_port {
                    Some(p) => p,
                    None => port.checked_add(crate::source::nacos::GRPC_PORT_OFFSET)?,
                };
                let base = format!("{}://{server}{}", self.scheme, self.context_path);
                Some((format!("{host}:{grpc}"), base))
            })
            .collect()
    }
}

/// What identifies a subscriber: the login token (got over HTTP, as the Nacos clients do, on
/// the runtime's one blocking thread) or the AK/SK signature, sent as request headers.
#[derive(Clone)]
pub(crate) struct PushAuth {
    pub(crate) config: NacosConfig,
    pub(crate) agent: ureq::Agent,
    pub(crate) state: Arc<Mutex<Auth>>,
}

impl PushAuth {
    /// The identity headers for a request to the server whose HTTP side is `base`; `renew`
    /// logs in again (the server refused the token).
    async fn headers(
        &self,
        base: &str,
        renew: bool,
        limit: Duration,
    ) -> Result<BTreeMap<String, String>, String> {
        let me = self.clone();
        let base = base.to_owned();
        let work = tokio::task::spawn_blocking(move || {
            let mut auth = me.state.lock().unwrap_or_else(|p| p.into_inner());
            auth.ensure(&me.agent, &me.config, &base, renew)
                .map_err(|f| f.message())?;
            Ok::<_, String>(auth.identity(&me.config))
        });
        let identity = timeout(limit * 2, work)
            .await
            .map_err(|_| "the login did not answer in time".to_string())?
            .map_err(|_| "the login failed".to_string())??;
        Ok(identity
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect())
    }
}

/// An idle stream is checked this often (HealthCheckRequest), as the Nacos clients do.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How often a quiet stream looks whether its server is still in the client's list.
const TICK: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Runs the subscription until the task is dropped.
pub(crate) async fn run(config: PushConfig, first: usize, sink: PushSink) {
    let mut next = first;
    let mut backoff = BACKOFF_MIN;
    let mut target: Option<String> = None;
    loop {
        let servers = config.servers.now();
        let listed = target.is_none();
        let (server, base) = match (target.take(), servers.is_empty()) {
            // A server named by ConnectReset: logins go to the first known server's HTTP side
            // (a token is valid on every server of a cluster).
            (Some(to), _) => {
                let base = servers.first().map(|(_, b)| b.clone()).unwrap_or_default();
                (to, base)
            }
            (None, false) => servers[next % servers.len()].clone(),
            (None, true) => {
                // No server known yet (an address server not asked yet): wait for one.
                sleep(BACKOFF_MIN).await;
                continue;
            }
        };
        let mut up = false;
        let base = config.auth.as_ref().map(|_| base);
        let ended = session(&config, &server, listed, base.as_deref(), &sink, &mut up).await;
        match ended {
            Ended::Reset(to) => {
                // The server asked for it: at once, to the server it names if any.
                sink(PushEvent::Down(format!(
                    "{server} asked the client to reconnect"
                )));
                target = to;
                next += 1;
                continue;
            }
            Ended::Unlisted => {
                // The client's list no longer has the server: at once, to one it has.
                sink(PushEvent::Down(format!("{server} left the server list")));
                continue;
            }
            Ended::Failed(why) => sink(PushEvent::Down(why)),
        }
        if up {
            backoff = BACKOFF_MIN; // it worked for a while: start over
        }
        next += 1;
        // +-25% jitter, so that clients that lost the same server do not come back together.
        let jitter = 0.75 + 0.5 * crate::pick::random_unit();
        sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum Ended {
    Reset(Option<String>),
    Unlisted,
    Failed(String),
}

/// Why a session that did not fail ended.
enum Leave {
    /// ConnectReset, to the server it names if any.
    Reset(Option<String>),
    /// The server left the client's list.
    Unlisted,
}

async fn session(
    config: &PushConfig,
    server: &str,
    listed: bool,
    base: Option<&str>,
    sink: &PushSink,
    up: &mut bool,
) -> Ended {
    match stream_session(config, server, listed, base, sink, up).await {
        Ok(Leave::Reset(to)) => Ended::Reset(to),
        Ok(Leave::Unlisted) => Ended::Unlisted,
        Err(why) => Ended::Failed(format!("push from {server}: {why}")),
    }
}

async fn stream_session(
    config: &PushConfig,
    server: &str,
    listed: bool,
    base: Option<&str>,
    sink: &PushSink,
    up: &mut bool,
) -> Result<Leave, String> {
    let mut conn = conn::connect(server, config.tls.clone(), config.timeout).await?;
    messages::connection_id(&conn.call(&messages::server_check()).await?)?;
    let identity = |renew: bool| async move {
        match (&config.auth, base) {
            (Some(auth), Some(base)) => auth.headers(base, renew, config.timeout).await,
            _ => Ok(BTreeMap::new()),
        }
    };
    let mut headers = identity(false).await?;
    let (mut to_server, mut incoming) = conn
        .stream(&messages::connection_setup(&config.namespace, &headers))
        .await?;
    let subscription = Subscription {
        namespace: &config.namespace,
        group: &config.group,
        service: &config.service,
        clusters: &config.clusters,
    };
    let list = match subscribe(&mut conn, &subscription, &headers).await {
        // A token the server no longer takes: log in again, once.
        Err(why) if config.auth.is_some() && why.contains("errorCode 403") => {
            headers = identity(true).await?;
            subscribe(&mut conn, &subscription, &headers).await?
        }
        other => other?,
    };
    *up = true;
    sink(PushEvent::Up);
    sink(PushEvent::List(list));
    let grouped = format!("{}@@{}", config.group, config.service);
    let mut quiet = Duration::ZERO;
    loop {
        let message = match timeout(TICK, incoming.next()).await {
            Ok(message) => {
                quiet = Duration::ZERO;
                message?
            }
            Err(_) => {
                // A server from the list that left it (an address server or a callback moved
                // the client): the stream moves too.
                if listed && !config.servers.now().iter().any(|(grpc, _)| grpc == server) {
                    return Ok(Leave::Unlisted);
                }
                quiet += TICK;
                if quiet >= KEEP_ALIVE {
                    // Quiet for a while: is the connection still there?
                    quiet = Duration::ZERO;
                    let answer = conn.call(&messages::health_check()).await?;
                    messages::response(&answer, "HealthCheckResponse")?;
                }
                continue;
            }
        };
        match messages::pushed(&message)? {
            Pushed::Notify {
                request_id,
                service,
                instances,
            } => {
                conn::send(
                    &mut to_server,
                    &messages::reply("NotifySubscriberRequest", &request_id),
                )?;
                if service == grouped {
                    match instances {
                        Ok(list) => sink(PushEvent::List(list)),
                        // A push that cannot be read keeps the last list; the next is awaited.
                        Err(_) => continue,
                    }
                }
            }
            Pushed::Detection { request_id } => conn::send(
                &mut to_server,
                &messages::reply("ClientDetectionRequest", &request_id),
            )?,
            Pushed::Reset { request_id, server } => {
                let _ = conn::send(
                    &mut to_server,
                    &messages::reply("ConnectResetRequest", &request_id),
                );
                return Ok(Leave::Reset(server));
            }
            Pushed::Other { kind, request_id } => {
                conn::send(&mut to_server, &messages::reply(&kind, &request_id))?
            }
        }
    }
}

/// Subscribes, retrying briefly: a server may take a moment to register the stream's setup.
async fn subscribe(
    conn: &mut Conn,
    subscription: &Subscription<'_>,
    headers: &BTreeMap<String, String>,
) -> Result<Vec<Instance>, String> {
    let mut last = String::new();
    for attempt in 0..5u64 {
        if attempt > 0 {
            sleep(Duration::from_millis(50 * attempt)).await;
        }
        let answer = conn
            .call(&messages::subscribe(subscription, headers, attempt + 1))
            .await?;
        match messages::response(&answer, "SubscribeServiceResponse")
            .and_then(|body| messages::service_instances(&body))
        {
            Ok(list) => return Ok(list),
            Err(why) => last = why,
        }
    }
    Err(last)
}
