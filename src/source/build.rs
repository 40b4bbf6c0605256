//! Building a target's source from its options and the environment: the one place that knows
//! which source each target form uses and what each needs (TLS, the in-cluster flag, Nacos
//! addressing and credentials, a DNS server).

use std::sync::Arc;

use crate::config::{Options, Settings};
use crate::error::Error;
use crate::redact;
use crate::source::dns::DnsSource;
use crate::source::eas::EasSource;
use crate::source::nacos::{
    server_entry, NacosConfig, NacosSource, Servers, Transport, DEFAULT_ADDRESS_SERVER_PORT,
};
use crate::source::static_list::StaticSource;
use crate::source::Source;
use crate::target::TargetSpec;
use crate::tls;

/// Makes a target's source; called again where the old one cannot be used (in a child after
/// fork).
pub(crate) type SourceFactory = Box<dyn Fn() -> Box<dyn Source> + Send + Sync>;

/// The factory of the source of `spec`, with `merged` (the target's query and the caller's
/// options) and `settings` resolved from them; errors name the option (or environment
/// variable) at fault.
pub(crate) fn source_factory(
    spec: &TargetSpec,
    merged: &Options,
    settings: &Settings,
) -> Result<SourceFactory, Error> {
    let factory: SourceFactory = match spec {
        TargetSpec::Static(items) => {
            let items = items.clone();
            Box::new(move || Box::new(StaticSource::new(&items)))
        }
        TargetSpec::Dns { name, port } => {
            let server = match merged.get("dns_server") {
                None => None,
                Some(text) => Some(parse_dns_server(text)?),
            };
            let (name, port, timeout) = (name.clone(), *port, settings.request_timeout);
            Box::new(move || Box::new(DnsSource::new(&name, port, server, timeout)))
        }
        TargetSpec::Nacos {
            https,
            servers,
            service,
        } => {
            let tls = tls_if(*https, settings)?;
            // Precedence, as in the Nacos clients: the caller's server-list callback, then
            // the environment's address server, then the target's address server or list.
            let servers = match (
                &merged.nacos_server_list,
                std::env::var("ALIBABA_ALIWARE_ENDPOINT_URL"),
            ) {
                (Some(provider), _) => Servers::Provider(provider.clone()),
                (None, Ok(endpoint)) if !endpoint.trim().is_empty() => {
                    match server_entry(&endpoint, DEFAULT_ADDRESS_SERVER_PORT) {
                        Some(server) => Servers::AddressServer(server),
                        None => {
                            return Err(Error::invalid(format!(
                                "environment variable ALIBABA_ALIWARE_ENDPOINT_URL (\"{}\") names no address server host[:port]",
                                redact::target(&endpoint)
                            )))
                        }
                    }
                }
                _ => servers.clone(),
            };
            let text = |key: &str, default: &str| merged.get(key).unwrap_or(default).to_owned();
            let mut context_path = text("context_path", "/nacos");
            if !context_path.starts_with('/') {
                context_path.insert(0, '/');
            }
            let context_path = context_path.trim_end_matches('/').to_owned();
            let config = NacosConfig {
                https: *https,
                servers,
                context_path,
                namespace: text("namespace", "public"),
                group: text("group", "pai-eas"),
                clusters: text("cluster", "DEFAULT"),
                service: service.clone(),
                username: merged.get("username").map(str::to_owned),
                password: merged.get("password").map(str::to_owned),
                access_key: merged.get("access_key").map(str::to_owned),
                secret_key: merged.get("secret_key").map(str::to_owned),
                transport: match merged.get("nacos_transport").map(str::trim) {
                    Some("grpc") => Transport::Grpc,
                    Some("http") => Transport::Http,
                    _ => Transport::Auto,
                },
                grpc_port: merged
                    .get("grpc_port")
                    .map(|p| p.trim().parse().expect("integers are checked when set")),
                known_servers: Default::default(),
            };
            if config.username.is_some() != config.password.is_some() {
                return Err(Error::invalid(
                    "options \"username\" and \"password\" go together: give both or neither",
                ));
            }
            if config.access_key.is_some() != config.secret_key.is_some() {
                return Err(Error::invalid(
                    "options \"access_key\" and \"secret_key\" go together: give both or neither",
                ));
            }
            let timeout = settings.request_timeout;
            Box::new(move || Box::new(NacosSource::new(config.clone(), timeout, tls.clone())))
        }
        TargetSpec::Eas {
            https,
            authority,
            service,
        } => {
            let tls = tls_if(*https, settings)?;
            let internal =
                std::env::var_os("NAMESPACE").is_some() && std::env::var_os("POD_NAME").is_some();
            let (https, authority, service) = (*https, authority.clone(), service.clone());
            let custom_path = merged.get("discovery_path").map(str::to_owned);
            let timeout = settings.request_timeout;
            Box::new(move || {
                Box::new(EasSource::new(
                    https,
                    &authority,
                    &service,
                    custom_path.clone(),
                    internal,
                    timeout,
                    tls.clone(),
                ))
            })
        }
    };
    Ok(factory)
}

/// The TLS settings of an https source (None for plain http).
fn tls_if(https: bool, settings: &Settings) -> Result<Option<Arc<rustls::ClientConfig>>, Error> {
    if https {
        tls::client_config(settings.tls_ca_file.as_deref()).map(Some)
    } else {
        Ok(None)
    }
}

/// `ip[:port]` or `[v6][:port]` of a DNS server, port 53 by default.
fn parse_dns_server(text: &str) -> Result<std::net::SocketAddr, Error> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Ok(addr);
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| {
            Error::invalid(format!(
                "option \"dns_server\" must be an ip[:port], got \"{text}\""
            ))
        })
}
