//! `easdirect watch`: print each change of the instance list, and the library's log lines
//! (failed fetches, recoveries, ejections, push stream changes) with their level.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use easdirect::{Instance, Level, LogSink};

use crate::common::{
    catch_stop_signals, hex_id, parse_seconds, sleep_until, utc_timestamp, ClientArgs, Failure,
};

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
}

/// host -> (weight, id)
type List = BTreeMap<String, (u32, u64)>;

pub fn run(args: WatchArgs) -> Result<ExitCode, Failure> {
    catch_stop_signals();
    let mut options = args.client.options()?;
    options.log = Some(LogSink::new(
        Box::new(|level, line| {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{} {} {line}", now(), level.as_str());
            let _ = stdout.flush();
        }),
        None,
        Level::Info,
    ));
    let client = args.client.client_with(&options)?;
    println!("{} watching {}", now(), client.target());

    let previous: Arc<Mutex<Option<List>>> = Arc::new(Mutex::new(None));
    let seen = previous.clone();
    let on_change = move |instances: &[Instance]| {
        let list: List = instances
            .iter()
            .map(|i| (i.host_str().to_string(), (i.weight, i.id)))
            .collect();
        let mut prev = seen.lock().unwrap_or_else(|p| p.into_inner());
        print_change(prev.as_ref(), &list);
        *prev = Some(list);
    };
    let subscription = client.subscribe(Box::new(on_change), None);
    if let Err(kind) = subscription {
        return Err(Failure::Runtime(easdirect::Error::from(kind).message));
    }

    // Failures, recoveries, ejections and the rest come as the library's log lines.
    let deadline = args.duration.map(|d| Instant::now() + d);
    loop {
        let tick = Instant::now() + Duration::from_millis(100);
        let interrupted = sleep_until(Some(deadline.map_or(tick, |d| d.min(tick))));
        if client.stats().is_err() {
            break;
        }
        if interrupted || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    client.close();
    Ok(ExitCode::SUCCESS)
}

fn now() -> String {
    utc_timestamp(SystemTime::now())
}

fn print_change(prev: Option<&List>, list: &List) {
    let ts = now();
    let mut out = String::new();
    let empty = List::new();
    let before = prev.unwrap_or(&empty);
    for (host, (weight, id)) in list {
        match before.get(host) {
            None => out.push_str(&format!(
                "{ts} + {host} weight {weight} id {}\n",
                hex_id(*id)
            )),
            Some((old, _)) if old != weight => {
                out.push_str(&format!("{ts} ~ {host} weight {old} -> {weight}\n"))
            }
            Some(_) => {}
        }
    }
    for host in before.keys() {
        if !list.contains_key(host) {
            out.push_str(&format!("{ts} - {host}\n"));
        }
    }
    let total: u64 = list.values().map(|(w, _)| u64::from(*w)).sum();
    out.push_str(&format!(
        "{ts} = {} instance{} (total weight {total}){}\n",
        list.len(),
        if list.len() == 1 { "" } else { "s" },
        if prev.is_none() { ", first list" } else { "" }
    ));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
