//! `dns://{name}:{port}`: every A and AAAA record of a name (a Kubernetes headless service),
//! through the system resolver or, with the `dns_server` option, by asking that server directly
//! over UDP. Every instance gets the same weight.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::http::resolve_bounded;
use super::Source;
use crate::instance::{Instance, DEFAULT_WEIGHT};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
/// The datagram size queries advertise (EDNS0, RFC 6891); a longer answer comes truncated and
/// is asked again over TCP.
const EDNS_UDP_SIZE: u16 = 4096;

pub struct DnsSource {
    name: String,
    port: u16,
    server: Option<SocketAddr>,
    timeout: Duration,
    next_id: u16,
}

impl DnsSource {
    pub fn new(name: &str, port: u16, server: Option<SocketAddr>, timeout: Duration) -> DnsSource {
        DnsSource {
            name: name.trim_end_matches('.').to_owned(),
            port,
            server,
            timeout,
            next_id: (crate::pick::random_unit() * 65535.0) as u16,
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
            let answer = match ask_udp(&socket, &query, id, qtype, deadline) {
                // Too many records for a datagram: ask again over TCP, as resolvers do.
                Ok(Answer::Truncated) => ask_tcp(server, &query, id, qtype, deadline),
                other => other,
            };
            match answer {
                Ok(Answer::Records(ips)) => found.extend(ips),
                Ok(Answer::NoSuchName) => {
                    return Err(format!(
                        "DNS server {server}: {} does not exist (NXDOMAIN)",
                        self.name
                    ))
                }
                Ok(Answer::Truncated) => {
                    return Err(format!(
                        "DNS server {server}: the answer over TCP was truncated"
                    ))
                }
                Ok(Answer::Error(why)) => return Err(format!("DNS server {server}: {why}")),
                Ok(Answer::Mismatch) => {
                    return Err(format!(
                        "DNS server {server}: the answer over TCP was not for our query"
                    ))
                }
                Err(TimedOut) => {
                    return Err(format!(
                        "DNS server {server} did not answer for {} within {} ms",
                        self.name,
                        self.timeout.as_millis()
                    ))
                }
                Err(Failed(why)) => return Err(format!("DNS server {server}: {why}")),
            }
        }
        Ok(found)
    }
}

enum Exchange {
    TimedOut,
    Failed(String),
}
use Exchange::{Failed, TimedOut};

/// Sends `query` once and waits until `deadline` for its answer (late answers to earlier
/// queries are skipped).
fn ask_udp(
    socket: &UdpSocket,
    query: &[u8],
    id: u16,
    qtype: u16,
    deadline: Instant,
) -> Result<Answer, Exchange> {
    socket.send(query).map_err(|e| Failed(e.to_string()))?;
    let mut buf = [0u8; EDNS_UDP_SIZE as usize];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TimedOut);
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| Failed(format!("DNS socket: {e}")))?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(Failed(e.to_string())),
        };
        match parse_answer(&buf[..n], id, qtype) {
            Answer::Mismatch => continue,
            answer => return Ok(answer),
        }
    }
}

/// One query over TCP (RFC 7766: each message after its two-byte length), within `deadline`.
fn ask_tcp(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    qtype: u16,
    deadline: Instant,
) -> Result<Answer, Exchange> {
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(TimedOut)
        } else {
            Ok(left)
        }
    };
    let tcp_error = |e: std::io::Error| {
        if is_timeout(&e) {
            TimedOut
        } else {
            Failed(format!("over TCP: {e}"))
        }
    };
    let mut stream = TcpStream::connect_timeout(&server, left()?).map_err(tcp_error)?;
    stream.set_write_timeout(Some(left()?)).map_err(tcp_error)?;
    let mut framed = Vec::with_capacity(2 + query.len());
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).map_err(tcp_error)?;
    let mut read = |buf: &mut [u8]| -> Result<(), Exchange> {
        let mut at = 0;
        while at < buf.len() {
            stream.set_read_timeout(Some(left()?)).map_err(tcp_error)?;
            match stream.read(&mut buf[at..]) {
                Ok(0) => return Err(Failed("over TCP: the server closed the connection".into())),
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(tcp_error(e)),
            }
        }
        Ok(())
    };
    let mut len = [0u8; 2];
    read(&mut len)?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    read(&mut msg)?;
    Ok(parse_answer(&msg, id, qtype))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

impl Source for DnsSource {
    fn fetch(&mut self) -> Result<Vec<Instance>, String> {
        let ips = match self.server {
            Some(server) => self.ask_server(server)?,
            None => resolve_bounded(&format!("{}:{}", self.name, self.port), self.timeout)
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
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]); // one question, one additional (OPT)
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
                                  // OPT: root name, type, UDP payload size in the class, no extended flags, no options.
    q.push(0);
    q.extend_from_slice(&TYPE_OPT.to_be_bytes());
    q.extend_from_slice(&EDNS_UDP_SIZE.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    Ok(q)
}

#[derive(Debug, PartialEq)]
enum Answer {
    Mismatch,
    Records(Vec<IpAddr>),
    NoSuchName,
    /// TC: the answer did not fit in the datagram.
    Truncated,
    Error(String),
}

/// Reads the answers of one reply; anything malformed is an error, never a panic.
fn parse_answer(msg: &[u8], id: u16, qtype: u16) -> Answer {
    if msg.len() < 12 || u16::from_be_bytes([msg[0], msg[1]]) != id || msg[2] & 0x80 == 0 {
        return Answer::Mismatch;
    }
    if msg[2] & 0x02 != 0 {
        return Answer::Truncated;
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
        m.truncate(m.len() - 11); // the query's OPT record
        m[11] = 0;
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
    fn queries_advertise_edns_and_truncated_answers_are_told_apart() {
        let q = encode_query(9, "svc.ns", TYPE_AAAA).unwrap();
        assert_eq!(&q[10..12], &[0, 1], "one additional record");
        assert_eq!(
            &q[q.len() - 11..],
            &[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0],
            "OPT, 4096 bytes"
        );
        let mut m = reply(9, 0, &[]);
        m[2] |= 0x02;
        assert_eq!(parse_answer(&m, 9, TYPE_A), Answer::Truncated);
    }

    #[test]
    fn names_are_checked() {
        assert!(encode_query(1, "a..b", TYPE_A).is_err());
        assert!(encode_query(1, &"x".repeat(64), TYPE_A).is_err());
    }
}
