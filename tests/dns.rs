//! `dns://` through the system resolver (localhost) and against a DNS server on loopback that
//! the test runs and changes.

use std::net::{IpAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use easdirect::{Client, Options};

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn hosts(c: &Client) -> Vec<String> {
    c.instances()
        .unwrap()
        .iter()
        .map(|i| i.host_str().to_owned())
        .collect()
}

#[test]
fn localhost_through_the_system_resolver() {
    let c = Client::new("dns://localhost:8080", &Options::new()).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let h = hosts(&c);
    assert!(h.contains(&"127.0.0.1:8080".to_string()), "{h:?}");
    assert!(c.instances().unwrap().iter().all(|i| i.weight == 100));
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Answer,
    NxDomain,
    Silent,
}

/// A DNS server for one name: answers A and AAAA queries from `records`.
struct DnsServer {
    port: u16,
    records: Arc<Mutex<Vec<IpAddr>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    fn start(records: Vec<IpAddr>) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let records = Arc::new(Mutex::new(records));
        let behaviour = Arc::new(Mutex::new(Behaviour::Answer));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, b, s) = (records.clone(), behaviour.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let query = &buf[..n];
                let behaviour = *b.lock().unwrap();
                if behaviour == Behaviour::Silent || n < 12 {
                    continue;
                }
                // The question ends after the name, type and class.
                let mut end = 12;
                while query[end] != 0 {
                    end += 1 + query[end] as usize;
                }
                let qtype = u16::from_be_bytes([query[end + 1], query[end + 2]]);
                end += 5;
                let mut reply = query[..end].to_vec();
                reply[2] = 0x81;
                reply[3] = if behaviour == Behaviour::NxDomain {
                    0x83
                } else {
                    0x80
                };
                let answers: Vec<IpAddr> = r
                    .lock()
                    .unwrap()
                    .iter()
                    .copied()
                    .filter(|ip| (qtype == 1) == ip.is_ipv4())
                    .collect();
                let count = if behaviour == Behaviour::NxDomain {
                    0
                } else {
                    answers.len()
                };
                reply[6..8].copy_from_slice(&(count as u16).to_be_bytes());
                for ip in answers.iter().take(count) {
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
                let _ = socket.send_to(&reply, from);
            }
        });
        DnsServer {
            port,
            records,
            behaviour,
            stop,
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn records_added_and_removed_are_followed_and_failures_keep_the_cache() {
    let server = DnsServer::start(vec![
        "10.0.0.1".parse().unwrap(),
        "fd00::1".parse().unwrap(),
    ]);
    let mut o = Options::new();
    o.set("dns_server", &format!("127.0.0.1:{}", server.port))
        .unwrap();
    o.set("refresh_interval_ms", "20").unwrap();
    o.set("request_timeout_ms", "200").unwrap();
    let c = Client::new("dns://web.default.svc.cluster.local:8080", &o).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(hosts(&c), vec!["10.0.0.1:8080", "[fd00::1]:8080"]);

    server
        .records
        .lock()
        .unwrap()
        .push("10.0.0.2".parse().unwrap());
    eventually("a record added", || hosts(&c).len() == 3);
    server.records.lock().unwrap().retain(|ip| ip.is_ipv4());
    eventually("a record removed", || {
        hosts(&c) == vec!["10.0.0.1:8080", "10.0.0.2:8080"]
    });

    for (behaviour, needle) in [
        (Behaviour::NxDomain, "NXDOMAIN"),
        (Behaviour::Silent, "did not answer"),
    ] {
        *server.behaviour.lock().unwrap() = behaviour;
        eventually("the failure is reported", || {
            c.last_error()
                .unwrap()
                .is_some_and(|e| e.message.contains(needle))
        });
        assert_eq!(
            hosts(&c),
            vec!["10.0.0.1:8080", "10.0.0.2:8080"],
            "cache kept"
        );
        *server.behaviour.lock().unwrap() = Behaviour::Answer;
        eventually("recovery", || c.last_error().unwrap().is_none());
    }
}

#[test]
fn a_bad_dns_server_option_names_the_key() {
    let mut o = Options::new();
    o.set("dns_server", "not-an-address").unwrap();
    let err = Client::new("dns://x.local:80", &o).err().unwrap();
    assert!(err.message.contains("dns_server"), "{err}");
    let mut o = Options::new();
    o.set("dns_server", "127.0.0.1").unwrap();
    let err = Client::new("eas://127.0.0.1:1/svc", &o).err().unwrap();
    assert!(err.message.contains("dns_server"), "{err}");
}
