//! A DNS server the tests run on loopback: A and AAAA records for the names it is given, over
//! UDP and TCP on the same port, with the faults the tests need (NXDOMAIN for everything, no
//! answer at all, TCP refused). Answers longer than the query allows (512 bytes, or the size of
//! its EDNS0 OPT record) go out truncated with TC set, as real servers do.

#![allow(dead_code)] // each test file uses part of it

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Behaviour {
    Answer,
    NxDomain,
    Silent,
}

#[derive(Default)]
struct State {
    zone: Mutex<HashMap<String, Vec<IpAddr>>>,
    behaviour: Mutex<Option<Behaviour>>,
    tcp_refused: AtomicBool,
    udp_queries: AtomicUsize,
    tcp_queries: AtomicUsize,
    stop: AtomicBool,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

/// A UDP socket and a TCP listener on the same port. With port 0 the UDP port is free for TCP
/// only most of the time (another process may hold it): then another port is tried.
fn bind_both(bind: SocketAddr) -> io::Result<(UdpSocket, TcpListener, SocketAddr)> {
    let mut tries = 0;
    loop {
        let udp = UdpSocket::bind(bind)?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr) {
            Ok(tcp) => return Ok((udp, tcp, addr)),
            Err(e) if bind.port() == 0 && tries < 50 => {
                tries += 1;
                let _ = e;
            }
            Err(e) => return Err(e),
        }
    }
}

impl DnsServer {
    /// Serves on `bind` (port 0 picks one; UDP and TCP share it).
    pub fn start(bind: SocketAddr) -> io::Result<DnsServer> {
        let (udp, tcp, addr) = bind_both(bind)?;
        udp.set_read_timeout(Some(Duration::from_millis(50)))?;
        let state = Arc::new(State::default());
        let s = state.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                s.udp_queries.fetch_add(1, Ordering::Relaxed);
                if let Some(reply) = s.reply(&buf[..n], true) {
                    let _ = udp.send_to(&reply, from);
                }
            }
        });
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in tcp.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if s.tcp_refused.load(Ordering::Relaxed) {
                    continue; // dropped: the client sees the connection closed
                }
                let s = s.clone();
                std::thread::spawn(move || s.serve_tcp(conn));
            }
        });
        Ok(DnsServer { addr, state })
    }

    /// Sets the records of `name` (replacing any).
    pub fn set(&self, name: &str, records: &[IpAddr]) {
        let mut zone = self.state.zone.lock().unwrap();
        zone.insert(name.to_ascii_lowercase(), records.to_vec());
    }

    /// Every name answers NXDOMAIN, or nothing at all, or from the zone again.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = Some(behaviour);
    }

    /// Closes every TCP connection at once.
    pub fn refuse_tcp(&self, refused: bool) {
        self.state.tcp_refused.store(refused, Ordering::Relaxed);
    }

    pub fn udp_queries(&self) -> usize {
        self.state.udp_queries.load(Ordering::Relaxed)
    }

    pub fn tcp_queries(&self) -> usize {
        self.state.tcp_queries.load(Ordering::Relaxed)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

impl State {
    fn serve_tcp(&self, mut conn: TcpStream) {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        loop {
            let mut len = [0u8; 2];
            if conn.read_exact(&mut len).is_err() {
                return;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if conn.read_exact(&mut query).is_err() {
                return;
            }
            self.tcp_queries.fetch_add(1, Ordering::Relaxed);
            let Some(reply) = self.reply(&query, false) else {
                return;
            };
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if conn.write_all(&framed).is_err() {
                return;
            }
        }
    }

    fn reply(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        let behaviour = self.behaviour.lock().unwrap().unwrap_or(Behaviour::Answer);
        if behaviour == Behaviour::Silent || query.len() < 12 || query[2] & 0x80 != 0 {
            return None;
        }
        // The question: labels, type, class.
        let mut labels = Vec::new();
        let mut pos = 12;
        loop {
            let len = usize::from(*query.get(pos)?);
            if len == 0 {
                pos += 1;
                break;
            }
            labels.push(String::from_utf8_lossy(query.get(pos + 1..pos + 1 + len)?).into_owned());
            pos += 1 + len;
        }
        let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
        let question_end = pos + 4;
        query.get(..question_end)?;
        // The datagram size the client takes: its OPT record's class, or 512.
        let mut max_udp = 512usize;
        let additional = u16::from_be_bytes([query[10], query[11]]);
        if additional > 0 && query.get(question_end) == Some(&0) {
            if let Some(rr) = query.get(question_end + 1..question_end + 5) {
                if u16::from_be_bytes([rr[0], rr[1]]) == 41 {
                    max_udp = usize::from(u16::from_be_bytes([rr[2], rr[3]])).max(512);
                }
            }
        }
        let name = labels.join(".").to_ascii_lowercase();
        let records = self.zone.lock().unwrap().get(&name).cloned();
        let (rcode, answers) = match (behaviour, records) {
            (Behaviour::Answer, Some(records)) => (0u8, records),
            _ => (3, Vec::new()), // NXDOMAIN
        };
        let answers: Vec<IpAddr> = answers
            .into_iter()
            .filter(|ip| match qtype {
                1 => ip.is_ipv4(),
                28 => ip.is_ipv6(),
                _ => false,
            })
            .collect();
        let mut reply = query[..question_end].to_vec();
        reply[2] = 0x81 | (query[2] & 0x01); // QR, opcode 0, RD as asked
        reply[3] = 0x80 | rcode; // RA
        reply[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        reply[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for ip in &answers {
            reply.extend_from_slice(&[0xc0, 12]);
            reply.extend_from_slice(&qtype.to_be_bytes());
            reply.extend_from_slice(&[0, 1, 0, 0, 0, 5]);
            match ip {
                IpAddr::V4(v4) => {
                    reply.extend_from_slice(&[0, 4]);
                    reply.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    reply.extend_from_slice(&[0, 16]);
                    reply.extend_from_slice(&v6.octets());
                }
            }
        }
        if udp && reply.len() > max_udp {
            reply.truncate(question_end);
            reply[2] |= 0x02; // TC
            reply[6..8].copy_from_slice(&[0, 0]);
        }
        Some(reply)
    }
}
