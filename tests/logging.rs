//! The log function (`Options::log`) and the metrics text, against the emulator: one warning per
//! failure streak and one line for the recovery, list changes, ejections and their end, the
//! rate limit, no secret in any line, and metrics that match the stats.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use easdirect::{Client, Level, LogSink, Options};
use easdirect_emulator::{Emulator, Endpoint, Fault};

type Lines = Arc<Mutex<Vec<(Level, String)>>>;

fn logged(pairs: &[(&str, &str)]) -> (Options, Lines) {
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    let mut o = Options::new();
    for (k, v) in pairs {
        o.set(k, v).unwrap();
    }
    o.log = Some(LogSink::new(
        Box::new(move |level, line| sink.lock().unwrap().push((level, line.to_owned()))),
        None,
        Level::Debug,
    ));
    (o, lines)
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn matching(lines: &Lines, needle: &str) -> Vec<(Level, String)> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, l)| l.contains(needle))
        .cloned()
        .collect()
}

fn endpoints(ports: &[u16]) -> Vec<Endpoint> {
    ports
        .iter()
        .map(|p| Endpoint::new("127.0.0.1", *p, 100))
        .collect()
}

#[test]
fn a_failure_streak_logs_one_warning_and_its_recovery_one_line() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints("svc", endpoints(&[9001, 9002]));
    let (o, lines) = logged(&[("refresh_interval_ms", "20")]);
    let c = Client::new(&emu.target("svc"), &o).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    wait_until("the first list line", Duration::from_secs(5), || {
        !matching(&lines, "list 1: 2 instances (+2 -0)").is_empty()
    });

    emu.set_fault(Fault::Status(503));
    let before = c.stats().unwrap().refresh_failed;
    wait_until("ten failed fetches", Duration::from_secs(10), || {
        c.stats().unwrap().refresh_failed >= before + 10
    });
    emu.set_fault(Fault::None);
    wait_until("the recovery line", Duration::from_secs(10), || {
        !matching(&lines, "discovery recovered").is_empty()
    });
    let warnings = matching(&lines, "discovery failed");
    assert_eq!(warnings.len(), 1, "one warning per streak: {warnings:?}");
    assert_eq!(warnings[0].0, Level::Warn);
    assert!(warnings[0].1.contains("503"), "{warnings:?}");
    assert!(
        warnings[0].1.starts_with(&emu.target("svc")),
        "{warnings:?}"
    );
    let recovered = matching(&lines, "discovery recovered");
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].0, Level::Info);

    // A list change says what it added and removed.
    emu.set_endpoints("svc", endpoints(&[9002, 9003, 9004]));
    wait_until("the second list line", Duration::from_secs(5), || {
        !matching(&lines, "list 2: 3 instances (+2 -1)").is_empty()
    });
}

#[test]
fn an_ejection_logs_the_instance_and_its_return() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints("svc", endpoints(&[9101, 9102, 9103]));
    let (o, lines) = logged(&[("refresh_interval_ms", "20"), ("ejection_base_ms", "100")]);
    let c = Client::new(&emu.target("svc"), &o).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let victim = c
        .instances()
        .unwrap()
        .into_iter()
        .find(|i| i.port == 9102)
        .unwrap();
    c.report_failure(victim.id).unwrap();
    wait_until("the return line", Duration::from_secs(5), || {
        !matching(&lines, "instance 127.0.0.1:9102 back in rotation").is_empty()
    });
    let ejected = matching(&lines, "instance 127.0.0.1:9102 ejected for");
    assert_eq!(ejected.len(), 1, "{:?}", lines.lock().unwrap());
    assert_eq!(ejected[0].0, Level::Info);
}

#[test]
fn at_most_ten_lines_a_second_and_the_drop_is_counted() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints("svc", endpoints(&[9201]));
    let (o, lines) = logged(&[("refresh_interval_ms", "10")]);
    let c = Client::new(&emu.target("svc"), &o).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    // Flip the list quickly: each change is a line.
    let start = Instant::now();
    let mut flips = 0u64;
    while start.elapsed() < Duration::from_millis(700) {
        let before = c.stats().unwrap().generation;
        emu.set_endpoints("svc", endpoints(&[9201 + (flips % 2) as u16 + 1]));
        flips += 1;
        wait_until("a list change", Duration::from_secs(5), || {
            c.stats().unwrap().generation > before
        });
    }
    let generation = c.stats().unwrap().generation;
    assert!(generation > 12, "only {generation} lists published");
    std::thread::sleep(Duration::from_millis(200));
    let in_window = lines.lock().unwrap().len();
    assert!(in_window <= 10, "{in_window} lines within the first second");
    let metrics = c.metrics_text().unwrap();
    let dropped = sample(&metrics, "easdirect_log_lines_dropped_total", "");
    assert!(dropped >= 2.0, "dropped {dropped}:\n{metrics}");
    // The next window's first line carries the count.
    std::thread::sleep(Duration::from_millis(1000));
    emu.set_endpoints("svc", endpoints(&[9300]));
    wait_until("a line with the drop count", Duration::from_secs(5), || {
        !matching(&lines, "earlier lines dropped").is_empty()
    });
}

