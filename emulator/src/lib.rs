//! An emulator of the PAI-EAS service discovery API, with faults on demand, timed scripts and
//! real local backends, for libeasdirect's tests, the `easdirect emulate` and `easdirect demo`
//! commands, and the bindings' tests (which run it as a subprocess and drive it over HTTP).
//!
//! It is a small HTTP/1.1 server on `std::net`: one thread per connection, keep-alive, no
//! async runtime and no HTTP library. Every blocking call polls with short timeouts, so that
//! stopping it, or changing a fault, ends parked connections within about 100 ms.
//!
//! ```no_run
//! use easdirect_emulator::{Emulator, Endpoint, Fault};
//! let emu = Emulator::start()?;
//! emu.set_endpoints("svc", vec![Endpoint::new("10.0.0.1", 50000, 100)]);
//! // point a client at emu.target("svc") == "eas://127.0.0.1:PORT/svc"
//! emu.set_fault(Fault::Hang);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Discovery
//!
//! `GET /exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/{service}` (the documented path) and
//! `GET /api/v1/servicediscovery/upstreams/{service}` (the new path), with any query (clients
//! add `?internal=true`), answer 200 with `Content-Type: application/json` and
//! `{"correlative":["{service}"],"endpoints":{"items":[{"app":"{service}","ip":"10.0.0.1","port":50000,"weight":100}, ...]}}`.
//! An unknown service answers 404, as does a path disabled by [`Paths`] and any other path.
//! A [`Fault`] replaces these answers for every discovery request until it is changed.
//!
//! # Control API (same port; faults never apply to it)
//!
//! Errors are JSON `{"error":"..."}` naming the bad field.
//!
//! | request | body | answer |
//! |---|---|---|
//! | `GET /_emulator/state` | | `{"services":{name:items},"fault":"none","paths":"both","requests":N,"last_request_target":..}` (plus `"status"` for a status fault) |
//! | `PUT /_emulator/services/{service}` | JSON array of items, sent verbatim | 204 |
//! | `DELETE /_emulator/services/{service}` | | 204 |
//! | `PUT /_emulator/fault` | `{"fault":NAME,"status":503}` (NAME in [`FAULT_NAMES`]; `status` only for `"status"`, default 503) | 204; 400 naming `fault` or `status` |
//! | `PUT /_emulator/paths` | `{"paths":"both"\|"documented_only"\|"new_only"}` | 204; 400 |
//! | `POST /_emulator/backends` | `{"service":"svc","count":3,"replace":false}` (count 1-64, default 1) | 200 `[{"ip":"127.0.0.1","port":P},...]` |
//! | `POST /_emulator/backends` | `{"service":"svc","count":2,"kind":"llm","llm":{"slots":2,"speed":0.5}}` (`llm`: any subset of the settings below) | 200, as above; 400 naming the field |
//! | `PUT /_emulator/backends/{port}` | `{"mode":"ok"\|"status"\|"hang"\|"reset"\|"dead","status":503,"retry_after":2}` (`retry_after`: seconds, sent as `Retry-After`; `reset`: the connection is reset before any answer) | 204; 404 for an unknown port |
//! | `PUT /_emulator/backends/{port}/llm` | any subset of the LLM settings | 204; 400 naming the field; 404 unless an LLM backend |
//! | `GET /_emulator/backends` | | `[{"ip","port","service","kind":"echo"\|"llm","mode","status"?,"retry_after"?,"hits","llm"?,"requests"}]`; `requests`: the last 64 received, `{"method","path","body_len","headers":{lower-case name: value}}` (`body_len` null when unread) |
//! | `POST /_emulator/script` | a script (below); replaces the running one | 204; 400 |
//! | `DELETE /_emulator/script` | | 204 |
//!
//! `POST /_emulator/backends` starts [`Backend`]s and appends them (weight 100) to the service's
//! items (`"replace":true` replaces the items instead). A `dead` backend is stopped but stays
//! listed, so clients meet a refused connection.
//!
//! # LLM backends
//!
//! A backend of kind `llm` ([`Backend::start_llm`], [`Emulator::add_llm_backends`]) serves any
//! request in `ok` mode as an LLM inference server would: `slots` requests at once, the others
//! waiting first come first; each holds its slot for `(base + per_token x tokens) / speed`.
//! Tokens come from the `x-tokens` header, else a JSON body's `max_tokens`, else a seeded
//! log-normal draw of mean `mean_tokens` (capped at `max_tokens`; a count that is not a
//! non-negative integer is a 400). The answer is JSON
//! `{"backend","object":"text_completion","path","tokens","queued_ms","choices":[{"text",..}],"usage"}`,
//! or, when the body has `"stream": true` or the `x-stream: true` header is sent, an SSE stream
//! (`text/event-stream`, chunked): the head at the first token's time (`base / speed` after
//! the slot), then one `data: {...}` event per token `per_token / speed` apart, then
//! `data: [DONE]`. A request that carries `endpoint-load-metrics-format: text` (or `json`) gets
//! an `endpoint-load-metrics` header as vLLM writes it, counting itself as running:
//! `TEXT named_metrics.kv_cache_usage_perc=0.5, named_metrics.num_requests_waiting=3.0,
//! named_metrics.num_requests_running=2.0` (KV-cache use = running / slots; the running figure
//! only while `report_running`, which vLLM itself does not send). The other modes apply as for
//! any backend (`status` answers at once, unqueued). The settings, in JSON (defaults shown):
//! `{"slots":4,"base_ms":20.0,"per_token_ms":1.0,"mean_tokens":100,"tokens_sigma":1.0,
//! "max_tokens":4096,"speed":1.0,"seed":1,"report_running":true}`; `GET /_emulator/backends`
//! lists them with the counters `"running"`, `"waiting"`, `"served"`, `"abandoned"`.
//!
//! # Scripts
//!
//! A [`Script`] plays timed steps on a background thread. Its JSON form
//! ([`Script::from_json`], `POST /_emulator/script`):
//!
//! ```json
//! {"steps": [
//!   {"at_ms": 0,    "set_endpoints": {"service": "svc", "items": [{"ip": "10.0.0.1", "port": 50000, "weight": 100}]}},
//!   {"at_ms": 500,  "set_raw_items": {"service": "svc", "items": [{"ip": "not-an-ip", "port": 1}]}},
//!   {"at_ms": 1000, "fault": {"fault": "status", "status": 503}},
//!   {"at_ms": 1500, "fault": "none"},
//!   {"at_ms": 2000, "paths": "new_only"},
//!   {"at_ms": 2500, "remove_service": "svc"}
//! ]}
//! ```
//!
//! `at_ms` counts from the start of the script (default 0); each step has exactly one action.
//! A bare array of steps is accepted too. Steps are applied in order of `at_ms`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod control;
mod emulator;
mod http;
mod llm;
mod script;
mod server;
mod types;

pub use backend::{Backend, BackendMode, Received};
pub use emulator::{Emulator, DOCUMENTED_PREFIX, NEW_PREFIX};
pub use llm::{
    Llm, LlmConfig, LlmCounters, ServedRequest, SplitMix64, LOAD_FORMAT_HEADER, LOAD_HEADER,
    STREAM_HEADER, TOKENS_HEADER,
};
pub use script::{Action, Script, ScriptHandle, Step};
pub use types::{Endpoint, Fault, Paths, FAULT_NAMES};
