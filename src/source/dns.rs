//! `dns://{name}:{port}`: every A and AAAA record of a name (a Kubernetes headless service),
//! through the system resolver or, with the `dns_server` option, by asking that server directly
//! over UDP. Every instance gets the same weight.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::resolve_bounded;
use super::Source;
use crate::instance::{Instance, DEFAULT_WEIGHT};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

pub struct DnsSource {
    name: String,
    port: u16,
    server: Option<SocketAddr>,
    timeout: Duration,
    next_id: u16,
    /// A system-resolver lookup of ours still outstanding.
    busy: Arc<AtomicBool>,
}

impl DnsSource {
    pub fn new(name: &str, port: u16, server: Option<SocketAddr>, timeout: Duration) -> DnsSource {
        DnsSource {
            name: name.trim_end_matches('.').to_owned(),
            port,
            server,
            timeout,
            next_id: (crate::pick::random_unit() * 65535.0) as u16,
            busy: Arc::default(),
        }
    }

    fn ask_server(&mut self, server: SocketAddr) -> Result<Vec<IpAddr>, String> {
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind).map_err(|e| format!("DNS socket: {e}"))?;
        socket
            .connect(server)
            .map_err(|e| format!("DNS server {server}: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        let mut found = Vec::new();
        for qtype in [TYPE_A, TYPE_AAAA] {
            self.next_id = self.next_id.wrapping_add(1);
            let id = self.next_id;
            let query = encode_query(id, &self.name, qtype)?;
            socket
                .send(&query)
                .map_err(|e| format!("DNS server {server}: {e}"))?;
            let mut buf = [0u8; 4096];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(format!(
                        "DNS server {server} did not answer for {} within {} ms",
                        self.name,
                        self.timeout.as_millis()
                    ));
                }
                socket
                    .set_read_timeout(Some(left))
                    .map_err(|e| format!("DNS socket: {e}"))?;
                let n = match socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Err(format!("DNS server {server}: {e}")),
                };
                match parse_answer(&buf[..n], id, qtype) {
                    Answer::Mismatch => continue, // a late answer to an earlier query
                    Answer::Records(ips) => {
                        found.extend(ips);
                        break;
                    }
                    Answer::NoSuchName => {
                        return Err(format!(
                            "DNS server {server}: {} does not exist (NXDOMAIN)",
                            self.name
                        ))
                    }
                    Answer::Error(why) => return Err(format!("DNS server {server}: {why}")),
                }
            }
        }
        Ok(found)
    }
}

impl Source for DnsSource {
    fn fetch(&mut self) -> Result<Vec<Instance>, String> {
        let ips = match self.server {
            Some(server) => self.ask_server(server)?,
            None => resolve_bounded(
                &format!("{}:{}", self.name, self.port),
                self.timeout,
                &self.busy,
            )
            .map_err(|e| format!("resolving {}: {e}", self.name))?
            .into_iter()
            .map(|a| a.ip())
            .collect(),
        };
        Ok(ips
            .into_iter()
            .map(|ip| Instance::new(ip, self.port, DEFAULT_WEIGHT))
            .collect())
    }

    fn describe(&self) -> String {
        match self.server {
            Some(server) => format!("DNS A/AAAA {} at {server}", self.name),
            None => format!("DNS A/AAAA {} (system resolver)", self.name),
        }
    }
}

/// Parses `msg` as a reply to an A query with the id it carries (for the fuzz targets: any
/// bytes give an answer or an error, never a panic).
#[doc(hidden)]
pub fn check_reply(msg: &[u8]) {
    if msg.len() >= 2 {
        let id = u16::from_be_bytes([msg[0], msg[1]]);
        let _ = parse_answer(msg, id, TYPE_A);
        let _ = parse_answer(msg, id, TYPE_AAAA);
    }
}

fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // recursion desired
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("\"{name}\" is not a DNS name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]); // class IN
    Ok(q)
}

#[derive(Debug, PartialEq)]
enum Answer {
    Mismatch,
    Records(Vec<IpAddr>),
    NoSuchName,
    Error(String),
}

/// Reads the answers of one reply; anything malformed is an error, never a panic.
fn parse_answer(msg: &[u8], id: u16, qtype: u16) -> Answer {
    if msg.len() < 12 || u16::from_be_bytes([msg[0], msg[1]]) != id || msg[2] & 0x80 == 0 {
        return Answer::Mismatch;
    }
    if msg[2] & 0x02 != 0 {
        return Answer::Error(
            "the answer was truncated (TC); DNS over TCP is not supported".into(),
        );
    }
    match msg[3] & 0x0f {
        0 => {}
        3 => return Answer::NoSuchName,
        rcode => return Answer::Error(format!("answered rcode {rcode}")),
    }
    let questions = u16::from_be_bytes([msg[4], msg[5]]);
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let mut pos = 12;
    for _ in 0..questions {
        let Some(after) = skip_name(msg, pos) else {
            return Answer::Error("malformed question".into());
        };
        pos = after + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..answers {
        let Some(after) = skip_name(msg, pos) else {
            return Answer::Error("malformed answer name".into());
        };
        let Some(header) = msg.get(after..after + 10) else {
            return Answer::Error("truncated answer".into());
        };
        let rtype = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[8], header[9]]));
        let Some(data) = msg.get(after + 10..after + 10 + len) else {
            return Answer::Error("truncated record".into());
        };
        match (rtype, qtype, len) {
            (TYPE_A, TYPE_A, 4) => ips.push(IpAddr::from([data[0], data[1], data[2], data[3]])),
            (TYPE_AAAA, TYPE_AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                ips.push(IpAddr::from(b));
            }
            _ => {} // CNAMEs and the like: the resolver already followed them
        }
        pos = after + 10 + len;
    }
    Answer::Records(ips)
}

/// The position after the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => {
                msg.get(pos + 1)?;
                return Some(pos + 2);
            }
            l => pos += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: u16, rcode: u8, records: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = encode_query(id, "svc.ns", TYPE_A).unwrap();
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[7] = records.len() as u8;
        for (rtype, data) in records {
            m.extend_from_slice(&[0xc0, 12]);
            m.extend_from_slice(&rtype.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 0, 0, 30]);
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(data);
        }
        m
    }

    #[test]
    fn reads_a_records_through_compressed_names() {
        let m = reply(
            7,
            0,
            &[
                (TYPE_A, &[10, 0, 0, 1]),
                (5, b"\x03foo\x00"),
                (TYPE_A, &[10, 0, 0, 2]),
            ],
        );
        assert_eq!(
            parse_answer(&m, 7, TYPE_A),
            Answer::Records(vec![
                "10.0.0.1".parse().unwrap(),
                "10.0.0.2".parse().unwrap()
            ])
        );
        assert_eq!(parse_answer(&m, 8, TYPE_A), Answer::Mismatch);
        assert_eq!(
            parse_answer(&reply(7, 3, &[]), 7, TYPE_A),
            Answer::NoSuchName
        );
    }

    #[test]
    fn malformed_replies_are_errors_never_panics() {
        let m = reply(7, 0, &[(TYPE_A, &[10, 0, 0, 1])]);
        for cut in 0..m.len() {
            let _ = parse_answer(&m[..cut], 7, TYPE_A);
        }
        let mut lying = m.clone();
        lying[7] = 50; // claims 50 answers
        assert!(matches!(parse_answer(&lying, 7, TYPE_A), Answer::Error(_)));
    }

    #[test]
    fn names_are_checked() {
        assert!(encode_query(1, "a..b", TYPE_A).is_err());
        assert!(encode_query(1, &"x".repeat(64), TYPE_A).is_err());
    }
}
