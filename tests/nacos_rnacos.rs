//! The Nacos source against a real Nacos-compatible server: rnacos (a Nacos server in Rust
//! speaking the 1.x HTTP API), installed by `make test` into ~/.cache/easdirect and started here
//! on loopback ports the test picks. Instances are registered over its HTTP API and kept alive
//! by heartbeats, as ephemeral instances are in production.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use easdirect::{Client, Options, Transport};

#[path = "support/rnacos.rs"]
mod rnacos;
use rnacos::{Registry, Rnacos, GROUP, HEALTH_TIMEOUT_S};

/// A polling client (`nacos_transport=http`): these tests count fetches.
fn client(servers: &[&Rnacos], service: &str) -> Client {
    let mut o = Options::new();
    o.set("nacos_transport", "http").unwrap();
    o.set("refresh_interval_ms", "100").unwrap();
    o.set("request_timeout_ms", "1000").unwrap();
    let hosts: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    Client::new(&format!("nacos://{}/{service}", hosts.join(",")), &o).unwrap()
}

fn listed(c: &Client) -> Vec<(u16, u32)> {
    let mut v: Vec<(u16, u32)> = c
        .instances()
        .unwrap()
        .iter()
        .map(|i| (i.port, i.weight))
        .collect();
    v.sort_unstable();
    v
}

fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn follows_registrations_weights_and_health() {
    let server = Rnacos::start();
    let reg = Registry::new("svc-follow", &[&server]);
    for port in [9001, 9002, 9003] {
        reg.register(port, 1.0);
    }
    let c = client(&[&server], "svc-follow");
    c.wait_ready(Duration::from_secs(10)).unwrap();
    let five = Duration::from_secs(5);
    eventually("three instances", five, || listed(&c).len() == 3);
    assert_eq!(listed(&c), vec![(9001, 1000), (9002, 1000), (9003, 1000)]);

    reg.register(9004, 0.5);
    eventually("scale-up", five, || listed(&c).contains(&(9004, 500)));
    reg.set_weight(9001, 3.0);
    eventually("a weight change", five, || {
        listed(&c).contains(&(9001, 3000))
    });
    reg.deregister(9002);
    eventually("scale-down", five, || {
        !listed(&c).iter().any(|&(p, _)| p == 9002)
    });

    // No more heartbeats: rnacos marks it unhealthy, and unhealthy is not present.
    reg.stop_heartbeats(9003);
    eventually(
        "an instance without heartbeats leaves",
        Duration::from_secs(HEALTH_TIMEOUT_S + 10),
        || !listed(&c).iter().any(|&(p, _)| p == 9003),
    );
    assert_eq!(listed(&c), vec![(9001, 3000), (9004, 500)]);

    // The same selection, ejection and exclusion behaviour as an eas:// target.
    let all = c.instances().unwrap();
    let heavy = all.iter().find(|i| i.port == 9001).unwrap().id;
    let picks: Vec<u16> = (0..7).map(|_| c.select().unwrap().port).collect();
    assert_eq!(
        picks.iter().filter(|&&p| p == 9001).count(),
        6,
        "3000:500 is 6:1"
    );
    c.report_failure(heavy).unwrap();
    for _ in 0..20 {
        assert_eq!(c.select().unwrap().port, 9004);
    }
    let mut out = all[0];
    let ids: Vec<u64> = all.iter().map(|i| i.id).collect();
    assert!(c.select_into(&ids, &mut out).is_err());
}

#[test]
fn keeps_its_list_while_the_server_is_stopped_and_restarted() {
    let mut server = Rnacos::start();
    let reg = Registry::new("svc-restart", &[&server]);
    reg.register(9101, 1.0);
    reg.register(9102, 1.0);
    let c = client(&[&server], "svc-restart");
    c.wait_ready(Duration::from_secs(10)).unwrap();
    eventually("two instances", Duration::from_secs(5), || {
        listed(&c).len() == 2
    });
    let before = listed(&c);

    server.stop();
    let failed = c.stats().unwrap().refresh_failed;
    eventually("fetches fail", Duration::from_secs(5), || {
        c.stats().unwrap().refresh_failed > failed + 3
    });
    assert_eq!(listed(&c), before, "the cache is kept");
    assert!(c.select().is_ok());
    assert!(c.last_error().unwrap().is_some());

    server.spawn();
    let ok = c.stats().unwrap().refresh_ok;
    eventually("fetches succeed again", Duration::from_secs(15), || {
        c.stats().unwrap().refresh_ok > ok && c.last_error().unwrap().is_none()
    });
    eventually("the list is back", Duration::from_secs(10), || {
        listed(&c) == before
    });
}

