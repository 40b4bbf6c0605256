//! The control API under `/_emulator/`, for callers that run the emulator as a subprocess.
//! Faults never apply here.

use serde_json::{json, Value};

use crate::backend::BackendMode;
use crate::emulator::{percent_decode, Shared};
use crate::http::{Conn, Head, Request, Response};
use crate::llm::LlmConfig;
use crate::script::{Script, ScriptHandle};
use crate::server::{lock, Flow};
use crate::types::{Fault, Paths};

/// The most backends one `POST /_emulator/backends` starts.
const MAX_BACKENDS: u64 = 64;

/// Reads the request and answers it.
pub(crate) fn handle(shared: &Shared, conn: &mut Conn, head: Head) -> Flow {
    let Ok(req) = conn.read_request(head) else {
        return Flow::Close;
    };
    let keep = req.head.keep_alive();
    let resp = route(shared, &req).unwrap_or_else(|e| e);
    match conn.send(&resp, keep, req.head.method == "HEAD") {
        Ok(()) => Flow::keep_if(keep),
        Err(_) => Flow::Close,
    }
}

fn bad(msg: impl AsRef<str>) -> Response {
    Response::json(400, &json!({ "error": msg.as_ref() }))
}

fn body_json(req: &Request) -> Result<Value, Response> {
    serde_json::from_slice(&req.body).map_err(|e| bad(format!("the body is not JSON: {e}")))
}

fn field_str<'a>(v: &'a Value, field: &str) -> Result<&'a str, Response> {
    match v.get(field) {
        None => Err(bad(format!("missing field \"{field}\""))),
        Some(s) => s
            .as_str()
            .ok_or_else(|| bad(format!("field \"{field}\" must be a string"))),
    }
}

