//! Nacos against EAS on the same snapshot path, and how soon a registration is picked.
//! Run: `make bench-nacos` (needs rnacos; `make tools` installs it). Plain program: prints a
//! table of medians.

use std::hint::black_box;
use std::time::{Duration, Instant};

use easdirect::{Client, Options};
use easdirect_emulator::{Emulator, Endpoint};

#[path = "../tests/support/rnacos.rs"]
mod rnacos;
use rnacos::{Registry, Rnacos};

const N: u16 = 100;
const PICKS: u32 = 2_000_000;
const RUNS: usize = 9;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ns_per_pick(c: &Client) -> f64 {
    let mut out = c.select().unwrap();
    median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..PICKS {
                    c.select_into(&[], &mut out).unwrap();
                    black_box(&out);
                }
                start.elapsed().as_nanos() as f64 / f64::from(PICKS)
            })
            .collect(),
    )
}

fn options(refresh_ms: u32) -> Options {
    let mut o = Options::new();
    o.set("refresh_interval_ms", &refresh_ms.to_string())
        .unwrap();
    o
}

fn main() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints(
        "svc",
        (0..N)
            .map(|i| Endpoint::new("127.0.0.1", 20_000 + i, 100))
            .collect(),
    );
    let server = Rnacos::start();
    let reg = Registry::new("svc", &[&server]);
    for i in 0..N {
        reg.register(20_000 + i, 1.0);
    }
    let eas = Client::new(&format!("eas://{}/svc", emu.endpoint()), &options(1000)).unwrap();
    let nacos = Client::new(&format!("nacos://{}/svc", server.addr()), &options(1000)).unwrap();
    eas.wait_ready(Duration::from_secs(10)).unwrap();
    nacos.wait_ready(Duration::from_secs(10)).unwrap();
    while nacos.instances().unwrap().len() < usize::from(N) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (e, n) = (ns_per_pick(&eas), ns_per_pick(&nacos));
    println!("select, {N} instances, 1 thread, median of {RUNS} x {PICKS} picks:");
    println!("  eas://   {e:6.2} ns/pick");
    println!("  nacos:// {n:6.2} ns/pick   (nacos/eas = {:.2})", n / e);

    const ROUNDS: u16 = 10;
    println!("registration in rnacos -> first pick of the new instance (median of {ROUNDS}):");
    for refresh_ms in [100u32, 1000] {
        let c = Client::new(
            &format!("nacos://{}/svc", server.addr()),
            &options(refresh_ms),
        )
        .unwrap();
        c.wait_ready(Duration::from_secs(10)).unwrap();
        let mut samples = Vec::new();
        for round in 0..ROUNDS {
            let port = 30_000 + round + (refresh_ms as u16 % 7) * 100;
            // A round starts just after the client published (it saw the last one at once):
            // register at evenly spread points of the refresh cycle, not always at its start.
            std::thread::sleep(Duration::from_millis(
                u64::from(refresh_ms) * u64::from(round) / u64::from(ROUNDS),
            ));
            let start = Instant::now();
            reg.register(port, 1000.0); // heavy, so that it is picked as soon as it is known
            loop {
                if c.select().unwrap().port == port {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
            reg.deregister(port);
        }
        println!(
            "  refresh_interval_ms={refresh_ms:<5} median {:7.1} ms, max {:7.1} ms",
            median(samples.clone()),
            samples.iter().cloned().fold(0.0, f64::max)
        );
    }
}
