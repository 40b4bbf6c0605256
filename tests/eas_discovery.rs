//! The EAS source against the project's emulator over real loopback sockets.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use easdirect::{Client, ErrorKind, Instance, Options};
use easdirect_emulator::{Emulator, Endpoint, Fault, Paths};

const SVC: &str = "svc";

fn endpoints(ports: &[(u16, u32)]) -> Vec<Endpoint> {
    ports
        .iter()
        .map(|&(port, weight)| Endpoint::new("127.0.0.1", port, weight))
        .collect()
}

fn client(emu: &Emulator, extra: &[(&str, &str)]) -> Client {
    let mut options = Options::new();
    options.set("refresh_interval_ms", "20").unwrap();
    options.set("request_timeout_ms", "300").unwrap();
    for (k, v) in extra {
        options.set(k, v).unwrap();
    }
    Client::new(&format!("eas://{}/{SVC}", emu.endpoint()), &options).unwrap()
}

fn ports(client: &Client) -> Vec<u16> {
    let mut p: Vec<u16> = client.instances().unwrap().iter().map(|i| i.port).collect();
    p.sort_unstable();
    p
}

/// Waits until `cond` holds, up to 5 s (generous: the refresh interval in tests is 20 ms).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn discovers_instances_and_picks_them_in_proportion() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(SVC, endpoints(&[(50001, 300), (50002, 100), (50003, 0)]));
    let c = client(&emu, &[]);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(ports(&c), vec![50001, 50002, 50003], "weight 0 is listed");
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for _ in 0..400 {
        *counts.entry(c.select().unwrap().port).or_default() += 1;
    }
    assert_eq!(counts.get(&50001), Some(&300));
    assert_eq!(counts.get(&50002), Some(&100));
    assert_eq!(counts.get(&50003), None, "weight 0 is never picked");
}

/// One fault: the cache is kept through two failed fetches, the error names the upstream, and
/// the client recovers without republishing the same list.
fn fault_keeps_the_cache(fault: Fault) {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(SVC, endpoints(&[(50001, 100), (50002, 100)]));
    let c = client(&emu, &[]);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let before = c.instances().unwrap();
    let failed = c.stats().unwrap().refresh_failed;
    emu.set_fault(fault.clone());
    eventually(&format!("two fetches failed under {fault:?}"), || {
        c.stats().unwrap().refresh_failed >= failed + 2
    });
    assert_eq!(c.instances().unwrap(), before, "{fault:?} changed the list");
    assert!(c.select().is_ok(), "{fault:?} broke select");
    let err = c.last_error().unwrap().expect("a failed fetch is reported");
    assert_eq!(err.kind, ErrorKind::DiscoveryFailed);
    assert!(err.message.contains(&emu.endpoint()), "{fault:?}: {err}");
    emu.set_fault(Fault::None);
    eventually("the upstream recovered", || {
        c.last_error().unwrap().is_none()
    });
    assert_eq!(
        c.stats().unwrap().generation,
        1,
        "the same list is never republished"
    );
}

macro_rules! fault_tests {
    ($($name:ident: $fault:expr,)*) => {$(
        #[test]
        fn $name() {
            fault_keeps_the_cache($fault);
        }
    )*};
}

fault_tests! {
    http_500_keeps_the_cache: Fault::Status(500),
    http_503_keeps_the_cache: Fault::Status(503),
    http_403_keeps_the_cache: Fault::Status(403),
    an_html_page_keeps_the_cache: Fault::Html,
    a_truncated_body_keeps_the_cache: Fault::Truncated,
    invalid_json_keeps_the_cache: Fault::InvalidJson,
    json_of_another_shape_keeps_the_cache: Fault::WrongShape,
    an_empty_list_keeps_the_cache: Fault::EmptyList,
    a_server_that_never_answers_keeps_the_cache: Fault::Hang,
    a_one_byte_a_second_body_keeps_the_cache: Fault::Trickle,
    an_endless_chunked_body_keeps_the_cache: Fault::EndlessChunked,
    a_body_over_16_mib_keeps_the_cache: Fault::Oversize,
    a_redirect_loop_is_not_followed_and_keeps_the_cache: Fault::Redirect,
    a_reset_in_the_middle_of_the_body_keeps_the_cache: Fault::Reset,
    a_refused_connection_keeps_the_cache: Fault::Refuse,
}

