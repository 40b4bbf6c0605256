//! Scripts: timed changes played on a background thread (scale-ups, outages, recoveries).

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::lock;
use crate::types::{Endpoint, Fault, Paths};

/// A list of timed steps. See the crate documentation for the JSON form read by
/// [`Script::from_json`].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Script {
    /// The steps; they are played in order of `at` (steps with the same `at` in list order).
    pub steps: Vec<Step>,
}

/// One step of a [`Script`].
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// When to apply it, counted from the start of the script.
    pub at: Duration,
    /// What to do.
    pub action: Action,
}

/// What a [`Step`] does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Like [`Emulator::set_endpoints`](crate::Emulator::set_endpoints).
    SetEndpoints {
        /// The service name.
        service: String,
        /// Its new instance list.
        items: Vec<Endpoint>,
    },
    /// Like [`Emulator::set_raw_items`](crate::Emulator::set_raw_items).
    SetRawItems {
        /// The service name.
        service: String,
        /// The items array, sent verbatim.
        items: Value,
    },
    /// Like [`Emulator::set_fault`](crate::Emulator::set_fault).
    Fault(Fault),
    /// Like [`Emulator::remove_service`](crate::Emulator::remove_service).
    RemoveService(String),
    /// Like [`Emulator::set_paths`](crate::Emulator::set_paths).
    Paths(Paths),
}

impl Script {
    /// An empty script.
    pub fn new() -> Script {
        Script::default()
    }

    /// Adds a step `at` after the start (builder style).
    pub fn then(mut self, at: Duration, action: Action) -> Script {
        self.steps.push(Step { at, action });
        self
    }

