//! The control API and the backends, checked on the wire with a plain TcpStream.

mod common;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use easdirect_emulator::{Backend, BackendMode, Emulator, Fault, Paths};
use serde_json::json;

#[test]
fn services_round_trip() {
    let emu = Emulator::start().unwrap();
    let addr = emu.addr();
    // Malformed items are sent verbatim.
    let items = json!([{"ip": "10.0.0.1", "port": 50000, "weight": 100}, {"ip": 7, "port": "x"}]);
    assert_eq!(
        put(addr, "/_emulator/services/svc", &items.to_string()).status,
        204
    );
    let r = get(addr, &format!("{DOC}svc"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"correlative": ["svc"], "endpoints": {"items": items}})
    );
    let state = get(addr, "/_emulator/state").json();
    assert_eq!(state["services"]["svc"], items);
    assert_eq!(state["fault"], "none");
    assert_eq!(state["paths"], "both");
    assert_eq!(state["requests"], 1);

    assert_eq!(
        put(addr, "/_emulator/services/svc", "{\"a\":1}").status,
        400
    );
    assert_eq!(put(addr, "/_emulator/services/svc", "not json").status, 400);
    assert_eq!(
        request(addr, "DELETE", "/_emulator/services/svc", None).status,
        204
    );
    assert_eq!(get(addr, &format!("{DOC}svc")).status, 404);
    assert_eq!(get(addr, "/_emulator/nothing").status, 404);
    assert_eq!(
        request(addr, "POST", "/_emulator/state", Some("{}")).status,
        405
    );
    assert_eq!(emu.requests(), 2, "control requests are not counted");
}

