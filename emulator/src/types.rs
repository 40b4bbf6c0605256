//! The values the emulator is configured with: endpoints, discovery paths and faults.

use std::fmt;
use std::str::FromStr;

use serde_json::{json, Value};

/// One instance of a service, as the discovery API lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// The `ip` field, sent as given (it may be anything, for malformed-item tests).
    pub ip: String,
    /// The `port` field.
    pub port: u16,
    /// The `weight` field; `None` leaves the field out. Whole numbers are sent as JSON integers.
    pub weight: Option<f64>,
}

impl Endpoint {
    /// An endpoint with an integer weight (EAS's default is 100).
    pub fn new(ip: &str, port: u16, weight: u32) -> Self {
        Endpoint {
            ip: ip.to_string(),
            port,
            weight: Some(f64::from(weight)),
        }
    }

    /// An endpoint whose item has no `weight` field.
    pub fn without_weight(ip: &str, port: u16) -> Self {
        Endpoint {
            ip: ip.to_string(),
            port,
            weight: None,
        }
    }

    /// The JSON item the discovery API sends for this endpoint of `service`:
    /// `{"app":service,"ip":..,"port":..,"weight":..}`.
    pub fn to_item(&self, service: &str) -> Value {
        let mut item = json!({ "app": service, "ip": self.ip, "port": self.port });
        if let Some(w) = self.weight {
            item["weight"] = weight_value(w);
        }
        item
    }

    /// Parses an item `{"ip":"..","port":N,"weight":W}` (weight optional, `app` ignored).
    pub fn from_item(item: &Value) -> Result<Endpoint, String> {
        let obj = item.as_object().ok_or("an item must be a JSON object")?;
        let ip = obj
            .get("ip")
            .and_then(Value::as_str)
            .ok_or("field \"ip\" must be a string")?;
        let port = obj
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or("field \"port\" must be an integer 0-65535")?;
        let weight = match obj.get("weight") {
            None => None,
            Some(w) => Some(w.as_f64().ok_or("field \"weight\" must be a number")?),
        };
        Ok(Endpoint {
            ip: ip.to_string(),
            port,
            weight,
        })
    }
}

/// A weight as JSON: an integer when it is a whole number, else a float (NaN and infinities
/// become `null`, since JSON cannot carry them).
fn weight_value(w: f64) -> Value {
    if w.fract() == 0.0 && w.abs() < 9_007_199_254_740_992.0 {
        if w >= 0.0 {
            Value::from(w as u64)
        } else {
            Value::from(w as i64)
        }
    } else {
        serde_json::Number::from_f64(w).map_or(Value::Null, Value::Number)
    }
}

/// Which discovery paths answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Paths {
    /// Both the documented and the new path answer (the default).
    #[default]
    Both,
    /// Only `/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/{service}` answers; the new
    /// path answers 404.
    DocumentedOnly,
    /// Only `/api/v1/servicediscovery/upstreams/{service}` answers; the documented path
    /// answers 404 (tests of a client's fallback).
    NewOnly,
}

impl Paths {
    /// The control-API name: `both`, `documented_only` or `new_only`.
    pub fn name(self) -> &'static str {
        match self {
            Paths::Both => "both",
            Paths::DocumentedOnly => "documented_only",
            Paths::NewOnly => "new_only",
        }
    }
}

impl fmt::Display for Paths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Paths {
    type Err = String;

    /// Parses a control-API name (`both`, `documented_only`, `new_only`).
    fn from_str(s: &str) -> Result<Paths, String> {
        match s {
            "both" => Ok(Paths::Both),
            "documented_only" => Ok(Paths::DocumentedOnly),
            "new_only" => Ok(Paths::NewOnly),
            _ => Err(format!(
                "unknown paths {s:?}; expected both, documented_only or new_only"
            )),
        }
    }
}

