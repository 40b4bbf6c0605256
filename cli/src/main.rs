//! `easdirect`: list, watch and pick instances of a service through libeasdirect, run an EAS
//! discovery emulator, or watch the library at work in a scripted demo.
//!
//! Exit status: 0 on success, 1 when the work failed (no instance list in time, the emulator
//! could not start, ...), 2 for a usage error (bad argument, target or `-o` option), 130 when a
//! demo is interrupted.

mod call;
mod common;
mod demo;
mod emulate;
mod list;
mod pick;
mod stats;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Client-side discovery and load balancing for PAI-EAS services, from the command line.
///
/// TARGET is a libeasdirect target: `eas://HOST[:PORT]/SERVICE` (the EAS discovery API over
/// HTTP), `eas+https://...`, or `static://IP:PORT[*WEIGHT],...`. Options go as
/// `-o key=value` (repeatable) or as query parameters of the target: refresh_interval_ms,
/// request_timeout_ms, failures_before_ejection, ejection_base_ms, ejection_max_ms,
/// max_ejection_percent, tls_ca_file, snapshot_file, discovery_path.
///
/// Start with `easdirect demo`: it needs no arguments.
#[derive(Parser, Debug)]
#[command(name = "easdirect", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Wait for the instance list of TARGET and print it (host, weight, id).
    ///
    /// Exits 1, with the last discovery error (it names the URL and the HTTP status), when no
    /// list arrives within --timeout-ms.
    List(list::ListArgs),
    /// Print each change of the instance list of TARGET as it happens, until Ctrl-C.
    ///
    /// Each change prints one line per added (+), removed (-) or reweighted (~) instance and
    /// the new count; the library's log lines come too, with their level (`warn discovery
    /// failed, keeping the last list: ...`, `info discovery recovered ...`, ejections).
    Watch(watch::WatchArgs),
    /// Wait for the instance list of TARGET and print the client's metrics (Prometheus text).
    ///
    /// The client's figures (list generation, fetches, push) and each instance's (weight,
    /// attempts, failures, in flight, latency EWMA, held out, reported load), every sample
    /// labelled by target and instance; the names are listed in the README.
    Stats(stats::StatsArgs),
    /// Pick N instances of TARGET and print how the picks spread over the instances.
    ///
    /// Over whole round-robin cycles, each instance's share of picks equals its share of the
    /// total weight: with one thread, `-n` a multiple of the sum of the weights gives exact
    /// counts.
    Pick(pick::PickArgs),
    /// Send one request to TARGET's service through the call API and print the answer's body.
    ///
    /// The core picks each attempt (least_request by default, or by affinity with --key),
    /// decides whether to retry on another instance (a 5xx, a refused connection, a reset, a
    /// timeout; at most max_attempts), and learns from each answer: its latency, its
    /// `endpoint-load-metrics` load report (asked for with `endpoint-load-metrics-format: text`
    /// unless -H gives that header), a 429's or 503's Retry-After. With -v each attempt is
    /// printed on stderr. Exits 1 when the last answer is not 2xx or no attempt got one.
    Call(call::CallArgs),
    /// Serve an emulated EAS discovery API on loopback, until killed, Ctrl-C or --duration.
    ///
    /// The first line printed is `listening 127.0.0.1:PORT`; the following ones give the
    /// target, the control API and the backends. Without --instances, --file or --backends,
    /// the service has 3 instances.
    ///
    /// Control API on the same port (JSON bodies; see the emulator crate's documentation):
    /// GET /_emulator/state; PUT|DELETE /_emulator/services/{service} (an array of items);
    /// PUT /_emulator/fault {"fault":NAME,"status":503}; PUT /_emulator/paths
    /// {"paths":"both"|"documented_only"|"new_only"}; POST /_emulator/backends
    /// {"service":S,"count":N}; PUT /_emulator/backends/{port} {"mode":"ok"|"status"|"hang"|"dead"};
    /// GET /_emulator/backends; POST|DELETE /_emulator/script.
    Emulate(emulate::EmulateArgs),
    /// Watch the library at work in a scripted story against a built-in emulator
    ///
    /// The story: weighted picks over 3 instances, a scale up to 5, a failing instance being
    /// ejected, a misbehaving discovery service, a scale down to 2. It needs no arguments and ends by itself after --duration seconds. On a terminal the
    /// display updates live; with --plain, or when the output is not a terminal, it prints
    /// plain lines (one status line per second).
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    common::restore_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List(args) => list::run(args),
        Command::Watch(args) => watch::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Pick(args) => pick::run(args),
        Command::Call(args) => call::run(args),
        Command::Emulate(args) => emulate::run(args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("easdirect: {}", failure.message());
            ExitCode::from(failure.exit_code())
        }
    }
}