#[test]
fn fault_and_paths_round_trip() {
    let emu = Emulator::start().unwrap();
    let addr = emu.addr();
    emu.set_endpoints("svc", vec![]);

    let r = put(addr, "/_emulator/fault", r#"{"fault":"bogus"}"#);
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("\"fault\""),
        "{}",
        r.text()
    );
    let r = put(
        addr,
        "/_emulator/fault",
        r#"{"fault":"status","status":"x"}"#,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("\"status\""),
        "{}",
        r.text()
    );
    assert_eq!(put(addr, "/_emulator/fault", "[]").status, 400);

    assert_eq!(
        put(
            addr,
            "/_emulator/fault",
            r#"{"fault":"status","status":429}"#
        )
        .status,
        204
    );
    assert_eq!(emu.fault(), Fault::Status(429));
    assert_eq!(get(addr, &format!("{NEW}svc")).status, 429);
    let state = get(addr, "/_emulator/state").json();
    assert_eq!(
        (state["fault"].clone(), state["status"].clone()),
        (json!("status"), json!(429))
    );

    // Faults never apply to the control API, even one that parks connections.
    assert_eq!(
        put(addr, "/_emulator/fault", r#"{"fault":"hang"}"#).status,
        204
    );
    assert_eq!(get(addr, "/_emulator/state").json()["fault"], "hang");
    assert_eq!(
        put(addr, "/_emulator/fault", r#"{"fault":"refuse"}"#).status,
        204
    );
    assert_eq!(get(addr, "/_emulator/state").json()["fault"], "refuse");
    assert_eq!(
        put(addr, "/_emulator/fault", r#"{"fault":"none"}"#).status,
        204
    );
    assert_eq!(get(addr, &format!("{NEW}svc")).status, 200);

    let r = put(addr, "/_emulator/paths", r#"{"paths":"sideways"}"#);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("paths"));
    assert_eq!(
        put(addr, "/_emulator/paths", r#"{"paths":"new_only"}"#).status,
        204
    );
    assert_eq!(get(addr, &format!("{DOC}svc")).status, 404);
    assert_eq!(get(addr, &format!("{NEW}svc")).status, 200);
    assert_eq!(get(addr, "/_emulator/state").json()["paths"], "new_only");
    emu.set_paths(Paths::Both);
    assert_eq!(get(addr, &format!("{DOC}svc")).status, 200);
}

#[test]
fn script_over_http() {
    let emu = Emulator::start().unwrap();
    let addr = emu.addr();
    let script = json!({"steps": [
        {"at_ms": 0, "set_raw_items": {"service": "svc", "items": [{"ip": "x"}]}},
        {"at_ms": 20, "fault": {"fault": "status", "status": 500}}
    ]});
    assert_eq!(
        request(addr, "POST", "/_emulator/script", Some(&script.to_string())).status,
        204
    );
    let t = Instant::now();
    while emu.fault() != Fault::Status(500) {
        assert!(t.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(emu.state()["services"]["svc"], json!([{"ip": "x"}]));
    let r = request(
        addr,
        "POST",
        "/_emulator/script",
        Some(r#"[{"at_ms":"soon"}]"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("at_ms"));
    // A long script is stopped by DELETE and by the emulator's drop.
    let long = json!([{"at_ms": 60000, "fault": "hang"}]).to_string();
    assert_eq!(
        request(addr, "POST", "/_emulator/script", Some(&long)).status,
        204
    );
    assert_eq!(
        request(addr, "DELETE", "/_emulator/script", None).status,
        204
    );
    assert_eq!(
        request(addr, "POST", "/_emulator/script", Some(&long)).status,
        204
    );
    let t = Instant::now();
    drop(emu);
    assert!(t.elapsed() < Duration::from_secs(1));
}

fn backend_get(port: u16, target: &str) -> Reply {
    get(SocketAddr::from(([127, 0, 0, 1], port)), target)
}

#[test]
fn backend_answers_and_counts() {
    let b = Backend::start().unwrap();
    let addr = b.addr();
    assert_eq!(addr.port(), b.port());
    let r = backend_get(b.port(), "/api/predict/svc?x=1");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"backend": format!("127.0.0.1:{}", b.port()), "path": "/api/predict/svc?x=1",
               "method": "GET", "body_len": 0})
    );

    // Keep-alive, a Content-Length body and a chunked body on one connection.
    let mut s = connect(addr);
    let mut rd = BufReader::new(s.try_clone().unwrap());
    write!(
        s,
        "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    )
    .unwrap();
    assert_eq!(read_reply(&mut rd, false).unwrap().json()["body_len"], 5);
    write!(
        s,
        "POST /q HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n"
    )
    .unwrap();
    let r = read_reply(&mut rd, false).unwrap();
    assert_eq!(
        (r.json()["body_len"].clone(), r.json()["path"].clone()),
        (json!(7), json!("/q"))
    );
    write!(s, "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut rd, true).unwrap().status, 200);
    write!(s, "GET /g HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut rd, false).unwrap().json()["method"], "GET");
    assert_eq!(b.hits(), 5);

    b.set_mode(BackendMode::Status(503));
    assert_eq!(b.mode(), BackendMode::Status(503));
    let r = backend_get(b.port(), "/");
    assert_eq!((r.status, r.json()["status"].clone()), (503, json!(503)));
    b.set_mode(BackendMode::Status(429));
    assert_eq!(backend_get(b.port(), "/").status, 429);
    assert_eq!(b.hits(), 7);

    let port = b.port();
    let t = Instant::now();
    b.stop();
    assert!(t.elapsed() < Duration::from_secs(1));
    let e = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    // The kept-alive connection was closed too.
    let mut buf = [0u8; 16];
    assert_eq!(rd.read(&mut buf).unwrap(), 0);
}

#[test]
fn backend_throttles_resets_and_remembers_requests() {
    let b = Backend::start().unwrap();
    b.set_mode(BackendMode::Throttle(429, 7));
    let r = backend_get(b.port(), "/t?q=1");
    assert_eq!((r.status, r.header("retry-after")), (429, Some("7")));
    assert_eq!(b.mode().name(), "status");

    // A reset comes before any answer byte: the read fails or sees the end at once.
    b.set_mode(BackendMode::Reset);
    let mut s = send_get(b.addr(), "/r");
    let mut buf = [0u8; 16];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    assert_eq!(b.hits(), 2);

    let got = b.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].method.as_str(), got[0].target.as_str()),
        ("GET", "/t?q=1")
    );
    assert_eq!(got[0].body_len, Some(0));
    assert!(got[0].headers.iter().any(|(k, _)| k == "host"));
    assert_eq!((got[1].target.as_str(), got[1].body_len), ("/r", None));
    assert_eq!(got[1].to_json()["body_len"], json!(null));

    // A TLS ClientHello (an https client at a plain backend) is closed at once, unanswered.
    let mut s = TcpStream::connect(b.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00])
        .unwrap();
    let t = Instant::now();
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(b.hits(), 2, "not a request");
}

#[test]
fn backend_hang_until_mode_changes() {
    let b = Backend::start().unwrap();
    b.set_mode(BackendMode::Hang);
    let mut s = send_get(b.addr(), "/slow");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 16];
    let e = s.read(&mut buf).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    assert_eq!(b.hits(), 1);
    b.set_mode(BackendMode::Ok);
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let r = read_reply(&mut BufReader::new(s), false).unwrap();
    assert_eq!((r.status, r.json()["path"].clone()), (200, json!("/slow")));

    // Stopping ends a hung request promptly.
    b.set_mode(BackendMode::Hang);
    let mut s = send_get(b.addr(), "/slow");
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    b.stop();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(s.read(&mut buf).unwrap(), 0);
}

#[test]
fn backends_over_http() {
    let emu = Emulator::start().unwrap();
    let addr = emu.addr();
    let r = request(
        addr,
        "POST",
        "/_emulator/backends",
        Some(r#"{"service":"svc","count":3}"#),
    );
    assert_eq!(r.status, 200);
    let list = r.json();
    let ports: Vec<u16> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["ip"], "127.0.0.1");
            b["port"].as_u64().unwrap() as u16
        })
        .collect();
    assert_eq!(ports.len(), 3);
    let items = get(addr, &format!("{DOC}svc")).json()["endpoints"]["items"].clone();
    let want: Vec<_> = ports
        .iter()
        .map(|p| json!({"app": "svc", "ip": "127.0.0.1", "port": p, "weight": 100}))
        .collect();
    assert_eq!(items, json!(want));

    for p in &ports {
        assert_eq!(backend_get(*p, "/api/predict/svc").status, 200);
    }
    assert_eq!(emu.backend_hits(ports[0]), Some(1));

    let at = |p: u16| format!("/_emulator/backends/{p}");
    assert_eq!(
        put(addr, &at(ports[0]), r#"{"mode":"status","status":429}"#).status,
        204
    );
    assert_eq!(backend_get(ports[0], "/").status, 429);
    assert_eq!(put(addr, &at(ports[1]), r#"{"mode":"dead"}"#).status, 204);
    let e = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], ports[1]))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(put(addr, &at(ports[2]), r#"{"mode":"hang"}"#).status, 204);
    let r = put(addr, &at(ports[2]), r#"{"mode":"sleepy"}"#);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("mode"));
    assert_eq!(put(addr, &at(1), r#"{"mode":"ok"}"#).status, 404);
    let r = put(
        addr,
        &at(ports[2]),
        r#"{"mode":"status","status":503,"retry_after":"x"}"#,
    );
    assert!((r.status, r.text().contains("retry_after")) == (400, true));

    let listed = get(addr, "/_emulator/backends").json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["mode"], "status");
    assert_eq!(listed[0]["status"], 429);
    assert_eq!(listed[0]["hits"], 2);
    assert_eq!(listed[0]["requests"][0]["path"], "/api/predict/svc");
    assert_eq!(listed[0]["requests"][1]["method"], "GET");
    assert_eq!(listed[1]["mode"], "dead");
    assert_eq!(listed[1]["hits"], 1);
    assert_eq!(listed[2]["mode"], "hang");
    assert_eq!(listed[2]["service"], "svc");
    // The dead one stays listed under the service.
    assert_eq!(
        get(addr, &format!("{DOC}svc")).json()["endpoints"]["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let r = request(
        addr,
        "POST",
        "/_emulator/backends",
        Some(r#"{"service":"svc","count":0}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("count"));
    let r = request(addr, "POST", "/_emulator/backends", Some(r#"{"count":1}"#));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("service"));
    let r = request(
        addr,
        "POST",
        "/_emulator/backends",
        Some(r#"{"service":"svc","replace":true}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(emu.state()["services"]["svc"].as_array().unwrap().len(), 1);

    // The Rust API does the same.
    let more = emu.add_backends("other", 2).unwrap();
    assert!(emu.set_backend_mode(more[0], BackendMode::Status(503)));
    assert_eq!(backend_get(more[0], "/").status, 503);
    assert!(emu.kill_backend(more[1]));
    assert!(!emu.kill_backend(1));

    // Backends stop with the emulator, a hung request included.
    let _hung = send_get(SocketAddr::from(([127, 0, 0, 1], ports[2])), "/");
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    drop(emu);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let e = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], ports[0]))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn malformed_requests_and_http10() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints("svc", vec![]);
    let mut s = connect(emu.addr());
    s.write_all(b"garbage\r\n\r\n").unwrap();
    let r = read_reply(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 400);

    // HTTP/1.0 without keep-alive: the answer ends with the connection.
    let mut s = connect(emu.addr());
    write!(s, "GET {NEW}svc HTTP/1.0\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.contains("Connection: close"));

    // Expect: 100-continue is honoured.
    let mut s = connect(emu.addr());
    write!(
        s,
        "PUT /_emulator/services/x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_reply(&mut rd, true).unwrap().status, 100);
    s.write_all(b"[]").unwrap();
    assert_eq!(read_reply(&mut rd, false).unwrap().status, 204);
    assert_eq!(emu.state()["services"]["x"], json!([]));
}