#[test]
fn error_messages_name_the_http_status() {
    let emu = Emulator::start().unwrap();
    emu.set_fault(Fault::Status(503));
    let c = client(&emu, &[]);
    let err = c.wait_ready(Duration::from_millis(300)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.message.contains("503"), "{err}");
    assert_eq!(c.select().unwrap_err(), ErrorKind::NoInstance);
}

#[test]
fn malformed_items_are_skipped_and_the_rest_used() {
    let emu = Emulator::start().unwrap();
    emu.set_raw_items(
        SVC,
        serde_json::json!([
            {"ip": "10.0.0.1", "port": 0},
            {"ip": "nonsense", "port": 80},
            {"port": 80},
            {"ip": "10.0.0.2", "port": 70000},
            {"ip": "10.0.0.3", "port": 80, "weight": -5},
            {"ip": "10.0.0.4", "port": 80},
            {"ip": "10.0.0.4", "port": 80, "weight": 7},
            {"ip": "fd00::5", "port": 81, "weight": 50}
        ]),
    );
    let c = client(&emu, &[]);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let hosts: Vec<(String, u32)> = c
        .instances()
        .unwrap()
        .iter()
        .map(|i| (i.host_str().to_owned(), i.weight))
        .collect();
    assert_eq!(
        hosts,
        vec![("10.0.0.4:80".into(), 100), ("[fd00::5]:81".into(), 50)],
        "duplicates merge (the first wins), missing weight is 100"
    );
}

#[test]
fn all_weights_zero_keeps_the_cache() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(SVC, endpoints(&[(50001, 100)]));
    let c = client(&emu, &[]);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let failed = c.stats().unwrap().refresh_failed;
    emu.set_endpoints(SVC, endpoints(&[(50001, 0), (50002, 0)]));
    eventually("a fetch failed", || {
        c.stats().unwrap().refresh_failed > failed
    });
    assert_eq!(ports(&c), vec![50001]);
}

#[test]
fn scale_up_and_down_are_followed() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(SVC, endpoints(&[(50001, 100)]));
    let c = client(&emu, &[]);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    emu.set_endpoints(SVC, endpoints(&[(50001, 100), (50002, 100), (50003, 100)]));
    eventually("scale-up is seen", || {
        ports(&c) == vec![50001, 50002, 50003]
    });
    emu.set_endpoints(SVC, endpoints(&[(50003, 100)]));
    eventually("scale-down is seen", || ports(&c) == vec![50003]);
    for _ in 0..10 {
        assert_eq!(c.select().unwrap().port, 50003);
    }
    assert_eq!(c.stats().unwrap().generation, 3);
}

#[test]
fn a_hung_upstream_delays_neither_select_nor_close() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(SVC, endpoints(&[(50001, 100)]));
    let mut options = Options::new();
    options.set("refresh_interval_ms", "10").unwrap();
    options.set("request_timeout_ms", "60000").unwrap();
    let c = Client::new(&format!("eas://{}/{SVC}", emu.endpoint()), &options).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    emu.set_fault(Fault::Hang);
    let seen = emu.requests();
    assert!(emu.wait_for_requests(seen + 1, Duration::from_secs(5)));
    // A fetch is now parked for up to a minute; selection goes on and close returns at once.
    let started = Instant::now();
    for _ in 0..1000 {
        assert_eq!(c.select().unwrap().port, 50001);
    }
    c.close();
    drop(c);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn the_new_path_is_used_when_the_documented_one_answers_404() {
    let emu = Emulator::start().unwrap();
    emu.set_paths(Paths::NewOnly);
    emu.set_endpoints(SVC, endpoints(&[(50001, 100)]));
    let c = client(&emu, &[]);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let seen = emu.requests();
    assert!(emu.wait_for_requests(seen + 3, Duration::from_secs(5)));
    let last = emu.last_request_target().unwrap();
    assert_eq!(last, "/api/v1/servicediscovery/upstreams/svc", "remembered");
}