/// A misbehaviour of the discovery paths. It applies to every discovery request (known service
/// or not, whatever [`Paths`] says) until changed, never to `/_emulator/*`.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Fault {
    /// Normal answers.
    #[default]
    None,
    /// Answers this status with a short text body.
    Status(u16),
    /// 200 with an HTML page and `Content-Type: text/html` (a gateway or login page).
    Html,
    /// 200 announcing the Content-Length of the full answer, but only the first half of the
    /// body is sent before the connection is closed.
    Truncated,
    /// 200 with the body `{not json`.
    InvalidJson,
    /// 200 with valid JSON of another shape: `{"endpoints":{}}`.
    WrongShape,
    /// 200 with `items: []`, whatever the service's list.
    EmptyList,
    /// Reads the request and never answers. When the fault changes, the parked request is
    /// answered under the new fault; when the client closes or the emulator stops, the
    /// connection ends (both noticed within ~100 ms).
    Hang,
    /// 200 headers (Content-Length of the full answer), then the body one byte per second, the
    /// first byte at once. The connection closes when the fault changes or the emulator stops.
    Trickle,
    /// 200 with `Transfer-Encoding: chunked`, then chunks (a JSON prefix, then whitespace)
    /// forever, as fast as the client reads, until it goes away, the fault changes or the
    /// emulator stops.
    EndlessChunked,
    /// 200 with a valid answer preceded by 17 MiB of spaces (over the 16 MiB limit clients
    /// enforce), Content-Length set.
    Oversize,
    /// 302 with `Location` pointing at the same URL on the same emulator (a redirect loop).
    Redirect,
    /// Sends the headers and half the body, then closes the connection with the request still
    /// unread in the socket, which makes the kernel reset it (an RST instead of a FIN), the
    /// effect of SO_LINGER 0 without unsafe code. The client sees a partial body and/or a
    /// "connection reset" error.
    Reset,
    /// Closes the connection without reading the request or answering anything (the kernel
    /// resets it if the request had arrived). The request head is peeked, so that control-API
    /// requests on the same port still work.
    Refuse,
}

/// Every fault name the control API accepts, in documentation order.
pub const FAULT_NAMES: [&str; 14] = [
    "none",
    "status",
    "html",
    "truncated",
    "invalid_json",
    "wrong_shape",
    "empty_list",
    "hang",
    "trickle",
    "endless_chunked",
    "oversize",
    "redirect",
    "reset",
    "refuse",
];

impl Fault {
    /// The control-API name (`none`, `status`, `html`, ...; see [`FAULT_NAMES`]).
    pub fn name(&self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Status(_) => "status",
            Fault::Html => "html",
            Fault::Truncated => "truncated",
            Fault::InvalidJson => "invalid_json",
            Fault::WrongShape => "wrong_shape",
            Fault::EmptyList => "empty_list",
            Fault::Hang => "hang",
            Fault::Trickle => "trickle",
            Fault::EndlessChunked => "endless_chunked",
            Fault::Oversize => "oversize",
            Fault::Redirect => "redirect",
            Fault::Reset => "reset",
            Fault::Refuse => "refuse",
        }
    }

    /// The fault of a control-API name; `status` is used by `"status"` only and defaults to
    /// 503. The error names the bad field (`fault` or `status`).
    pub fn from_name(name: &str, status: Option<u16>) -> Result<Fault, String> {
        if let Some(s) = status {
            if !(100..=999).contains(&s) {
                return Err(format!(
                    "field \"status\": {s} is not an HTTP status (100-999)"
                ));
            }
        }
        Ok(match name {
            "none" => Fault::None,
            "status" => Fault::Status(status.unwrap_or(503)),
            "html" => Fault::Html,
            "truncated" => Fault::Truncated,
            "invalid_json" => Fault::InvalidJson,
            "wrong_shape" => Fault::WrongShape,
            "empty_list" => Fault::EmptyList,
            "hang" => Fault::Hang,
            "trickle" => Fault::Trickle,
            "endless_chunked" => Fault::EndlessChunked,
            "oversize" => Fault::Oversize,
            "redirect" => Fault::Redirect,
            "reset" => Fault::Reset,
            "refuse" => Fault::Refuse,
            _ => {
                return Err(format!(
                    "field \"fault\": unknown fault {name:?}; expected one of {}",
                    FAULT_NAMES.join(", ")
                ))
            }
        })
    }

    /// Parses the control-API JSON form: `{"fault":"status","status":503}`, or a bare string
    /// `"hang"`. The error names the bad field.
    pub fn from_json(v: &Value) -> Result<Fault, String> {
        if let Some(name) = v.as_str() {
            return Fault::from_name(name, None);
        }
        let obj = v
            .as_object()
            .ok_or("the body must be a JSON object like {\"fault\":\"hang\"}")?;
        let name = match obj.get("fault") {
            None => return Err("missing field \"fault\"".to_string()),
            Some(n) => n.as_str().ok_or("field \"fault\" must be a string")?,
        };
        let status = match obj.get("status") {
            None | Some(Value::Null) => None,
            Some(s) => Some(
                s.as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .ok_or("field \"status\" must be an integer 100-999")?,
            ),
        };
        Fault::from_name(name, status)
    }

    /// The control-API JSON form, `{"fault":name}` plus `"status"` for [`Fault::Status`].
    pub fn to_json(&self) -> Value {
        match self {
            Fault::Status(s) => json!({ "fault": self.name(), "status": s }),
            _ => json!({ "fault": self.name() }),
        }
    }
}

