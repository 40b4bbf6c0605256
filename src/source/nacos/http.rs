//! The Nacos naming API over HTTP: `GET {context}/v3/client/ns/instance/list` (3.x), falling
//! back on 404 or 410 to `GET {context}/v1/ns/instance/list` (1.x to 3.1), and back again for a
//! server that has dropped v1.

use super::parse::{parse_v1, parse_v3};
use super::NacosSource;
use crate::instance::Instance;
use crate::redact;
use crate::source::http::{describe_transport, read_body};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Api {
    V3,
    V1,
}

impl Api {
    pub(super) fn path(self) -> &'static str {
        match self {
            Api::V3 => "/v3/client/ns/instance/list",
            Api::V1 => "/v1/ns/instance/list",
        }
    }
}

/// Why a request failed: an HTTP status (which may call for a fallback or a new login) or
/// anything else; both with the message to show.
pub(super) enum Failure {
    Status(u16, String),
    Other(String),
}

impl Failure {
    pub(super) fn message(self) -> String {
        match self {
            Failure::Status(_, m) | Failure::Other(m) => m,
        }
    }
}

impl NacosSource {
    /// The list from `server`, logging in first when needed and again on a 403.
    pub(super) fn list_from(&mut self, server: &str) -> Result<Vec<Instance>, Failure> {
        let base = self.base(server);
        self.auth.ensure(&self.agent, &self.config, &base, false)?;
        match self.list_once(server) {
            Err(Failure::Status(403, _)) if self.config.username.is_some() => {
                self.auth.ensure(&self.agent, &self.config, &base, true)?;
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
        let mut params = match api {
            Api::V3 => vec![
                ("namespaceId", c.namespace.clone()),
                ("groupName", c.group.clone()),
                ("serviceName", c.service.clone()),
                ("clusterName", c.clusters.clone()),
            ],
            Api::V1 => vec![
                ("namespaceId", c.namespace.clone()),
                ("groupName", c.group.clone()),
                ("serviceName", format!("{}@@{}", c.group, c.service)),
                ("clusters", c.clusters.clone()),
                ("healthyOnly", "false".into()),
            ],
        };
        params.extend(self.auth.identity(c));
        let url = format!("{}{}", self.base(server), api.path());
        let body = get_text(&self.agent, &url, &params)?;
        let parsed = match api {
            Api::V3 => parse_v3(body.as_bytes()),
            Api::V1 => parse_v1(body.as_bytes()),
        };
        parsed.map_err(|why| Failure::Other(format!("GET {}: {why}", shown_url(&url, &params))))
    }
}

/// The URL with its query parameters as it may be printed (see [`redact::url`]).
pub(super) fn shown_url(url: &str, params: &[(&str, String)]) -> String {
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

pub(super) fn get_text(
    agent: &ureq::Agent,
    url: &str,
    params: &[(&str, String)],
) -> Result<String, Failure> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
