//! The Nacos gRPC messages a subscriber exchanges, as `Payload`s with JSON bodies (camelCase
//! fields, as the Nacos clients write them):
//! - to the server: `ServerCheckRequest` and `HealthCheckRequest` (unary, module `internal`),
//!   `ConnectionSetupRequest` (first message of the bi-stream), `SubscribeServiceRequest`
//!   (unary, module `naming`), and the answers to what the server sends on the bi-stream
//!   (`NotifySubscriberResponse`, `ClientDetectionResponse`, `ConnectResetResponse`), each
//!   with the request's `requestId`;
//! - from the server: responses (`resultCode` 200, or an `ErrorResponse`) and, on the
//!   bi-stream, `NotifySubscriberRequest` (a new `serviceInfo`), `ClientDetectionRequest`,
//!   `ConnectResetRequest` (optionally naming the server to move to).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::codec::Payload;
use crate::instance::Instance;
use crate::source::nacos::parse::service_info_hosts;
use crate::source::quoted_upstream;

/// What this client says it is in ConnectionSetup.
const CLIENT_VERSION: &str = concat!("easdirect:v", env!("CARGO_PKG_VERSION"));

fn payload(kind: &str, headers: &BTreeMap<String, String>, body: Value) -> Payload {
    Payload {
        kind: kind.to_owned(),
        client_ip: String::new(),
        headers: headers.clone(),
        type_url: kind.to_owned(),
        body: body.to_string().into_bytes(),
    }
}

/// `ServerCheckRequest`: the first call on a connection; its answer names the connection.
pub(crate) fn server_check() -> Payload {
    payload(
        "ServerCheckRequest",
        &BTreeMap::new(),
        json!({"headers": {}, "module": "internal"}),
    )
}

/// `HealthCheckRequest`: the keep-alive of an idle connection.
pub(crate) fn health_check() -> Payload {
    payload(
        "HealthCheckRequest",
        &BTreeMap::new(),
        json!({"headers": {}, "module": "internal"}),
    )
}

/// `ConnectionSetupRequest`: registers the bi-stream as this connection's push channel.
pub(crate) fn connection_setup(namespace: &str, headers: &BTreeMap<String, String>) -> Payload {
    payload(
        "ConnectionSetupRequest",
        headers,
        json!({
            "headers": headers,
            "module": "internal",
            "clientVersion": CLIENT_VERSION,
            "tenant": namespace,
            "labels": {"source": "sdk", "module": "naming"},
            "abilities": {
                "remoteAbility": {"supportRemoteConnection": true},
                "namingAbility": {"supportDeltaPush": false, "supportRemoteMetric": false},
            },
        }),
    )
}

/// What a subscription names.
pub(crate) struct Subscription<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) group: &'a str,
    pub(crate) service: &'a str,
    pub(crate) clusters: &'a str,
}

/// `SubscribeServiceRequest`: asks for pushes of the service and answers its current list.
/// `headers`: the login token or the AK/SK signature, as over HTTP.
pub(crate) fn subscribe(
    s: &Subscription,
    headers: &BTreeMap<String, String>,
    request_id: u64,
) -> Payload {
    payload(
        "SubscribeServiceRequest",
        headers,
        json!({
            "headers": headers,
            "requestId": request_id.to_string(),
            "module": "naming",
            "namespace": s.namespace,
            "groupName": s.group,
            "serviceName": s.service,
            "clusters": s.clusters,
            "subscribe": true,
        }),
    )
}

/// The answer to a server's request on the bi-stream (`{kind}Response`, same requestId).
pub(crate) fn reply(request_kind: &str, request_id: &str) -> Payload {
    let kind = match request_kind.strip_suffix("Request") {
        Some(base) => format!("{base}Response"),
        None => format!("{request_kind}Response"),
    };
    payload(
        &kind,
        &BTreeMap::new(),
        json!({"requestId": request_id, "resultCode": 200, "errorCode": 0, "message": "ok"}),
    )
}

/// The JSON body of a payload that must be a successful response of `kind`.
pub(crate) fn response(p: &Payload, kind: &str) -> Result<Value, String> {
    let body: Value = serde_json::from_slice(&p.body)
        .map_err(|_| format!("the server's {} is not JSON", quoted_upstream(&p.kind)))?;
    let code = body.get("resultCode").and_then(Value::as_i64).unwrap_or(0);
    if p.kind == "ErrorResponse" || code != 200 {
        let message = body.get("message").and_then(Value::as_str).unwrap_or("");
        let error = body.get("errorCode").and_then(Value::as_i64).unwrap_or(0);
        return Err(format!(
            "the server answered {kind} with {} (resultCode {code}, errorCode {error}): {}",
            quoted_upstream(&p.kind),
            quoted_upstream(message)
        ));
    }
    if p.kind != kind {
        return Err(format!(
            "the server answered {} where {kind} was expected",
            quoted_upstream(&p.kind)
        ));
    }
    Ok(body)
}