#[test]
fn discovery_goes_on_through_the_other_server_when_one_stops() {
    let mut first = Rnacos::start();
    let second = Rnacos::start();
    let reg = Registry::new("svc-two", &[&first, &second]);
    reg.register(9201, 1.0);
    reg.register(9202, 2.0);
    let c = client(&[&first, &second], "svc-two");
    c.wait_ready(Duration::from_secs(10)).unwrap();
    eventually("both instances", Duration::from_secs(5), || {
        listed(&c).len() == 2
    });
    first.stop();
    let (ok, failed) = {
        let s = c.stats().unwrap();
        (s.refresh_ok, s.refresh_failed)
    };
    eventually("ten more good fetches", Duration::from_secs(10), || {
        c.stats().unwrap().refresh_ok >= ok + 10
    });
    assert_eq!(
        c.stats().unwrap().refresh_failed,
        failed,
        "failover within each fetch"
    );
    reg.register(9203, 1.0);
    eventually(
        "a change seen through the second server",
        Duration::from_secs(5),
        || listed(&c).len() == 3,
    );
}

/// The Python interpreter of a venv with nacos-sdk-python (`make test` prepares it).
fn nacos_python() -> PathBuf {
    if let Some(path) = std::env::var_os("EASDIRECT_NACOS_PYTHON") {
        return path.into();
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    Path::new(&home).join(".cache/easdirect/nacos-py/bin/python")
}

#[test]
fn sees_instances_registered_by_the_official_python_client_over_grpc_by_push_and_by_polling() {
    let python = nacos_python();
    assert!(
        python.exists(),
        "no Python with nacos-sdk-python at {}: `make test` prepares it (or set EASDIRECT_NACOS_PYTHON)",
        python.display()
    );
    let server = Rnacos::start();
    // One instance over HTTP with heartbeats, two over gRPC by the Python client.
    let reg = Registry::new("svc-grpc", &[&server]);
    reg.register(9300, 1.0);
    // A push client that polls once a minute: only pushes can bring what follows.
    let mut o = Options::new();
    o.set("refresh_interval_ms", "60000").unwrap();
    o.set("request_timeout_ms", "1000").unwrap();
    let pushed = Client::new(&format!("nacos://{}/svc-grpc", server.addr()), &o).unwrap();
    pushed.wait_ready(Duration::from_secs(10)).unwrap();
    eventually("the push stream is up", Duration::from_secs(10), || {
        pushed.transport().unwrap() == Transport::Push
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nacos/register_grpc.py");
    let mut registrar = Command::new(&python)
        .arg(script)
        .arg(format!("127.0.0.1:{}", server.port))
        .args(["svc-grpc", GROUP])
        .arg(&server.dir)
        .args(["9301", "9302*2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the registrar starts");
    let mut line = String::new();
    BufReader::new(registrar.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "registered",
        "the Python client could not register"
    );

    let c = client(&[&server], "svc-grpc");
    c.wait_ready(Duration::from_secs(10)).unwrap();
    let all = vec![(9300, 1000), (9301, 1000), (9302, 2000)];
    eventually("all three", Duration::from_secs(10), || listed(&c) == all);
    eventually("all three, pushed", Duration::from_secs(10), || {
        listed(&pushed) == all
    });
    // The Python client goes away: its gRPC connection closes and its instances leave.
    drop(registrar.stdin.take());
    let _ = registrar.wait();
    eventually(
        "the gRPC instances leave",
        Duration::from_secs(HEALTH_TIMEOUT_S + 20),
        || listed(&c) == vec![(9300, 1000)],
    );
    eventually(
        "the gRPC instances leave, pushed",
        Duration::from_secs(10),
        || listed(&pushed) == vec![(9300, 1000)],
    );
    assert_eq!(pushed.transport().unwrap(), Transport::Push);
}

#[test]
fn a_server_list_callback_moves_the_client_to_the_servers_it_lists() {
    use easdirect::internals::ServerListProvider;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let a = Rnacos::start();
    let b = Rnacos::start();
    let on_a = Registry::new("svc-provider", &[&a]);
    on_a.register(9401, 1.0);
    let on_b = Registry::new("svc-provider", &[&b]);
    on_b.register(9402, 1.0);

    let current = Arc::new(Mutex::new(a.addr()));
    let ended = Arc::new(AtomicUsize::new(0));
    let (c2, e2) = (current.clone(), ended.clone());
    let mut o = Options::new();
    o.set("refresh_interval_ms", "50").unwrap();
    o.nacos_server_list = Some(ServerListProvider::new(
        Box::new(move |list: &mut Vec<String>| {
            list.push(c2.lock().unwrap().clone());
            Ok(())
        }),
        Some(Box::new(move || {
            e2.fetch_add(1, Ordering::SeqCst);
        })),
    ));
    // The target's own server is never asked: the callback wins.
    let c = Client::new("nacos://127.0.0.1:1/svc-provider", &o).unwrap();
    c.wait_ready(Duration::from_secs(10)).unwrap();
    assert_eq!(listed(&c), vec![(9401, 1000)]);
    *current.lock().unwrap() = b.addr();
    eventually(
        "the client follows the new server",
        Duration::from_secs(5),
        || listed(&c) == vec![(9402, 1000)],
    );
    drop(o);
    assert_eq!(ended.load(Ordering::SeqCst), 0, "the client still holds it");
    drop(c);
    eventually("released once", Duration::from_secs(5), || {
        ended.load(Ordering::SeqCst) == 1
    });
}

#[test]
fn registrations_and_deregistrations_arrive_by_push_with_polling_once_a_minute() {
    let server = Rnacos::start();
    let reg = Registry::new("svc-push", &[&server]);
    reg.register(9201, 1.0);
    let mut o = Options::new();
    o.set("refresh_interval_ms", "60000").unwrap();
    o.set("request_timeout_ms", "1000").unwrap();
    let c = Client::new(&format!("nacos://{}/svc-push", server.addr()), &o).unwrap();
    c.wait_ready(Duration::from_secs(10)).unwrap();
    let ten = Duration::from_secs(10);
    eventually("the push stream is up", ten, || {
        c.transport().unwrap() == Transport::Push
    });
    // The first list came by the first poll (or the subscription); later ones only by push.
    reg.register(9202, 2.0);
    eventually("a registration, pushed", ten, || {
        listed(&c).contains(&(9202, 2000))
    });
    reg.deregister(9201);
    eventually("a deregistration, pushed", ten, || {
        listed(&c) == vec![(9202, 2000)]
    });
    assert!(
        c.stats().unwrap().refresh_ok >= 2,
        "pushes count as fetches"
    );
}

#[test]
fn a_server_without_grpc_is_polled_and_says_so() {
    let server = Rnacos::start();
    let reg = Registry::new("svc-nogrpc", &[&server]);
    reg.register(9301, 1.0);
    let mut o = Options::new();
    o.set("refresh_interval_ms", "100").unwrap();
    o.set("request_timeout_ms", "500").unwrap();
    // A port where nothing listens stands for a server that does not speak gRPC.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    o.set("grpc_port", &port.to_string()).unwrap();
    let c = Client::new(&format!("nacos://{}/svc-nogrpc", server.addr()), &o).unwrap();
    c.wait_ready(Duration::from_secs(10)).unwrap();
    reg.register(9302, 1.0);
    eventually("a registration, polled", Duration::from_secs(10), || {
        listed(&c).len() == 2
    });
    assert_eq!(c.transport().unwrap(), Transport::Poll);
}

#[test]
fn push_only_gets_its_list_from_the_subscription_and_survives_a_server_restart() {
    let mut server = Rnacos::start();
    let reg = Registry::new("svc-push-only", &[&server]);
    reg.register(9401, 1.0);
    let mut o = Options::new();
    o.set("nacos_transport", "grpc").unwrap();
    o.set("refresh_interval_ms", "60000").unwrap();
    o.set("request_timeout_ms", "1000").unwrap();
    let c = Client::new(&format!("nacos://{}/svc-push-only", server.addr()), &o).unwrap();
    c.wait_ready(Duration::from_secs(10)).unwrap();
    assert_eq!(listed(&c), vec![(9401, 1000)]);
    assert_eq!(c.transport().unwrap(), Transport::Push);

    server.stop();
    eventually("the stream is seen down", Duration::from_secs(10), || {
        c.transport().unwrap() == Transport::Poll
    });
    assert_eq!(listed(&c), vec![(9401, 1000)], "the list is kept");
    server.spawn();
    // Registered after the port opened again: it can only come through a new subscription.
    reg.register(9402, 1.0);
    eventually(
        "a registration after the restart, pushed",
        Duration::from_secs(5),
        || listed(&c).contains(&(9402, 1000)),
    );
    assert_eq!(c.transport().unwrap(), Transport::Push);
}

#[test]
fn the_push_stream_moves_to_the_other_server_when_its_server_stops() {
    let mut first = Rnacos::start();
    let mut second = Rnacos::start();
    let reg = Registry::new("svc-push-two", &[&first, &second]);
    reg.register(9501, 1.0);
    let mut o = Options::new();
    o.set("refresh_interval_ms", "60000").unwrap();
    o.set("request_timeout_ms", "1000").unwrap();
    let target = format!("nacos://{},{}/svc-push-two", first.addr(), second.addr());
    let c = Client::new(&target, &o).unwrap();
    c.wait_ready(Duration::from_secs(10)).unwrap();
    let ten = Duration::from_secs(10);
    eventually("the push stream is up", ten, || {
        c.transport().unwrap() == Transport::Push
    });
    // Whichever server the stream is on, one of these two stops is its server's.
    for (round, port) in [(0, 9502), (1, 9503)] {
        if round == 0 {
            first.stop();
        } else {
            first.spawn();
            second.stop();
        }
        reg.register(port, 1.0);
        eventually(
            "a registration pushed through the server still up",
            ten,
            || listed(&c).iter().any(|&(p, _)| p == port),
        );
        eventually("pushing again", ten, || {
            c.transport().unwrap() == Transport::Push
        });
    }
}

#[test]
fn a_forked_child_subscribes_on_its_own_and_gets_pushes() {
    let server = Rnacos::start();
    let reg = Registry::new("svc-push-fork", &[&server]);
    reg.register(9601, 1.0);
    let mut o = Options::new();
    o.set("refresh_interval_ms", "60000").unwrap();
    o.set("request_timeout_ms", "1000").unwrap();
    let c = Client::new(&format!("nacos://{}/svc-push-fork", server.addr()), &o).unwrap();
    c.wait_ready(Duration::from_secs(10)).unwrap();
    eventually("the push stream is up", Duration::from_secs(10), || {
        c.transport().unwrap() == Transport::Push
    });
    let flag = server.dir.join("child-subscribed");
    let _ = std::fs::remove_file(&flag);
    // SAFETY: the child only runs the closure below, then leaves through _exit without
    // unwinding or running the parent's atexit handlers.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let child = || -> i32 {
            let deadline = Instant::now() + Duration::from_secs(20);
            // The parent's stream is not the child's: it subscribes on its own.
            while c.transport().unwrap() != Transport::Push {
                if Instant::now() > deadline {
                    return 2;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::fs::write(&flag, b"up").unwrap();
            while !listed(&c).iter().any(|&(p, _)| p == 9602) {
                if Instant::now() > deadline {
                    return 3;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            0
        };
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
        // SAFETY: ends the child at once, as a forked child of a threaded process must.
        unsafe { libc::_exit(code) };
    }
    eventually("the child subscribed", Duration::from_secs(20), || {
        flag.exists()
    });
    reg.register(9602, 1.0); // after the child's subscription: only a push can bring it
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "the child crashed: {status}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "the child's exit code");
    // And the parent's stream still works.
    eventually("the parent too", Duration::from_secs(10), || {
        listed(&c).iter().any(|&(p, _)| p == 9602)
    });
}

#[test]
fn push_logs_in_where_the_server_wants_a_token_and_never_shows_the_password() {
    let server = Rnacos::start_with_auth();
    let reg = Registry::new("svc-push-auth", &[&server]);
    reg.login("admin", "admin");
    reg.register(9701, 1.0);
    let mut o = Options::new();
    o.set("nacos_transport", "grpc").unwrap(); // push only: no HTTP poll could log in for it
    o.set("refresh_interval_ms", "60000").unwrap();
    o.set("request_timeout_ms", "1000").unwrap();
    o.set("username", "admin").unwrap();
    o.set("password", "admin").unwrap();
    let c = Client::new(&format!("nacos://{}/svc-push-auth", server.addr()), &o).unwrap();
    c.wait_ready(Duration::from_secs(10)).unwrap();
    assert_eq!(listed(&c), vec![(9701, 1000)]);
    assert_eq!(c.transport().unwrap(), Transport::Push);
    reg.register(9702, 1.0);
    eventually("a registration, pushed", Duration::from_secs(10), || {
        listed(&c).len() == 2
    });

    // Without the login, the server refuses the subscription, and says so without secrets.
    let mut o = Options::new();
    o.set("nacos_transport", "grpc").unwrap();
    o.set("request_timeout_ms", "500").unwrap();
    o.set("username", "admin").unwrap();
    o.set("password", "wrong-Secret-9").unwrap();
    let refused = Client::new(&format!("nacos://{}/svc-push-auth", server.addr()), &o).unwrap();
    let err = refused.wait_ready(Duration::from_secs(3)).unwrap_err();
    assert!(!err.message.contains("wrong-Secret-9"), "{}", err.message);
    assert!(err.message.contains("login"), "{}", err.message);
    assert_eq!(refused.transport().unwrap(), Transport::Poll);
}

#[test]
fn a_client_started_while_the_server_is_down_subscribes_once_its_port_opens() {
    let mut server = Rnacos::start();
    let reg = Registry::new("svc-push-late", &[&server]);
    reg.register(9801, 1.0);
    server.stop();
    let mut o = Options::new();
    o.set("refresh_interval_ms", "60000").unwrap();
    o.set("request_timeout_ms", "500").unwrap();
    let c = Client::new(&format!("nacos://{}/svc-push-late", server.addr()), &o).unwrap();
    assert!(
        c.wait_ready(Duration::from_millis(1500)).is_err(),
        "no server yet"
    );
    std::thread::sleep(Duration::from_secs(2)); // the stream's backoff grows meanwhile
    server.spawn(); // returns once the HTTP port answers
                    // The poll failed a minute's interval ago: the list can only come by the subscription,
                    // within 5 s of the port opening.
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(c.transport().unwrap(), Transport::Push);
    eventually("the instance", Duration::from_secs(5), || {
        listed(&c) == vec![(9801, 1000)]
    });
}

/// An address server on loopback answering `GET /nacos/serverlist` with `body`.
fn address_server(body: String) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn servers_from_an_address_server_get_pushes_too_with_or_without_polling() {
    let server = Rnacos::start();
    let reg = Registry::new("svc-push-endpoint", &[&server]);
    reg.register(9901, 1.0);
    let endpoint = address_server(format!("{}\n", server.addr()));
    for (round, transport) in ["auto", "grpc"].into_iter().enumerate() {
        let mut o = Options::new();
        o.set("nacos_transport", transport).unwrap();
        o.set(
            "refresh_interval_ms",
            if transport == "grpc" { "100" } else { "60000" },
        )
        .unwrap();
        o.set("request_timeout_ms", "1000").unwrap();
        let c = Client::new(
            &format!("nacos+endpoint://{endpoint}/svc-push-endpoint"),
            &o,
        )
        .unwrap();
        c.wait_ready(Duration::from_secs(10)).unwrap();
        eventually("the push stream is up", Duration::from_secs(10), || {
            c.transport().unwrap() == Transport::Push
        });
        let port = 9902 + round as u16;
        reg.register(port, 1.0);
        eventually("a registration, pushed", Duration::from_secs(10), || {
            listed(&c).iter().any(|&(p, _)| p == port)
        });
    }
}
