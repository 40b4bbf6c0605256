//! Nacos naming: a source that lists a service's instances from Nacos servers. One file per
//! concern: `servers` (where the servers come from, failover), `auth` (login token, AK/SK
//! signing), `http` (the naming API over HTTP, v3 with v1 fallback), `parse` (its answers),
//! `grpc` (push: the protocol's coding and messages).

mod auth;
mod grpc;
mod http;
mod parse;
mod servers;

use std::sync::Arc;
use std::time::Duration;

use super::Source;
use crate::instance::Instance;
use crate::redact;
use auth::Auth;
pub(crate) use grpc::subscriber::{PushEvent, PushSink};
use http::Api;
pub use parse::{parse_v1, parse_v3};
pub(crate) use servers::KnownServers;
use servers::ServerList;
pub use servers::{
    parse_server_list, server_entry, with_default_port, ServerListFn, ServerListProvider, Servers,
    MAX_SERVERS,
};

/// Default Nacos server port.
pub const DEFAULT_PORT: u16 = 8848;
/// Default address-server port.
pub const DEFAULT_ADDRESS_SERVER_PORT: u16 = 8080;

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
    /// `nacos_transport`: push over gRPC, HTTP polling, or both.
    pub transport: Transport,
    /// `grpc_port`: every server's gRPC port; default its HTTP port + 1000.
    pub grpc_port: Option<u16>,
    /// The servers this client's sources last learnt (shared by all of them).
    pub(crate) known_servers: KnownServers,
}

/// How lists come from Nacos (`nacos_transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Transport {
    /// Push over gRPC when the server speaks it, HTTP polling meanwhile and otherwise.
    #[default]
    Auto,
    /// Push only.
    Grpc,
    /// Polling only.
    Http,
}

/// How far a server's gRPC port is from its HTTP port, as in the Nacos clients.
pub(crate) const GRPC_PORT_OFFSET: u16 = 1000;

pub struct NacosSource {
    config: NacosConfig,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
    agent: ureq::Agent,
    servers: ServerList,
    api: Api,
    auth: Auth,
}

impl NacosSource {
    pub fn new(
        config: NacosConfig,
        timeout: Duration,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> NacosSource {
        NacosSource {
            servers: ServerList::new(config.servers.clone(), config.known_servers.clone()),
            config,
            timeout,
            agent: super::http::agent(timeout, tls.clone()),
            tls,
            api: Api::V3,
            auth: Auth::default(),
        }
    }

    fn scheme(&self) -> &'static str {
        if self.config.https {
            "https"
        } else {
            "http"
        }
    }

    /// What a push subscription needs; `None` with the `http` transport. The servers come from
    /// the client's known list at each connect (an address server's or a callback's list is
    /// learnt by the polling side, or by `maintain` when push is all there is).
    fn push_config(&self) -> Option<grpc::subscriber::PushConfig> {
        if self.config.transport == Transport::Http {
            return None;
        }
        let with_identity = self.config.username.is_some() || self.config.access_key.is_some();
        let auth = with_identity.then(|| grpc::subscriber::PushAuth {
            config: self.config.clone(),
            agent: self.agent.clone(),
            state: Default::default(),
        });
        Some(grpc::subscriber::PushConfig {
            auth,
            servers: grpc::subscriber::PushServers {
                known: self.config.known_servers.clone(),
                grpc_port: self.config.grpc_port,
                scheme: self.scheme(),
                context_path: self.config.context_path.clone(),
            },
            tls: self.tls.clone(),
            namespace: self.config.namespace.clone(),
            group: self.config.group.clone(),
            service: self.config.service.clone(),
            clusters: self.config.clusters.clone(),
            timeout: self.timeout,
        })
    }

    /// `scheme://server/context`, what every path of a server is under.
    fn base(&self, server: &str) -> String {
        format!("{}://{server}{}", self.scheme(), self.config.context_path)
    }
}

impl Source for NacosSource {
    fn fetch(&mut self) -> Result<Vec<Instance>, String> {
        self.servers
            .refresh(&self.agent, &self.config.context_path)?;
        if self.servers.is_empty() {
            return Err("no Nacos server to ask".into());
        }
        let mut errors = Vec::new();
        for _ in 0..self.servers.len() {
            let server = self.servers.current().unwrap_or_default().to_owned();
            match self.list_from(&server) {
                Ok(list) => return Ok(list),
                Err(f) => {
                    errors.push(f.message());
                    self.servers.advance();
                }
            }
        }
        Err(errors.join("; "))
    }

    fn start_push(&self, sink: PushSink) -> Option<crate::push::Task> {
        let config = self.push_config()?;
        let first = (crate::pick::random_unit() * 1024.0) as usize;
        crate::push::spawn(grpc::subscriber::run(config, first, sink))
    }

    fn maintain(&mut self) {
        // Push only: nothing is listed over HTTP, but an address server's or a callback's list
        // of servers is still asked for, so that the stream knows where to connect.
        let _ = self.servers.refresh(&self.agent, &self.config.context_path);
    }

    fn polls(&self) -> bool {
        self.config.transport != Transport::Grpc
    }

    fn describe(&self) -> String {
        let server = self.servers.current().unwrap_or("(no server)");
        let url = format!("{}{}", self.base(server), self.api.path());
        format!(
            "GET {} ({}/{}/{})",
            redact::url(&url),
            self.config.namespace,
            self.config.group,
            self.config.service
        )
    }
}
