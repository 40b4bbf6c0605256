//! A source whose list comes from the caller's own function (a registry libeasdirect does not
//! know, a file a sidecar writes, a test): it is called on the refresher thread at each refresh.

use std::sync::Arc;

use super::Source;
use crate::callback::CallbackGate;
use crate::error::Error;
use crate::instance::{parse_ip, Instance};

/// Collects the instances a fetch function lists.
#[derive(Default)]
pub struct ListBuilder {
    items: Vec<Instance>,
    error: Option<String>,
}

impl ListBuilder {
    /// Adds one instance; a malformed one (an ip that is not a textual IPv4/IPv6 address,
    /// port 0) is refused with a message and the list goes on without it.
    pub fn add(&mut self, ip: &str, port: u16, weight: u32) -> Result<(), Error> {
        let Some(addr) = parse_ip(ip) else {
            return Err(Error::invalid(format!(
                "\"{}\" is not a textual IPv4 or IPv6 address",
                ip.escape_default()
            )));
        };
        if port == 0 {
            return Err(Error::invalid("port 0 is not a port"));
        }
        self.items.push(Instance::new(addr, port, weight));
        Ok(())
    }

    /// Says why the fetch is failing, for `last_error` and `wait_ready` messages.
    pub fn set_error(&mut self, message: &str) {
        self.error = Some(message.chars().take(1024).collect());
    }

    /// The reason given with `set_error`, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// The caller's fetch function: fills the builder, or says why it could not.
pub type FetchFn = Box<dyn Fn(&mut ListBuilder) -> Result<(), String> + Send + Sync>;

/// The caller's function and its life cycle, shared by the refresher and the client (which
/// ends it on close: `free_user_data` runs then, after a fetch in progress returns).
pub struct CallbackShared {
    pub gate: CallbackGate,
    fetch: FetchFn,
}

impl CallbackShared {
    pub fn new(fetch: FetchFn, gate: CallbackGate) -> Arc<CallbackShared> {
        Arc::new(CallbackShared { gate, fetch })
    }
}

pub struct CallbackSource(pub Arc<CallbackShared>);

impl Source for CallbackSource {
    fn fetch(&mut self) -> Result<Vec<Instance>, String> {
        let shared = &self.0;
        let mut builder = ListBuilder::default();
        match shared.gate.run(|| (shared.fetch)(&mut builder)) {
            Some(Ok(Ok(()))) => Ok(builder.items),
            Some(Ok(Err(why))) => Err(format!("source callback failed: {why}")),
            Some(Err(())) => Err("source callback panicked; keeping the last list".into()),
            None => Err("source callback has ended (client closed)".into()),
        }
    }

    fn describe(&self) -> String {
        "source callback".into()
    }
}
