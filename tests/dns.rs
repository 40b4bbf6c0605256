//! `dns://` through the system resolver (localhost) and against a DNS server on loopback that
//! the test runs and changes.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use easdirect::{Client, Options};

#[path = "support/dns_server.rs"]
mod dns_server;
use dns_server::{Behaviour, DnsServer};

const NAME: &str = "web.default.svc.cluster.local";

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

fn client_of(server: &DnsServer) -> Client {
    let mut o = Options::new();
    o.set("dns_server", &server.addr.to_string()).unwrap();
    o.set("refresh_interval_ms", "20").unwrap();
    o.set("request_timeout_ms", "300").unwrap();
    Client::new(&format!("dns://{NAME}:8080"), &o).unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn records_added_and_removed_are_followed_and_failures_keep_the_cache() {
    let server = DnsServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    server.set(NAME, &ips(&["10.0.0.1", "fd00::1"]));
    let c = client_of(&server);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(hosts(&c), vec!["10.0.0.1:8080", "[fd00::1]:8080"]);

    server.set(NAME, &ips(&["10.0.0.1", "fd00::1", "10.0.0.2"]));
    eventually("a record added", || hosts(&c).len() == 3);
    server.set(NAME, &ips(&["10.0.0.1", "10.0.0.2"]));
    eventually("a record removed", || {
        hosts(&c) == vec!["10.0.0.1:8080", "10.0.0.2:8080"]
    });

    for (behaviour, needle) in [
        (Behaviour::NxDomain, "NXDOMAIN"),
        (Behaviour::Silent, "did not answer"),
    ] {
        server.set_behaviour(behaviour);
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
        server.set_behaviour(Behaviour::Answer);
        eventually("recovery", || c.last_error().unwrap().is_none());
    }
}

#[test]
fn an_answer_too_long_for_a_datagram_is_asked_again_over_tcp() {
    // 300 A records: 4.8 KB, over the 4096 bytes the query advertises.
    let server = DnsServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let many: Vec<IpAddr> = (0..300u32)
        .map(|i| IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8 + 1]))
        .collect();
    server.set(NAME, &many);
    let c = client_of(&server);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(c.instances().unwrap().len(), 300);
    assert!(server.tcp_queries() > 0, "the long answer came over TCP");

    // A server that truncates and refuses TCP: the fetch fails, the 300 stay.
    server.refuse_tcp(true);
    server.set(NAME, &many[..299]);
    eventually("the failure is reported", || {
        c.last_error()
            .unwrap()
            .is_some_and(|e| e.message.contains("TCP"))
    });
    assert_eq!(c.instances().unwrap().len(), 300, "cache kept");
    server.refuse_tcp(false);
    eventually("the shorter list over TCP again", || {
        c.instances().unwrap().len() == 299
    });
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
