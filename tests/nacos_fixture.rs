//! The Nacos source against local fixtures built from the shapes in the Nacos sources: the v3
//! client API, 410 on v1, login and token renewal, AK/SK signing, the address server, failover.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use easdirect::{Client, ErrorKind, Options};

/// One request as the fixture saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: HashMap<String, String>,
    body: String,
}

type Handler = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

struct Fixture {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    handler: Arc<Mutex<Box<Handler>>>,
}

impl Fixture {
    fn start(handler: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> Fixture {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Mutex<Box<Handler>>> = Arc::new(Mutex::new(Box::new(handler)));
        let (s, h) = (seen.clone(), handler.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, h) = (s.clone(), h.clone());
                std::thread::spawn(move || serve(stream, &s, &h));
            }
        });
        Fixture {
            port,
            seen,
            handler,
        }
    }

    fn set(&self, handler: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Box::new(handler);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<Seen>>, handler: &Mutex<Box<Handler>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("").to_owned();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        let req = Seen {
            method,
            path: path.to_owned(),
            query,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        seen.lock().unwrap().push(req.clone());
        let (status, body) = (handler.lock().unwrap())(&req);
        let answer = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if (&stream).write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn v3_answer(ports: &[u16]) -> String {
    let items: Vec<String> = ports
        .iter()
        .map(|p| format!(r#"{{"ip":"127.0.0.1","port":{p},"weight":1.0,"healthy":true,"enabled":true,"ephemeral":true,"clusterName":"DEFAULT","metadata":{{}}}}"#))
        .collect();
    format!(
        r#"{{"code":0,"message":"success","data":[{}]}}"#,
        items.join(",")
    )
}

fn v1_answer(ports: &[u16]) -> String {
    let items: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(r#"{{"ip":"127.0.0.1","port":{p},"weight":2.0,"healthy":true,"enabled":true}}"#)
        })
        .collect();
    format!(
        r#"{{"name":"pai-eas@@svc","clusters":"DEFAULT","cacheMillis":10000,"checksum":"x","reachProtectionThreshold":false,"hosts":[{}]}}"#,
        items.join(",")
    )
}

fn options(extra: &[(&str, &str)]) -> Options {
    let mut o = Options::new();
    o.set("refresh_interval_ms", "20").unwrap();
    o.set("request_timeout_ms", "500").unwrap();
    for (k, v) in extra {
        o.set(k, v).unwrap();
    }
    o
}

fn ports(c: &Client) -> Vec<u16> {
    let mut p: Vec<u16> = c.instances().unwrap().iter().map(|i| i.port).collect();
    p.sort_unstable();
    p
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_v3_api_is_asked_with_namespace_group_service_and_cluster() {
    let nacos = Fixture::start(|req| match req.path.as_str() {
        "/nacos/v3/client/ns/instance/list" => (200, v3_answer(&[9001, 9002])),
        _ => (404, "{}".into()),
    });
    let c = Client::new(
        &format!("nacos://{}/svc", nacos.addr()),
        &options(&[("namespace", "dev"), ("cluster", "A,B")]),
    )
    .unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(ports(&c), vec![9001, 9002]);
    assert_eq!(c.instances().unwrap()[0].weight, 1000, "weight 1.0 x 1000");
    let req = &nacos.seen()[0];
    assert_eq!(req.method, "GET");
    assert_eq!(req.query["namespaceId"], "dev");
    assert_eq!(req.query["groupName"], "pai-eas");
    assert_eq!(req.query["serviceName"], "svc");
    assert_eq!(req.query["clusterName"], "A,B");
}

#[test]
fn v1_is_used_when_v3_is_missing_and_remembered() {
    let nacos = Fixture::start(|req| match req.path.as_str() {
        "/nacos/v1/ns/instance/list" => (200, v1_answer(&[9001])),
        _ => (404, "{}".into()),
    });
    let c = Client::new(&format!("nacos://{}/svc", nacos.addr()), &options(&[])).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(c.instances().unwrap()[0].weight, 2000);
    eventually("three refreshes", || c.stats().unwrap().refresh_ok >= 3);
    let seen = nacos.seen();
    let v3 = seen.iter().filter(|r| r.path.contains("/v3/")).count();
    assert_eq!(v3, 1, "v3 asked once, then v1 remembered");
    let v1 = seen.iter().find(|r| r.path.contains("/v1/")).unwrap();
    assert_eq!(v1.query["serviceName"], "pai-eas@@svc");
    assert_eq!(v1.query["clusters"], "DEFAULT");
}

#[test]
fn a_410_on_v1_goes_back_to_v3() {
    let nacos = Fixture::start(|req| match req.path.as_str() {
        "/nacos/v1/ns/instance/list" => (200, v1_answer(&[9001])),
        _ => (404, "{}".into()),
    });
    let c = Client::new(&format!("nacos://{}/svc", nacos.addr()), &options(&[])).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    // The server is upgraded to 3.2: v1 is gone (410), v3 answers.
    nacos.set(|req| match req.path.as_str() {
        "/nacos/v1/ns/instance/list" => (410, "{}".into()),
        "/nacos/v3/client/ns/instance/list" => (200, v3_answer(&[9001, 9002])),
        _ => (404, "{}".into()),
    });
    eventually("v3 is used", || ports(&c) == vec![9001, 9002]);
}

#[test]
fn login_token_is_sent_renewed_on_403_and_never_shown() {
    let logins = Arc::new(Mutex::new(0));
    let l = logins.clone();
    let nacos = Fixture::start(move |req| match req.path.as_str() {
        "/nacos/v3/auth/user/login" => (404, "{}".into()),
        "/nacos/v1/auth/users/login" => {
            if req.query.get("username").map(String::as_str) != Some("nacos")
                || req.body != "password=s3cret%21"
            {
                return (403, "bad credentials".into());
            }
            let mut n = l.lock().unwrap();
            *n += 1;
            (
                200,
                format!(r#"{{"accessToken":"TOKEN{n}","tokenTtl":18000,"globalAdmin":true}}"#),
            )
        }
        "/nacos/v3/client/ns/instance/list" => {
            let n = *l.lock().unwrap();
            if req.query.get("accessToken") == Some(&format!("TOKEN{n}")) && n > 0 {
                (200, v3_answer(&[9001]))
            } else {
                (403, "token invalid".into())
            }
        }
        _ => (404, "{}".into()),
    });
    let c = Client::new(
        &format!("nacos://{}/svc", nacos.addr()),
        &options(&[("username", "nacos"), ("password", "s3cret!")]),
    )
    .unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(*logins.lock().unwrap(), 1);
    // The server forgets the token: the next fetch gets 403, logs in again and goes on.
    *logins.lock().unwrap() += 10;
    let before = c.stats().unwrap().refresh_ok;
    eventually("a fetch after re-login", || {
        c.stats().unwrap().refresh_ok > before + 1
    });
    assert!(*logins.lock().unwrap() >= 12);
    // Wrong password: the error names the login URL and status, never the password.
    let c = Client::new(
        &format!("nacos://{}/svc", nacos.addr()),
        &options(&[("username", "nacos"), ("password", "wrong-pass")]),
    )
    .unwrap();
    let err = c.wait_ready(Duration::from_millis(300)).unwrap_err();
    assert!(err.message.contains("403"), "{err}");
    assert!(err.message.contains("login"), "{err}");
    assert!(!err.message.contains("wrong-pass"), "{err}");
    assert!(!err.message.contains("TOKEN"), "{err}");
}

#[test]
fn ak_sk_requests_are_signed() {
    let nacos = Fixture::start(|req| match req.path.as_str() {
        "/nacos/v3/client/ns/instance/list" => (200, v3_answer(&[9001])),
        _ => (404, "{}".into()),
    });
    let c = Client::new(
        &format!("nacos://{}/svc", nacos.addr()),
        &options(&[("access_key", "AK1"), ("secret_key", "SK1"), ("group", "g")]),
    )
    .unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let req = &nacos.seen()[0];
    assert_eq!(req.query["ak"], "AK1");
    let data = &req.query["data"];
    let (ts, rest) = data.split_once("@@").unwrap();
    assert!(ts.parse::<u64>().is_ok(), "{data}");
    assert_eq!(rest, "g@@svc");
    assert_eq!(
        req.query["signature"].len(),
        28,
        "base64 of a 20-byte HMAC-SHA1"
    );
}

#[test]
fn failover_to_the_next_server_and_an_address_server_list() {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead); // connection refused from now on
    let live = Fixture::start(|req| match req.path.as_str() {
        "/nacos/v3/client/ns/instance/list" => (200, v3_answer(&[9001])),
        _ => (404, "{}".into()),
    });
    for _ in 0..4 {
        // Whatever the random start, the live server answers.
        let c = Client::new(
            &format!("nacos://{dead_addr};{}/svc", live.addr()),
            &options(&[]),
        )
        .unwrap();
        c.wait_ready(Duration::from_secs(5)).unwrap();
        assert_eq!(ports(&c), vec![9001]);
    }
    let live_addr = live.addr();
    let address_server = Fixture::start(move |req| match req.path.as_str() {
        "/nacos/serverlist" => (200, format!("{dead_addr}\n{live_addr}\n")),
        _ => (404, String::new()),
    });
    let c = Client::new(
        &format!("nacos+endpoint://{}/svc", address_server.addr()),
        &options(&[]),
    )
    .unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(ports(&c), vec![9001]);
}

#[test]
fn unhealthy_and_disabled_are_absent_and_an_empty_answer_keeps_the_list() {
    let nacos = Fixture::start(|req| match req.path.as_str() {
        "/nacos/v3/client/ns/instance/list" => (
            200,
            r#"{"code":0,"data":[
                {"ip":"127.0.0.1","port":9001,"weight":1,"healthy":true,"enabled":true},
                {"ip":"127.0.0.1","port":9002,"weight":1,"healthy":false,"enabled":true},
                {"ip":"127.0.0.1","port":9003,"weight":1,"healthy":true,"enabled":false},
                {"ip":"127.0.0.1","port":9004,"weight":0,"healthy":true,"enabled":true}]}"#
                .into(),
        ),
        _ => (404, "{}".into()),
    });
    let c = Client::new(&format!("nacos://{}/svc", nacos.addr()), &options(&[])).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(ports(&c), vec![9001, 9004]);
    for _ in 0..10 {
        assert_eq!(c.select().unwrap().port, 9001, "weight 0 is never picked");
    }
    let failed = c.stats().unwrap().refresh_failed;
    nacos.set(|_| (200, r#"{"code":0,"data":[]}"#.into()));
    eventually("an empty answer counted as a failure", || {
        c.stats().unwrap().refresh_failed > failed + 1
    });
    assert_eq!(ports(&c), vec![9001, 9004], "empty protection");
    nacos.set(|_| (500, "boom".into()));
    eventually("errors counted", || {
        c.stats().unwrap().refresh_failed > failed + 4
    });
    assert_eq!(ports(&c), vec![9001, 9004]);
    let err = c.last_error().unwrap().unwrap();
    assert_eq!(err.kind, ErrorKind::DiscoveryFailed);
    assert!(err.message.contains("500"), "{err}");
}

#[test]
fn options_pair_up_and_eas_keys_are_refused() {
    let err = Client::new("nacos://127.0.0.1:1/svc", &options(&[("username", "u")]))
        .err()
        .unwrap();
    assert!(err.message.contains("password"), "{err}");
    let err = Client::new(
        "nacos://127.0.0.1:1/svc",
        &options(&[("discovery_path", "/x/{service}")]),
    )
    .err()
    .unwrap();
    assert!(err.message.contains("discovery_path"), "{err}");
}
