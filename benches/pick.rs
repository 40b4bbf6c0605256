//! Pick cost at 1 to 10,000 instances, on 1 and 2 threads (per-thread cost); pick cost at
//! 20,000 instances with none, half (one address block) and all of them ejected; the cost of a
//! failure report at 3 and 20,000 instances.
//! Run: `cargo bench --bench pick` (figures in BENCHMARKS.md).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use easdirect::{Client, Options};

fn client_with(n: usize) -> Client {
    let list: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "10.{}.{}.{}:8080*{}",
                i / 65536,
                (i / 256) % 256,
                i % 256,
                100 + (i % 3) * 50
            )
        })
        .collect();
    Client::new(&format!("static://{}", list.join(",")), &Options::new()).unwrap()
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for n in [1usize, 3, 10, 100, 1_000, 10_000] {
        let client = client_with(n);
        let mut out = client.select().unwrap();
        group.bench_with_input(BenchmarkId::new("1_thread", n), &n, |b, _| {
            b.iter(|| {
                client.select_into(&[], &mut out).unwrap();
                black_box(&out);
            })
        });
        let client = Arc::new(client);
        group.bench_with_input(BenchmarkId::new("2_threads_per_thread", n), &n, |b, _| {
            b.iter_custom(|iters| {
                let barrier = Arc::new(Barrier::new(2));
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        let (client, barrier) = (client.clone(), barrier.clone());
                        std::thread::spawn(move || {
                            let mut out = client.select().unwrap();
                            barrier.wait();
                            let start = Instant::now();
                            for _ in 0..iters {
                                client.select_into(&[], &mut out).unwrap();
                                black_box(&out);
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                let times: Vec<Duration> = workers.into_iter().map(|w| w.join().unwrap()).collect();
                // Per-thread cost: each thread did `iters` picks in its own elapsed time.
                times.iter().sum::<Duration>() / 2
            })
        });
    }
    group.finish();
}

/// A static client of `n` instances of equal weight, so that the cycle is the address order
/// and an address block is one block of the cycle.
fn equal_weights(n: usize, options: &[(&str, &str)]) -> Client {
    let list: Vec<String> = (0..n)
        .map(|i| format!("10.{}.{}.{}:8080", i / 65536, (i / 256) % 256, i % 256))
        .collect();
    let mut o = Options::new();
    for (key, value) in options {
        o.set(key, value).unwrap();
    }
    Client::new(&format!("static://{}", list.join(",")), &o).unwrap()
}

/// Every failure ejects at once, for a day, whatever share is already out.
const EJECT_AT_ONCE: [(&str, &str); 4] = [
    ("max_ejection_percent", "100"),
    ("failures_before_ejection", "1"),
    ("ejection_base_ms", "86400000"),
    ("ejection_max_ms", "86400000"),
];

fn ejected_picks(c: &mut Criterion) {
    let n = 20_000;
    let mut group = c.benchmark_group("select_20000");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for share in [0usize, 50, 100] {
        let client = equal_weights(n, &EJECT_AT_ONCE);
        // This thread's cursor now rests just after `first`; the ejected block starts there,
        // so that a retry (which does not move the cursor) starts inside it: the worst case.
        let first = client.select().unwrap();
        let all = client.instances().unwrap();
        let at = all.iter().position(|i| i.id == first.id).unwrap();
        let ejected = n * share / 100;
        for k in 0..ejected {
            client.report_failure(all[(at + 1 + k) % n].id).unwrap();
        }
        assert_eq!(client.stats().unwrap().ejected as usize, ejected);
        let mut out = first;
        let exclude = [first.id];
        group.bench_with_input(
            BenchmarkId::new("select_excluding_1_ejected_pct", share),
            &share,
            |b, _| {
                b.iter(|| {
                    client.select_into(&exclude, &mut out).unwrap();
                    black_box(&out);
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("select_ejected_pct", share),
            &share,
            |b, _| {
                b.iter(|| {
                    client.select_into(&[], &mut out).unwrap();
                    black_box(&out);
                })
            },
        );
    }
    group.finish();
}

fn failure_reports(c: &mut Criterion) {
    let mut group = c.benchmark_group("report_failure");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for n in [3usize, 20_000] {
        // max_ejection_percent 0: every report is counted (and the share in force checked)
        // but ejects nothing, so that reports can repeat for ever.
        let client = equal_weights(n, &[("max_ejection_percent", "0")]);
        let ids: Vec<u64> = client.instances().unwrap().iter().map(|i| i.id).collect();
        for &id in &ids {
            client.report_failure(id).unwrap(); // the ejector knows every instance
        }
        let mut k = 0;
        group.bench_with_input(BenchmarkId::new("not_ejecting", n), &n, |b, _| {
            b.iter(|| {
                client.report_failure(ids[k]).unwrap();
                k = if k + 1 == n { 0 } else { k + 1 };
            })
        });
    }
    // Each report ejects another instance, until all 20,000 are out; then a fresh client
    // (not timed).
    let n = 20_000;
    group.bench_with_input(BenchmarkId::new("ejecting", n), &n, |b, _| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let client = equal_weights(n, &EJECT_AT_ONCE);
                let ids: Vec<u64> = client.instances().unwrap().iter().map(|i| i.id).collect();
                let batch = left.min(n as u64) as usize;
                let start = Instant::now();
                for &id in &ids[..batch] {
                    client.report_failure(id).unwrap();
                }
                spent += start.elapsed();
                left -= batch as u64;
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, picks, ejected_picks, failure_reports);
criterion_main!(benches);
