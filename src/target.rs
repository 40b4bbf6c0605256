//! Target strings: `eas://endpoint/service`, `static://ip:port*w,...`, and their query options.

use std::net::IpAddr;

use crate::config::{Options, SourceKind};
use crate::error::Error;
use crate::instance::{parse_ip, DEFAULT_WEIGHT};
use crate::redact;
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
        let reading = redact::target_read(text);
        let said = Said(&reading.shown);
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(said.error(format!("has no scheme: expected {SCHEMES}")));
        };
        let (body, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (kind, spec) = match scheme {
            "eas" | "eas+http" => (SourceKind::Eas, parse_eas(body, false, said)?),
            "eas+https" => (SourceKind::Eas, parse_eas(body, true, said)?),
            "static" => (
                SourceKind::Static,
                TargetSpec::Static(parse_static(body, said)?),
            ),
            "nacos" => (SourceKind::Nacos, parse_nacos(body, false, false, said)?),
            "nacos+https" => (SourceKind::Nacos, parse_nacos(body, true, false, said)?),
            "nacos+endpoint" => (SourceKind::Nacos, parse_nacos(body, false, true, said)?),
            "dns" => (SourceKind::Dns, parse_dns(body, said)?),
            other => {
                let named = said
                    .piece(other)
                    .map_or(String::new(), |s| format!(" \"{s}://\""));
                return Err(said.error(format!("has an unknown scheme{named}: expected {SCHEMES}")));
            }
        };
        // After the body: a body that cannot be read ends the parse before a query that may
        // be part of a password is looked at.
        let query = parse_query(query.unwrap_or(""), said, reading.query_unclear)?;
        Ok(Target { kind, spec, query })
    }
}

const SCHEMES: &str =
    "eas://, eas+https://, nacos://, nacos+https://, nacos+endpoint://, dns:// or static://";

/// How a message about a target quotes it: the target as `redact::target` prints it, and a
/// piece of the text only when that printed form shows it already, so that no message can
/// carry a part of a secret (a password holding `/` or `?` splits the text in odd places).
#[derive(Clone, Copy)]
struct Said<'a>(&'a str);

impl Said<'_> {
    fn error(self, why: impl std::fmt::Display) -> Error {
        Error::invalid(format!("target \"{}\" {why}", self.0))
    }

    /// `piece`, when printing it shows nothing the printed target does not.
    fn piece(self, piece: &str) -> Option<&str> {
        (!piece.is_empty() && self.0.contains(piece)).then_some(piece)
    }

    /// ` "piece"` (with a leading space) when the piece may be printed, else nothing.
    fn quoted(self, piece: &str) -> String {
        self.piece(piece)
            .map_or(String::new(), |p| format!(" \"{}\"", p.escape_default()))
    }
}

fn parse_eas(body: &str, https: bool, said: Said) -> Result<TargetSpec, Error> {
    let Some((authority, service)) = body.split_once('/') else {
        return Err(said.error("has no service: expected eas://endpoint[:port]/service"));
    };
    if authority.contains('@') {
        return Err(said.error("carries userinfo (user@host): EAS discovery takes no credentials"));
    }
    check_authority(authority, said)?;
    check_service(service, said)?;
    Ok(TargetSpec::Eas {
        https,
        authority: authority.to_owned(),
        service: service.to_owned(),
    })
}

