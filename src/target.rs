//! Target strings: `eas://endpoint/service`, `static://ip:port*w,...`, and their query options.

use std::net::IpAddr;

use crate::config::{Options, SourceKind};
use crate::error::Error;
use crate::instance::{parse_ip, DEFAULT_WEIGHT};
use crate::source::nacos::{with_default_port, Servers, DEFAULT_ADDRESS_SERVER_PORT, DEFAULT_PORT};

/// A parsed target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: SourceKind,
    pub spec: TargetSpec,
    /// Options given as query parameters, percent-decoded and checked.
    pub query: Options,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// EAS discovery API at `authority` (`host[:port]`); `https` for `eas+https://`.
    Eas {
        https: bool,
        authority: String,
        service: String,
    },
    /// A fixed list of (ip, port, weight).
    Static(Vec<(IpAddr, u16, u32)>),
    /// The A and AAAA records of `name`, each an instance on `port`.
    Dns { name: String, port: u16 },
    /// Nacos naming: a server list or an address server; `https` for `nacos+https://`.
    Nacos {
        https: bool,
        servers: Servers,
        service: String,
    },
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, Error> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(Error::invalid(format!(
                "target \"{}\" has no scheme: expected eas://, eas+https://, nacos://, nacos+https://, nacos+endpoint://, dns:// or static://",
                redact_target(text)
            )));
        };
        let (body, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let query = parse_query(query.unwrap_or(""))?;
        let (kind, spec) = match scheme {
            "eas" | "eas+http" => (SourceKind::Eas, parse_eas(body, false)?),
            "eas+https" => (SourceKind::Eas, parse_eas(body, true)?),
            "static" => (SourceKind::Static, TargetSpec::Static(parse_static(body)?)),
            "nacos" => (SourceKind::Nacos, parse_nacos(body, false, false)?),
            "nacos+https" => (SourceKind::Nacos, parse_nacos(body, true, false)?),
            "nacos+endpoint" => (SourceKind::Nacos, parse_nacos(body, false, true)?),
            "dns" => (SourceKind::Dns, parse_dns(body)?),
            other => {
                return Err(Error::invalid(format!(
                    "target scheme \"{other}://\" is unknown: expected eas://, eas+https://, nacos://, nacos+https://, nacos+endpoint://, dns:// or static://"
                )))
            }
        };
        Ok(Target { kind, spec, query })
    }
}

/// A target as it may be printed: without userinfo or query values.
pub fn redact_target(text: &str) -> String {
    let without_query = text.split('?').next().unwrap_or("");
    match without_query.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => without_query.to_owned(),
        },
        None => without_query.to_owned(),
    }
}

fn parse_eas(body: &str, https: bool) -> Result<TargetSpec, Error> {
    let Some((authority, service)) = body.split_once('/') else {
        return Err(Error::invalid(format!(
            "target \"eas://{body}\" has no service: expected eas://endpoint[:port]/service"
        )));
    };
    if authority.contains('@') {
        return Err(Error::invalid(
            "target endpoint must not carry userinfo (user@host): EAS discovery takes no credentials",
        ));
    }
    check_authority(authority)?;
    check_service(service)?;
    Ok(TargetSpec::Eas {
        https,
        authority: authority.to_owned(),
        service: service.to_owned(),
    })
}

fn parse_dns(body: &str) -> Result<TargetSpec, Error> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "target \"dns://{body}\" {why}: expected dns://name:port"
        )))
    };
    let Some((name, port)) = body.rsplit_once(':') else {
        return bad("has no port");
    };
    let Ok(port) = port.parse::<u16>() else {
        return bad("has a port that is not 1-65535");
    };
    if port == 0 {
        return bad("has a port that is not 1-65535");
    }
    let valid_name = !name.is_empty()
        && name.len() <= 253
        && name.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !valid_name {
        return bad("has no valid DNS name");
    }
    Ok(TargetSpec::Dns {
        name: name.to_owned(),
        port,
    })
}

