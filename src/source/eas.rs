//! The EAS discovery API: `GET {endpoint}/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/{service}`
//! answering `{"endpoints":{"items":[{"ip":..,"port":..,"weight":..}]}}`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::http::{describe_transport, read_body};
use super::{item_address, Source};
use crate::instance::{weight_from_f64, Instance, DEFAULT_WEIGHT};
use crate::redact;

/// The documented discovery path.
pub const DOCUMENTED_PATH: &str = "/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/{service}";
/// The path the newest official Python SDK uses; tried when the documented one answers 404.
pub const NEW_PATH: &str = "/api/v1/servicediscovery/upstreams/{service}";

pub struct EasSource {
    agent: ureq::Agent,
    base: String,
    service: String,
    /// The path template in use: the caller's, or the one that answered last.
    path: &'static str,
    custom_path: Option<String>,
    internal: bool,
}

impl EasSource {
    /// `internal` adds `?internal=true` (in-cluster callers: env NAMESPACE and POD_NAME set).
    pub fn new(
        https: bool,
        authority: &str,
        service: &str,
        custom_path: Option<String>,
        internal: bool,
        timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> EasSource {
        EasSource {
            agent: super::http::agent(timeout, tls),
            base: format!("{}://{authority}", if https { "https" } else { "http" }),
            service: service.to_owned(),
            path: DOCUMENTED_PATH,
            custom_path,
            internal,
        }
    }

    fn url(&self, template: &str) -> String {
        let mut url = self.base.clone();
        url.push_str(&template.replace("{service}", &self.service));
        if self.internal {
            url.push_str(if url.contains('?') { "&" } else { "?" });
            url.push_str("internal=true");
        }
        url
    }

    fn get(&self, url: &str) -> Result<Vec<u8>, Fetch> {
        let response = match self.agent.get(url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, _)) => return Err(Fetch::Status(code)),
            Err(ureq::Error::Transport(t)) => {
                return Err(Fetch::Other(format!(
                    "GET {}: {}",
                    redact::url(url),
                    describe_transport(&t)
                )))
            }
        };
        let status = response.status();
        if !(200..300).contains(&status) {
            return Err(Fetch::Status(status));
        }
        read_body(response, &format!("GET {}", redact::url(url))).map_err(Fetch::Other)
    }
}

enum Fetch {
    Status(u16),
    Other(String),
}

impl Source for EasSource {
    fn fetch(&mut self) -> Result<Vec<Instance>, String> {
        let template = self.custom_path.as_deref().unwrap_or(self.path);
        let url = self.url(template);
        let body = match self.get(&url) {
            Ok(body) => body,
            Err(Fetch::Status(404)) if self.custom_path.is_none() => {
                let other = if self.path == DOCUMENTED_PATH {
                    NEW_PATH
                } else {
                    DOCUMENTED_PATH
                };
                let other_url = self.url(other);
                match self.get(&other_url) {
                    Ok(body) => {
                        self.path = other;
                        body
                    }
                    Err(Fetch::Status(code)) => {
                        return Err(format!(
                            "GET {} answered HTTP 404 and GET {} answered HTTP {code}",
                            redact::url(&url),
                            redact::url(&other_url)
                        ))
                    }
                    Err(Fetch::Other(message)) => return Err(message),
                }
            }
            Err(Fetch::Status(code)) => {
                return Err(format!("GET {} answered HTTP {code}", redact::url(&url)))
            }
            Err(Fetch::Other(message)) => return Err(message),
        };
        parse_upstreams(&body).map_err(|why| format!("GET {}: {why}", redact::url(&url)))
    }

    fn describe(&self) -> String {
        let url = self.url(self.custom_path.as_deref().unwrap_or(self.path));
        format!("GET {}", redact::url(&url))
    }
}

/// Parses a discovery answer. Malformed items are skipped; a body that is not the expected
/// shape is an error.
pub fn parse_upstreams(body: &[u8]) -> Result<Vec<Instance>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        let head = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        format!("body is not JSON ({e}), starting {head:?}")
    })?;
    let items = value
        .get("endpoints")
        .and_then(|e| e.get("items"))
        .ok_or("body has no endpoints.items")?;
    let items = match items {
        Value::Array(items) => items.as_slice(),
        Value::Null => &[],
        _ => return Err("endpoints.items is not an array".into()),
    };
    Ok(items.iter().filter_map(parse_item).collect())
}

fn parse_item(item: &Value) -> Option<Instance> {
    let (ip, port) = item_address(item)?;
    let weight = match item.get("weight") {
        None | Some(Value::Null) => DEFAULT_WEIGHT,
        Some(w) => weight_from_f64(w.as_f64()?)?,
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
    fn parses_the_documented_shape() {
        let body = br#"{"correlative":["svc"],"endpoints":{"items":[
            {"app":"svc","ip":"10.0.0.1","port":50000,"weight":100},
            {"app":"svc","ip":"10.0.0.2","port":50001}]}}"#;
        let list = parse_upstreams(body).unwrap();
        assert_eq!(
            hosts(&list),
            vec![
                ("10.0.0.1:50000".into(), 100),
                ("10.0.0.2:50001".into(), 100)
            ]
        );
    }

    #[test]
    fn bad_items_are_skipped_and_the_rest_used() {
        let body = br#"{"endpoints":{"items":[
            {"port":1},
            {"ip":"not-an-ip","port":1},
            {"ip":"10.0.0.1","port":0},
            {"ip":"10.0.0.1","port":65536},
            {"ip":"10.0.0.1","port":"80"},
            {"ip":"10.0.0.1","port":80.5},
            {"ip":"10.0.0.1","port":80,"weight":-1},
            {"ip":"10.0.0.1","port":80,"weight":"heavy"},
            {"ip":10,"port":80},
            "junk",
            {"ip":"10.0.0.3","port":80,"weight":0},
            {"ip":"::1","port":81,"weight":2.6},
            {"ip":"10.0.0.4","port":82,"weight":null},
            {"ip":"10.0.0.5","port":83,"weight":1e309},
            {"ip":"10.0.0.6","port":1e309},
            {"ip":"10.0.0.7","port":-1e309,"weight":-1e309},
            {"ip":"10.0.0.8","port":100000000000000000000000}]}}"#;
        let list = parse_upstreams(body).unwrap();
        assert_eq!(
            hosts(&list),
            vec![
                ("10.0.0.3:80".into(), 0),
                ("[::1]:81".into(), 3),
                ("10.0.0.4:82".into(), 100)
            ]
        );
    }

    #[test]
    fn bodies_of_the_wrong_shape_are_errors() {
        for body in [
            &b"<html>oops</html>"[..],
            b"{\"endpoints\":{\"items\":[{\"ip\":",
            b"[]",
            b"{\"endpoints\":{}}",
            b"{\"endpoints\":{\"items\":5}}",
            b"",
        ] {
            assert!(
                parse_upstreams(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(parse_upstreams(br#"{"endpoints":{"items":[]}}"#)
            .unwrap()
            .is_empty());
    }
}
