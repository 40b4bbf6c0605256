//! Discovery answers, faults and scripts, checked on the wire with a plain TcpStream.

mod common;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use common::*;
use easdirect_emulator::{Action, Emulator, Endpoint, Fault, Paths, Script};
use serde_json::json;

fn emulator_with_svc() -> Emulator {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(
        "svc",
        vec![
            Endpoint::new("10.0.0.1", 50000, 100),
            Endpoint::without_weight("10.0.0.2", 50001),
        ],
    );
    emu
}

fn expected_svc() -> serde_json::Value {
    json!({"correlative": ["svc"], "endpoints": {"items": [
        {"app": "svc", "ip": "10.0.0.1", "port": 50000, "weight": 100},
        {"app": "svc", "ip": "10.0.0.2", "port": 50001}
    ]}})
}

#[test]
fn answers_on_both_paths() {
    let emu = emulator_with_svc();
    assert!(emu.endpoint().starts_with("127.0.0.1:"));
    assert_eq!(emu.target("svc"), format!("eas://{}/svc", emu.endpoint()));
    for target in [format!("{DOC}svc?internal=true"), format!("{NEW}svc")] {
        let r = get(emu.addr(), &target);
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json(), expected_svc());
    }
    assert_eq!(emu.requests(), 2);
    assert_eq!(emu.last_request_target().unwrap(), format!("{NEW}svc"));
    get(emu.addr(), &format!("{DOC}svc?internal=true"));
    assert_eq!(
        emu.last_request_target().unwrap(),
        format!("{DOC}svc?internal=true")
    );
}

#[test]
fn unknown_service_and_other_paths_are_404() {
    let emu = emulator_with_svc();
    assert_eq!(get(emu.addr(), &format!("{DOC}nope")).status, 404);
    assert_eq!(get(emu.addr(), &format!("{NEW}nope")).status, 404);
    assert_eq!(get(emu.addr(), "/").status, 404);
    assert_eq!(get(emu.addr(), "/api/predict/svc").status, 404);
    assert_eq!(emu.requests(), 2, "only discovery paths count");

    emu.set_endpoints("empty", vec![]);
    let r = get(emu.addr(), &format!("{DOC}empty"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["endpoints"]["items"], json!([]));

    emu.remove_service("svc");
    assert_eq!(get(emu.addr(), &format!("{DOC}svc")).status, 404);
    assert_eq!(
        request(emu.addr(), "POST", &format!("{DOC}empty"), Some("{}")).status,
        405
    );
}

#[test]
fn paths_select_which_path_answers() {
    let emu = emulator_with_svc();
    emu.set_paths(Paths::NewOnly);
    assert_eq!(get(emu.addr(), &format!("{DOC}svc")).status, 404);
    assert_eq!(get(emu.addr(), &format!("{NEW}svc")).status, 200);
    emu.set_paths(Paths::DocumentedOnly);
    assert_eq!(get(emu.addr(), &format!("{DOC}svc")).status, 200);
    assert_eq!(get(emu.addr(), &format!("{NEW}svc")).status, 404);
    emu.set_paths(Paths::Both);
    assert_eq!(get(emu.addr(), &format!("{DOC}svc")).status, 200);
    assert_eq!(emu.requests(), 5);
}

#[test]
fn keeps_connections_alive() {
    let emu = emulator_with_svc();
    let mut s = connect(emu.addr());
    let mut r = BufReader::new(s.try_clone().unwrap());
    for i in 0..3 {
        write!(s, "GET {DOC}svc HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let reply = read_reply(&mut r, false).unwrap();
        assert_eq!(reply.status, 200, "request {i}");
        assert_eq!(reply.json(), expected_svc());
    }
    assert_eq!(emu.requests(), 3);
}

#[test]
fn simple_faults() {
    let emu = emulator_with_svc();
    let target = format!("{DOC}svc");

    emu.set_fault(Fault::Status(503));
    assert_eq!(get(emu.addr(), &target).status, 503);
    // Faults apply to unknown services too.
    assert_eq!(get(emu.addr(), &format!("{NEW}nope")).status, 503);

    emu.set_fault(Fault::Html);
    let r = get(emu.addr(), &target);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().contains("<html>"));

    emu.set_fault(Fault::InvalidJson);
    let r = get(emu.addr(), &target);
    assert_eq!((r.status, r.text().as_str()), (200, "{not json"));

    emu.set_fault(Fault::WrongShape);
    let r = get(emu.addr(), &target);
    assert_eq!(r.status, 200);
    assert!(r.json()["endpoints"]["items"].is_null());

    emu.set_fault(Fault::EmptyList);
    let r = get(emu.addr(), &target);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["endpoints"]["items"], json!([]));

    emu.set_fault(Fault::Redirect);
    let r = get(emu.addr(), &format!("{target}?internal=true"));
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").unwrap(),
        format!("http://{}{target}?internal=true", emu.addr())
    );

    emu.set_fault(Fault::None);
    assert_eq!(emu.fault(), Fault::None);
    assert_eq!(get(emu.addr(), &target).json(), expected_svc());
}

