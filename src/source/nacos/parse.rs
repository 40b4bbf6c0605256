//! The two answers of the Nacos naming API: 3.x's `{"code":0,"data":[...]}` and 1.x-3.1's
//! ServiceInfo with `hosts`.

use serde_json::Value;

use crate::instance::{weight_from_f64, Instance};
use crate::source::item_address;

/// Parses a 3.x answer: `{"code":0,"data":[instance...]}`.
pub fn parse_v3(body: &[u8]) -> Result<Vec<Instance>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON ({e})"))?;
    match value.get("code").and_then(Value::as_i64) {
        Some(0) => {}
        Some(code) => {
            let message = value.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(format!(
                "Nacos answered code {code}: {}",
                crate::source::quoted_upstream(message)
            ));
        }
        None => return Err("body has no code".into()),
    }
    match value.get("data") {
        Some(Value::Array(items)) => Ok(items.iter().filter_map(parse_instance).collect()),
        Some(Value::Null) | None => Ok(Vec::new()),
        Some(_) => Err("data is not an array".into()),
    }
}

/// Parses a 1.x-3.1 ServiceInfo: `{"hosts":[instance...], "checksum":..., ...}`.
pub fn parse_v1(body: &[u8]) -> Result<Vec<Instance>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON ({e})"))?;
    service_info_hosts(&value)
}

/// The present instances of a ServiceInfo (what v1 answers and gRPC pushes carry).
pub(super) fn service_info_hosts(value: &Value) -> Result<Vec<Instance>, String> {
    match value.get("hosts") {
        Some(Value::Array(items)) => Ok(items.iter().filter_map(parse_instance).collect()),
        Some(Value::Null) => Ok(Vec::new()),
        _ => Err("body has no hosts array".into()),
    }
}

/// A present instance: healthy and enabled (either missing counts as true). When the server
/// reached its protection threshold it already reports every instance as healthy; like the
/// Nacos Java client, we take them as they come (and ejection handles the dead ones).
fn parse_instance(item: &Value) -> Option<Instance> {
    let flag = |key: &str| item.get(key).and_then(Value::as_bool).unwrap_or(true);
    if !flag("healthy") || !flag("enabled") {
        return None;
    }
    let (ip, port) = item_address(item)?;
    let weight = match item.get("weight") {
        None | Some(Value::Null) => 1000,
        Some(w) => weight_from_f64(w.as_f64()? * 1000.0)?,
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
    fn v1_service_info_keeps_healthy_enabled_instances_with_weights_times_1000() {
        let body = br#"{"name":"pai-eas@@svc","clusters":"DEFAULT","cacheMillis":10000,
            "checksum":"abc","reachProtectionThreshold":false,"hosts":[
            {"ip":"10.0.0.1","port":8080,"weight":1.0,"healthy":true,"enabled":true},
            {"ip":"10.0.0.2","port":8080,"weight":0.5,"healthy":false,"enabled":true},
            {"ip":"10.0.0.3","port":8080,"weight":2.5,"healthy":true,"enabled":false},
            {"ip":"10.0.0.4","port":8080,"weight":0.0001},
            {"ip":"10.0.0.5","port":8080,"weight":0},
            {"ip":"10.0.0.6","port":8080,"weight":-1},
            {"ip":"10.0.0.7","port":8080,"weight":1e309},
            {"ip":"10.0.0.8","port":8080,"weight":1e306},
            {"ip":"10.0.0.9","port":1e309,"metadata":{"big":1e400}},
            {"ip":"bad","port":8080}]}"#;
        assert_eq!(
            hosts(&parse_v1(body).unwrap()),
            vec![
                ("10.0.0.1:8080".into(), 1000),
                ("10.0.0.4:8080".into(), 1),
                ("10.0.0.5:8080".into(), 0)
            ]
        );
    }

    #[test]
    fn v3_result_is_unwrapped_and_a_nonzero_code_is_an_error() {
        let body = br#"{"code":0,"message":"success","data":[
            {"ip":"10.0.0.1","port":8080,"weight":1.5,"healthy":true,"enabled":true}]}"#;
        assert_eq!(
            hosts(&parse_v3(body).unwrap()),
            vec![("10.0.0.1:8080".into(), 1500)]
        );
        let err = parse_v3(br#"{"code":20004,"message":"service not found","data":null}"#);
        assert!(err.unwrap_err().contains("20004"));
        assert!(parse_v3(b"{\"code\":0,\"data\":{}}").is_err());
        assert!(parse_v1(b"<html>").is_err());
    }

    #[test]
    fn a_server_message_is_quoted_escaped_and_bounded() {
        let body = format!(
            r#"{{"code":500,"message":"boom\r\n2026-12-01 WARN forged line {}"}}"#,
            "x".repeat(10_000)
        );
        let err = parse_v3(body.as_bytes()).unwrap_err();
        assert!(!err.contains('\n') && !err.contains('\r'), "{err}");
        assert!(err.contains("boom\\r\\n") && err.len() < 400, "{err}");
    }
}
