//! `easdirect pick`: pick N times and print the distribution.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use easdirect::{Error, Instance};

use crate::common::{from_lib, ClientArgs, Failure};

#[derive(Args, Debug)]
pub struct PickArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// How many picks in all.
    #[arg(short = 'n', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,

    /// Threads to split the picks across (each walks the round-robin cycle on its own).
    #[arg(long, value_name = "T", default_value_t = 1)]
    pub threads: usize,

    /// How long to wait for the first list, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub timeout_ms: u64,
}

pub fn run(args: PickArgs) -> Result<ExitCode, Failure> {
    if args.threads == 0 || args.threads > 1024 {
        return Err(Failure::Usage("--threads must be 1-1024".into()));
    }
    let client = args.client.client()?;
    if let Err(e) = client.wait_ready(Duration::from_millis(args.timeout_ms)) {
        client.close();
        return Err(match from_lib(e) {
            Failure::Usage(m) | Failure::Runtime(m) => Failure::Runtime(m),
        });
    }
    let threads = args.threads as u64;
    type Outcome = Result<(HashMap<u64, u64>, Duration), easdirect::ErrorKind>;
    let results: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let n = args.count / threads + u64::from(t < args.count % threads);
                let client = &client;
                s.spawn(move || {
                    let started = Instant::now();
                    let mut counts = HashMap::new();
                    let mut out = Instance::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 1, 0);
                    for _ in 0..n {
                        client.select_into(&[], &mut out)?;
                        *counts.entry(out.id).or_insert(0u64) += 1;
                    }
                    Ok((counts, started.elapsed()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(easdirect::ErrorKind::Closed)))
            .collect()
    });
    let mut counts: HashMap<u64, u64> = HashMap::new();
    let mut busy = Duration::ZERO;
    for r in results {
        let (r, took) =
            r.map_err(|k| Failure::Runtime(format!("pick failed: {}", Error::from(k))))?;
        busy += took;
        for (id, n) in r {
            *counts.entry(id).or_insert(0) += n;
        }
    }
    let instances = client
        .instances()
        .map_err(|k| Failure::Runtime(Error::from(k).message))?;
    client.close();

    let total_weight: u64 = instances.iter().map(|i| u64::from(i.weight)).sum();
    let width = instances
        .iter()
        .map(|i| i.host_str().len())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:<width$}  {:>6}  {:>10}  {:>7}  {:>12}",
        "HOST", "WEIGHT", "PICKS", "SHARE", "WEIGHT SHARE"
    );
    for i in &instances {
        let n = counts.get(&i.id).copied().unwrap_or(0);
        println!(
            "{:<width$}  {:>6}  {:>10}  {:>6.2}%  {:>11.2}%",
            i.host_str(),
            i.weight,
            n,
            percent(n, args.count),
            percent(u64::from(i.weight), total_weight)
        );
    }
    // Time spent in the loop, counting (a hash map update) included.
    let per_pick = busy.as_nanos() as f64 / args.count.max(1) as f64;
    println!(
        "{} picks on {} thread{}, {per_pick:.0} ns per pick and count",
        args.count,
        threads,
        if threads == 1 { "" } else { "s" },
    );
    Ok(ExitCode::SUCCESS)
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}
