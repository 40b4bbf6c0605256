//! What a list change costs: building a snapshot (the pick cycle and its tables) of 200,000
//! instances with 1, 100 and 2,000 distinct weights, and the pick cost at 200,000 instances
//! beside 3 in the same run.
//! Run: `cargo bench --bench publish` (figures in BENCHMARKS.md).

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use easdirect::Snapshot;
use easdirect::{Client, Instance, Options};

const N: usize = 200_000;

fn address(i: usize) -> String {
    format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)
}

/// The weight of instance `i` for a list with `distinct` distinct weights: the first
/// `distinct` instances get 1..=distinct and the rest share one of those, chosen so that the
/// cycle is about 3 million entries (near the cap of 16 per instance) and no scaling merges
/// weights. `spread`: Nacos-like float weights x1000 (1.000-2.999) on every instance, which
/// the cap then scales down.
fn weight(i: usize, distinct: usize, spread: bool) -> u32 {
    match (spread, distinct) {
        (true, _) => 1_000 + (i % distinct) as u32,
        (false, 1) => 15,
        (false, _) if i < distinct => 1 + i as u32,
        (false, 100) => 15,
        (false, _) => 6,
    }
}

fn list(distinct: usize, spread: bool) -> Vec<Instance> {
    (0..N)
        .map(|i| {
            Instance::new(
                address(i).parse().unwrap(),
                8080,
                weight(i, distinct, spread),
            )
        })
        .collect()
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_200000");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for (name, distinct, spread) in [
        ("distinct_1", 1, false),
        ("distinct_100", 100, false),
        ("distinct_2000", 2_000, false),
        ("distinct_2000_spread_scaled", 2_000, true),
    ] {
        let instances = list(distinct, spread);
        let snapshot = Snapshot::new(1, instances.clone());
        let seen: HashSet<u32> = snapshot
            .cycle
            .iter()
            .map(|&i| instances[i as usize].weight)
            .collect();
        eprintln!(
            "{name}: {} instances, {} distinct weights listed, cycle of {} entries",
            instances.len(),
            seen.len(),
            snapshot.cycle.len()
        );
        group.bench_function(BenchmarkId::new("snapshot_new", name), |b| {
            b.iter_batched(
                || instances.clone(),
                |instances| black_box(Snapshot::new(1, instances)),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_large");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    // Weights 100/150/200 interleave the whole address range in the cycle; equal weights make
    // the cycle the address order, so that consecutive picks read neighbouring instances.
    for (name, n, weights) in [
        ("1_thread", 3usize, [100, 150, 200]),
        ("1_thread", N, [100, 150, 200]),
        ("1_thread_equal_weights", N, [100, 100, 100]),
    ] {
        let list: Vec<String> = (0..n)
            .map(|i| format!("{}:8080*{}", address(i), weights[i % 3]))
            .collect();
        let client = Client::new(&format!("static://{}", list.join(",")), &Options::new()).unwrap();
        let mut out = client.select().unwrap();
        group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter(|| {
                client.select_into(&[], &mut out).unwrap();
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, publish, picks);
criterion_main!(benches);
