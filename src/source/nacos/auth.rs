//! Who a Nacos source is to its servers: a username/password login (`accessToken`, renewed
//! before `tokenTtl` runs out and on 403) or MSE AK/SK signing (HMAC-SHA1 of
//! `{unix ms}@@{group}@@{service}`).

use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha1::Sha1;

use super::http::Failure;
use super::NacosConfig;
use crate::redact;
use crate::source::http::{describe_transport, read_body};

struct Token {
    value: String,
    renew_at: Instant,
}

/// The login token of a source, when it logs in.
#[derive(Default)]
pub(super) struct Auth {
    token: Option<Token>,
}

impl Auth {
    /// Logs in at `base` (`scheme://server/context`), or renews the token, when a username is
    /// configured; `force` renews a token still valid (the server answered 403).
    pub(super) fn ensure(
        &mut self,
        agent: &ureq::Agent,
        config: &NacosConfig,
        base: &str,
        force: bool,
    ) -> Result<(), Failure> {
        let (Some(username), Some(password)) = (&config.username, &config.password) else {
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
        let login = |path: &str| -> Result<ureq::Response, Failure> {
            let url = format!("{base}{path}");
            match agent
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
        let base = redact::url(base);
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

    /// What identifies the caller, as query parameters: the token, or the AK/SK signature.
    pub(super) fn identity(&self, config: &NacosConfig) -> Vec<(&'static str, String)> {
        let mut params = Vec::new();
        if let Some(token) = &self.token {
            params.push(("accessToken", token.value.clone()));
        }
        if let (Some(ak), Some(sk)) = (&config.access_key, &config.secret_key) {
            let data = format!(
                "{}@@{}@@{}",
                crate::eject::unix_ms(),
                config.group,
                config.service
            );
            params.push(("signature", sign(&data, sk)));
            params.push(("data", data));
            params.push(("ak", ak.clone()));
        }
        params
    }
}

fn sign(data: &str, secret_key: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret_key.as_bytes()).expect("HMAC takes any key");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
