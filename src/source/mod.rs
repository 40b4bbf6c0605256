//! Discovery sources: each turns one fetch into a list of instances, or an error that keeps the
//! cache.

use crate::instance::Instance;

pub(crate) mod build;
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
    /// Starts pushing lists to `sink` when the source can (Nacos over gRPC); the push stops
    /// when the task is dropped. `None`: lists come by polling only.
    fn start_push(&self, sink: crate::source::nacos::PushSink) -> Option<crate::push::Task> {
        let _ = sink;
        None
    }
    /// Whether lists come by polling `fetch` (false for a push-only source).
    fn polls(&self) -> bool {
        true
    }
    /// Called at each refresh instead of `fetch` when the source does not poll: what a push
    /// needs kept fresh (a Nacos address server's list of servers).
    fn maintain(&mut self) {}
}

/// The `ip` and `port` of a discovery item: a textual IPv4/IPv6 address and an integer 1-65535
/// (an integral float is taken too); `None` for anything else, so that the item is skipped.
pub fn item_address(item: &serde_json::Value) -> Option<(std::net::IpAddr, u16)> {
    let ip = crate::instance::parse_ip(item.get("ip")?.as_str()?)?;
    let port = item.get("port")?;
    let port = port.as_u64().or_else(|| {
        port.as_f64()
            .filter(|p| p.fract() == 0.0 && *p >= 0.0)
            .map(|p| p as u64)
    })?;
    let port = u16::try_from(port).ok().filter(|&p| p > 0)?;
    Some((ip, port))
}

/// Reads `reader` to its end, `Ok(None)` when it holds more than `limit` bytes: read in chunks,
/// refusing the one that would pass the limit, so that the buffer never grows past it (what
/// `read_to_end` would double to look for one more byte, and a size announced beforehand is
/// never trusted). `capacity` is a first guess of the size.
pub(crate) fn read_capped(
    reader: &mut impl std::io::Read,
    limit: u64,
    capacity: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut body = Vec::with_capacity(capacity.min(limit as usize));
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(Some(body)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if (body.len() + n) as u64 > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// Text an upstream sent, as a message may quote it: at most 200 characters, control
/// characters escaped (a hostile server cannot write lines of its own into a log).
pub fn quoted_upstream(text: &str) -> String {
    let mut shown: String = text
        .chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(200).is_some() {
        shown.push_str("...");
    }
    shown
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