/// The connection id a `ServerCheckResponse` gives.
pub(crate) fn connection_id(p: &Payload) -> Result<String, String> {
    let body = response(p, "ServerCheckResponse")?;
    body.get("connectionId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| "the ServerCheckResponse has no connectionId".into())
}

/// The instances of the `serviceInfo` a `SubscribeServiceResponse` or a push carries.
pub(crate) fn service_instances(body: &Value) -> Result<Vec<Instance>, String> {
    match body.get("serviceInfo") {
        Some(info @ Value::Object(_)) => service_info_hosts(info),
        _ => Err("no serviceInfo".into()),
    }
}

/// What the server sent on the bi-stream.
#[derive(Debug, PartialEq)]
pub(crate) enum Pushed {
    /// A new list for the subscription named `service` (as the server writes it,
    /// `group@@service`).
    Notify {
        request_id: String,
        service: String,
        instances: Result<Vec<Instance>, String>,
    },
    /// Is this client still there? Answered.
    Detection { request_id: String },
    /// Reconnect, to `server` (`ip:port`) when it names one.
    Reset {
        request_id: String,
        server: Option<String>,
    },
    /// Anything else with a requestId: answered, otherwise ignored.
    Other { kind: String, request_id: String },
}

/// Reads a message the server sent on the bi-stream; `Err` for one that is no request.
pub(crate) fn pushed(p: &Payload) -> Result<Pushed, String> {
    let body: Value = serde_json::from_slice(&p.body)
        .map_err(|_| format!("the server's {} is not JSON", quoted_upstream(&p.kind)))?;
    let request_id = body
        .get("requestId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(match p.kind.as_str() {
        "NotifySubscriberRequest" => {
            let info = body.get("serviceInfo").cloned().unwrap_or(Value::Null);
            let group = info.get("groupName").and_then(Value::as_str).unwrap_or("");
            let name = info.get("name").and_then(Value::as_str).unwrap_or("");
            let service = if name.contains("@@") || group.is_empty() {
                name.to_owned()
            } else {
                format!("{group}@@{name}")
            };
            Pushed::Notify {
                request_id,
                service,
                instances: service_instances(&body),
            }
        }
        "ClientDetectionRequest" => Pushed::Detection { request_id },
        "ConnectResetRequest" => {
            let ip = body.get("serverIp").and_then(Value::as_str).unwrap_or("");
            let port = body
                .get("serverPort")
                .and_then(|p| p.as_u64().or_else(|| p.as_str()?.parse().ok()))
                .filter(|&p| (1..=65535).contains(&p));
            let server = match port {
                Some(port) if !ip.is_empty() => crate::source::nacos::server_entry(ip, port as u16),
                _ => None,
            };
            Pushed::Reset { request_id, server }
        }
        kind if kind.ends_with("Request") => Pushed::Other {
            kind: kind.to_owned(),
            request_id,
        },
        _ => {
            return Err(format!(
                "the server sent {} on the stream",
                quoted_upstream(&p.kind)
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(p: &Payload) -> Value {
        serde_json::from_slice(&p.body).unwrap()
    }

    fn server(kind: &str, body: Value) -> Payload {
        payload(kind, &BTreeMap::new(), body)
    }

    #[test]
    fn a_subscription_names_the_service_as_the_java_client_does() {
        let headers: BTreeMap<String, String> = [("accessToken".into(), "tok".into())].into();
        let s = Subscription {
            namespace: "ns",
            group: "G",
            service: "svc",
            clusters: "c1,c2",
        };
        let p = subscribe(&s, &headers, 42);
        assert_eq!(p.kind, "SubscribeServiceRequest");
        assert_eq!(p.type_url, p.kind);
        assert_eq!(p.headers, headers, "the token travels in the metadata too");
        let b = body(&p);
        assert_eq!(b["requestId"], "42");
        assert_eq!(b["namespace"], "ns");
        assert_eq!(b["groupName"], "G");
        assert_eq!(b["serviceName"], "svc");
        assert_eq!(b["clusters"], "c1,c2");
        assert_eq!(b["subscribe"], true);
        assert_eq!(b["module"], "naming");
        assert_eq!(b["headers"]["accessToken"], "tok");
    }

    #[test]
    fn pushes_are_read_and_answered_with_their_request_id() {
        let p = server(
            "NotifySubscriberRequest",
            json!({"requestId": "9", "module": "naming", "serviceInfo": {
                "name": "svc", "groupName": "G", "clusters": "", "hosts": [
                    {"ip": "10.0.0.1", "port": 80, "weight": 1.0, "healthy": true, "enabled": true},
                    {"ip": "10.0.0.2", "port": 80, "weight": 1.0, "healthy": false}]}}),
        );
        match pushed(&p).unwrap() {
            Pushed::Notify {
                request_id,
                service,
                instances,
            } => {
                assert_eq!(request_id, "9");
                assert_eq!(service, "G@@svc");
                let hosts: Vec<_> = instances.unwrap().iter().map(|i| i.port).collect();
                assert_eq!(hosts, vec![80], "the unhealthy one is left out");
            }
            other => panic!("{other:?}"),
        }
        let answer = reply("NotifySubscriberRequest", "9");
        assert_eq!(answer.kind, "NotifySubscriberResponse");
        assert_eq!(body(&answer)["requestId"], "9");
        assert_eq!(body(&answer)["resultCode"], 200);
        // Round trip through the wire form, as the server reads it.
        assert_eq!(Payload::decode(&answer.encode()).unwrap(), answer);
    }

    #[test]
    fn detection_reset_and_unknown_requests_are_told_apart() {
        let d = server("ClientDetectionRequest", json!({"requestId": "1"}));
        assert_eq!(
            pushed(&d).unwrap(),
            Pushed::Detection {
                request_id: "1".into()
            }
        );
        let r = server(
            "ConnectResetRequest",
            json!({"requestId": "2", "serverIp": "10.0.0.9", "serverPort": "9848"}),
        );
        assert_eq!(
            pushed(&r).unwrap(),
            Pushed::Reset {
                request_id: "2".into(),
                server: Some("10.0.0.9:9848".into())
            }
        );
        let r = server("ConnectResetRequest", json!({"requestId": "3"}));
        assert!(matches!(
            pushed(&r).unwrap(),
            Pushed::Reset { server: None, .. }
        ));
        let r = server(
            "ConnectResetRequest",
            json!({"requestId": "4", "serverIp": "a b/c", "serverPort": 9848}),
        );
        assert!(
            matches!(pushed(&r).unwrap(), Pushed::Reset { server: None, .. }),
            "a server that is no host:port is not followed"
        );
        let o = server("SetupAckRequest", json!({"requestId": "5"}));
        assert!(matches!(pushed(&o).unwrap(), Pushed::Other { .. }));
        assert!(pushed(&server("HealthCheckResponse", json!({}))).is_err());
        assert!(pushed(&Payload {
            kind: "NotifySubscriberRequest".into(),
            body: b"not json".to_vec(),
            ..Payload::default()
        })
        .is_err());
    }

    #[test]
    fn responses_are_checked_and_errors_quote_the_server_bounded() {
        let ok = server(
            "ServerCheckResponse",
            json!({"resultCode": 200, "errorCode": 0, "connectionId": "c-1"}),
        );
        assert_eq!(connection_id(&ok).unwrap(), "c-1");
        let err = server(
            "ErrorResponse",
            json!({"resultCode": 500, "errorCode": 403, "message": format!("no\nway{}", "x".repeat(5000))}),
        );
        let message = connection_id(&err).unwrap_err();
        assert!(
            message.contains("403") && !message.contains('\n'),
            "{message}"
        );
        assert!(message.len() < 500, "{message}");
        let wrong = server("HealthCheckResponse", json!({"resultCode": 200}));
        assert!(connection_id(&wrong).unwrap_err().contains("expected"));
        let no_id = server("ServerCheckResponse", json!({"resultCode": 200}));
        assert!(connection_id(&no_id).is_err());
    }

    #[test]
    fn setup_and_keep_alive_carry_their_types() {
        let headers = BTreeMap::new();
        let setup = connection_setup("ns", &headers);
        assert_eq!(setup.kind, "ConnectionSetupRequest");
        assert_eq!(body(&setup)["tenant"], "ns");
        assert_eq!(body(&setup)["labels"]["module"], "naming");
        assert_eq!(server_check().kind, "ServerCheckRequest");
        assert_eq!(health_check().kind, "HealthCheckRequest");
    }
}