fn parse_nacos(body: &str, https: bool, address_server: bool) -> Result<TargetSpec, Error> {
    let Some((hosts, service)) = body.split_once('/') else {
        return Err(Error::invalid(format!(
            "target \"nacos://{body}\" has no service: expected nacos://host[:port][,host[:port]...]/service"
        )));
    };
    if hosts.contains('@') {
        return Err(Error::invalid(
            "target must not carry userinfo (user@host): use the username and password options",
        ));
    }
    let entries: Vec<&str> = hosts
        .split([',', ';'])
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if entries.is_empty() {
        return Err(Error::invalid("nacos target lists no server"));
    }
    for entry in &entries {
        check_authority(entry)?;
    }
    check_service_chars(service, true)?;
    let servers = if address_server {
        if entries.len() != 1 {
            return Err(Error::invalid("nacos+endpoint:// takes one address server"));
        }
        Servers::AddressServer(with_default_port(entries[0], DEFAULT_ADDRESS_SERVER_PORT))
    } else {
        Servers::Fixed(
            entries
                .iter()
                .map(|e| with_default_port(e, DEFAULT_PORT))
                .collect(),
        )
    };
    Ok(TargetSpec::Nacos {
        https,
        servers,
        service: service.to_owned(),
    })
}

fn check_authority(authority: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "target endpoint \"{authority}\" {why}"
        )))
    };
    if authority.is_empty() {
        return bad("is empty");
    }
    let (host, port) = split_host_port(authority);
    if host.is_empty() {
        return bad("has no host");
    }
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return bad("has a port that is not 1-65535");
        }
    }
    let host_ok = if host.starts_with('[') {
        parse_ip(host).is_some_and(|ip| ip.is_ipv6())
    } else {
        host.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if !host_ok {
        return bad("is not a host name or address");
    }
    Ok(())
}

/// Splits `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => {
                let port = authority[end + 1..].strip_prefix(':');
                (&authority[..=end], port)
            }
            None => (authority, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    }
}

fn check_service(service: &str) -> Result<(), Error> {
    check_service_chars(service, false)
}

/// A service name goes into a URL path (EAS) or a query (Nacos, which also allows ':' and '@',
/// as Dubbo names use): only characters that need no encoding in a path are accepted.
fn check_service_chars(service: &str, nacos: bool) -> Result<(), Error> {
    if service.is_empty() {
        return Err(Error::invalid("target has an empty service name"));
    }
    let ok = service.len() <= 256
        && service.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '-' | '.')
                || (nacos && matches!(c, ':' | '@'))
        })
        && service != "."
        && service != "..";
    if !ok {
        return Err(Error::invalid(format!(
            "target service name \"{}\" may only contain letters, digits, '_', '-', '.'{}",
            service.escape_default(),
            if nacos {
                ", ':' and '@'"
            } else {
                " and nothing else"
            }
        )));
    }
    Ok(())
}

fn parse_static(body: &str) -> Result<Vec<(IpAddr, u16, u32)>, Error> {
    let mut out = Vec::new();
    for item in body.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let bad = |why: &str| {
            Err(Error::invalid(format!(
                "static target item \"{item}\" {why}: expected ip:port[*weight]"
            )))
        };
        let (addr, weight) = match item.split_once('*') {
            Some((a, w)) => match w.parse::<u32>() {
                Ok(w) => (a, w),
                Err(_) => return bad("has a weight that is not an integer >= 0"),
            },
            None => (item, DEFAULT_WEIGHT),
        };
        let (host, port) = split_host_port(addr);
        let Some(ip) = parse_ip(host) else {
            return bad("has no textual IPv4 or IPv6 address");
        };
        let port = match port.map(str::parse::<u16>) {
            Some(Ok(p)) if p > 0 => p,
            _ => return bad("has no port 1-65535"),
        };
        out.push((ip, port, weight));
    }
    if out.is_empty() {
        return Err(Error::invalid("static target lists no instance"));
    }
    if out.iter().all(|&(_, _, w)| w == 0) {
        // A fixed list is never fetched again: it could never become ready.
        return Err(Error::invalid(
            "static target lists no instance of positive weight",
        ));
    }
    Ok(out)
}

fn parse_query(query: &str) -> Result<Options, Error> {
    let mut options = Options::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k)?;
        let value = percent_decode(v)?;
        if options.get(&key).is_some() {
            return Err(Error::invalid(format!(
                "target query gives option \"{key}\" twice"
            )));
        }
        options.set(&key, &value)?;
    }
    Ok(options)
}

