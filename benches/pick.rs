//! Pick cost at 1 to 10,000 instances, on 1 and 2 threads (per-thread cost).
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

criterion_group!(benches, picks);
criterion_main!(benches);
