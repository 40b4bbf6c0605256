//! Sources from the caller's own function: followed like any source, failures and panics keep
//! the cache, the end function runs once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use easdirect::ListBuilder;
use easdirect::{Client, Options};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    List(u16),
    Fail,
    Panic,
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_changing_list_is_followed_and_failures_keep_the_cache() {
    let mode = Arc::new(Mutex::new(Mode::List(2)));
    let calls = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let (m, n, e) = (mode.clone(), calls.clone(), ended.clone());
    let mut options = Options::new();
    options.set("refresh_interval_ms", "10").unwrap();
    let client = Client::with_source(
        Box::new(move |b: &mut ListBuilder| {
            n.fetch_add(1, Ordering::SeqCst);
            let current = *m.lock().unwrap();
            match current {
                Mode::List(count) => {
                    for port in 1..=count {
                        b.add("10.0.0.1", port, 100).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                }
                Mode::Fail => Err("registry unreachable".into()),
                Mode::Panic => panic!("a bug in the caller's code"),
            }
        }),
        Some(Box::new(move || {
            e.fetch_add(1, Ordering::SeqCst);
        })),
        &options,
    )
    .unwrap();
    client.wait_ready(Duration::from_secs(5)).unwrap();
    let count = || client.instances().unwrap().len();
    assert_eq!(count(), 2);
    *mode.lock().unwrap() = Mode::List(4);
    eventually("the new list", || count() == 4);
    for failing in [Mode::Fail, Mode::Panic, Mode::List(0)] {
        *mode.lock().unwrap() = failing;
        let seen = calls.load(Ordering::SeqCst);
        eventually("three more fetches", || {
            calls.load(Ordering::SeqCst) >= seen + 3
        });
        assert_eq!(
            count(),
            4,
            "a failed, panicking or empty fetch keeps the cache"
        );
        assert!(client.select().is_ok());
    }
    let err = client.last_error().unwrap().unwrap();
    assert!(err.message.contains("no pickable instance"), "{err}");
    assert_eq!(ended.load(Ordering::SeqCst), 0);
    drop(client);
    assert_eq!(
        ended.load(Ordering::SeqCst),
        1,
        "ended once, when the client closed"
    );
    let after = calls.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        after,
        "never called after close"
    );
}

#[test]
fn a_source_may_close_its_own_client() {
    let ended = Arc::new(AtomicUsize::new(0));
    let e = ended.clone();
    let slot: Arc<Mutex<Option<Arc<Client>>>> = Arc::default();
    let s = slot.clone();
    let mut options = Options::new();
    options.set("refresh_interval_ms", "10").unwrap();
    let client = Arc::new(
        Client::with_source(
            Box::new(move |b: &mut ListBuilder| {
                b.add("10.0.0.1", 80, 100).unwrap();
                if let Some(c) = s.lock().unwrap().as_ref() {
                    c.close(); // from inside the fetch: ends once the fetch returns
                }
                Ok(())
            }),
            Some(Box::new(move || {
                e.fetch_add(1, Ordering::SeqCst);
            })),
            &options,
        )
        .unwrap(),
    );
    *slot.lock().unwrap() = Some(client.clone());
    eventually("the source ended itself", || {
        ended.load(Ordering::SeqCst) == 1
    });
    assert!(client.select().is_err());
    slot.lock().unwrap().take();
}

#[test]
fn callbacks_that_hang_on_more_clients_than_pool_threads_delay_no_other_client() {
    // Ten sources and ten subscribers block until released: more than the shared pool's
    // threads. Another client must still get its first list and follow changes.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release = Arc::new(Mutex::new(release_rx));
    let hung = Arc::new(AtomicUsize::new(0));
    let block = {
        let (release, hung) = (release.clone(), hung.clone());
        move || {
            hung.fetch_add(1, Ordering::SeqCst);
            let _ = release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(20));
        }
    };
    let mut stuck = Vec::new();
    for _ in 0..10 {
        let fetch_block = block.clone();
        stuck.push(
            Client::with_source(
                Box::new(move |_: &mut ListBuilder| {
                    fetch_block();
                    Err("released".into())
                }),
                None,
                &Options::new(),
            )
            .unwrap(),
        );
        let subscriber_block = block.clone();
        let listed = Client::new("static://10.0.0.1:80", &Options::new()).unwrap();
        listed
            .subscribe(
                Box::new(move |_: &[easdirect::Instance]| subscriber_block()),
                None,
            )
            .unwrap();
        stuck.push(listed);
    }
    eventually("every callback is blocked", || {
        hung.load(Ordering::SeqCst) == 20
    });

    let port = Arc::new(AtomicUsize::new(1));
    let p = port.clone();
    let mut options = Options::new();
    options.set("refresh_interval_ms", "10").unwrap();
    let free = Client::with_source(
        Box::new(move |b: &mut ListBuilder| {
            let port = p.load(Ordering::SeqCst) as u16;
            b.add("10.0.0.2", port, 100).map_err(|e| e.to_string())
        }),
        None,
        &options,
    )
    .unwrap();
    free.wait_ready(Duration::from_secs(5)).unwrap();
    port.store(2, Ordering::SeqCst);
    eventually("the other client follows its source", || {
        free.select().is_ok_and(|i| i.port == 2)
    });
    drop(release_tx);
}
