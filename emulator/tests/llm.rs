//! LLM-like backends: slots and their queue, service times by tokens and speed, streaming, load
//! reports and their settings, checked on the wire with a plain TcpStream. Timings are checked
//! by lower bounds (a queued request takes at least its wait), upper bounds only in seconds.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use easdirect_emulator::{Backend, BackendMode, Emulator, LlmConfig, LlmCounters};
use serde_json::{json, Value};

/// Service time `base` flat: no tokens cost anything.
fn flat(slots: u32, base_ms: u64) -> LlmConfig {
    LlmConfig {
        slots,
        base: Duration::from_millis(base_ms),
        per_token: Duration::ZERO,
        ..LlmConfig::default()
    }
}

/// Writes one request (keep-alive) with these headers and body.
fn write_request(s: &mut TcpStream, headers: &[(&str, &str)], body: Option<&str>) {
    let mut req = String::from("POST /v1/completions HTTP/1.1\r\nHost: llm\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
}

/// One request on a new connection; the reply and the time it took.
fn ask(addr: SocketAddr, headers: &[(&str, &str)], body: Option<&str>) -> (Reply, Duration) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    write_request(&mut s, headers, body);
    let r = read_reply(&mut BufReader::new(s), false).unwrap();
    (r, t.elapsed())
}

/// Polls until `cond` holds, at most 5 seconds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn requests_beyond_the_slots_wait_their_turn() {
    let b = Backend::start_llm(flat(2, 500)).unwrap();
    let llm = b.llm().unwrap().clone();
    let addr = b.addr();
    let start = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || ask(addr, &[("x-tokens", "0")], None)))
        .collect();
    eventually("two run and two wait", || {
        llm.counters()
            == LlmCounters {
                running: 2,
                waiting: 2,
                served: 0,
                abandoned: 0,
            }
    });
    let mut done: Vec<(Reply, Duration)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let total = start.elapsed();
    done.sort_by_key(|(r, _)| r.json()["queued_ms"].as_f64().unwrap() as u64);
    for (r, _) in &done {
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["tokens"], 0);
    }
    // Two waited for a slot: at least the 500 ms the first two held theirs.
    for (r, took) in &done[2..] {
        assert!(r.json()["queued_ms"].as_f64().unwrap() > 0.0);
        assert!(*took >= 500 * MS, "{took:?}");
    }
    assert!(total >= 1000 * MS, "two rounds of 500 ms: {total:?}");
    assert!(total < Duration::from_secs(10), "{total:?}");
    // A request is noted once its answer is written: the client may have read it first.
    let deadline = Instant::now() + Duration::from_secs(5);
    while llm.counters().served < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let c = llm.counters();
    assert_eq!((c.running, c.waiting, c.served), (0, 0, 4));
    let served = llm.take_served();
    assert_eq!(served.len(), 4);
    assert!(served.iter().all(|s| s.service >= 500 * MS && !s.streamed));
    let mut queued: Vec<Duration> = served.iter().map(|s| s.queued).collect();
    queued.sort();
    assert!(
        queued[2] > Duration::ZERO && queued[3] > Duration::ZERO,
        "{queued:?}"
    );
    assert!(llm.take_served().is_empty(), "taken once");
}

#[test]
fn the_speed_factor_divides_the_service_time() {
    let b = Backend::start_llm(LlmConfig {
        speed: 0.25,
        ..flat(1, 200)
    })
    .unwrap();
    let llm = b.llm().unwrap();
    let (r, took) = ask(b.addr(), &[("x-tokens", "0")], None);
    assert_eq!(r.status, 200);
    assert!(
        took >= 800 * MS,
        "200 ms at a quarter of the speed: {took:?}"
    );

    llm.set_config(LlmConfig {
        speed: 4.0,
        ..flat(1, 4000)
    })
    .unwrap();
    let (_, took) = ask(b.addr(), &[("x-tokens", "0")], None);
    assert!(took >= 1000 * MS, "4 s at four times the speed: {took:?}");
    assert!(took < 3500 * MS, "4 s at four times the speed: {took:?}");
    llm.set_speed(1.0);
    assert_eq!(llm.config().speed, 1.0);
}