    /// Parses the JSON form (see the crate documentation): `{"steps":[{"at_ms":N, ACTION}, ...]}`
    /// or the bare array of steps, where ACTION is exactly one of `"set_endpoints"`,
    /// `"set_raw_items"`, `"fault"`, `"remove_service"`, `"paths"`. The error names the step
    /// and the field.
    pub fn from_json(v: &Value) -> Result<Script, String> {
        let steps = match v {
            Value::Array(a) => a,
            Value::Object(o) => o
                .get("steps")
                .and_then(Value::as_array)
                .ok_or("field \"steps\" must be an array")?,
            _ => return Err("a script must be {\"steps\":[...]} or an array of steps".into()),
        };
        let steps = steps
            .iter()
            .enumerate()
            .map(|(i, s)| parse_step(s).map_err(|e| format!("steps[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Script { steps })
    }
}

fn parse_step(v: &Value) -> Result<Step, String> {
    let obj = v.as_object().ok_or("a step must be a JSON object")?;
    let at = match obj.get("at_ms") {
        None => 0,
        Some(at) => at
            .as_u64()
            .ok_or("field \"at_ms\" must be a non-negative integer")?,
    };
    let mut actions = Vec::new();
    for (key, val) in obj {
        let action = match key.as_str() {
            "at_ms" => continue,
            "set_endpoints" => {
                let (service, items) = service_and_items(val, "set_endpoints")?;
                let items = items
                    .as_array()
                    .ok_or("field \"set_endpoints.items\" must be an array")?
                    .iter()
                    .enumerate()
                    .map(|(j, it)| {
                        Endpoint::from_item(it)
                            .map_err(|e| format!("set_endpoints.items[{j}]: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Action::SetEndpoints { service, items }
            }
            "set_raw_items" => {
                let (service, items) = service_and_items(val, "set_raw_items")?;
                Action::SetRawItems {
                    service,
                    items: items.clone(),
                }
            }
            "fault" => Action::Fault(Fault::from_json(val)?),
            "remove_service" => Action::RemoveService(
                val.as_str()
                    .ok_or("field \"remove_service\" must be a service name")?
                    .to_string(),
            ),
            "paths" => Action::Paths(
                val.as_str()
                    .ok_or("field \"paths\" must be a string")?
                    .parse()
                    .map_err(|e| format!("field \"paths\": {e}"))?,
            ),
            other => return Err(format!("unknown field {other:?}")),
        };
        actions.push(action);
    }
    match actions.len() {
        1 => Ok(Step {
            at: Duration::from_millis(at),
            action: actions.pop().expect("one action"),
        }),
        0 => Err("no action (set_endpoints, set_raw_items, fault, remove_service, paths)".into()),
        _ => Err("more than one action in one step".into()),
    }
}

fn service_and_items<'a>(v: &'a Value, field: &str) -> Result<(String, &'a Value), String> {
    let service = v
        .get("service")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("field \"{field}.service\" must be a string"))?;
    let items = v
        .get("items")
        .ok_or_else(|| format!("missing field \"{field}.items\""))?;
    Ok((service.to_string(), items))
}

/// The stop signal shared by a script thread and its handle.
#[derive(Default)]
pub(crate) struct StopSignal {
    stopped: Mutex<bool>,
    cond: Condvar,
}

impl StopSignal {
    fn stop(&self) {
        *lock(&self.stopped) = true;
        self.cond.notify_all();
    }

    /// Waits until `deadline`; false if stopped first.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut stopped = lock(&self.stopped);
        loop {
            if *stopped {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            stopped = self
                .cond
                .wait_timeout(stopped, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A script playing on a background thread. Dropping it stops the script (steps not yet
/// applied are skipped) and joins the thread, like [`ScriptHandle::stop`].
pub struct ScriptHandle {
    signal: Arc<StopSignal>,
    finished: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptHandle {
    /// Plays `steps` (sorted by `at`) on a new thread, calling `apply` for each.
    pub(crate) fn spawn(script: Script, apply: impl Fn(Action) + Send + 'static) -> ScriptHandle {
        let mut steps = script.steps;
        steps.sort_by_key(|s| s.at);
        let signal = Arc::new(StopSignal::default());
        let finished = Arc::new((Mutex::new(false), Condvar::new()));
        let (sig, fin) = (signal.clone(), finished.clone());
        let run = move || {
            let start = Instant::now();
            for step in steps {
                if !sig.wait_until(start + step.at) {
                    return;
                }
                apply(step.action);
            }
            *lock(&fin.0) = true;
            fin.1.notify_all();
        };
        let thread = std::thread::Builder::new()
            .name("easdirect-emulator-script".into())
            .spawn(run)
            .expect("spawn the script thread");
        ScriptHandle {
            signal,
            finished,
            thread: Some(thread),
        }
    }

    /// Whether every step has been applied.
    pub fn is_finished(&self) -> bool {
        *lock(&self.finished.0)
    }

    /// Waits until every step has been applied, at most `timeout`; returns
    /// [`is_finished`](ScriptHandle::is_finished).
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut done = lock(&self.finished.0);
        while !*done {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            done = self
                .finished
                .1
                .wait_timeout(done, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Stops the script: steps not yet applied are skipped. Returns once the thread is gone.
    pub fn stop(self) {}
}

impl Drop for ScriptHandle {
    fn drop(&mut self) {
        self.signal.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_action() {
        let s = Script::from_json(&json!({"steps": [
            {"at_ms": 0, "set_endpoints": {"service": "a", "items": [{"ip": "10.0.0.1", "port": 50000, "weight": 100}]}},
            {"at_ms": 10, "set_raw_items": {"service": "a", "items": [{"ip": 7}]}},
            {"at_ms": 20, "fault": "hang"},
            {"at_ms": 30, "fault": {"fault": "status", "status": 429}},
            {"at_ms": 40, "remove_service": "a"},
            {"at_ms": 50, "paths": "new_only"}
        ]}))
        .unwrap();
        assert_eq!(s.steps.len(), 6);
        assert_eq!(
            s.steps[0].action,
            Action::SetEndpoints {
                service: "a".into(),
                items: vec![Endpoint::new("10.0.0.1", 50000, 100)]
            }
        );
        assert_eq!(s.steps[3].action, Action::Fault(Fault::Status(429)));
        assert_eq!(s.steps[3].at, Duration::from_millis(30));
        assert_eq!(s.steps[4].action, Action::RemoveService("a".into()));
        assert_eq!(s.steps[5].action, Action::Paths(Paths::NewOnly));
        // The bare array form.
        assert_eq!(
            Script::from_json(&json!([{"fault": "none"}]))
                .unwrap()
                .steps[0]
                .at,
            Duration::ZERO
        );
    }

    #[test]
    fn errors_name_step_and_field() {
        let err = |v: Value| Script::from_json(&v).unwrap_err();
        assert!(
            err(json!({"steps": [{"fault": "none"}, {"at_ms": -1, "fault": "none"}]}))
                .contains("steps[1]: field \"at_ms\"")
        );
        assert!(err(json!([{"at_ms": 1}])).contains("no action"));
        assert!(err(json!([{"fault": "none", "remove_service": "a"}])).contains("more than one"));
        assert!(err(json!([{"fault": "bogus"}])).contains("\"fault\""));
        assert!(
            err(json!([{"set_endpoints": {"service": "a", "items": [{"ip": "x"}]}}]))
                .contains("items[0]")
        );
        assert!(err(json!([{"frobnicate": 1}])).contains("frobnicate"));
        assert!(err(json!(3)).contains("steps"));
    }
}