impl fmt::Display for Fault {
    /// The name, with the status for [`Fault::Status`]: `hang`, `status:503`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status(s) => write!(f, "status:{s}"),
            _ => f.write_str(self.name()),
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    /// Parses `name` or `status:NNN` (the [`Display`](fmt::Display) form), e.g. for a CLI flag.
    fn from_str(s: &str) -> Result<Fault, String> {
        match s.split_once(':') {
            Some(("status", code)) => {
                let code = code
                    .parse::<u16>()
                    .map_err(|_| format!("field \"status\": {code:?} is not an HTTP status"))?;
                Fault::from_name("status", Some(code))
            }
            _ => Fault::from_name(s, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip() {
        for name in FAULT_NAMES {
            let f = Fault::from_name(name, Some(429)).unwrap();
            assert_eq!(f.name(), name);
            assert_eq!(f.to_string().parse::<Fault>().unwrap(), f);
            assert_eq!(Fault::from_json(&f.to_json()).unwrap(), f);
        }
        assert_eq!(
            Fault::from_name("status", None).unwrap(),
            Fault::Status(503)
        );
        assert!(Fault::from_name("nope", None)
            .unwrap_err()
            .contains("\"fault\""));
        assert!(Fault::from_name("status", Some(42))
            .unwrap_err()
            .contains("\"status\""));
        assert!(Fault::from_json(&json!({"fault": "status", "status": "x"}))
            .unwrap_err()
            .contains("\"status\""));
        assert!(Fault::from_json(&json!({"status": 503}))
            .unwrap_err()
            .contains("\"fault\""));
    }

    #[test]
    fn paths_parse() {
        for p in [Paths::Both, Paths::DocumentedOnly, Paths::NewOnly] {
            assert_eq!(p.name().parse::<Paths>().unwrap(), p);
        }
        assert!("sideways".parse::<Paths>().is_err());
    }

    #[test]
    fn endpoint_items() {
        assert_eq!(
            Endpoint::new("10.0.0.1", 50000, 100).to_item("svc"),
            json!({"app":"svc","ip":"10.0.0.1","port":50000,"weight":100})
        );
        assert_eq!(
            Endpoint::without_weight("10.0.0.1", 1).to_item("svc"),
            json!({"app":"svc","ip":"10.0.0.1","port":1})
        );
        let half = Endpoint {
            weight: Some(0.5),
            ..Endpoint::new("::1", 2, 0)
        };
        assert_eq!(half.to_item("s")["weight"], json!(0.5));
        let neg = Endpoint {
            weight: Some(-3.0),
            ..Endpoint::new("::1", 2, 0)
        };
        assert_eq!(neg.to_item("s")["weight"], json!(-3));
        assert_eq!(
            Endpoint::from_item(&half.to_item("s")).unwrap(),
            half.clone()
        );
        assert!(Endpoint::from_item(&json!({"ip": "x", "port": 70000}))
            .unwrap_err()
            .contains("port"));
    }
}