fn percent_decode(text: &str) -> Result<String, Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(b) = hex else {
                    return Err(Error::invalid(format!(
                        "target query has a bad percent escape in \"{text}\""
                    )));
                };
                out.push(b);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::invalid("target query decodes to text that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eas_target_with_port_and_query() {
        let t = Target::parse("eas://1.2.3.4:8080/my_svc?refresh_interval_ms=100").unwrap();
        assert_eq!(
            t.spec,
            TargetSpec::Eas {
                https: false,
                authority: "1.2.3.4:8080".into(),
                service: "my_svc".into()
            }
        );
        assert_eq!(t.query.get("refresh_interval_ms"), Some("100"));
        let t = Target::parse("eas+https://eas.example.com/svc").unwrap();
        assert!(matches!(t.spec, TargetSpec::Eas { https: true, .. }));
    }

    #[test]
    fn query_is_percent_decoded_and_a_repeated_key_rejected() {
        let t = Target::parse("eas://h/s?discovery_path=%2Fapi%2F%7Bservice%7D").unwrap();
        assert_eq!(t.query.get("discovery_path"), Some("/api/{service}"));
        let err = Target::parse("eas://h/s?request_timeout_ms=1&request_timeout_ms=2").unwrap_err();
        assert!(err.message.contains("request_timeout_ms"), "{err}");
        let err = Target::parse("eas://h/s?bogus=1").unwrap_err();
        assert!(err.message.contains("bogus"), "{err}");
    }

    #[test]
    fn service_names_that_escape_the_path_are_rejected() {
        for bad in ["../x", "a/b", "a?b", "a#b", "a b", "a\r\nb", "é", "", ".."] {
            let err = Target::parse(&format!("eas://h:80/{bad}")).unwrap_err();
            assert_eq!(
                err.kind,
                crate::error::ErrorKind::InvalidArgument,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn static_target_with_weights_and_ipv6() {
        let t = Target::parse("static://10.0.0.1:80*5,[::1]:81,10.0.0.2:82*0").unwrap();
        let TargetSpec::Static(list) = t.spec else {
            panic!()
        };
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].2, 5);
        assert_eq!(list[1], ("::1".parse().unwrap(), 81, 100));
        assert_eq!(list[2].2, 0);
    }

    #[test]
    fn nacos_targets_split_servers_and_default_ports() {
        let t = Target::parse("nacos://10.0.0.1,10.0.0.2:9000;nacos.local/providers:com.Foo:1.0")
            .unwrap();
        assert_eq!(t.kind, SourceKind::Nacos);
        let TargetSpec::Nacos {
            servers,
            service,
            https,
        } = t.spec
        else {
            panic!()
        };
        assert!(!https);
        assert_eq!(service, "providers:com.Foo:1.0");
        assert_eq!(
            servers,
            Servers::Fixed(vec![
                "10.0.0.1:8848".into(),
                "10.0.0.2:9000".into(),
                "nacos.local:8848".into()
            ])
        );
        let t = Target::parse("nacos+endpoint://addr.local/svc?namespace=dev").unwrap();
        let TargetSpec::Nacos { servers, .. } = t.spec else {
            panic!()
        };
        assert_eq!(servers, Servers::AddressServer("addr.local:8080".into()));
        assert!(Target::parse("nacos://u:p@h/svc").is_err());
        assert!(Target::parse("nacos:///svc").is_err());
        assert!(Target::parse("nacos://h/a b").is_err());
    }

    #[test]
    fn dns_targets_take_a_name_and_a_port() {
        let t = Target::parse("dns://my-svc.ns.svc.cluster.local:8080").unwrap();
        assert_eq!(t.kind, SourceKind::Dns);
        assert_eq!(
            t.spec,
            TargetSpec::Dns {
                name: "my-svc.ns.svc.cluster.local".into(),
                port: 8080
            }
        );
        for bad in [
            "dns://name",
            "dns://name:0",
            "dns://:80",
            "dns://a..b:80",
            "dns://a b:80",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_targets_say_why() {
        for (bad, needle) in [
            ("nothing", "scheme"),
            ("ftp://x/y", "ftp"),
            ("eas://host", "service"),
            ("eas://host:0/s", "port"),
            ("eas://host:99999/s", "port"),
            ("eas://u:p@host/s", "userinfo"),
            ("static://10.0.0.1", "port"),
            ("static://host:80", "address"),
            ("static://10.0.0.1:80*-1", "weight"),
            ("static://", "no instance"),
            ("dns://x", "port"),
            ("static://10.0.0.1:80*0", "positive weight"),
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(err.message.contains(needle), "{bad}: {err}");
            assert!(!err.message.contains(":p@"), "{err}");
        }
    }
}
