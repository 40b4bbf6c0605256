//! A client inherited across fork() keeps refreshing in the child; one created before a fork and
//! freed in both processes is safe.

use std::time::Duration;

use easdirect::{Client, Options};
use easdirect_emulator::{Emulator, Endpoint};

fn wait_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out pointer.
    let got = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(got, pid);
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
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
