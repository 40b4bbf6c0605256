//! Host names that do not resolve, or stop resolving, through the system resolver (glibc's
//! getaddrinfo, what `eas://` and `dns://` use without `dns_server`).
//!
//! The machine's resolver must never be asked, so `in_a_network_namespace_of_its_own` re-runs
//! this test binary under `unshare --map-root-user --net --mount`: a network namespace with only
//! its own loopback, and a mount namespace in which /etc/resolv.conf is a file of the test's
//! naming 127.0.0.1, where the `inner_*` tests run a DNS server of their own on port 53. Where
//! the machine cannot create namespaces, the test says so and passes without running them.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use easdirect::{Client, Options};
use easdirect_emulator::{Emulator, Endpoint};

#[path = "support/dns_server.rs"]
mod dns_server;
use dns_server::{Behaviour, DnsServer};

/// What the namespace test did, for `make test` to print (a test's own output is captured).
fn report(line: &str) {
    eprintln!("{line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("netns-result.txt");
    let _ = std::fs::write(path, format!("{line}\n"));
}

/// Set (to the marker file's path) in the namespace.
const INNER: &str = "EASDIRECT_NETNS_MARKER";
const SVC: &str = "svc";

#[test]
fn in_a_network_namespace_of_its_own() {
    if std::env::var_os(INNER).is_some() {
        return; // the inner run only runs the inner tests
    }
    let dir = std::env::temp_dir().join(format!("easdirect-netns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let resolv = dir.join("resolv.conf");
    // One try of one second: a silent server costs glibc about a second per lookup.
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let marker = dir.join("started");
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--map-root-user", "--net", "--mount", "--"])
        .arg(&exe)
        .args(["--ignored", "--test-threads=1", "--nocapture", "inner_"])
        .env(INNER, &marker)
        .env("EASDIRECT_NETNS_RESOLV", &resolv)
        .output();
    let started = marker.exists();
    let _ = std::fs::remove_dir_all(&dir);
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            report(&format!(
                "netns: SKIPPED: cannot run unshare ({e}); the inner_* tests did not run"
            ));
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !started {
        // unshare refused, or the namespace could not be set up (lo, the bind mount, port 53).
        assert!(
            !out.status.success(),
            "the namespace ran but no inner test started:\n{stdout}\n{stderr}"
        );
        let why: Vec<&str> = stdout
            .lines()
            .chain(stderr.lines())
            .filter(|l| l.contains("panicked") || l.contains("unshare") || l.contains(": "))
            .take(3)
            .collect();
        report(&format!(
            "netns: SKIPPED: this machine cannot create or set up a network namespace ({}); \
             the inner_* tests did not run",
            why.join(" / ")
        ));
        return;
    }
    println!("{stdout}");
    assert!(
        out.status.success(),
        "inner tests failed in the namespace:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("6 passed"),
        "not every inner test ran:\n{stdout}"
    );
    let threads: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.find("threads:").map(|at| &l[at..]))
        .collect();
    let threads = threads.join("; ");
    report(&format!(
        "netns: 6 name-resolution tests ran in a network namespace of their own, and passed \
         ({threads})"
    ));
}

/// The namespace's set-up, once per process: loopback up, our resolv.conf over the machine's,
/// and the DNS server on 127.0.0.1:53. Tests take the lock: the server's behaviour is global.
fn namespace() -> MutexGuard<'static, DnsServer> {
    static SERVER: OnceLock<Mutex<DnsServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let marker = std::env::var_os(INNER)
                .expect("inner tests run only in the namespace: cargo test --test netns");
            loopback_up();
            let resolv = std::env::var_os("EASDIRECT_NETNS_RESOLV").unwrap();
            bind_mount(Path::new(&resolv), Path::new("/etc/resolv.conf"));
            let server = DnsServer::start("127.0.0.1:53".parse().unwrap()).unwrap();
            // Set up: from here on a failure is the tests' (before, the machine's: skipped).
            std::fs::write(&marker, b"").unwrap();
            Mutex::new(server)
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn loopback_up() {
    // struct ifreq: the name, then a union whose first use here is the flags (a short).
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _rest: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: 0,
        _rest: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: a plain socket used only for the two ioctls below, closed after them; `req` is
    // a correctly sized, initialised struct ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req), 0);
        req.flags |= libc::IFF_UP as libc::c_short;
        let set = libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(set, 0, "bringing lo up: {err}");
    }
}

fn bind_mount(from: &Path, to: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let (from, to) = (c(from), c(to));
    // SAFETY: both are NUL-terminated paths that live across the call; a bind mount in the
    // private mount namespace unshare made, invisible outside it.
    let rc = unsafe {
        libc::mount(
            from.as_ptr(),
            to.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    assert_eq!(
        rc,
        0,
        "bind-mounting resolv.conf: {}",
        std::io::Error::last_os_error()
    );
}

fn eventually(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn options() -> Options {
    let mut o = Options::new();
    o.set("refresh_interval_ms", "20").unwrap();
    o.set("request_timeout_ms", "300").unwrap();
    o
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ports(c: &Client) -> Vec<u16> {
    c.instances().unwrap().iter().map(|i| i.port).collect()
}

fn last_error(c: &Client) -> String {
    c.last_error()
        .unwrap()
        .map(|e| e.message)
        .unwrap_or_default()
}

#[test]
#[ignore = "runs in a namespace, from in_a_network_namespace_of_its_own"]
fn inner_the_resolver_is_ours() {
    let dns = namespace();
    dns.set_behaviour(Behaviour::Answer);
    dns.set("probe.easdirect.test", &[ip("127.0.0.9")]);
    let before = dns.udp_queries() + dns.tcp_queries();
    let addrs: Vec<IpAddr> = std::net::ToSocketAddrs::to_socket_addrs("probe.easdirect.test:80")
        .unwrap()
        .map(|a| a.ip())
        .collect();
    assert_eq!(addrs, vec![ip("127.0.0.9")]);
    assert!(dns.udp_queries() + dns.tcp_queries() > before);
}

#[test]
#[ignore = "runs in a namespace, from in_a_network_namespace_of_its_own"]
fn inner_an_eas_host_that_never_resolves() {
    let dns = namespace();
    dns.set_behaviour(Behaviour::Answer);
    let c = Client::new("eas://gone.easdirect.test:8080/svc", &options()).unwrap();
    let err = c.wait_ready(Duration::from_secs(2)).unwrap_err();
    assert!(
        err.message.contains("gone.easdirect.test") && err.message.contains("Dns Failed"),
        "the error names the host and the lookup: {err}"
    );
    assert!(c.select().is_err(), "no instance was ever listed");
    let stats = c.stats().unwrap();
    assert!(stats.refresh_failed >= 1, "{stats:?}");
    c.close();
}

#[test]
#[ignore = "runs in a namespace, from in_a_network_namespace_of_its_own"]
fn inner_an_eas_host_that_stops_resolving_keeps_the_cache() {
    let dns = namespace();
    dns.set_behaviour(Behaviour::Answer);
    let name = "eas.easdirect.test";
    // Two upstreams on one port at two addresses: the name moves from the first to the second.
    let first = Emulator::bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let port = first.addr().port();
    let second = Emulator::bind(format!("127.0.0.3:{port}").parse().unwrap()).unwrap();
    first.set_endpoints(SVC, vec![Endpoint::new("10.0.0.1", 9001, 100)]);
    second.set_endpoints(SVC, vec![Endpoint::new("10.0.0.2", 9002, 100)]);
    dns.set(name, &[ip("127.0.0.2")]);
    let c = Client::new(&format!("eas://{name}:{port}/{SVC}"), &options()).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(ports(&c), vec![9001]);

    // The name is gone, and the upstream closes its connections: each new one needs a lookup.
    dns.set_behaviour(Behaviour::NxDomain);
    drop(first);
    eventually("the lookup failure is reported", 5, || {
        last_error(&c).contains("Dns Failed")
    });
    assert_eq!(ports(&c), vec![9001], "cache kept");
    assert_eq!(c.select().unwrap().port, 9001);

    // The DNS server stops answering: each fetch still ends within the request timeout.
    dns.set_behaviour(Behaviour::Silent);
    let failed = c.stats().unwrap().refresh_failed;
    eventually("fetches go on failing while the lookups hang", 5, || {
        c.stats().unwrap().refresh_failed >= failed + 5
    });
    let err = last_error(&c);
    assert!(
        err.contains("took longer than") || err.contains("has not finished"),
        "{err}"
    );
    assert_eq!(ports(&c), vec![9001], "cache kept");
    let t = Instant::now();
    for _ in 0..1000 {
        assert_eq!(c.select().unwrap().port, 9001);
    }
    assert!(t.elapsed() < Duration::from_secs(1), "select never waits");

    // The name comes back at the second address: followed.
    dns.set(name, &[ip("127.0.0.3")]);
    dns.set_behaviour(Behaviour::Answer);
    eventually("the list at the new address", 10, || {
        ports(&c) == vec![9002]
    });
    let t = Instant::now();
    c.close();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "close returns at once"
    );
}

#[test]
#[ignore = "runs in a namespace, from in_a_network_namespace_of_its_own"]
fn inner_a_dns_name_that_stops_resolving_keeps_the_cache() {
    let dns = namespace();
    dns.set_behaviour(Behaviour::Answer);
    let name = "web.easdirect.test";
    dns.set(name, &[ip("10.0.0.1"), ip("10.0.0.2")]);
    let c = Client::new(&format!("dns://{name}:8080"), &options()).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(ports(&c).len(), 2);
    dns.set_behaviour(Behaviour::NxDomain);
    eventually("the lookup failure is reported", 5, || {
        last_error(&c).contains(&format!("resolving {name}"))
    });
    assert_eq!(ports(&c).len(), 2, "cache kept");
    dns.set(name, &[ip("10.0.0.3")]);
    dns.set_behaviour(Behaviour::Answer);
    eventually("the new record", 10, || {
        c.instances()
            .unwrap()
            .iter()
            .map(|i| i.host_str().to_owned())
            .collect::<Vec<_>>()
            == vec!["10.0.0.3:8080"]
    });
}

/// Answers every HTTP request with a Nacos v3 instance list of one instance at `port`.
fn nacos_stub(port: u16) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body = format!(
        r#"{{"code":0,"message":"success","data":[{{"ip":"10.0.0.7","port":{port},"weight":1.0,"healthy":true,"enabled":true,"ephemeral":true,"clusterName":"DEFAULT","metadata":{{}}}}]}}"#
    );
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
#[ignore = "runs in a namespace, from in_a_network_namespace_of_its_own"]
fn inner_a_nacos_server_whose_name_does_not_resolve_is_skipped() {
    let dns = namespace();
    dns.set_behaviour(Behaviour::NxDomain);
    let live = nacos_stub(9007);
    for _ in 0..4 {
        // Whatever server the client starts with, the first fetch ends with the list.
        let c = Client::new(
            &format!("nacos://gone.easdirect.test:8848;{live}/svc"),
            &options(),
        )
        .unwrap();
        c.wait_ready(Duration::from_secs(5)).unwrap();
        assert_eq!(ports(&c), vec![9007]);
        assert_eq!(
            c.stats().unwrap().refresh_failed,
            0,
            "failover within the fetch"
        );
    }
}

/// The threads of this process: all of them, and the library's (by their names' prefix;
/// /proc truncates names to 15 bytes).
fn threads() -> (usize, usize) {
    let (mut all, mut ours) = (0, 0);
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        all += 1;
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with("easdirect-") {
            ours += 1;
        }
    }
    (all, ours)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
#[ignore = "runs in a namespace, from in_a_network_namespace_of_its_own"]
fn inner_hundreds_of_clients_of_names_that_never_resolve_keep_threads_within_the_bound() {
    use easdirect::internals::MAX_THREADS;
    use easdirect::internals::{MAX_FILE_THREADS, MAX_LOOKUP_THREADS};
    // The documented bound when no caller's code runs (no callback source, no subscriber).
    const BOUND: usize = MAX_THREADS + MAX_LOOKUP_THREADS + MAX_FILE_THREADS;
    let dns = namespace();
    dns.set_behaviour(Behaviour::Silent);
    let (before, ours_before) = threads();
    let fds_before = open_fds();
    let mut o = Options::new();
    o.set("refresh_interval_ms", "10").unwrap();
    o.set("request_timeout_ms", "100").unwrap();
    // 200 clients of 8 names: lookups of one name are shared, and the 8 names together ask
    // for more lookup threads than the lane has.
    let clients: Vec<Client> = (0..200)
        .map(|i| {
            let target = format!("eas://silent{}.easdirect.test:8080/svc", i % 8);
            Client::new(&target, &o).unwrap()
        })
        .collect();
    let (mut peak, mut ours_peak, mut others_peak) = (before, ours_before, before - ours_before);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let (all, ours) = threads();
        peak = peak.max(all);
        ours_peak = ours_peak.max(ours);
        others_peak = others_peak.max(all - ours);
        std::thread::sleep(Duration::from_millis(10));
    }
    let failed: u64 = clients
        .iter()
        .map(|c| c.stats().unwrap().refresh_failed)
        .sum();
    let errors: Vec<String> = clients.iter().map(last_error).collect();
    println!(
        "threads: {before} before ({ours_before} of the library's), {peak} at the peak with 200 clients of names that never \
         resolve ({ours_peak} of the library's; bound {BOUND}), \
         {failed} fetches failed in 4 s"
    );
    assert!(
        peak <= before + BOUND && ours_peak <= BOUND,
        "{peak} threads at the peak, {before} before ({ours_peak} of the library's): over the \
         documented bound of {BOUND}"
    );
    assert!(
        failed >= 200,
        "every client's fetches go on ending: {failed}"
    );
    for err in &errors {
        // On its timeout, or with glibc's own answer once it gives up on a lookup.
        assert!(
            err.contains("took longer than") || err.contains("Dns Failed"),
            "a fetch ends on its timeout: {err}"
        );
    }
    assert!(errors.iter().any(|e| e.contains("took longer than 100 ms")));

    let t = Instant::now();
    drop(clients);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "closing waits for no lookup"
    );
    // Lookups still hanging end when glibc gives up (one try of one second); then the lookup
    // threads have nothing to do and exit, and the resolver's sockets are closed.
    eventually("the lookup threads exit", 30, || {
        let lookups = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.starts_with("easdirect-looku"))
            })
            .count();
        lookups == 0 && open_fds() <= fds_before
    });
    let (after, ours_after) = threads();
    println!("threads: {after} after closing ({ours_after} of the library's, idle pool threads)");
    assert!(
        after <= before + MAX_THREADS,
        "{after} threads after, {before} before"
    );
}
