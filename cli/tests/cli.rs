//! The `easdirect` binary as a user runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use easdirect_emulator::{Emulator, Endpoint};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_easdirect");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// GET `path` from `addr` and returns (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    let status = answer[9..12].parse().expect("a status");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn demo_plain_tells_the_whole_story_and_ends_by_itself() {
    let started = Instant::now();
    let out = run(&["demo", "--duration", "5", "--plain"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    for phase in 1..=6 {
        assert!(
            stdout.contains(&format!("Phase {phase}/6")),
            "phase {phase} missing:\n{stdout}"
        );
    }
    assert!(stdout.contains("EJECTED"), "{stdout}");
    assert!(stdout.contains("Summary"), "{stdout}");
    assert!(stdout.contains("requests sent"), "{stdout}");
    // The slow phase's line: the slowed backend's share and the latency, as calls saw them.
    assert!(
        stdout.contains("phase 6 (calls, #1 3x slower): #1 "),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\x1b') && !text(&out.stderr).contains('\x1b'),
        "escape codes in plain mode:\n{stdout}"
    );
}

#[test]
fn list_prints_the_instances_of_an_emulated_service() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(
        "svc",
        vec![
            Endpoint::new("10.0.0.1", 50000, 100),
            Endpoint::new("10.0.0.2", 50001, 250),
        ],
    );
    let target = emu.target("svc");
    let out = run(&["list", &target]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let id = format!("{:016x}", easdirect::internals::host_id(b"10.0.0.2:50001"));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("10.0.0.2:50001"))
        .unwrap_or_else(|| panic!("no line for 10.0.0.2:50001:\n{stdout}"));
    assert!(line.contains(" 250 ") && line.ends_with(&id), "{line}");
    assert!(stdout.contains("10.0.0.1:50000"), "{stdout}");

    let out = run(&["list", &target, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let items = v.as_array().expect("an array");
    assert_eq!(items.len(), 2);
    let second = items
        .iter()
        .find(|i| i["host"] == "10.0.0.2:50001")
        .unwrap();
    assert_eq!(second["weight"], 250);
    assert_eq!(second["port"], 50001);
    assert_eq!(second["id"], id.as_str());
}

#[test]
fn list_against_a_dead_endpoint_fails_naming_the_url() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = format!("eas://127.0.0.1:{port}/svc");
    let out = run(&["list", &target, "--timeout-ms", "500"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_rejected_target_is_printed_without_its_password() {
    for target in [
        "eas://user:t0psecret@127.0.0.1:1",
        "nacos://user:t0p/secret@127.0.0.1:1/svc",
        "dns://user:t0psecret@host:80",
        "static://user:t0psecret@127.0.0.1:80",
        "user:t0p?secret@127.0.0.1:80",
    ] {
        let out = run(&["list", target, "--timeout-ms", "100"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target}: {out:?}");
        assert!(
            stderr.contains("***@") || stderr.contains("***"),
            "{stderr}"
        );
        for fragment in ["t0p", "secret"] {
            assert!(!stderr.contains(fragment), "{target}: {stderr}");
        }
    }
}

#[test]
fn list_of_an_unknown_service_names_the_status() {
    let emu = Emulator::start().unwrap();
    let out = run(&["list", &emu.target("nope"), "--timeout-ms", "500"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("404"), "{stderr}");
    assert!(stderr.contains(&emu.endpoint()), "{stderr}");
}

#[test]
fn pick_over_whole_cycles_gives_exact_counts() {
    let out = run(&[
        "pick",
        "static://127.0.0.1:1*500,127.0.0.1:2*100,127.0.0.1:3*100",
        "-n",
        "700",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let count = |host: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(host))
            .unwrap_or_else(|| panic!("no line for {host}:\n{stdout}"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    assert_eq!(count("127.0.0.1:1"), 500, "{stdout}");
    assert_eq!(count("127.0.0.1:2"), 100, "{stdout}");
    assert_eq!(count("127.0.0.1:3"), 100, "{stdout}");
    assert!(stdout.contains("71.43%"), "{stdout}");
}

#[test]
fn pick_on_threads_picks_n_in_all() {
    let out = run(&[
        "pick",
        "static://127.0.0.1:1,127.0.0.1:2",
        "-n",
        "1001",
        "--threads",
        "3",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let total: u64 = stdout
        .lines()
        .filter(|l| l.starts_with("127.0.0.1:"))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 1001, "{stdout}");
}

#[test]
fn a_bad_option_key_exits_2_naming_it() {
    for cmd in ["list", "pick", "watch", "stats"] {
        let mut args = vec![cmd, "static://127.0.0.1:1", "-o", "no_such_option=1"];
        if cmd == "pick" {
            args.extend(["-n", "1"]);
        }
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {out:?}");
        assert!(text(&out.stderr).contains("no_such_option"), "{out:?}");
    }
    let out = run(&[
        "list",
        "static://127.0.0.1:1",
        "-o",
        "refresh_interval_ms=1",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("refresh_interval_ms"), "{out:?}");
    let out = run(&["list", "nonsense://x", "--timeout-ms", "10"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn emulate_announces_its_port_first_and_serves_discovery() {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["emulate", "--duration", "2", "--instances", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("first line {first:?}"));
    assert!(addr.starts_with("127.0.0.1:"), "{first}");
    let (status, body) = http_get(
        addr,
        "/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/svc",
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["endpoints"]["items"].as_array().unwrap().len(), 3, "{v}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter()
            .any(|l| l == &format!("target eas://{addr}/svc")),
        "{rest:?}"
    );
    assert!(child.wait().unwrap().success());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn emulate_starts_backends_and_a_client_reaches_them() {
    let mut child = Command::new(BIN)
        .args([
            "emulate",
            "--duration",
            "3",
            "--backends",
            "2",
            "--service",
            "m",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.strip_prefix("listening ").unwrap().to_string();
    let backends_line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("backends "))
        .expect("a backends line");
    let backends: Vec<&str> = backends_line["backends ".len()..].split(',').collect();
    assert_eq!(backends.len(), 2);

    let client = easdirect::Client::new(&format!("eas://{addr}/m"), &easdirect::Options::new())
        .expect("client");
    client.wait_ready(Duration::from_secs(2)).expect("ready");
    let picked = client.select().expect("an instance");
    assert!(backends.contains(&picked.host_str()), "{picked:?}");
    let (status, body) = http_get(picked.host_str(), "/api/predict/m");
    assert_eq!(status, 200, "{body}");
    client.close();
    assert!(child.wait().unwrap().success());
}

/// Lines of a child's stdout, as they come.
fn line_channel(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns the lines seen up to it.
fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return;
            }
        }
    }
    panic!("no line with {needle:?} in:\n{}", seen.join("\n"));
}

#[test]
fn watch_prints_changes_and_failures_until_sigterm() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints("svc", vec![Endpoint::new("10.0.0.1", 50000, 100)]);
    let mut child = Command::new(BIN)
        .args(["watch", &emu.target("svc"), "-o", "refresh_interval_ms=50"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = line_channel(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    wait_for_line(
        &rx,
        "= 1 instance (total weight 100), first list",
        &mut seen,
    );
    assert!(
        seen.iter()
            .any(|l| l.ends_with("+ 10.0.0.1:50000 weight 100 id 2e8710bcb7c06d00")),
        "{seen:?}"
    );
    emu.set_endpoints(
        "svc",
        vec![
            Endpoint::new("10.0.0.1", 50000, 300),
            Endpoint::new("10.0.0.2", 50000, 100),
        ],
    );
    wait_for_line(&rx, "= 2 instances", &mut seen);
    assert!(
        seen.iter()
            .any(|l| l.ends_with("~ 10.0.0.1:50000 weight 100 -> 300")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("+ 10.0.0.2:50000")),
        "{seen:?}"
    );
    emu.set_endpoints("svc", vec![Endpoint::new("10.0.0.2", 50000, 100)]);
    wait_for_line(&rx, "= 1 instance", &mut seen);
    assert!(
        seen.iter().any(|l| l.ends_with("- 10.0.0.1:50000")),
        "{seen:?}"
    );
    emu.set_fault(easdirect_emulator::Fault::Status(500));
    wait_for_line(&rx, "warn ", &mut seen);
    let warn = seen.last().unwrap();
    assert!(
        warn.contains("discovery failed") && warn.contains("HTTP 500"),
        "{seen:?}"
    );
    emu.set_fault(easdirect_emulator::Fault::None);
    wait_for_line(&rx, "info ", &mut seen);
    assert!(
        seen.last().unwrap().contains("discovery recovered"),
        "{seen:?}"
    );
    // One warning for the whole streak.
    assert_eq!(
        seen.iter()
            .filter(|l| l.contains("discovery failed"))
            .count(),
        1
    );

    let pid = child.id() as i32;
    // SAFETY: kill() has no memory-safety precondition; `pid` is our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn stats_prints_the_metrics_text() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints("svc", vec![Endpoint::new("10.0.0.1", 50000, 100)]);
    let out = run(&["stats", &emu.target("svc")]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let target = emu.target("svc");
    assert!(
        text.contains(&format!("easdirect_instances{{target=\"{target}\"}} 1\n")),
        "{text}"
    );
    assert!(text.contains(&format!(
        "easdirect_instance_weight{{target=\"{target}\",instance=\"10.0.0.1:50000\"}} 100\n"
    )));
    let out = run(&["stats", "eas://127.0.0.1:1/svc", "--timeout-ms", "200"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn watch_ends_after_its_duration() {
    let started = Instant::now();
    let out = run(&["watch", "static://127.0.0.1:1", "--duration", "0.5"]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("= 1 instance"), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn help_documents_every_command() {
    let out = run(&["--help"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    for cmd in ["list", "watch", "stats", "pick", "emulate", "demo"] {
        assert!(stdout.contains(cmd), "{stdout}");
        assert!(run(&[cmd, "--help"]).status.success(), "{cmd} --help");
    }
}

/// A Nacos 3.x server as far as `list` needs one: every request gets the same v3 answer.
fn nacos_stub() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let body = r#"{"code":0,"message":"success","data":[{"ip":"10.1.0.1","port":8080,"weight":2.5,"healthy":true,"enabled":true}]}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn list_and_pick_work_with_nacos_targets() {
    let addr = nacos_stub();
    let out = run(&[
        "list",
        &format!("nacos://{addr}/svc"),
        "-o",
        "namespace=dev",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("10.1.0.1:8080"), "{stdout}");
    assert!(stdout.contains("2500"), "weight 2.5 x 1000: {stdout}");
    let out = run(&["pick", &format!("nacos://{addr}/svc"), "-n", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("10.1.0.1:8080"));
}

#[test]
fn call_retries_on_another_instance_and_prints_the_answer() {
    let emu = Emulator::start().unwrap();
    let ports = emu.add_backends("svc", 3).unwrap();
    for &port in &ports[..2] {
        assert!(emu.set_backend_mode(port, easdirect_emulator::BackendMode::Status(503)));
    }
    let out = run(&[
        "call",
        &emu.target("svc"),
        "/api/predict/svc",
        "-d",
        "{\"prompt\":\"hi\"}",
        "-H",
        "X-Session-Id: s1",
        "-v",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let answer: Value = serde_json::from_str(&stdout).expect("the healthy backend's JSON");
    assert_eq!(answer["backend"], format!("127.0.0.1:{}", ports[2]));
    assert_eq!(answer["method"], "POST");
    assert_eq!(answer["path"], "/api/predict/svc");
    // One line per attempt; the 503s were retried, never the same instance twice.
    let attempts: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("attempt "))
        .collect();
    assert!(!attempts.is_empty() && attempts.len() <= 3, "{stderr}");
    assert!(attempts.last().unwrap().contains("HTTP 200"), "{stderr}");
    assert_eq!(
        attempts
            .iter()
            .filter(|l| l.contains("HTTP 503") && l.ends_with(", retrying"))
            .count(),
        attempts.len() - 1,
        "{stderr}"
    );
}

#[test]
fn call_fails_when_every_attempt_fails() {
    let emu = Emulator::start().unwrap();
    let ports = emu.add_backends("svc", 2).unwrap();
    for &port in &ports {
        assert!(emu.set_backend_mode(port, easdirect_emulator::BackendMode::Status(500)));
    }
    let out = run(&["call", &emu.target("svc"), "/x", "-v"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("HTTP 500").count(), 2, "{stderr}");
    // The last answer (a 500) is what the caller gets.
    assert!(
        text(&out.stdout).contains("\"status\":500"),
        "{}",
        text(&out.stdout)
    );
}
