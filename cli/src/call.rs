//! `easdirect call`: one request through the call API: the core picks each attempt, decides
//! whether to retry, and learns from each answer (latency, load reports, back-offs).

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use easdirect::{Body, ErrorKind, Outcome};

use crate::common::{from_lib, ClientArgs, Failure};

#[derive(Args, Debug)]
pub struct CallArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// The path and query to request on the picked instance, e.g. `/api/predict/my_service`.
    #[arg(value_name = "PATH")]
    pub path: String,

    /// A request body; the method is then POST unless -X says otherwise.
    #[arg(short = 'd', long = "data", value_name = "DATA")]
    pub data: Option<String>,

    /// The request method (default GET, or POST with -d).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub method: Option<String>,

    /// A request header `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'")]
    pub headers: Vec<String>,

    /// An affinity key (a session or conversation id): the call picks by consistent hashing
    /// with bounded loads.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,

    /// Print each attempt on stderr: instance, outcome, time to response headers.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// How long to wait for the first instance list, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub timeout_ms: u64,

    /// How long one attempt may wait for response headers, in milliseconds: a hung instance
    /// costs one attempt, not the whole call.
    #[arg(long, value_name = "N", default_value_t = 60_000)]
    pub attempt_timeout_ms: u64,
}

/// What a failed attempt was, as the core sees it.
fn outcome_of(error: &ureq::Transport) -> Outcome {
    match error.kind() {
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => Outcome::ConnectFailed,
        _ => {
            let timed_out = std::error::Error::source(error)
                .and_then(|e| e.downcast_ref::<std::io::Error>())
                .is_some_and(|e| {
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                    )
                });
            if timed_out {
                Outcome::Timeout
            } else {
                Outcome::Reset
            }
        }
    }
}

pub fn run(args: CallArgs) -> Result<ExitCode, Failure> {
    if !args.path.starts_with('/') {
        return Err(Failure::Usage(format!(
            "PATH {:?} must start with /",
            args.path
        )));
    }
    let mut headers = Vec::new();
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            return Err(Failure::Usage(format!(
                "header {header:?} is not of the form 'Name: value'"
            )));
        };
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("endpoint-load-metrics-format"))
    {
        // Ask for the instance's load report: the core balances on it.
        headers.push(("endpoint-load-metrics-format".into(), "text".into()));
    }
    let method = args
        .method
        .clone()
        .unwrap_or_else(|| if args.data.is_some() { "POST" } else { "GET" }.into());
    let client = args.client.client()?;
    if let Err(e) = client.wait_ready(Duration::from_millis(args.timeout_ms)) {
        return Err(match from_lib(e) {
            Failure::Usage(m) | Failure::Runtime(m) => Failure::Runtime(m),
        });
    }
    let mut call = client
        .call(args.key.as_deref().map(str::as_bytes), 0)
        .map_err(|k| {
            Failure::Runtime(format!(
                "cannot start a call: {}",
                easdirect::Error::from(k)
            ))
        })?;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(args.attempt_timeout_ms))
        .redirects(0)
        .build();
    let mut last_failure = String::from("no attempt was made");
    loop {
        let instance = match call.next() {
            Ok(instance) => instance,
            Err(ErrorKind::NoInstance) => {
                return Err(Failure::Runtime(format!(
                    "no attempt got an answer after {} attempt(s); the last: {last_failure}",
                    call.attempts()
                )))
            }
            Err(e) => {
                return Err(Failure::Runtime(format!(
                    "call: {}",
                    easdirect::Error::from(e)
                )))
            }
        };
        let url = format!("http://{}{}", instance.host_str(), args.path);
        let mut request = agent.request(&method, &url);
        for (name, value) in &headers {
            request = request.set(name, value);
        }
        let started = Instant::now();
        let answer = match &args.data {
            Some(data) => request.send_bytes(data.as_bytes()),
            None => request.call(),
        };
        let took = started.elapsed();
        let response = match answer {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(t)) => {
                let outcome = outcome_of(&t);
                let retry = call.record(outcome, &[]).unwrap_or(false);
                last_failure = format!("{}: {outcome:?} ({})", instance.host_str(), t.kind());
                if args.verbose {
                    eprintln!(
                        "attempt {}: {} {outcome:?} after {:.1} ms{}",
                        call.attempts(),
                        instance.host_str(),
                        took.as_secs_f64() * 1e3,
                        if retry { ", retrying" } else { "" }
                    );
                }
                if retry {
                    continue;
                }
                return Err(Failure::Runtime(format!(
                    "no attempt got an answer after {} attempt(s); the last: {last_failure}",
                    call.attempts()
                )));
            }
        };
        let status = response.status();
        let read: Vec<(&str, String)> = ["endpoint-load-metrics", "retry-after"]
            .iter()
            .filter_map(|&n| response.header(n).map(|v| (n, v.to_owned())))
            .collect();
        let pairs: Vec<(&str, &str)> = read.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let retry = call
            .record(Outcome::Response(status), &pairs)
            .unwrap_or(false);
        if args.verbose {
            eprintln!(
                "attempt {}: {} HTTP {status} after {:.1} ms{}{}",
                call.attempts(),
                instance.host_str(),
                took.as_secs_f64() * 1e3,
                pairs
                    .iter()
                    .map(|(n, v)| format!(", {n}: {v}"))
                    .collect::<String>(),
                if retry { ", retrying" } else { "" }
            );
        }
        let mut body = Vec::new();
        let read_ok = response
            .into_reader()
            .take(64 * 1024 * 1024)
            .read_to_end(&mut body)
            .is_ok();
        if retry {
            let _ = call.finish(Body::Done);
            last_failure = format!("{}: HTTP {status}", instance.host_str());
            continue;
        }
        let _ = call.finish(if read_ok { Body::Done } else { Body::Broken });
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&body);
        let _ = out.flush();
        return Ok(if (200..300).contains(&status) && read_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
}