fn route(shared: &Shared, req: &Request) -> Result<Response, Response> {
    let path = req.head.path();
    let rest = path.strip_prefix("/_emulator").unwrap_or("");
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let method = req.head.method.as_str();
    let name = |s: &str| percent_decode(s).ok_or_else(|| bad("bad percent-encoding in the path"));
    Ok(match (method, segs.as_slice()) {
        ("GET" | "HEAD", ["state"]) => Response::json(200, &shared.state_json()),
        ("PUT", ["services", service]) if !service.is_empty() => {
            let items = body_json(req)?;
            if !items.is_array() {
                return Err(bad("the body must be a JSON array of items"));
            }
            shared.set_items(&name(service)?, items);
            Response::empty(204)
        }
        ("DELETE", ["services", service]) if !service.is_empty() => {
            shared.remove_service(&name(service)?);
            Response::empty(204)
        }
        ("PUT", ["fault"]) => {
            let fault = Fault::from_json(&body_json(req)?).map_err(bad)?;
            shared.set_fault(fault);
            Response::empty(204)
        }
        ("PUT", ["paths"]) => {
            let body = body_json(req)?;
            let paths: Paths = field_str(&body, "paths")?
                .parse()
                .map_err(|e| bad(format!("field \"paths\": {e}")))?;
            shared.apply(crate::script::Action::Paths(paths));
            Response::empty(204)
        }
        ("GET" | "HEAD", ["backends"]) => {
            let st = lock(&shared.state);
            let list: Vec<Value> = st.backends.iter().map(|b| b.to_json()).collect();
            Response::json(200, &Value::Array(list))
        }
        ("POST", ["backends"]) => {
            let body = body_json(req)?;
            let service = field_str(&body, "service")?;
            let count = match body.get("count") {
                None => 1,
                Some(c) => c
                    .as_u64()
                    .filter(|c| (1..=MAX_BACKENDS).contains(c))
                    .ok_or_else(|| {
                        bad(format!(
                            "field \"count\" must be an integer 1-{MAX_BACKENDS}"
                        ))
                    })?,
            };
            let replace = match body.get("replace") {
                None => false,
                Some(r) => r
                    .as_bool()
                    .ok_or_else(|| bad("field \"replace\" must be a boolean"))?,
            };
            let llm = match (body.get("kind").map(Value::as_str), body.get("llm")) {
                (None | Some(Some("echo")), None) => None,
                (None | Some(Some("llm")), Some(settings)) => Some(
                    LlmConfig::default()
                        .updated(settings)
                        .map_err(|e| bad(format!("field \"llm\": {e}")))?,
                ),
                (Some(Some("llm")), None) => Some(LlmConfig::default()),
                (Some(Some("echo")), Some(_)) => {
                    return Err(bad("field \"llm\" is only for \"kind\":\"llm\""))
                }
                _ => return Err(bad("field \"kind\" must be \"echo\" or \"llm\"")),
            };
            let ports = shared
                .add_backends(service, count as usize, replace, llm.as_ref())
                .map_err(|e| {
                    Response::json(500, &json!({"error": format!("starting backends: {e}")}))
                })?;
            let list: Vec<Value> = ports
                .iter()
                .map(|p| json!({"ip": "127.0.0.1", "port": p}))
                .collect();
            Response::json(200, &Value::Array(list))
        }
        ("PUT", ["backends", port]) => {
            let Ok(port) = port.parse::<u16>() else {
                return Err(Response::json(404, &json!({"error": "no such backend"})));
            };
            let body = body_json(req)?;
            let mode = match field_str(&body, "mode")? {
                "ok" => Some(BackendMode::Ok),
                "hang" => Some(BackendMode::Hang),
                "dead" => None,
                "status" => {
                    let status = match body.get("status") {
                        None => 503,
                        Some(s) => s
                            .as_u64()
                            .and_then(|s| u16::try_from(s).ok())
                            .filter(|s| (100..=999).contains(s))
                            .ok_or_else(|| bad("field \"status\" must be an integer 100-999"))?,
                    };
                    match body.get("retry_after") {
                        None => Some(BackendMode::Status(status)),
                        Some(r) => {
                            Some(BackendMode::Throttle(
                                status,
                                r.as_u64().and_then(|r| u32::try_from(r).ok()).ok_or_else(
                                    || bad("field \"retry_after\" must be a number of seconds"),
                                )?,
                            ))
                        }
                    }
                }
                "reset" => Some(BackendMode::Reset),
                other => {
                    return Err(bad(format!(
                        "field \"mode\": unknown mode {other:?}; expected ok, status, hang, reset \
                         or dead"
                    )))
                }
            };
            if !shared.set_backend_mode(port, mode) {
                return Err(Response::json(404, &json!({"error": "no such backend"})));
            }
            Response::empty(204)
        }
        ("PUT", ["backends", port, "llm"]) => {
            let no_llm = || Response::json(404, &json!({"error": "no such LLM backend"}));
            let llm = port
                .parse::<u16>()
                .ok()
                .and_then(|p| shared.llm(p))
                .ok_or_else(no_llm)?;
            let config = llm.config().updated(&body_json(req)?).map_err(bad)?;
            llm.set_config(config).map_err(bad)?;
            Response::empty(204)
        }
        ("POST" | "PUT", ["script"]) => {
            let script = Script::from_json(&body_json(req)?).map_err(bad)?;
            let Some(me) = shared.me.upgrade() else {
                return Err(Response::json(503, &json!({"error": "stopping"})));
            };
            let handle = ScriptHandle::spawn(script, move |a| me.apply(a));
            // The previous script (if any) stops outside the lock: it may be applying a step.
            let old = lock(&shared.state).script.replace(handle);
            drop(old);
            Response::empty(204)
        }
        ("DELETE", ["script"]) => {
            let old = lock(&shared.state).script.take();
            drop(old);
            Response::empty(204)
        }
        (_, ["state" | "fault" | "paths" | "backends" | "script"])
        | (_, ["services" | "backends", _])
        | (_, ["backends", _, "llm"]) => Response::json(
            405,
            &json!({"error": format!("{method} is not allowed on {path}")}),
        ),
        _ => Response::json(
            404,
            &json!({"error": format!("no control endpoint {path}")}),
        ),
    })
}