#[test]
fn tokens_come_from_the_header_the_json_body_or_the_draw() {
    let config = LlmConfig {
        base: Duration::ZERO,
        per_token: 5 * MS,
        max_tokens: 50,
        mean_tokens: 10,
        ..LlmConfig::default()
    };
    let b = Backend::start_llm(config.clone()).unwrap();
    let addr = b.addr();
    let tokens = |r: &Reply| r.json()["tokens"].as_u64().unwrap();

    let (r, took) = ask(addr, &[("x-tokens", "40")], None);
    assert_eq!(tokens(&r), 40);
    assert!(took >= 200 * MS, "40 tokens of 5 ms: {took:?}");
    assert_eq!(r.json()["usage"]["completion_tokens"], 40);
    assert_eq!(r.json()["choices"][0]["text"], "tok ".repeat(40));

    let body = r#"{"model":"m","prompt":"hi","max_tokens":7}"#;
    assert_eq!(tokens(&ask(addr, &[], Some(body)).0), 7);
    assert_eq!(
        tokens(&ask(addr, &[("x-tokens", "3")], Some(body)).0),
        3,
        "the header wins"
    );
    assert_eq!(
        tokens(&ask(addr, &[("x-tokens", "99999")], None).0),
        50,
        "capped"
    );

    for (headers, body) in [
        (&[("x-tokens", "abc")][..], None),
        (&[("x-tokens", "-1")][..], None),
        (&[][..], Some(r#"{"max_tokens":"7"}"#)),
        (&[][..], Some(r#"{"max_tokens":1.5}"#)),
    ] {
        let (r, _) = ask(addr, headers, body);
        assert_eq!(r.status, 400, "{headers:?} {body:?}");
        assert!(r.text().contains("tokens"), "{}", r.text());
    }

    // Without a count, a draw; the same seed draws the same sequence.
    let other = Backend::start_llm(config).unwrap();
    let draws = |addr| -> Vec<u64> {
        (0..6)
            .map(|_| tokens(&ask(addr, &[], Some("not json")).0))
            .collect()
    };
    let (a, b_draws) = (draws(addr), draws(other.addr()));
    assert_eq!(a, b_draws);
    assert!(a.iter().all(|t| (1..=50).contains(t)), "{a:?}");
    assert!(
        a.iter().any(|t| *t != a[0]),
        "a draw, not a constant: {a:?}"
    );
}

#[test]
fn a_streamed_answer_arrives_token_by_token() {
    let b = Backend::start_llm(LlmConfig {
        base: 100 * MS,
        per_token: 200 * MS,
        ..LlmConfig::default()
    })
    .unwrap();
    let mut s = connect(b.addr());
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    let t = Instant::now();
    write_request(
        &mut s,
        &[("Content-Type", "application/json")],
        Some(r#"{"prompt":"hi","max_tokens":5,"stream":true}"#),
    );
    let (status, headers) = read_head(&mut rd).unwrap();
    let head_at = t.elapsed();
    assert_eq!(status, 200);
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
    assert!(header("content-length").is_none());
    assert!(
        head_at >= 100 * MS,
        "the head comes with the first token: {head_at:?}"
    );

    // Each chunk is one event; note when each arrives.
    let mut events = Vec::new();
    loop {
        let mut line = String::new();
        rd.read_line(&mut line).unwrap();
        let n = usize::from_str_radix(line.trim(), 16).unwrap();
        let mut data = vec![0; n + 2];
        std::io::Read::read_exact(&mut rd, &mut data).unwrap();
        if n == 0 {
            break;
        }
        events.push((String::from_utf8(data[..n].to_vec()).unwrap(), t.elapsed()));
    }
    assert_eq!(events.len(), 6, "{events:?}");
    for (e, _) in &events[..5] {
        let payload = e
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let v: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(v["choices"][0]["text"], "tok ");
    }
    assert_eq!(events[5].0, "data: [DONE]\n\n");
    // Tokens 200 ms apart: the first cannot come before 300 ms nor the fifth before 1100 ms;
    // 200 ms of slack for a late first one.
    assert!(events[0].1 >= 300 * MS, "{events:?}");
    assert!(events[4].1 >= 1100 * MS, "{events:?}");
    let spread = events[4].1 - events[0].1;
    assert!(spread >= 600 * MS, "the tokens came at once: {events:?}");

    // The connection stays open for the next request; a header asks for streaming too.
    write_request(&mut s, &[("x-tokens", "2"), ("x-stream", "true")], None);
    let r = read_reply(&mut rd, false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text().matches("data: ").count(), 3, "{}", r.text());
    // The backend notes a request once its last chunk is written: the client may read that
    // chunk first.
    let mut served = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while served.len() < 2 && Instant::now() < deadline {
        served.extend(b.llm().unwrap().take_served());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(served.len(), 2);
    assert!(served.iter().all(|s| s.streamed));
    assert_eq!(served[0].tokens, 5);
}

#[test]
fn the_load_report_comes_only_when_asked() {
    let b = Backend::start_llm(flat(4, 0)).unwrap();
    let addr = b.addr();
    let (r, _) = ask(addr, &[("x-tokens", "1")], None);
    assert_eq!(r.header("endpoint-load-metrics"), None);

    let (r, _) = ask(
        addr,
        &[("x-tokens", "1"), ("endpoint-load-metrics-format", "text")],
        None,
    );
    // Alone on the backend, it counts itself as running.
    assert_eq!(
        r.header("endpoint-load-metrics"),
        Some(
            "TEXT named_metrics.kv_cache_usage_perc=0.25, named_metrics.num_requests_waiting=0.0, \
             named_metrics.num_requests_running=1.0"
        )
    );

    let (r, _) = ask(
        addr,
        &[("x-tokens", "1"), ("endpoint-load-metrics-format", "JSON")],
        None,
    );
    let v = r.header("endpoint-load-metrics").unwrap();
    let report: Value = serde_json::from_str(v.strip_prefix("JSON ").unwrap()).unwrap();
    assert_eq!(
        report,
        json!({"named_metrics": {"kv_cache_usage_perc": 0.25, "num_requests_waiting": 0.0,
                                 "num_requests_running": 1.0}})
    );

    // Exactly vLLM's two figures when asked so; streamed answers carry it too.
    let llm = b.llm().unwrap();
    llm.set_config(LlmConfig {
        report_running: false,
        ..llm.config()
    })
    .unwrap();
    let (r, _) = ask(
        addr,
        &[
            ("x-tokens", "1"),
            ("x-stream", "1"),
            ("endpoint-load-metrics-format", "text"),
        ],
        None,
    );
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        r.header("endpoint-load-metrics"),
        Some("TEXT named_metrics.kv_cache_usage_perc=0.25, named_metrics.num_requests_waiting=0.0")
    );
    let (r, _) = ask(
        addr,
        &[("x-tokens", "1"), ("endpoint-load-metrics-format", "bin")],
        None,
    );
    assert_eq!(
        r.header("endpoint-load-metrics"),
        None,
        "only text and json"
    );
}

#[test]
fn the_load_report_shows_the_queue() {
    let b = Backend::start_llm(flat(1, 400)).unwrap();
    let addr = b.addr();
    let llm = b.llm().unwrap().clone();
    let first = thread::spawn(move || ask(addr, &[("x-tokens", "0")], None));
    eventually("the first runs", || llm.counters().running == 1);
    let second = thread::spawn(move || ask(addr, &[("x-tokens", "0")], None));
    eventually("the second waits", || llm.counters().waiting == 1);
    assert_eq!(llm.occupancy(), (1, 1, 2), "running, waiting, arrived");
    // The third is reported when it runs: the second may still be running or waiting.
    let (r, _) = ask(
        addr,
        &[("x-tokens", "0"), ("endpoint-load-metrics-format", "text")],
        None,
    );
    assert_eq!(
        r.header("endpoint-load-metrics"),
        Some(
            "TEXT named_metrics.kv_cache_usage_perc=1.0, named_metrics.num_requests_waiting=0.0, \
             named_metrics.num_requests_running=1.0"
        )
    );
    assert!(r.json()["queued_ms"].as_f64().unwrap() > 0.0);
    first.join().unwrap();
    second.join().unwrap();
    eventually("served ones stay arrived", || llm.occupancy() == (0, 0, 3));
}

#[test]
fn other_modes_answer_an_llm_backend_at_once() {
    let b = Backend::start_llm(flat(1, 5000)).unwrap();
    b.set_mode(BackendMode::Status(429));
    let (r, took) = ask(b.addr(), &[], None);
    assert_eq!(r.status, 429);
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(b.llm().unwrap().counters(), LlmCounters::default());
}

#[test]
fn clients_that_leave_and_a_stop_free_every_slot() {
    let b = Backend::start_llm(flat(1, 10_000)).unwrap();
    let llm = b.llm().unwrap().clone();
    let mut running = connect(b.addr());
    write_request(&mut running, &[], None);
    eventually("one runs", || llm.counters().running == 1);
    let mut leaving = connect(b.addr());
    write_request(&mut leaving, &[], None);
    eventually("one waits", || llm.counters().waiting == 1);
    drop(leaving);
    eventually("the one that left no longer waits", || {
        llm.counters().waiting == 0 && llm.counters().abandoned == 1
    });
    let mut waiting = connect(b.addr());
    write_request(&mut waiting, &[], None);
    eventually("another waits", || llm.counters().waiting == 1);

    let t = Instant::now();
    b.stop();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(
        llm.counters(),
        LlmCounters {
            running: 0,
            waiting: 0,
            served: 0,
            abandoned: 3
        }
    );
}

#[test]
fn llm_backends_over_the_control_api() {
    let emu = Emulator::start().unwrap();
    let addr = emu.addr();
    let r = request(
        addr,
        "POST",
        "/_emulator/backends",
        Some(
            r#"{"service":"svc","count":2,"kind":"llm","llm":{"slots":1,"base_ms":0,"per_token_ms":0.5,"seed":9}}"#,
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let ports: Vec<u16> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["port"].as_u64().unwrap() as u16)
        .collect();
    assert_eq!(ports.len(), 2);
    let echo = emu.add_backends("svc", 1).unwrap()[0];

    let llm = emu.llm(ports[0]).unwrap();
    assert_eq!(llm.config().slots, 1);
    assert_eq!(llm.config().per_token, Duration::from_micros(500));
    assert_eq!(llm.config().seed, 9);
    assert!(emu.llm(echo).is_none());

    let at = |p: u16| format!("/_emulator/backends/{p}/llm");
    assert_eq!(
        put(addr, &at(ports[0]), r#"{"speed":0.5,"slots":3}"#).status,
        204
    );
    assert_eq!((llm.config().speed, llm.config().slots), (0.5, 3));
    assert_eq!(llm.config().seed, 9, "other settings stay");
    let r = put(addr, &at(ports[0]), r#"{"speed":0}"#);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("speed"), "{}", r.text());
    let r = put(addr, &at(ports[0]), r#"{"slotz":2}"#);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("slotz"), "{}", r.text());
    assert_eq!(put(addr, &at(echo), r#"{"speed":1}"#).status, 404);
    assert_eq!(put(addr, &at(1), r#"{"speed":1}"#).status, 404);
    assert_eq!(request(addr, "GET", &at(ports[0]), None).status, 405);

    let (r, _) = ask(
        SocketAddr::from(([127, 0, 0, 1], ports[0])),
        &[("x-tokens", "4")],
        None,
    );
    assert_eq!(r.json()["tokens"], 4);
    let listed = get(addr, "/_emulator/backends").json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["kind"], "llm");
    assert_eq!(listed[0]["llm"]["slots"], 3);
    assert_eq!(listed[0]["llm"]["speed"], 0.5);
    assert_eq!(listed[0]["llm"]["served"], 1);
    assert_eq!(listed[0]["llm"]["running"], 0);
    assert_eq!(listed[1]["llm"]["slots"], 1);
    assert_eq!(listed[2]["kind"], "echo");
    assert!(listed[2].get("llm").is_none());

    // Modes apply as to any backend; a killed one keeps its counters.
    assert_eq!(
        put(
            addr,
            &format!("/_emulator/backends/{}", ports[1]),
            r#"{"mode":"status","status":503}"#
        )
        .status,
        204
    );
    assert_eq!(
        ask(SocketAddr::from(([127, 0, 0, 1], ports[1])), &[], None)
            .0
            .status,
        503
    );
    assert!(emu.kill_backend(ports[0]));
    let listed = get(addr, "/_emulator/backends").json();
    assert_eq!(listed[0]["mode"], "dead");
    assert_eq!(listed[0]["llm"]["served"], 1);

    for (body, field) in [
        (r#"{"service":"svc","kind":"bogus"}"#, "kind"),
        (r#"{"service":"svc","kind":"echo","llm":{}}"#, "llm"),
        (r#"{"service":"svc","llm":{"slots":0}}"#, "slots"),
        (r#"{"service":"svc","llm":[]}"#, "llm"),
    ] {
        let r = request(addr, "POST", "/_emulator/backends", Some(body));
        assert_eq!(r.status, 400, "{body}");
        assert!(r.text().contains(field), "{body}: {}", r.text());
    }
    // "kind":"llm" alone takes the defaults.
    let r = request(
        addr,
        "POST",
        "/_emulator/backends",
        Some(r#"{"service":"other","kind":"llm"}"#),
    );
    let port = r.json()[0]["port"].as_u64().unwrap() as u16;
    assert_eq!(emu.llm(port).unwrap().config(), LlmConfig::default());

    // The Rust API does the same.
    let more = emu.add_llm_backends("third", 1, &flat(2, 0)).unwrap();
    assert_eq!(emu.llm(more[0]).unwrap().config().slots, 2);
}