fn parse_dns(body: &str, said: Said) -> Result<TargetSpec, Error> {
    let bad = |why: &str| Err(said.error(format!("{why}: expected dns://name:port")));
    if body.contains('@') {
        return bad("carries userinfo (user@host): DNS takes no credentials");
    }
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

fn parse_nacos(
    body: &str,
    https: bool,
    address_server: bool,
    said: Said,
) -> Result<TargetSpec, Error> {
    let Some((hosts, service)) = body.split_once('/') else {
        return Err(
            said.error("has no service: expected nacos://host[:port][,host[:port]...]/service")
        );
    };
    if hosts.contains('@') {
        return Err(
            said.error("carries userinfo (user@host): use the username and password options")
        );
    }
    let entries: Vec<&str> = hosts
        .split([',', ';'])
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if entries.is_empty() {
        return Err(said.error("lists no Nacos server"));
    }
    for entry in &entries {
        check_authority(entry, said)?;
    }
    check_service_chars(service, true, said)?;
    let servers = if address_server {
        if entries.len() != 1 {
            return Err(
                said.error("names more than one address server: nacos+endpoint:// takes one")
            );
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

fn check_authority(authority: &str, said: Said) -> Result<(), Error> {
    match authority_problem(authority) {
        None => Ok(()),
        Some("is empty") => Err(said.error("has an empty endpoint")),
        Some(why) => Err(said.error(format!(
            "has an endpoint{} that {why}",
            said.quoted(authority)
        ))),
    }
}

/// What is wrong with `authority` as a `host[:port]` or `[v6][:port]`, if anything: the one
/// check of every server a target, the environment, an address server or a callback names.
pub(crate) fn authority_problem(authority: &str) -> Option<&'static str> {
    if authority.is_empty() {
        return Some("is empty");
    }
    let (host, port) = split_host_port(authority);
    if host.is_empty() {
        return Some("has no host");
    }
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return Some("has a port that is not 1-65535");
        }
    }
    let host_ok = if host.starts_with('[') {
        parse_ip(host).is_some_and(|ip| ip.is_ipv6())
    } else {
        host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if !host_ok {
        return Some("is not a host name or address");
    }
    None
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

fn check_service(service: &str, said: Said) -> Result<(), Error> {
    check_service_chars(service, false, said)
}

/// A service name goes into a URL path (EAS) or a query (Nacos, which also allows ':', as Dubbo
/// names use): only characters that need no encoding in a path are accepted. Not '@': in a
/// target it reads as the end of userinfo (`nacos://user:pa/ss@host/svc`), and Nacos group
/// names come from the `group` option.
fn check_service_chars(service: &str, nacos: bool, said: Said) -> Result<(), Error> {
    if service.is_empty() {
        return Err(said.error("has an empty service name"));
    }
    let ok = service.len() <= 256
        && service.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') || (nacos && c == ':')
        })
        && service != "."
        && service != "..";
    if !ok {
        return Err(said.error(format!(
            "has a service name{} that may only contain letters, digits, '_', '-', '.'{}",
            said.quoted(service),
            if nacos {
                " and ':'"
            } else {
                " and nothing else"
            }
        )));
    }
    Ok(())
}

fn parse_static(body: &str, said: Said) -> Result<Vec<(IpAddr, u16, u32)>, Error> {
    let mut out = Vec::new();
    for (number, item) in body.split(',').enumerate() {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let bad = |why: &str| {
            let named = match said.piece(item) {
                Some(item) => format!("\"{item}\""),
                None => format!("{}", number + 1),
            };
            Err(said.error(format!(
                "has an item {named} that {why}: expected ip:port[*weight]"
            )))
        };
        if item.contains('@') {
            return bad("carries userinfo (user@host): a static list takes no credentials");
        }
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
        return Err(said.error("lists no instance"));
    }
    if out.iter().all(|&(_, _, w)| w == 0) {
        // A fixed list is never fetched again: it could never become ready.
        return Err(said.error("lists no instance of positive weight"));
    }
    Ok(out)
}

/// Options given as query parameters. A message names the key (never a value: it may be a
/// secret) when the key has the shape of an option key; after a secret parameter nothing is
/// named, since a secret holding an unencoded `&` reads as more parameters.
/// `unclear`: an `@` follows the `?`, so this "query" may be part of a password holding `?`.
fn parse_query(query: &str, said: Said, unclear: bool) -> Result<Options, Error> {
    let mut options = Options::new();
    let mut after_secret = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let unnamed = || {
            said.error(if unclear {
                "has a query parameter that is not valid (not named: '@' after '?' cannot be told from userinfo; percent-encode '@' as %40)"
            } else if after_secret {
                "has a query parameter after a secret one that is not valid (not named: percent-encode '&' in secrets)"
            } else {
                "has a query parameter whose key is not an option key (letters, digits and '_')"
            })
        };
        let quiet = unclear || after_secret;
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = match percent_decode(k) {
            Ok(key)
                if !key.is_empty()
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                key
            }
            _ => return Err(unnamed()),
        };
        let Ok(value) = percent_decode(v) else {
            return Err(if quiet {
                unnamed()
            } else {
                said.error(format!(
                    "gives option \"{key}\" a value with a bad percent escape or that is not UTF-8"
                ))
            });
        };
        if options.get(&key).is_some() {
            return Err(if quiet {
                unnamed()
            } else {
                said.error(format!("gives option \"{key}\" twice"))
            });
        }
        if let Err(e) = options.set(&key, &value) {
            return Err(if quiet { unnamed() } else { e });
        }
        after_secret |= redact::is_secret_param(&key);
    }
    Ok(options)
}

/// Decodes `%XX` escapes and `+`; `Err` for a bad escape or text that is not UTF-8.
fn percent_decode(text: &str) -> Result<String, ()> {
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
                out.push(hex.ok_or(())?);
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
    String::from_utf8(out).map_err(|_| ())
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
    fn an_at_sign_in_a_query_value_is_no_userinfo() {
        let t = Target::parse("nacos://h/svc?username=a@b.example&namespace=dev").unwrap();
        assert_eq!(t.query.get("username"), Some("a@b.example"));
        // In a service name it would be: `nacos://u:pa/ss@host/svc`.
        let err = Target::parse("nacos://u:pa/ss@h/svc").unwrap_err();
        assert!(
            !err.message.contains("pa") && !err.message.contains("ss@"),
            "{err}"
        );
        // ...but a message about such a target names nothing after the '?'.
        let err = Target::parse("nacos://h/svc?username=a@b&bogus=1").unwrap_err();
        assert!(!err.message.contains("bogus"), "{err}");
    }

    #[test]
    fn messages_name_the_offending_piece_when_it_holds_no_secret() {
        let err = Target::parse("static://10.0.0.1:80,10.0.0.2").unwrap_err();
        assert!(err.message.contains("\"10.0.0.2\""), "{err}");
        let err = Target::parse("eas://h:80/a b").unwrap_err();
        assert!(err.message.contains("\"a b\""), "{err}");
        let err = Target::parse("eas://h/s?bogus=1").unwrap_err();
        assert!(err.message.contains("bogus"), "{err}");
        // A password holding '/' makes "u:pw" read as an endpoint: it is not named.
        let err = Target::parse("eas://u:pw/x@h/s").unwrap_err();
        assert!(!err.message.contains("pw"), "{err}");
        assert!(err.message.contains("eas://***@h/s"), "{err}");
        // After a secret parameter nothing is named: an unencoded '&' splits secrets.
        let err = Target::parse("nacos://h/s?password=pa&ss=1").unwrap_err();
        assert!(!err.message.contains("ss"), "{err}");
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