#[test]
fn truncated_sends_half_then_closes() {
    let emu = emulator_with_svc();
    emu.set_fault(Fault::Truncated);
    let mut r = BufReader::new(send_get(emu.addr(), &format!("{DOC}svc")));
    let (status, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    let cl: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .unwrap()
        .1
        .parse()
        .unwrap();
    let mut body = Vec::new();
    r.read_to_end(&mut body).unwrap();
    assert_eq!(cl, expected_svc().to_string().len());
    assert_eq!(body.len(), cl / 2);
}

#[test]
fn oversize_is_over_16_mib_and_valid() {
    let emu = emulator_with_svc();
    emu.set_fault(Fault::Oversize);
    let r = get(emu.addr(), &format!("{DOC}svc"));
    assert_eq!(r.status, 200);
    assert!(r.content_length().unwrap() > 16 * 1024 * 1024);
    assert_eq!(r.body.len(), r.content_length().unwrap());
    let start = r.body.iter().position(|b| *b != b' ').unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body[start..]).unwrap();
    assert_eq!(v, expected_svc());
}

#[test]
fn reset_sends_part_then_aborts() {
    let emu = emulator_with_svc();
    emu.set_fault(Fault::Reset);
    let mut s = send_get(emu.addr(), &format!("{DOC}svc"));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let err = loop {
        match s.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Some(e.kind()),
        }
    };
    assert_eq!(err, Some(ErrorKind::ConnectionReset), "got {got:?}");
    let text = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(emu.requests(), 1);
}

#[test]
fn refuse_closes_without_answering() {
    let emu = emulator_with_svc();
    emu.set_fault(Fault::Refuse);
    let mut s = send_get(emu.addr(), &format!("{DOC}svc"));
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
    assert_eq!(emu.requests(), 1);
    // The control API still answers.
    assert_eq!(
        get(emu.addr(), "/_emulator/state").json()["fault"],
        "refuse"
    );
}

#[test]
fn hang_answers_nothing_and_stop_is_prompt() {
    let emu = emulator_with_svc();
    emu.set_fault(Fault::Hang);
    let mut s = send_get(emu.addr(), &format!("{DOC}svc"));
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    let e = s.read(&mut buf).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    assert_eq!(emu.requests(), 1);
    let t = Instant::now();
    emu.stop();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(s.read(&mut buf).unwrap(), 0, "closed after stop");
}

