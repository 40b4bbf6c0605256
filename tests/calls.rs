//! Calls (`Client::call`): picks, retries, back-offs, load reports and in-flight counts, against
//! fixed lists (where the outcome is given) and the emulator's backends (where requests are
//! real).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use easdirect::{Body, Call, Client, ErrorKind, InstanceStats, Options, Outcome};
use easdirect_emulator::{Emulator, Endpoint, LlmConfig, LOAD_FORMAT_HEADER, TOKENS_HEADER};
use proptest::prelude::*;

fn options(pairs: &[(&str, &str)]) -> Options {
    let mut o = Options::new();
    for (k, v) in pairs {
        o.set(k, v).unwrap();
    }
    o
}

/// A client of `n` fixed instances (never connected to: the tests give the outcomes).
fn fixed(n: usize, pairs: &[(&str, &str)]) -> Client {
    let list: Vec<String> = (1..=n).map(|i| format!("10.9.0.{i}:8000")).collect();
    Client::new(&format!("static://{}", list.join(",")), &options(pairs)).unwrap()
}

fn stats_by_id(c: &Client) -> HashMap<u64, InstanceStats> {
    c.instance_stats()
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s))
        .collect()
}

fn total_in_flight(c: &Client) -> u32 {
    c.instance_stats()
        .unwrap()
        .iter()
        .map(|s| s.in_flight)
        .sum()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One HTTP/1.1 request; the status and the response headers (names lower-cased).
fn get(addr: SocketAddr, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET /v1/completions HTTP/1.1\r\nHost: llm\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut rd = BufReader::new(s);
    let mut status_line = String::new();
    rd.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut out = Vec::new();
    loop {
        let mut line = String::new();
        rd.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut rest = Vec::new();
    let _ = rd.read_to_end(&mut rest);
    (status, out)
}

fn addr_of(inst: &easdirect::Instance) -> SocketAddr {
    inst.host_str().parse().unwrap()
}

#[test]
fn a_call_never_tries_the_same_instance_twice_nor_more_than_there_are() {
    let c = fixed(5, &[("max_attempts", "50"), ("max_ejection_percent", "0")]);
    let mut call = c.call(None, 0).unwrap();
    let mut seen = HashSet::new();
    loop {
        let inst = call.next().unwrap();
        assert!(seen.insert(inst.id), "{inst:?} tried twice");
        if !call.record(Outcome::ConnectFailed, &[]).unwrap() {
            break;
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(call.next(), Err(ErrorKind::NoInstance));
}

#[test]
fn max_attempts_caps_the_attempts() {
    let c = fixed(10, &[("max_ejection_percent", "0")]);
    let mut call = c.call(None, 0).unwrap();
    for attempt in 1..=3 {
        call.next().unwrap();
        let retry = call.record(Outcome::Response(502), &[]).unwrap();
        assert_eq!(retry, attempt < 3, "attempt {attempt}");
    }
    assert_eq!(call.next(), Err(ErrorKind::NoInstance));
    assert_eq!(call.attempts(), 3);
    let one = fixed(3, &[("max_attempts", "1")]);
    let mut call = one.call(None, 0).unwrap();
    call.next().unwrap();
    assert!(!call.record(Outcome::ConnectFailed, &[]).unwrap());
}

#[test]
fn each_outcome_retries_as_the_table_says() {
    let retry_after = [("Retry-After", "1")];
    /// (outcome, headers, retry when idempotent, retry when not idempotent)
    type Case<'a> = (Outcome, &'a [(&'a str, &'a str)], bool, bool);
    let cases: &[Case] = &[
        (Outcome::Response(200), &[], false, false),
        (Outcome::Response(101), &[], false, false),
        (Outcome::Response(404), &[], false, false),
        (Outcome::Response(429), &[], true, false),
        (Outcome::Response(503), &retry_after, true, false),
        (Outcome::Response(503), &[], true, false),
        (Outcome::Response(500), &[], true, false),
        (Outcome::ConnectFailed, &[], true, true),
        (Outcome::Reset, &[], true, false),
        (Outcome::Timeout, &[], true, false),
        (Outcome::Cancelled, &[], false, false),
    ];
    for &(outcome, headers, idempotent, not_idempotent) in cases {
        for (flags, want) in [
            (0, idempotent),
            (easdirect::CALL_NOT_IDEMPOTENT, not_idempotent),
        ] {
            let c = fixed(4, &[]);
            let mut call = c.call(None, flags).unwrap();
            call.next().unwrap();
            let retry = call.record(outcome, headers).unwrap();
            assert_eq!(retry, want, "{outcome:?} {headers:?} flags {flags}");
            if !retry {
                assert_eq!(
                    call.next(),
                    Err(ErrorKind::NoInstance),
                    "{outcome:?} ends it"
                );
            } else {
                call.next().unwrap();
            }
        }
    }
}

#[test]
fn outcomes_feed_the_ejection_state_as_the_table_says() {
    let c = fixed(4, &[("max_ejection_percent", "100")]);
    let failed = |outcome: Outcome, body: Option<Body>| {
        let mut call = c.call(None, 0).unwrap();
        let inst = call.next().unwrap();
        let before = stats_by_id(&c)[&inst.id].failures;
        call.record(outcome, &[]).unwrap();
        if let Some(body) = body {
            call.finish(body).unwrap();
        }
        drop(call);
        let after = stats_by_id(&c)[&inst.id];
        (after.failures - before, after.ejected_until_unix_ms > 0)
    };
    assert_eq!(failed(Outcome::Response(200), None), (0, false));
    assert_eq!(
        failed(Outcome::Response(200), Some(Body::Dropped)),
        (0, false)
    );
    assert_eq!(failed(Outcome::Cancelled, None), (0, false));
    assert_eq!(failed(Outcome::Response(500), None), (1, true));
    assert_eq!(failed(Outcome::ConnectFailed, None), (1, true));
    assert_eq!(
        failed(Outcome::Response(200), Some(Body::Broken)),
        (1, true)
    );
    // A 5xx whose body then breaks is one failure, not two.
    let c = fixed(1, &[("failures_before_ejection", "5")]);
    let mut call = c.call(None, 0).unwrap();
    let inst = call.next().unwrap();
    call.record(Outcome::Response(502), &[]).unwrap();
    call.finish(Body::Broken).unwrap();
    assert_eq!(stats_by_id(&c)[&inst.id].failures, 1);
}

#[test]
fn a_success_resets_the_consecutive_failures_as_report_success_does() {
    let c = fixed(1, &[("failures_before_ejection", "2")]);
    let id = c.instances().unwrap()[0].id;
    c.report_failure(id).unwrap();
    let mut call = c.call(None, 0).unwrap();
    call.next().unwrap();
    call.record(Outcome::Response(200), &[]).unwrap();
    drop(call);
    c.report_failure(id).unwrap();
    let s = stats_by_id(&c)[&id];
    assert_eq!(s.failures, 2, "report_failure calls count too");
    assert_eq!(s.ejected_until_unix_ms, 0, "the success reset the count");
    assert_eq!(c.stats().unwrap().ejected, 0);
}

/// The instance a back-off is recorded against, from a fresh call.
fn back_off_one(c: &Client, status: u16, headers: &[(&str, &str)]) -> u64 {
    let mut call = c.call(None, 0).unwrap();
    let inst = call.next().unwrap();
    call.record(Outcome::Response(status), headers).unwrap();
    inst.id
}

#[test]
fn a_429_with_retry_after_seconds_keeps_the_instance_out_of_every_pick() {
    let c = fixed(3, &[]);
    let id = back_off_one(&c, 429, &[("retry-after", "2")]);
    for _ in 0..300 {
        assert_ne!(c.select().unwrap().id, id, "plain select skips it");
        let mut call = c.call(None, 0).unwrap();
        assert_ne!(call.next().unwrap().id, id, "calls skip it");
    }
    let s = stats_by_id(&c)[&id];
    assert!(s.ejected_until_unix_ms > unix_ms() + 1000, "{s:?}");
    assert!(s.ejected_until_unix_ms <= unix_ms() + 2100, "{s:?}");
    assert_eq!(s.failures, 0, "a back-off is not a failure");
    assert_eq!(c.stats().unwrap().ejected, 0, "nor an ejection");
}

#[test]
fn retry_after_as_an_http_date_keeps_the_instance_out_until_then() {
    let c = fixed(2, &[]);
    // An HTTP date 3 s ahead (whole seconds: at least 2 s of back-off).
    let at = SystemTime::now() + Duration::from_secs(3);
    let date = http_date(at);
    let id = back_off_one(&c, 503, &[("Retry-After", &date)]);
    let s = stats_by_id(&c)[&id];
    assert!(s.ejected_until_unix_ms > unix_ms() + 1500, "{date}: {s:?}");
    for _ in 0..100 {
        assert_ne!(c.select().unwrap().id, id);
    }
    assert_eq!(s.failures, 0);
}

#[test]
fn a_back_off_is_capped_by_ejection_max_ms_and_ends_on_time() {
    let c = fixed(
        2,
        &[("ejection_base_ms", "100"), ("ejection_max_ms", "300")],
    );
    let id = back_off_one(&c, 429, &[("Retry-After", "3600")]);
    assert!(stats_by_id(&c)[&id].ejected_until_unix_ms <= unix_ms() + 300);
    std::thread::sleep(Duration::from_millis(400));
    let back = (0..100).any(|_| c.select().unwrap().id == id);
    assert!(back, "picked again once the back-off is over");
    assert_eq!(stats_by_id(&c)[&id].ejected_until_unix_ms, 0);
}

#[test]
fn a_429_without_retry_after_backs_off_ten_seconds() {
    let c = fixed(2, &[]);
    let id = back_off_one(&c, 429, &[]);
    let until = stats_by_id(&c)[&id].ejected_until_unix_ms;
    assert!(
        until > unix_ms() + 9000 && until <= unix_ms() + 10_100,
        "{until}"
    );
}

#[test]
fn the_later_of_a_back_off_and_an_ejection_holds() {
    let c = fixed(
        3,
        &[("ejection_base_ms", "100"), ("max_ejection_percent", "100")],
    );
    let id = back_off_one(&c, 429, &[("Retry-After", "30")]);
    c.report_failure(id).unwrap(); // a 100 ms ejection inside a 30 s back-off
    assert_eq!(c.stats().unwrap().ejected, 1);
    std::thread::sleep(Duration::from_millis(200));
    assert!(stats_by_id(&c)[&id].ejected_until_unix_ms > unix_ms() + 25_000);
    for _ in 0..100 {
        assert_ne!(c.select().unwrap().id, id);
    }
    assert_eq!(c.stats().unwrap().ejected, 0, "the ejection is over");
    // And an ejection longer than a back-off holds past it.
    let c = fixed(
        3,
        &[
            ("ejection_base_ms", "30000"),
            ("max_ejection_percent", "100"),
        ],
    );
    let id = back_off_one(&c, 503, &[("Retry-After", "0")]);
    c.report_failure(id).unwrap();
    let mut call = c.call(None, 0).unwrap();
    let other = call.next().unwrap();
    call.record(Outcome::Response(429), &[("retry-after", "1")])
        .unwrap();
    assert!(stats_by_id(&c)[&id].ejected_until_unix_ms > unix_ms() + 25_000);
    assert!(stats_by_id(&c)[&other.id].ejected_until_unix_ms <= unix_ms() + 1_000);
}

#[test]
fn a_back_off_survives_a_list_change() {
    let emu = Emulator::start().unwrap();
    let eps = |ports: &[u16]| {
        ports
            .iter()
            .map(|&p| Endpoint::new("10.9.4.1", p, 100))
            .collect()
    };
    emu.set_endpoints("svc", eps(&[1001, 1002]));
    let c = Client::new(
        &emu.target("svc"),
        &options(&[("refresh_interval_ms", "10")]),
    )
    .unwrap();
    c.wait_ready(Duration::from_secs(10)).unwrap();
    let id = back_off_one(&c, 429, &[("Retry-After", "30")]);
    emu.set_endpoints("svc", eps(&[1001, 1002, 1003]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.instances().unwrap().len() != 3 {
        assert!(Instant::now() < deadline, "the list did not change");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50)); // a few refreshes (same list) more
    for _ in 0..300 {
        assert_ne!(c.select().unwrap().id, id, "plain picks");
        assert_ne!(c.call(None, 0).unwrap().next().unwrap().id, id, "calls");
    }
    assert!(stats_by_id(&c)[&id].ejected_until_unix_ms > unix_ms() + 25_000);
}

#[test]
fn a_503_without_retry_after_is_a_failure() {
    let c = fixed(2, &[]);
    let id = back_off_one(&c, 503, &[]);
    assert_eq!(stats_by_id(&c)[&id].failures, 1);
    assert_eq!(c.stats().unwrap().ejected, 1);
}

#[test]
fn back_offs_do_not_count_against_max_ejection_percent() {
    // 4 instances, 25%: one ejection allowed. One backs off, another fails: it is ejected.
    let c = fixed(4, &[("max_ejection_percent", "25")]);
    let backing = back_off_one(&c, 429, &[]);
    let mut call = c.call(None, 0).unwrap();
    let mut inst = call.next().unwrap();
    assert_ne!(inst.id, backing);
    call.record(Outcome::ConnectFailed, &[]).unwrap();
    assert_eq!(c.stats().unwrap().ejected, 1);
    inst = call.next().unwrap();
    assert!(inst.id != backing);
}

#[test]
fn every_instance_backing_off_falls_back_to_panic_mode() {
    let c = fixed(2, &[]);
    let a = back_off_one(&c, 429, &[]);
    let mut b = back_off_one(&c, 429, &[]);
    if b == a {
        b = back_off_one(&c, 429, &[]);
    }
    assert_ne!(a, b);
    // Both out: select and calls still answer.
    c.select().unwrap();
    let mut call = c.call(None, 0).unwrap();
    call.next().unwrap();
    assert!(call.record(Outcome::Response(429), &[]).unwrap());
    call.next().unwrap();
}

#[test]
fn a_fresh_load_report_steers_least_request_away_and_a_stale_one_no_longer_counts() {
    let c = fixed(2, &[("load_report_ttl_ms", "300")]);
    let busy = {
        let mut call = c.call(None, 0).unwrap();
        let inst = call.next().unwrap();
        call.record(
            Outcome::Response(200),
            &[(
                "Endpoint-Load-Metrics",
                "TEXT named_metrics.num_requests_waiting=40.0, named_metrics.kv_cache_usage_perc=0.9",
            )],
        )
        .unwrap();
        inst.id
    };
    let s = stats_by_id(&c)[&busy];
    assert_eq!((s.reported_waiting, s.reported_kv_permille), (40, 900));
    assert!(s.report_unix_ms > 0);
    for _ in 0..200 {
        let mut call = c.call(None, 0).unwrap();
        assert_ne!(
            call.next().unwrap().id,
            busy,
            "two choices: the idle one wins"
        );
    }
    std::thread::sleep(Duration::from_millis(400));
    let picks: HashSet<u64> = (0..200)
        .map(|_| c.call(None, 0).unwrap().next().unwrap().id)
        .collect();
    assert_eq!(picks.len(), 2, "stale: both tie again");
}

#[test]
fn running_in_a_report_counts_only_beyond_this_clients_own_attempts() {
    let c = fixed(2, &[]);
    let ids: Vec<u64> = c.instances().unwrap().iter().map(|i| i.id).collect();
    // Five of this client's attempts on the first instance (and some on the other).
    let mut on: HashMap<u64, Vec<Call>> = HashMap::new();
    while on.get(&ids[0]).map_or(0, Vec::len) < 5 {
        let mut call = c.call(None, 0).unwrap();
        let id = call.next().unwrap().id;
        on.entry(id).or_default().push(call);
    }
    // The first reports running=5: all of them this client's. The other reports waiting=1.
    let mut first = on.get_mut(&ids[0]).unwrap().pop().unwrap();
    first
        .record(
            Outcome::Response(200),
            &[("endpoint-load-metrics", "JSON {\"named_metrics\": {\"num_requests_running\": 5, \"num_requests_waiting\": 0}}")],
        )
        .unwrap();
    let mut other = c.call(None, 0).unwrap();
    while other.next().unwrap().id != ids[1] {
        other = c.call(None, 0).unwrap();
    }
    other
        .record(
            Outcome::Response(200),
            &[(
                "endpoint-load-metrics",
                "TEXT named_metrics.num_requests_waiting=1",
            )],
        )
        .unwrap();
    assert_eq!(stats_by_id(&c)[&ids[0]].reported_running, 5);
    drop((first, other, on));
    assert_eq!(total_in_flight(&c), 0);
    // Costs now: first (0 + (5 - 5) + 1), other (0 + 1 + 1): the first always wins.
    for _ in 0..100 {
        assert_eq!(c.call(None, 0).unwrap().next().unwrap().id, ids[0]);
    }
}

#[test]
fn a_load_report_shows_its_time_in_unix_ms_and_names_match_trimmed_in_any_case() {
    let c = fixed(1, &[]);
    let before = unix_ms();
    let mut call = c.call(None, 0).unwrap();
    let inst = call.next().unwrap();
    call.record(
        Outcome::Response(200),
        &[(
            " ENDPOINT-load-metrics\t",
            "  text   named_metrics.num_requests_waiting = 6.5 ,",
        )],
    )
    .unwrap();
    drop(call);
    let s = stats_by_id(&c)[&inst.id];
    assert_eq!(s.reported_waiting, 7, "6.5 rounds half away from zero");
    // Kept as monotonic time, shown as unix time: within the clock's millisecond either side.
    let after = unix_ms();
    assert!(
        s.report_unix_ms + 20 >= before && s.report_unix_ms <= after + 20,
        "{} not in {before}..{after}",
        s.report_unix_ms
    );
}

#[test]
fn two_load_reports_in_one_response_read_as_one_with_the_later_figures_winning() {
    let c = fixed(1, &[]);
    let mut call = c.call(None, 0).unwrap();
    let inst = call.next().unwrap();
    call.record(
        Outcome::Response(200),
        &[
            (
                "endpoint-load-metrics",
                "TEXT named_metrics.num_requests_running=4, named_metrics.num_requests_waiting=9",
            ),
            ("retry-after", "x"),
            (
                "endpoint-load-metrics",
                "TEXT named_metrics.num_requests_waiting=2, named_metrics.kv_cache_utilization=0.25",
            ),
        ],
    )
    .unwrap();
    drop(call);
    let s = stats_by_id(&c)[&inst.id];
    assert_eq!(
        (
            s.reported_running,
            s.reported_waiting,
            s.reported_kv_permille
        ),
        (4, 2, 250)
    );
    assert_eq!(c.malformed_load_reports(), 0);
}

#[test]
fn a_malformed_load_report_is_ignored_and_counted() {
    let c = fixed(1, &[]);
    let mut call = c.call(None, 0).unwrap();
    let inst = call.next().unwrap();
    call.record(
        Outcome::Response(200),
        &[(
            "endpoint-load-metrics",
            "TEXT named_metrics.num_requests_waiting=lots",
        )],
    )
    .unwrap();
    drop(call);
    let mut call = c.call(None, 0).unwrap();
    call.next().unwrap();
    call.record(
        Outcome::Response(200),
        &[("endpoint-load-metrics", "BIN AAAA")],
    )
    .unwrap();
    drop(call);
    assert_eq!(c.malformed_load_reports(), 2);
    let s = stats_by_id(&c)[&inst.id];
    assert_eq!((s.reported_waiting, s.report_unix_ms), (0, 0));
}

#[test]
fn round_robin_calls_follow_the_smooth_cycle() {
    let c = Client::new(
        "static://10.9.1.1:80*500,10.9.1.2:80,10.9.1.3:80",
        &options(&[("lb_policy", "round_robin"), ("max_ejection_percent", "0")]),
    )
    .unwrap();
    let heavy = c
        .instances()
        .unwrap()
        .iter()
        .find(|i| i.weight == 500)
        .unwrap()
        .id;
    let mut n = 0;
    for _ in 0..700 {
        let mut call = c.call(None, 0).unwrap();
        let first = call.next().unwrap();
        n += usize::from(first.id == heavy);
        // A retry excludes the tried one.
        call.record(Outcome::ConnectFailed, &[]).unwrap();
        assert_ne!(call.next().unwrap().id, first.id);
        call.record(Outcome::Cancelled, &[]).unwrap();
    }
    assert_eq!(n, 500, "exactly 5 in 7 first picks on the heavy one");
}

#[test]
fn in_flight_counts_return_to_zero_after_every_path() {
    let c = fixed(3, &[("max_attempts", "3")]);
    // record + finish
    let mut call = c.call(None, 0).unwrap();
    call.next().unwrap();
    assert_eq!(total_in_flight(&c), 1);
    call.record(Outcome::Response(200), &[]).unwrap();
    assert_eq!(total_in_flight(&c), 1, "in flight until the body is over");
    call.finish(Body::Done).unwrap();
    assert_eq!(total_in_flight(&c), 0);
    call.finish(Body::Done).unwrap(); // nothing left to finish
    drop(call);
    // next implies finish of the recorded attempt
    let mut call = c.call(None, 0).unwrap();
    call.next().unwrap();
    call.record(Outcome::Response(500), &[]).unwrap();
    call.next().unwrap();
    assert_eq!(total_in_flight(&c), 1);
    // next with an open attempt cancels it, which ends the call
    assert_eq!(call.next(), Err(ErrorKind::NoInstance));
    assert_eq!(total_in_flight(&c), 0);
    // dropped mid-attempt, and dropped after a record
    let mut a = c.call(None, 0).unwrap();
    a.next().unwrap();
    let mut b = c.call(None, 0).unwrap();
    b.next().unwrap();
    b.record(Outcome::Response(200), &[]).unwrap();
    assert_eq!(total_in_flight(&c), 2);
    drop(a);
    drop(b);
    assert_eq!(total_in_flight(&c), 0);
    // non-response outcomes leave in-flight at once
    let mut call = c.call(None, 0).unwrap();
    call.next().unwrap();
    call.record(Outcome::Timeout, &[]).unwrap();
    assert_eq!(total_in_flight(&c), 0);
    let s: u64 = c.instance_stats().unwrap().iter().map(|s| s.attempts).sum();
    assert_eq!(s, 6);
}

#[test]
fn a_closed_client_ends_next_but_record_finish_and_drop_still_work() {
    let c = fixed(3, &[]);
    let mut open = c.call(None, 0).unwrap();
    open.next().unwrap();
    let mut recorded = c.call(None, 0).unwrap();
    recorded.next().unwrap();
    recorded.record(Outcome::Response(200), &[]).unwrap();
    let mut retried = c.call(None, 0).unwrap();
    retried.next().unwrap();
    c.close();
    assert_eq!(c.call(None, 0).unwrap_err(), ErrorKind::Closed);
    assert_eq!(
        open.record(Outcome::Response(503), &[("retry-after", "1")]),
        Ok(false),
        "a closed client gives no retry"
    );
    assert_eq!(open.next(), Err(ErrorKind::Closed));
    recorded.finish(Body::Done).unwrap();
    drop(open);
    drop(recorded);
    // The client's own memory goes with it; the call keeps what it needs.
    drop(c);
    assert_eq!(retried.next(), Err(ErrorKind::Closed));
    drop(retried);
}

#[test]
fn a_list_change_mid_call_leaks_nothing_and_a_staying_instance_keeps_its_figures() {
    let emu = Emulator::start().unwrap();
    let eps = |ports: &[u16]| {
        ports
            .iter()
            .map(|&p| Endpoint::new("10.9.2.1", p, 100))
            .collect()
    };
    emu.set_endpoints("svc", eps(&[1001, 1002]));
    let c = Client::new(
        &emu.target("svc"),
        &options(&[("refresh_interval_ms", "10"), ("max_ejection_percent", "0")]),
    )
    .unwrap();
    c.wait_ready(Duration::from_secs(10)).unwrap();
    // Both in flight, one recorded: then the list drops one of them.
    let mut calls: Vec<(Call, easdirect::Instance)> = Vec::new();
    while calls.len() < 6 {
        let mut call = c.call(None, 0).unwrap();
        let inst = call.next().unwrap();
        if calls.len() % 2 == 1 {
            call.record(Outcome::Response(200), &[]).unwrap();
        }
        calls.push((call, inst));
    }
    let stay = calls[0].1;
    let leave_port = if stay.port == 1001 { 1002 } else { 1001 };
    let staying_failures = {
        c.report_failure(stay.id).unwrap();
        stats_by_id(&c)[&stay.id].failures
    };
    let in_flight_on_stay = calls.iter().filter(|(_, i)| i.id == stay.id).count() as u32;
    emu.set_endpoints("svc", eps(&[stay.port, 1003]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.instances().unwrap().iter().any(|i| i.port == leave_port) {
        assert!(Instant::now() < deadline, "the list did not change");
        std::thread::sleep(Duration::from_millis(5));
    }
    let s = stats_by_id(&c);
    assert_eq!(
        s[&stay.id].in_flight, in_flight_on_stay,
        "kept across the change"
    );
    assert_eq!(s[&stay.id].failures, staying_failures);
    for (mut call, inst) in calls {
        // Outcomes on the instance that left count nothing.
        let _ = call.record(Outcome::ConnectFailed, &[]);
        if inst.port == leave_port {
            assert!(!stats_by_id(&c).contains_key(&inst.id));
        }
    }
    assert_eq!(total_in_flight(&c), 0);
    // The instance that left comes back with fresh figures.
    emu.set_endpoints("svc", eps(&[1001, 1002, 1003]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.instances().unwrap().len() != 3 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let back = c
        .instances()
        .unwrap()
        .into_iter()
        .find(|i| i.port == leave_port)
        .unwrap();
    let s = stats_by_id(&c)[&back.id];
    assert_eq!((s.in_flight, s.attempts, s.failures), (0, 0, 0));
}

#[test]
fn concurrent_calls_across_list_changes_leave_no_count_behind() {
    let emu = Emulator::start().unwrap();
    let eps = |ports: &[u16]| {
        ports
            .iter()
            .map(|&p| Endpoint::new("10.9.5.1", p, 100))
            .collect()
    };
    emu.set_endpoints("svc", eps(&[1, 2, 3, 4]));
    let c = std::sync::Arc::new(
        Client::new(
            &emu.target("svc"),
            &options(&[
                ("refresh_interval_ms", "10"),
                ("max_ejection_percent", "100"),
            ]),
        )
        .unwrap(),
    );
    c.wait_ready(Duration::from_secs(10)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4u8)
        .map(|t| {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let key = format!("k{}", n % 7);
                    let mut call = c.call((t % 2 == 0).then_some(key.as_bytes()), 0).unwrap();
                    let outcomes = [
                        Outcome::Response(200),
                        Outcome::Response(503),
                        Outcome::Response(429),
                        Outcome::ConnectFailed,
                    ];
                    for o in outcomes.iter().cycle().skip(n as usize % 4).take(3) {
                        if call.next().is_err() {
                            break;
                        }
                        std::thread::yield_now();
                        if n % 5 == 0 {
                            break; // dropped mid-attempt
                        }
                        let retry = call.record(*o, &[("retry-after", "0")]).unwrap();
                        if !retry {
                            if n % 3 == 0 {
                                call.finish(Body::Broken).unwrap();
                            }
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for round in 0..40u16 {
        let list: Vec<u16> = (1..=4).map(|p| p + round % 3).collect();
        emu.set_endpoints("svc", eps(&list));
        std::thread::sleep(Duration::from_millis(15));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(
        c.stats().unwrap().generation > 5,
        "the list changed meanwhile"
    );
    assert_eq!(total_in_flight(&c), 0);
}

#[test]
fn service_and_target_say_what_the_target_names() {
    let emu = Emulator::start().unwrap();
    let eas = Client::new(&emu.target("my_svc"), &Options::new()).unwrap();
    assert_eq!(eas.service(), "my_svc");
    assert_eq!(eas.target(), emu.target("my_svc"));
    let nacos = Client::new(
        "nacos://127.0.0.1:1/pai_svc?namespace=dev&password=hunter2&username=u",
        &options(&[("request_timeout_ms", "50")]),
    )
    .unwrap();
    assert_eq!(nacos.service(), "pai_svc");
    assert!(!nacos.target().contains("hunter2"), "{}", nacos.target());
    let dns = Client::new("dns://llm.default.svc.cluster.local:8000", &Options::new()).unwrap();
    assert_eq!(dns.service(), "llm.default.svc.cluster.local");
    assert_eq!(fixed(1, &[]).service(), "");
}

#[test]
fn llm_backends_load_reports_fill_the_instance_stats() {
    let emu = Emulator::start().unwrap();
    let llm = LlmConfig {
        slots: 2,
        base: Duration::ZERO,
        per_token: Duration::from_millis(1),
        ..LlmConfig::default()
    };
    emu.add_llm_backends("llm", 2, &llm).unwrap();
    let c = Client::new(&emu.target("llm"), &Options::new()).unwrap();
    c.wait_ready(Duration::from_secs(10)).unwrap();
    let mut call = c.call(None, 0).unwrap();
    let inst = call.next().unwrap();
    let (status, headers) = get(
        addr_of(&inst),
        &[(LOAD_FORMAT_HEADER, "text"), (TOKENS_HEADER, "1")],
    );
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(!call.record(Outcome::Response(status), &pairs).unwrap());
    call.finish(Body::Done).unwrap();
    let s = stats_by_id(&c)[&inst.id];
    assert_eq!(
        (
            s.reported_running,
            s.reported_waiting,
            s.reported_kv_permille
        ),
        (1, 0, 500),
        "{headers:?}"
    );
    assert!(s.latency_ewma_us > 0);
    assert_eq!((s.attempts, s.in_flight), (1, 0));
    assert_eq!(c.malformed_load_reports(), 0);
}

#[test]
fn least_request_sends_less_to_a_slow_llm_backend() {
    let emu = Emulator::start().unwrap();
    let llm = LlmConfig {
        slots: 4,
        base: Duration::from_millis(2),
        per_token: Duration::from_millis(1),
        ..LlmConfig::default()
    };
    let ports = emu.add_llm_backends("llm", 2, &llm).unwrap();
    // One backend 5x slower: its requests stay in flight 5x longer.
    emu.llm(ports[0]).unwrap().set_speed(0.2);
    let c = std::sync::Arc::new(Client::new(&emu.target("llm"), &Options::new()).unwrap());
    c.wait_ready(Duration::from_secs(10)).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut ports = Vec::new();
                for _ in 0..15 {
                    let mut call = c.call(None, 0).unwrap();
                    let inst = call.next().unwrap();
                    let (status, _) = get(addr_of(&inst), &[(TOKENS_HEADER, "10")]);
                    call.record(Outcome::Response(status), &[]).unwrap();
                    call.finish(Body::Done).unwrap();
                    ports.push(inst.port);
                }
                ports
            })
        })
        .collect();
    let ports_used: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let slow = ports_used.iter().filter(|&&p| p == ports[0]).count();
    assert!(
        slow * 2 < ports_used.len(),
        "the slow one got {slow} of {}",
        ports_used.len()
    );
    assert_eq!(total_in_flight(&c), 0);
}

#[test]
fn peak_ewma_sends_sequential_calls_to_the_faster_llm_backend() {
    let emu = Emulator::start().unwrap();
    let llm = LlmConfig {
        slots: 4,
        base: Duration::from_millis(5),
        per_token: Duration::from_millis(1),
        ..LlmConfig::default()
    };
    let ports = emu.add_llm_backends("llm", 2, &llm).unwrap();
    // 20x slower to its headers: far enough apart that one scheduling hiccup of the fast one
    // (a peak its EWMA keeps for a while) on a loaded machine does not make it look slower.
    emu.llm(ports[0]).unwrap().set_speed(0.05);
    let c = Client::new(&emu.target("llm"), &options(&[("lb_policy", "peak_ewma")])).unwrap();
    c.wait_ready(Duration::from_secs(10)).unwrap();
    let mut used = Vec::new();
    for _ in 0..30 {
        let mut call = c.call(None, 0).unwrap();
        let inst = call.next().unwrap();
        let (status, _) = get(addr_of(&inst), &[(TOKENS_HEADER, "5")]);
        call.record(Outcome::Response(status), &[]).unwrap();
        call.finish(Body::Done).unwrap();
        used.push(inst.port);
    }
    // Nothing is in flight between calls, so least_request would tie; peak_ewma does not,
    // once both have a sample.
    assert!(
        used[10..].iter().all(|&p| p == ports[1]),
        "the slow one is {}: {used:?}",
        ports[0]
    );
    let s = stats_by_id(&c);
    let ewma = |port: u16| {
        let id = c
            .instances()
            .unwrap()
            .iter()
            .find(|i| i.port == port)
            .unwrap()
            .id;
        s[&id].latency_ewma_us
    };
    assert!(ewma(ports[0]) > 2 * ewma(ports[1]), "{s:?}");
}

#[test]
fn a_timeout_is_a_latency_sample_of_the_time_waited() {
    let c = fixed(
        1,
        &[("lb_policy", "peak_ewma"), ("max_ejection_percent", "0")],
    );
    let mut call = c.call(None, 0).unwrap();
    let inst = call.next().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    call.record(Outcome::Timeout, &[]).unwrap();
    let s = stats_by_id(&c)[&inst.id];
    assert!(s.latency_ewma_us >= 30_000, "{s:?}");
    // Failures and back-offs give none.
    let before = s.latency_ewma_us;
    let mut call = c.call(None, 0).unwrap();
    call.next().unwrap();
    call.record(Outcome::Response(500), &[]).unwrap();
    assert_eq!(stats_by_id(&c)[&inst.id].latency_ewma_us, before);
}

#[test]
fn keyed_calls_pick_the_same_instance_in_every_client_whatever_the_list_order() {
    let a = Client::new(
        "static://10.9.3.1:80,10.9.3.2:80*200,10.9.3.3:80,[fd00::9]:80",
        &options(&[("lb_policy", "round_robin")]),
    )
    .unwrap();
    let b = Client::new(
        "static://[fd00::9]:80,10.9.3.3:80,10.9.3.2:80*200,10.9.3.1:80",
        &options(&[("lb_policy", "least_request")]),
    )
    .unwrap();
    let mut hosts = HashSet::new();
    for k in 0..200 {
        let key = format!("conversation-{k}");
        let pick = |c: &Client| {
            let mut call = c.call(Some(key.as_bytes()), 0).unwrap();
            let inst = call.next().unwrap();
            call.record(Outcome::Response(200), &[]).unwrap();
            inst.host_str().to_owned()
        };
        let (from_a, from_b) = (pick(&a), pick(&b));
        assert_eq!(from_a, from_b, "key {key}");
        assert_eq!(pick(&a), from_a, "the same again");
        hosts.insert(from_a);
    }
    assert_eq!(hosts.len(), 4, "keys spread over every instance");
}

#[test]
fn concurrent_calls_with_one_key_spill_over_and_come_back() {
    let c = fixed(4, &[]);
    let mut first = c.call(Some(b"session-7"), 0).unwrap();
    let home = first.next().unwrap();
    // One in flight on its instance: the bound (ceil(1.25 x 2 x 100 / 400) = 1) sends the
    // next call with the same key to the next instance in the key's order.
    let mut second = c.call(Some(b"session-7"), 0).unwrap();
    let spill = second.next().unwrap();
    assert_ne!(spill.id, home.id);
    drop((first, second));
    let mut again = c.call(Some(b"session-7"), 0).unwrap();
    assert_eq!(again.next().unwrap().id, home.id);
    // A retry goes to the next in the key's order: the instance it spilled to.
    again.record(Outcome::ConnectFailed, &[]).unwrap();
    assert_eq!(again.next().unwrap().id, spill.id);
}

/// An HTTP date (IMF-fixdate) for `t`.
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        months[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[derive(Clone, Debug)]
enum Op {
    Begin(bool),
    Next(usize),
    Record(usize, u8),
    Finish(usize, u8),
    Free(usize),
    Fail(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<bool>().prop_map(Op::Begin),
        (0..6usize).prop_map(Op::Next),
        (0..6usize, 0..8u8).prop_map(|(c, o)| Op::Record(c, o)),
        (0..6usize, 0..3u8).prop_map(|(c, b)| Op::Finish(c, b)),
        (0..6usize).prop_map(Op::Free),
        (0..4u8).prop_map(Op::Fail),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever a caller does with calls, the in-flight counts equal the attempts still open
    /// or recorded, and fall to zero once every call is gone.
    #[test]
    fn random_call_sequences_never_leak_an_in_flight_count(ops in proptest::collection::vec(op(), 1..60)) {
        let c = fixed(4, &[("max_attempts", "3"), ("max_ejection_percent", "100")]);
        let ids: Vec<u64> = c.instances().unwrap().iter().map(|i| i.id).collect();
        let mut calls: Vec<Call> = Vec::new();
        // Per call: attempts holding an in-flight count (0 or 1).
        let mut holding: Vec<u32> = Vec::new();
        let mut recorded_response: Vec<bool> = Vec::new();
        for op in ops {
            match op {
                Op::Begin(keyed) => {
                    let key = keyed.then_some(&b"session-1"[..]);
                    calls.push(c.call(key, 0).unwrap());
                    holding.push(0);
                    recorded_response.push(false);
                }
                Op::Next(i) if i < calls.len() => {
                    holding[i] = u32::from(calls[i].next().is_ok());
                    recorded_response[i] = false;
                }
                Op::Record(i, o) if i < calls.len() => {
                    let outcome = match o {
                        0 => Outcome::Response(200),
                        1 => Outcome::Response(429),
                        2 => Outcome::Response(503),
                        3 => Outcome::Response(500),
                        4 => Outcome::ConnectFailed,
                        5 => Outcome::Timeout,
                        6 => Outcome::Reset,
                        _ => Outcome::Cancelled,
                    };
                    let was_open = holding[i] == 1 && !recorded_response[i];
                    let r = calls[i].record(outcome, &[("retry-after", "0")]);
                    prop_assert_eq!(r.is_ok(), was_open);
                    if was_open {
                        let response = matches!(outcome, Outcome::Response(_));
                        holding[i] = u32::from(response);
                        recorded_response[i] = response;
                    }
                }
                Op::Finish(i, b) if i < calls.len() => {
                    let body = [Body::Done, Body::Broken, Body::Dropped][b as usize];
                    if recorded_response[i] {
                        holding[i] = 0;
                        recorded_response[i] = false;
                    }
                    calls[i].finish(body).unwrap();
                }
                Op::Free(i) if i < calls.len() => {
                    drop(calls.remove(i));
                    holding.remove(i);
                    recorded_response.remove(i);
                }
                Op::Fail(i) => {
                    c.report_failure(ids[i as usize % ids.len()]).unwrap();
                }
                _ => {}
            }
            prop_assert_eq!(total_in_flight(&c), holding.iter().sum::<u32>());
        }
        drop(calls);
        prop_assert_eq!(total_in_flight(&c), 0);
    }
}