#[test]
fn no_secret_reaches_a_log_line() {
    // A secret in the target's query.
    let (o, lines) = logged(&[("refresh_interval_ms", "20"), ("nacos_transport", "http")]);
    let c = Client::new(
        "nacos://127.0.0.1:1/svc?username=alice&password=s3cr3t-pw",
        &o,
    )
    .unwrap();
    wait_until("the failure line", Duration::from_secs(5), || {
        !matching(&lines, "discovery failed").is_empty()
    });
    drop(c);
    // A Nacos client with a password and a secret key, whose server refuses.
    let (o, nacos_lines) = logged(&[
        ("refresh_interval_ms", "20"),
        ("username", "nacos-user"),
        ("password", "nacos-pw-123"),
        ("access_key", "ak-1"),
        ("secret_key", "sk-456"),
        ("nacos_transport", "http"),
    ]);
    let c = Client::new("nacos://127.0.0.1:1/svc", &o).unwrap();
    wait_until("the nacos failure line", Duration::from_secs(5), || {
        !matching(&nacos_lines, "discovery failed").is_empty()
    });
    drop(c);
    let all: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .chain(nacos_lines.lock().unwrap().iter())
        .map(|(_, l)| l.clone())
        .collect();
    for line in &all {
        for secret in ["s3cr3t-pw", "nacos-pw-123", "sk-456"] {
            assert!(!line.contains(secret), "{secret:?} in {line:?}");
        }
    }
}

#[test]
fn close_stops_the_lines_and_ends_the_function() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints("svc", endpoints(&[9401]));
    let ended = Arc::new(Mutex::new(0));
    let lines: Lines = Arc::default();
    let (sink_lines, end) = (lines.clone(), ended.clone());
    let mut o = Options::new();
    o.set("refresh_interval_ms", "10").unwrap();
    o.log = Some(LogSink::new(
        Box::new(move |level, line| sink_lines.lock().unwrap().push((level, line.to_owned()))),
        Some(Box::new(move || *end.lock().unwrap() += 1)),
        Level::Info,
    ));
    let c = Client::new(&emu.target("svc"), &o).unwrap();
    drop(o);
    c.wait_ready(Duration::from_secs(5)).unwrap();
    emu.set_fault(Fault::Status(500));
    c.close();
    let after_close = lines.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(lines.lock().unwrap().len(), after_close);
    assert_eq!(*ended.lock().unwrap(), 0, "the client still holds it");
    drop(c);
    wait_until("the end function", Duration::from_secs(5), || {
        *ended.lock().unwrap() == 1
    });
}

/// The value of the sample `name{...labels_with}` (the first whose labels contain the text).
fn sample(text: &str, name: &str, labels_with: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels_with))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no sample {name} with {labels_with:?} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_text_matches_the_stats() {
    let emu = Emulator::start().unwrap();
    let ports = emu.add_backends("svc", 2).unwrap();
    let mut o = Options::new();
    o.set("refresh_interval_ms", "50").unwrap();
    let c = Client::new(&emu.target("svc"), &o).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let victim = c.instances().unwrap()[0];
    c.report_failure(victim.id).unwrap();
    let text = c.metrics_text().unwrap();
    let stats = c.stats().unwrap();
    let t = format!("target=\"{}\"", emu.target("svc"));
    assert_eq!(sample(&text, "easdirect_instances", &t), 2.0);
    assert_eq!(
        sample(&text, "easdirect_list_generation", &t),
        stats.generation as f64
    );
    assert!(sample(&text, "easdirect_discovery_fetches_total", "result=\"ok\"") >= 1.0);
    assert_eq!(sample(&text, "easdirect_instances_ejected", &t), 1.0);
    let by_instance: HashMap<u16, f64> = ports
        .iter()
        .map(|p| {
            let label = format!("instance=\"127.0.0.1:{p}\"");
            (*p, sample(&text, "easdirect_instance_held_out", &label))
        })
        .collect();
    assert_eq!(by_instance[&victim.port], 1.0);
    assert_eq!(by_instance.values().sum::<f64>(), 1.0);
    let failures = format!("instance=\"{}\"", victim.host_str());
    assert_eq!(
        sample(&text, "easdirect_instance_failures_total", &failures),
        1.0
    );
    // Every sample line is `name{labels} value`; every family has HELP and TYPE.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(series.ends_with('}'), "{line}");
        value.parse::<f64>().unwrap();
        let name = &series[..series.find('{').unwrap()];
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
    }
    c.close();
    assert!(c.metrics_text().is_err());
}