#[test]
fn hang_is_answered_when_the_fault_changes() {
    let emu = emulator_with_svc();
    emu.set_fault(Fault::Hang);
    let s = send_get(emu.addr(), &format!("{DOC}svc"));
    assert!(emu.wait_for_requests(1, Duration::from_secs(2)));
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    emu.set_fault(Fault::None);
    let r = read_reply(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), expected_svc());
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn trickle_sends_a_byte_per_second() {
    let emu = emulator_with_svc();
    emu.set_fault(Fault::Trickle);
    let s = send_get(emu.addr(), &format!("{DOC}svc"));
    let mut r = BufReader::new(s.try_clone().unwrap());
    let (status, _) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let t = Instant::now();
    let mut body = Vec::new();
    let mut buf = [0u8; 64];
    while t.elapsed() < Duration::from_millis(500) {
        if let Ok(n) = r.read(&mut buf) {
            body.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(body, b"{", "one byte in the first 500 ms");
    // A fault change ends the answer.
    let t = Instant::now();
    emu.set_fault(Fault::None);
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(r.read(&mut buf).unwrap(), 0);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn endless_chunked_never_ends() {
    let emu = emulator_with_svc();
    emu.set_fault(Fault::EndlessChunked);
    let s = send_get(emu.addr(), &format!("{DOC}svc"));
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r).unwrap();
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked"));
    let mut buf = vec![0u8; 4 * 1024 * 1024];
    r.read_exact(&mut buf).unwrap();
    drop(r); // the client goes away
    let t = Instant::now();
    emu.stop();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn stop_ends_every_parked_connection() {
    let emu = emulator_with_svc();
    let mut clients = Vec::new();
    for fault in [Fault::Hang, Fault::Trickle, Fault::EndlessChunked] {
        emu.set_fault(fault);
        let n = emu.requests() + 1;
        clients.push(send_get(emu.addr(), &format!("{DOC}svc")));
        assert!(emu.wait_for_requests(n, Duration::from_secs(2)));
        std::thread::sleep(Duration::from_millis(100));
    }
    // An idle keep-alive connection too.
    clients.push(connect(emu.addr()));
    let t = Instant::now();
    drop(emu);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn wait_for_requests_times_out_and_wakes() {
    let emu = emulator_with_svc();
    let t = Instant::now();
    assert!(!emu.wait_for_requests(1, Duration::from_millis(50)));
    assert!(t.elapsed() >= Duration::from_millis(50));
    let addr = emu.addr();
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        get(addr, &format!("{NEW}svc")).status
    });
    assert!(emu.wait_for_requests(1, Duration::from_secs(5)));
    assert_eq!(th.join().unwrap(), 200);
}

#[test]
fn script_steps_apply_in_order() {
    let emu = Emulator::start().unwrap();
    let a = vec![Endpoint::new("10.0.0.1", 50000, 100)];
    let b = vec![Endpoint::new("10.0.0.2", 50000, 100)];
    // Listed out of order: played by `at`.
    let script = Script::new()
        .then(Duration::from_millis(60), Action::Fault(Fault::Status(503)))
        .then(
            Duration::from_millis(0),
            Action::SetEndpoints {
                service: "svc".into(),
                items: a,
            },
        )
        .then(
            Duration::from_millis(30),
            Action::SetEndpoints {
                service: "svc".into(),
                items: b,
            },
        )
        .then(
            Duration::from_millis(90),
            Action::RemoveService("other".into()),
        );
    emu.set_endpoints("other", vec![]);
    let t = Instant::now();
    let h = emu.run_script(script);
    assert!(h.wait(Duration::from_secs(2)));
    assert!(h.is_finished());
    assert!(t.elapsed() >= Duration::from_millis(90));
    let state = emu.state();
    assert_eq!(state["services"]["svc"][0]["ip"], "10.0.0.2");
    assert!(state["services"].get("other").is_none());
    assert_eq!(
        (state["fault"].as_str(), state["status"].as_u64()),
        (Some("status"), Some(503))
    );
    assert_eq!(emu.fault(), Fault::Status(503));
}

#[test]
fn script_observed_step_by_step_and_stopped() {
    let emu = Emulator::start().unwrap();
    let json = json!({"steps": [
        {"at_ms": 0, "set_endpoints": {"service": "svc", "items": [{"ip": "10.0.0.1", "port": 1}]}},
        {"at_ms": 150, "set_endpoints": {"service": "svc", "items": [{"ip": "10.0.0.1", "port": 1}, {"ip": "10.0.0.2", "port": 2}]}},
        {"at_ms": 10000, "remove_service": "svc"}
    ]});
    let h = emu.run_script(Script::from_json(&json).unwrap());
    let count = || {
        let r = get(emu.addr(), &format!("{DOC}svc"));
        if r.status == 200 {
            r.json()["endpoints"]["items"].as_array().unwrap().len()
        } else {
            0
        }
    };
    let t = Instant::now();
    let mut seen = Vec::new();
    while t.elapsed() < Duration::from_millis(400) {
        let n = count();
        if seen.last() != Some(&n) {
            seen.push(n);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(seen.last(), Some(&2));
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(!h.is_finished());
    let t = Instant::now();
    h.stop();
    assert!(t.elapsed() < Duration::from_millis(200));
    assert_eq!(count(), 2, "the remaining step never ran");
}
