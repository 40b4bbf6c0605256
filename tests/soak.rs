//! Churn soak: threads pick and report failures while the emulated service scales between 1 and
//! 200 instances, weights change and the upstream cycles through every fault mode. Bounded in
//! time: EASDIRECT_SOAK_SECS (default 60) seconds. Prints its figures for RELIABILITY.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use easdirect::internals::monotonic_ms;
use easdirect::{Client, Options};
use easdirect_emulator::{Emulator, Endpoint, Fault};

/// Counts the bytes the heap holds, so that a leak is told apart from allocator retention.
struct Counting;

static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_kib() -> u64 {
    LIVE_BYTES.load(Ordering::Relaxed) / 1024
}

/// Resident memory, after handing the allocator's free memory back to the system (glibc keeps
/// freed 16 MiB bodies in its per-thread arenas otherwise, which is not a leak).
fn rss_kib() -> u64 {
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A tiny deterministic generator, so that a failing run can be replayed by its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[test]
fn churn_soak_keeps_answers_valid_and_memory_flat() {
    let secs: u64 = std::env::var("EASDIRECT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed = 0x5eed_u64 ^ u64::from(std::process::id());
    println!("soak: {secs} s, seed {seed:#x}");

    let emu = Emulator::start().unwrap();
    emu.set_endpoints("svc", vec![Endpoint::new("10.0.0.1", 40000, 100)]);
    let mut o = Options::new();
    for (k, v) in [
        ("refresh_interval_ms", "10"),
        ("request_timeout_ms", "200"),
        ("ejection_base_ms", "30"),
        ("ejection_max_ms", "120"),
        ("max_ejection_percent", "50"),
    ] {
        o.set(k, v).unwrap();
    }
    let client = Arc::new(Client::new(&format!("eas://{}/svc", emu.endpoint()), &o).unwrap());
    client.wait_ready(Duration::from_secs(5)).unwrap();

    // Every (port, weight) the upstream has ever listed with a positive weight.
    let served: Arc<RwLock<HashSet<(u16, u32)>>> = Arc::default();
    served.write().unwrap().insert((40000, 100));
    let stop = Arc::new(AtomicBool::new(false));
    let picks = Arc::new(AtomicU64::new(0));
    let full_cycles_checked = Arc::new(AtomicU64::new(0));
    let ejection_checks = Arc::new(AtomicU64::new(0));

    // The RSS baseline is taken once every fault mode has been through (the allocator's arenas
    // and the emulator's buffers have grown by then); what grows after it is a leak.
    let mut rss_before = None;

    let mut threads = Vec::new();
    for t in 0..3u64 {
        let (client, served, stop, picks) =
            (client.clone(), served.clone(), stop.clone(), picks.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            while !stop.load(Ordering::Relaxed) {
                let inst = client
                    .select()
                    .expect("a list is known: select never fails");
                assert!(inst.weight > 0, "picked a weight-0 instance");
                assert!(
                    served.read().unwrap().contains(&(inst.port, inst.weight)),
                    "picked {}*{} which the upstream never listed",
                    inst.host_str(),
                    inst.weight
                );
                if rng.below(100) < 2 {
                    let _ = client.report_failure(inst.id);
                } else if rng.below(100) < 5 {
                    let _ = client.report_success(inst.id);
                }
                let mut out = inst;
                if client.select_into(&[inst.id], &mut out).is_ok() {
                    assert_ne!(out.id, inst.id, "an excluded id was returned");
                }
                picks.fetch_add(2, Ordering::Relaxed);
            }
        }));
    }

    // A checker: between changes, proportions are exact over a cycle, and an instance ejected
    // now is not picked (unless every candidate is ejected).
    {
        let (client, stop, cycles, ejections) = (
            client.clone(),
            stop.clone(),
            full_cycles_checked.clone(),
            ejection_checks.clone(),
        );
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(snap)) = client.snapshot() else {
                    continue;
                };
                let now = monotonic_ms();
                let ejected: HashSet<u64> = snap
                    .instances
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| snap.ejected_until[*i].load(Ordering::Acquire) > now + 20)
                    .map(|(_, inst)| inst.id)
                    .collect();
                let positive: Vec<_> = snap.instances.iter().filter(|i| i.weight > 0).collect();
                let len = snap.cycle.len().min(5_000);
                let mut counts: HashMap<u64, u32> = HashMap::new();
                let mut picked_ejected = None;
                for _ in 0..len {
                    let inst = client.select().unwrap();
                    *counts.entry(inst.id).or_default() += 1;
                    if ejected.contains(&inst.id) && picked_ejected.is_none() {
                        picked_ejected = Some((inst, monotonic_ms()));
                    }
                }
                let after = client.snapshot().unwrap().unwrap();
                if after.generation != snap.generation || monotonic_ms() > now + 15 {
                    continue; // the list may have changed, or the ejections may have ended
                }
                // Panic mode (every candidate ejected, so picks go on among them) is possible
                // when every instance had an ejection in force at the start, even one about to
                // end: then nothing is asserted.
                let in_force: HashSet<u64> = snap
                    .instances
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| snap.ejected_until[*i].load(Ordering::Relaxed) > now)
                    .map(|(_, inst)| inst.id)
                    .collect();
                let all_ejected = positive.iter().all(|i| in_force.contains(&i.id));
                if !all_ejected {
                    if let Some((inst, at)) = picked_ejected {
                        let i = snap.index_of(inst.id).unwrap();
                        panic!(
                            "{} was picked at {at} ms inside its ejection window (until {} ms, \
                             checked from {now} ms), generation {}, {} positive, {} in force",
                            inst.host_str(),
                            snap.ejected_until[i].load(Ordering::Relaxed),
                            snap.generation,
                            positive.len(),
                            in_force.len()
                        );
                    }
                    ejections.fetch_add(1, Ordering::Relaxed);
                }
                // Exact proportions only when no ejection was in force at any time of the check
                // (an ejection set meanwhile has a deadline after `now`).
                if snap
                    .ejected_until
                    .iter()
                    .all(|u| u.load(Ordering::Relaxed) <= now)
                    && len == snap.cycle.len()
                {
                    let g = positive.iter().fold(0, |g, i| gcd(g, i.weight));
                    let total: u32 = positive.iter().map(|i| i.weight / g).sum();
                    if total as usize == len {
                        for inst in &positive {
                            assert_eq!(counts.get(&inst.id).copied().unwrap_or(0), inst.weight / g);
                        }
                        cycles.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    // The upstream: scale 1..200, reweight, and every fault mode in turn.
    let faults = [
        Fault::Status(500),
        Fault::Html,
        Fault::Truncated,
        Fault::InvalidJson,
        Fault::WrongShape,
        Fault::EmptyList,
        Fault::Hang,
        Fault::Trickle,
        Fault::EndlessChunked,
        Fault::Oversize,
        Fault::Redirect,
        Fault::Reset,
        Fault::Refuse,
    ];
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut changes, mut fault_rounds) = (0u64, 0u64);
    let started = Instant::now();
    while Instant::now() < deadline {
        if rss_before.is_none()
            && fault_rounds >= 2 * faults.len() as u64
            && started.elapsed() * 3 >= deadline - started
        {
            rss_before = Some((rss_kib(), live_kib()));
        }
        if rng.below(4) == 0 {
            emu.set_fault(faults[(fault_rounds as usize) % faults.len()].clone());
            fault_rounds += 1;
            std::thread::sleep(Duration::from_millis(40));
            emu.set_fault(Fault::None);
        } else {
            let n = 1 + rng.below(200) as u16;
            let base = 40000 + (rng.below(4) as u16) * 50;
            let list: Vec<Endpoint> = (0..n)
                .map(|i| {
                    Endpoint::new(
                        "10.0.0.1",
                        base + i,
                        [100, 100, 200, 300, 0][rng.below(5) as usize],
                    )
                })
                .collect();
            {
                let mut s = served.write().unwrap();
                for e in &list {
                    let w = e.weight.unwrap_or(100.0) as u32;
                    if w > 0 {
                        s.insert((e.port, w));
                    }
                }
            }
            emu.set_endpoints("svc", list);
            changes += 1;
            std::thread::sleep(Duration::from_millis(15));
        }
    }
    stop.store(true, Ordering::Relaxed);
    emu.set_fault(Fault::None);
    for t in threads {
        t.join().unwrap();
    }
    let stats = client.stats().unwrap();
    // Give reclamation a moment, then compare memory.
    for _ in 0..100_000 {
        client.select().unwrap();
    }
    // Let connections the faults left open wind down.
    std::thread::sleep(Duration::from_millis(300));
    let (rss_after, live_after) = (rss_kib(), live_kib());
    let (rss_before, live_before) = rss_before.expect("the soak ran long enough for a baseline");
    println!(
        "soak: {} picks, {changes} list changes ({} published), {fault_rounds} fault rounds, \
         {} refreshes ok / {} failed, {} exact-cycle checks, {} ejection-window checks, \
         heap in use {live_before} KiB -> {live_after} KiB, RSS {rss_before} KiB -> {rss_after} KiB",
        picks.load(Ordering::Relaxed),
        stats.generation,
        stats.refresh_ok,
        stats.refresh_failed,
        full_cycles_checked.load(Ordering::Relaxed),
        ejection_checks.load(Ordering::Relaxed),
    );
    assert!(stats.generation > 10, "the list barely changed: {stats:?}");
    assert!(stats.refresh_failed > 0, "no fault was seen");
    // What the heap holds is what a leak would grow; RSS also carries the allocator's retention
    // of freed memory in its per-thread arenas, so it gets a wider bound.
    assert!(
        live_after < live_before + 2 * 1024,
        "heap in use grew from {live_before} KiB to {live_after} KiB"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}