#[test]
fn discovery_path_option_overrides() {
    let emu = Emulator::start().unwrap();
    emu.set_paths(Paths::NewOnly);
    emu.set_endpoints(SVC, endpoints(&[(50001, 100)]));
    let c = client(
        &emu,
        &[(
            "discovery_path",
            "/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/{service}",
        )],
    );
    let err = c.wait_ready(Duration::from_millis(300)).unwrap_err();
    assert!(
        err.message.contains("404"),
        "no fallback from a path the caller set: {err}"
    );
}

#[test]
fn many_threads_pick_while_the_list_flips_every_10_ms() {
    let emu = Emulator::start().unwrap();
    let a = endpoints(&[(50001, 100), (50002, 200)]);
    let b = endpoints(&[(50003, 100), (50004, 100), (50005, 50)]);
    emu.set_endpoints(SVC, a.clone());
    let c = Arc::new(client(&emu, &[("refresh_interval_ms", "10")]));
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let picks = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (c, stop, picks) = (c.clone(), stop.clone(), picks.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let port = c.select().unwrap().port;
                    assert!((50001..=50005).contains(&port), "picked {port}");
                    picks.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for round in 0..60 {
        emu.set_endpoints(SVC, if round % 2 == 0 { b.clone() } else { a.clone() });
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(c.stats().unwrap().generation > 5);
    assert!(picks.load(Ordering::Relaxed) > 1000);
}

#[test]
fn close_racing_with_picks_and_reports_is_safe() {
    for _ in 0..20 {
        let c = Arc::new(Client::new("static://127.0.0.1:1,127.0.0.1:2", &Options::new()).unwrap());
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || loop {
                    match c.select() {
                        Ok(i) => {
                            let _ = c.report_failure(i.id);
                            let _ = c.report_success(i.id);
                        }
                        Err(ErrorKind::Closed) => return,
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(2));
        c.close();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.stats().unwrap_err(), ErrorKind::Closed);
    }
}

#[test]
fn a_failing_instance_is_ejected_and_comes_back_on_time() {
    let c = Client::new(
        "static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4?ejection_base_ms=300&ejection_max_ms=1000",
        &Options::new(),
    )
    .unwrap();
    let bad = c.instances().unwrap()[0];
    c.report_failure(bad.id).unwrap();
    assert_eq!(c.stats().unwrap().ejected, 1);
    for _ in 0..100 {
        assert_ne!(
            c.select().unwrap().id,
            bad.id,
            "an ejected instance was picked"
        );
    }
    eventually("the ejection ends", || {
        (0..8).any(|_| c.select().unwrap().id == bad.id)
    });
    assert_eq!(c.stats().unwrap().ejected, 0);
}

#[test]
fn ejection_survives_a_refresh_and_ends_when_the_instance_leaves() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(SVC, endpoints(&[(50001, 100), (50002, 100), (50003, 100)]));
    let c = client(&emu, &[]);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let bad = c.instances().unwrap()[0];
    c.report_failure(bad.id).unwrap();
    emu.set_endpoints(
        SVC,
        endpoints(&[(50001, 100), (50002, 100), (50003, 100), (50004, 100)]),
    );
    eventually("scale-up is seen", || ports(&c).len() == 4);
    for _ in 0..100 {
        assert_ne!(c.select().unwrap().id, bad.id);
    }
    assert_eq!(c.stats().unwrap().ejected, 1);
    emu.set_endpoints(SVC, endpoints(&[(50002, 100), (50003, 100)]));
    eventually("scale-down is seen", || ports(&c).len() == 2);
    assert_eq!(c.stats().unwrap().ejected, 0);
    assert_eq!(c.report_failure(bad.id), Err(ErrorKind::UnknownInstance));
}

#[test]
fn at_most_the_allowed_share_is_ejected_and_all_ejected_means_panic_mode() {
    let c = Client::new(
        "static://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4",
        &Options::new(),
    )
    .unwrap();
    let all = c.instances().unwrap();
    for inst in &all {
        c.report_failure(inst.id).unwrap();
    }
    assert_eq!(
        c.stats().unwrap().ejected,
        2,
        "max_ejection_percent 50 of 4"
    );
    let one = Client::new(
        "static://127.0.0.1:1?max_ejection_percent=100",
        &Options::new(),
    )
    .unwrap();
    let only = one.instances().unwrap()[0];
    one.report_failure(only.id).unwrap();
    assert_eq!(one.stats().unwrap().ejected, 1);
    assert_eq!(
        one.select().unwrap().id,
        only.id,
        "panic mode picks rather than fail"
    );
}

#[test]
fn excluding_never_returns_an_excluded_id() {
    let c = Client::new(
        "static://127.0.0.1:1*5,127.0.0.1:2,127.0.0.1:3",
        &Options::new(),
    )
    .unwrap();
    let all = c.instances().unwrap();
    let mut out = all[0];
    for _ in 0..50 {
        c.select_into(&[all[0].id], &mut out).unwrap();
        assert_ne!(out.id, all[0].id);
    }
    let ids: Vec<u64> = all.iter().map(|i| i.id).collect();
    assert_eq!(c.select_into(&ids, &mut out), Err(ErrorKind::NoInstance));
}

#[test]
fn picks_with_exclusions_take_no_turn_from_plain_picks() {
    let list: Vec<String> = (1..=49).map(|p| format!("127.0.0.1:{p}")).collect();
    let c = Client::new(&format!("static://{}", list.join(",")), &Options::new()).unwrap();
    let all = c.instances().unwrap();
    let excluded: Vec<u64> = all.iter().take(40).map(|i| i.id).collect();
    let mut plain = HashSet::new();
    let mut out = all[0];
    for _ in 0..49 {
        plain.insert(c.select().unwrap().port);
        c.select_into(&excluded, &mut out).unwrap();
        assert!(!excluded.contains(&out.id));
    }
    assert_eq!(
        plain.len(),
        49,
        "every instance has its turn among the plain picks"
    );
}

#[test]
fn a_thread_alternating_between_two_clients_keeps_exact_proportions() {
    let a = Client::new(
        "static://127.0.0.1:1*5,127.0.0.1:2*1,127.0.0.1:3*1",
        &Options::new(),
    )
    .unwrap();
    let b = Client::new("static://127.0.0.1:4*2,127.0.0.1:5*1", &Options::new()).unwrap();
    let mut ca: HashMap<u16, usize> = HashMap::new();
    let mut cb: HashMap<u16, usize> = HashMap::new();
    for _ in 0..7 * 3 * 10 {
        *ca.entry(a.select().unwrap().port).or_default() += 1;
        *cb.entry(b.select().unwrap().port).or_default() += 1;
    }
    assert_eq!((ca[&1], ca[&2], ca[&3]), (150, 30, 30));
    assert_eq!((cb[&4], cb[&5]), (140, 70));
}

#[test]
fn snapshot_file_serves_when_the_first_fetch_fails() {
    let dir = std::env::temp_dir().join(format!("easdirect-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("svc.json");
    let path_s = path.to_str().unwrap();
    {
        let emu = Emulator::start().unwrap();
        emu.set_endpoints(SVC, endpoints(&[(50001, 100), (50002, 100)]));
        let c = client(&emu, &[("snapshot_file", path_s)]);
        c.wait_ready(Duration::from_secs(5)).unwrap();
        eventually("the list is saved", || path.exists());
    }
    let emu = Emulator::start().unwrap();
    emu.set_fault(Fault::Status(500));
    let c = client(&emu, &[("snapshot_file", path_s)]);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(ports(&c), vec![50001, 50002]);
    assert_eq!(c.stats().unwrap().generation, 1);
    // A corrupt file is ignored and the reason shows in wait_ready's message.
    std::fs::write(&path, b"garbage").unwrap();
    let c = client(&emu, &[("snapshot_file", path_s)]);
    let err = c.wait_ready(Duration::from_millis(200)).unwrap_err();
    assert!(err.message.contains("snapshot_file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn subscribers_see_each_change_and_end_exactly_once() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(SVC, endpoints(&[(50001, 100)]));
    let c = Arc::new(client(&emu, &[]));
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let seen: Arc<Mutex<Vec<Vec<u16>>>> = Arc::default();
    let ended = Arc::new(AtomicUsize::new(0));
    let (s, e) = (seen.clone(), ended.clone());
    let id = c
        .subscribe(
            Box::new(move |list: &[Instance]| {
                s.lock()
                    .unwrap()
                    .push(list.iter().map(|i| i.port).collect())
            }),
            Some(Box::new(move || {
                e.fetch_add(1, Ordering::SeqCst);
            })),
        )
        .unwrap();
    eventually("the current list is delivered", || {
        seen.lock().unwrap().len() == 1
    });
    emu.set_endpoints(SVC, endpoints(&[(50001, 100), (50002, 100)]));
    eventually("the change is delivered", || {
        seen.lock().unwrap().len() == 2
    });
    assert_eq!(seen.lock().unwrap()[1], vec![50001, 50002]);
    c.unsubscribe(id).unwrap();
    assert_eq!(
        ended.load(Ordering::SeqCst),
        1,
        "ended before unsubscribe returned"
    );
    assert_eq!(c.unsubscribe(id), Err(ErrorKind::InvalidArgument));
    emu.set_endpoints(SVC, endpoints(&[(50003, 100)]));
    eventually("scale is seen", || ports(&c) == vec![50003]);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "no delivery after unsubscribe"
    );
}

/// A subscription whose end takes 30 ms and counts itself once over.
fn subscribe_slow_to_end(c: &Client, over: &Arc<AtomicUsize>) -> u64 {
    let over = over.clone();
    c.subscribe(
        Box::new(|_list: &[Instance]| {}),
        Some(Box::new(move || {
            std::thread::sleep(Duration::from_millis(30));
            over.fetch_add(1, Ordering::SeqCst);
        })),
    )
    .unwrap()
}

#[test]
fn every_one_of_concurrent_closes_returns_after_every_end_is_over() {
    for _ in 0..5 {
        let c = Arc::new(Client::new("static://127.0.0.1:1", &Options::new()).unwrap());
        let over = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            subscribe_slow_to_end(&c, &over);
        }
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let closers: Vec<_> = (0..8)
            .map(|_| {
                let (c, over, barrier) = (c.clone(), over.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    c.close();
                    over.load(Ordering::SeqCst)
                })
            })
            .collect();
        for closer in closers {
            assert_eq!(
                closer.join().unwrap(),
                3,
                "a close returned before an end was over"
            );
        }
    }
}

#[test]
fn a_close_racing_an_unsubscribe_returns_after_that_end_is_over() {
    for _ in 0..5 {
        let c = Arc::new(Client::new("static://127.0.0.1:1", &Options::new()).unwrap());
        let over = Arc::new(AtomicUsize::new(0));
        let id = subscribe_slow_to_end(&c, &over);
        let c2 = c.clone();
        let unsubscriber = std::thread::spawn(move || c2.unsubscribe(id));
        // Let the unsubscribe start its end, then close while it runs.
        std::thread::sleep(Duration::from_millis(5));
        c.close();
        assert_eq!(
            over.load(Ordering::SeqCst),
            1,
            "close returned before the end was over"
        );
        // The unsubscribe either ended it or found the client closed.
        let result = unsubscriber.join().unwrap();
        assert!(
            matches!(result, Ok(()) | Err(ErrorKind::Closed)),
            "{result:?}"
        );
    }
}

#[test]
fn a_callback_may_unsubscribe_itself_and_close_ends_the_rest() {
    let c = Arc::new(Client::new("static://127.0.0.1:1", &Options::new()).unwrap());
    let ended = Arc::new(AtomicUsize::new(0));
    let my_id = Arc::new(Mutex::new(0u64));
    let (c2, id2, e) = (c.clone(), my_id.clone(), ended.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    // Held until the id is written: the callback (on another thread) waits for it.
    let mut lock = my_id.lock().unwrap();
    let id = c
        .subscribe(
            Box::new(move |_list: &[Instance]| {
                calls2.fetch_add(1, Ordering::SeqCst);
                let id = *id2.lock().unwrap();
                c2.unsubscribe(id).unwrap();
            }),
            Some(Box::new(move || {
                e.fetch_add(1, Ordering::SeqCst);
            })),
        )
        .unwrap();
    *lock = id;
    drop(lock);
    eventually("the callback ended its subscription", || {
        ended.load(Ordering::SeqCst) == 1
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let other_ended = Arc::new(AtomicUsize::new(0));
    let oe = other_ended.clone();
    c.subscribe(
        Box::new(|_list: &[Instance]| {}),
        Some(Box::new(move || {
            oe.fetch_add(1, Ordering::SeqCst);
        })),
    )
    .unwrap();
    c.close();
    assert_eq!(
        other_ended.load(Ordering::SeqCst),
        1,
        "close ends subscriptions"
    );
    assert_eq!(ended.load(Ordering::SeqCst), 1, "never twice");
    assert!(c
        .subscribe(Box::new(|_list: &[Instance]| {}), None)
        .is_err());
}

#[test]
fn bad_options_name_the_key() {
    let mut o = Options::new();
    o.set("group", "pai-eas").unwrap();
    let err = Client::new("eas://127.0.0.1:1/svc", &o).err().unwrap();
    assert!(err.message.contains("group"), "{err}");
    let err = Client::new(
        "eas://127.0.0.1:1/svc?ejection_base_ms=9&ejection_max_ms=5",
        &Options::new(),
    )
    .err()
    .unwrap();
    assert!(err.message.contains("ejection_base_ms"), "{err}");
    let mut o = Options::new();
    o.set("tls_ca_file", "/nonexistent/ca.pem").unwrap();
    let err = Client::new("eas+https://127.0.0.1:1/svc", &o)
        .err()
        .unwrap();
    assert!(err.message.contains("tls_ca_file"), "{err}");
}

#[test]
fn options_win_over_the_query() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(SVC, endpoints(&[(50001, 100)]));
    let mut o = Options::new();
    o.set("refresh_interval_ms", "20").unwrap();
    let c = Client::new(
        &format!("eas://{}/{SVC}?refresh_interval_ms=600000", emu.endpoint()),
        &o,
    )
    .unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let seen = emu.requests();
    assert!(emu.wait_for_requests(seen + 3, Duration::from_secs(5)));
}

#[test]
fn different_threads_start_at_different_places() {
    let weights: Vec<String> = (1..=50).map(|p| format!("127.0.0.1:{p}")).collect();
    let c =
        Arc::new(Client::new(&format!("static://{}", weights.join(",")), &Options::new()).unwrap());
    let firsts: HashSet<u16> = (0..8)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || c.select().unwrap().port)
                .join()
                .unwrap()
        })
        .collect();
    assert!(
        firsts.len() > 1,
        "every thread started at the same instance"
    );
}

#[test]
fn host_names_are_resolved_within_the_fetch() {
    // localhost comes from /etc/hosts: no query leaves the machine. (A name the resolver
    // cannot answer is tested against the test's own DNS server in tests/netns.rs.)
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(SVC, endpoints(&[(50001, 100)]));
    let target = format!("eas://localhost:{}/{SVC}", emu.addr().port());
    let c = Client::new(&target, &Options::new()).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(ports(&c), vec![50001]);
}

#[test]
fn ipv6_upstream_and_instances() {
    let Ok(emu) = Emulator::bind("[::1]:0".parse().unwrap()) else {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    };
    emu.set_endpoints(
        SVC,
        vec![
            Endpoint::new("fd00::1", 50001, 100),
            Endpoint::new("::ffff:10.0.0.9", 50002, 100),
        ],
    );
    let target = format!("eas://[::1]:{}/{SVC}", emu.addr().port());
    let c = Client::new(&target, &Options::new()).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let hosts: Vec<String> = c
        .instances()
        .unwrap()
        .iter()
        .map(|i| i.host_str().to_owned())
        .collect();
    assert_eq!(hosts, vec!["10.0.0.9:50002", "[fd00::1]:50001"]);
}
