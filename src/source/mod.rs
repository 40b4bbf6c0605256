//! Discovery sources: each turns one fetch into a list of instances, or an error that keeps the
//! cache.

use crate::instance::Instance;

pub mod callback;
pub mod dns;
pub mod eas;
pub mod http;
pub mod nacos;
pub mod static_list;

/// Bodies above this size are rejected without being parsed.
pub const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// One discovery source. `fetch` runs on a background thread, one call at a time per client.
pub trait Source: Send {
    /// The instances the source considers present, or why the fetch failed. Sources skip
    /// malformed items themselves; an empty list is returned as it is (the refresher decides).
    fn fetch(&mut self) -> Result<Vec<Instance>, String>;
    /// What a fetch does, for messages: e.g. `GET http://host/path`.
    fn describe(&self) -> String;
}

/// Sorts instances into address order and keeps the first of each duplicate id.
pub fn normalize(mut list: Vec<Instance>) -> Vec<Instance> {
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    list.retain(|inst| seen.insert(inst.id));
    list.sort_by(|a, b| {
        let key = |i: &Instance| (crate::instance::parse_ip(i.ip_str()), i.port);
        key(a).cmp(&key(b))
    });
    list
}
