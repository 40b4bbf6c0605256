//! A client inherited across fork() keeps refreshing in the child; one created before a fork and
//! freed in both processes is safe.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use easdirect::ListBuilder;
use easdirect::{Client, Instance, Options};
use easdirect_emulator::{Emulator, Endpoint};

fn wait_child(pid: libc::pid_t) -> i32 {
    wait_child_for(pid, Duration::from_secs(60)).unwrap()
}

/// The child's exit code; a child still running after `limit` is killed and reported as hung.
fn wait_child_for(pid: libc::pid_t, limit: Duration) -> Result<i32, &'static str> {
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out pointer.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if got == pid {
            return Ok(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            });
        }
        if Instant::now() > deadline {
            // SAFETY: our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err("the child hung and was killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `child` in a forked child process and returns its exit code (`child` returns it).
fn in_child(child: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs `child`, then leaves through _exit without unwinding or
    // running the parent's atexit handlers.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
        // SAFETY: ends the child at once, as a forked child of a threaded process must.
        unsafe { libc::_exit(code) };
    }
    pid
}

#[test]
fn a_client_keeps_refreshing_in_a_forked_child() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints("svc", vec![Endpoint::new("127.0.0.1", 50001, 100)]);
    let mut options = Options::new();
    options.set("refresh_interval_ms", "20").unwrap();
    let client = Client::new(&format!("eas://{}/svc", emu.endpoint()), &options).unwrap();
    client.wait_ready(Duration::from_secs(5)).unwrap();

    let pid = in_child(|| {
        // The parent changes the list once the child runs; the child must see it through its
        // own refreshes (the parent's threads do not exist here).
        for _ in 0..500 {
            if client.instances().unwrap().iter().any(|i| i.port == 50002) {
                return match client.select() {
                    Ok(_) => 0,
                    Err(_) => 3,
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        2
    });
    emu.set_endpoints(
        "svc",
        vec![
            Endpoint::new("127.0.0.1", 50001, 100),
            Endpoint::new("127.0.0.1", 50002, 100),
        ],
    );
    assert_eq!(wait_child(pid), 0, "the child never saw the new list");
    // The parent goes on as before.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while client.instances().unwrap().len() != 2 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_client_freed_in_both_parent_and_child_is_safe() {
    for _ in 0..5 {
        let mut client =
            Some(Client::new("static://127.0.0.1:1,127.0.0.1:2", &Options::new()).unwrap());
        client.as_ref().unwrap().select().unwrap();
        let pid = in_child(|| {
            // The child's copy is freed here, the parent's below.
            let mine = client.take().unwrap();
            let ok = mine.select().is_ok();
            drop(mine);
            if ok {
                0
            } else {
                1
            }
        });
        drop(client);
        assert_eq!(wait_child(pid), 0);
    }
}

/// A callback that blocks while `hold` is set, counting its entries.
#[derive(Clone, Default)]
struct Hold {
    hold: Arc<AtomicBool>,
    entered: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

impl Hold {
    fn pass(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        while self.hold.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn on_end(&self) -> Option<easdirect::EndFn> {
        let ended = self.ended.clone();
        Some(Box::new(move || {
            ended.fetch_add(1, Ordering::SeqCst);
        }))
    }
}

#[test]
fn callbacks_running_at_fork_are_over_in_the_child() {
    // A source callback and a subscriber, each blocked inside its call when the process forks:
    // in the child, whose copy of those calls never returns, the source is called again,
    // and closing and unsubscribing end them (their end functions run there) without waiting.
    let (fetch, change) = (Hold::default(), Hold::default());
    fetch.hold.store(false, Ordering::SeqCst);
    let port = Arc::new(AtomicU16::new(1));
    let mut options = Options::new();
    options.set("refresh_interval_ms", "10").unwrap();
    let source_client = {
        let (held, port) = (fetch.clone(), port.clone());
        Client::with_source(
            Box::new(move |b: &mut ListBuilder| {
                held.pass();
                b.add("10.0.0.1", port.load(Ordering::SeqCst), 100)
                    .map_err(|e| e.to_string())
            }),
            fetch.on_end(),
            &options,
        )
        .unwrap()
    };
    source_client.wait_ready(Duration::from_secs(5)).unwrap();
    let static_client = Client::new("static://10.0.0.9:80", &Options::new()).unwrap();
    fetch.hold.store(true, Ordering::SeqCst);
    change.hold.store(true, Ordering::SeqCst);
    let subscription = {
        let held = change.clone();
        static_client
            .subscribe(Box::new(move |_: &[Instance]| held.pass()), change.on_end())
            .unwrap()
    };
    let entered = fetch.entered.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fetch.entered.load(Ordering::SeqCst) == entered
        || change.entered.load(Ordering::SeqCst) == 0
    {
        assert!(Instant::now() < deadline, "the callbacks never ran");
        std::thread::sleep(Duration::from_millis(1));
    }

    let pid = in_child(|| {
        // This process's copies: nothing holds them here.
        fetch.hold.store(false, Ordering::SeqCst);
        change.hold.store(false, Ordering::SeqCst);
        port.store(2, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while source_client.select().map(|i| i.port) != Ok(2) {
            if Instant::now() > deadline {
                return 2; // the source was never called again
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if static_client.unsubscribe(subscription).is_err()
            || change.ended.load(Ordering::SeqCst) != 1
        {
            return 3;
        }
        source_client.close();
        if fetch.ended.load(Ordering::SeqCst) != 1 {
            return 4;
        }
        0
    });
    let child = wait_child_for(pid, Duration::from_secs(20));
    fetch.hold.store(false, Ordering::SeqCst);
    change.hold.store(false, Ordering::SeqCst);
    assert_eq!(child, Ok(0));
    // The parent's callbacks returned and go on as before.
    static_client.unsubscribe(subscription).unwrap();
    assert_eq!(change.ended.load(Ordering::SeqCst), 1);
    source_client.close();
    assert_eq!(fetch.ended.load(Ordering::SeqCst), 1);
}
