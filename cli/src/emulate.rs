//! `easdirect emulate`: serve an emulated EAS discovery API.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use easdirect_emulator::{Emulator, Endpoint, Fault, Script};
use serde_json::Value;

use crate::common::{catch_stop_signals, parse_seconds, sleep_until, Failure};

#[derive(Args, Debug)]
pub struct EmulateArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// The service name.
    #[arg(long, value_name = "NAME", default_value = "svc")]
    pub service: String,

    /// List N made-up instances 10.0.x.y:50000 of weight 100 (default 3 when neither --file
    /// nor --backends is given).
    #[arg(long, value_name = "N", conflicts_with = "file")]
    pub instances: Option<u32>,

    /// List the items of this JSON file: an array of {"ip","port","weight"} (sent verbatim, so
    /// malformed items are possible), or a whole discovery answer.
    #[arg(long, value_name = "list.json")]
    pub file: Option<std::path::PathBuf>,

    /// Play this script (JSON, see the emulator's documentation) from startup.
    #[arg(long, value_name = "script.json")]
    pub script: Option<std::path::PathBuf>,

    /// Start N real local HTTP backends and list them (weight 100) under the service, after
    /// the other instances.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub backends: usize,

    /// Start with this discovery fault: none, status:CODE, html, truncated, invalid_json,
    /// wrong_shape, empty_list, hang, trickle, endless_chunked, oversize, redirect, reset,
    /// refuse.
    #[arg(long, value_name = "NAME")]
    pub fault: Option<String>,

    /// Stop after this many seconds (default: run until killed, Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
}

pub fn run(args: EmulateArgs) -> Result<ExitCode, Failure> {
    if args.service.is_empty() || args.service.contains(['/', '?', '#']) {
        return Err(Failure::Usage(format!(
            "--service {:?} must be non-empty without '/', '?' or '#'",
            args.service
        )));
    }
    if args.backends > 64 {
        return Err(Failure::Usage("--backends must be at most 64".into()));
    }
    let fault = match &args.fault {
        Some(name) => Some(
            name.parse::<Fault>()
                .map_err(|e| Failure::Usage(format!("--fault: {e}")))?,
        ),
        None => None,
    };
    let items = match &args.file {
        Some(path) => Some(read_items(path)?),
        None => None,
    };
    let script = match &args.script {
        Some(path) => {
            let v = read_json(path)?;
            Some(
                Script::from_json(&v)
                    .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?,
            )
        }
        None => None,
    };

    catch_stop_signals();
    let emu = Emulator::bind(args.listen)
        .map_err(|e| Failure::Runtime(format!("cannot listen on {}: {e}", args.listen)))?;
    let service = args.service.as_str();
    match (items, args.instances) {
        (Some(items), _) => emu.set_raw_items(service, items),
        (None, Some(n)) => emu.set_endpoints(service, made_up(n)),
        (None, None) if args.backends == 0 => emu.set_endpoints(service, made_up(3)),
        (None, None) => {}
    }
    let backend_ports = if args.backends > 0 {
        emu.add_backends(service, args.backends)
            .map_err(|e| Failure::Runtime(format!("cannot start backends: {e}")))?
    } else {
        Vec::new()
    };
    if let Some(f) = fault {
        emu.set_fault(f);
    }
    let _script = script.map(|s| emu.run_script(s));

    let endpoint = emu.endpoint();
    let count = emu.state()["services"][service]
        .as_array()
        .map_or(0, Vec::len);
    let mut out = String::new();
    out.push_str(&format!("listening {endpoint}\n"));
    out.push_str(&format!("target {}\n", emu.target(service)));
    out.push_str(&format!(
        "discovery http://{endpoint}/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/{service}\n"
    ));
    out.push_str(&format!("control http://{endpoint}/_emulator/state\n"));
    out.push_str(&format!("service {service}: {count} instance(s)\n"));
    if !backend_ports.is_empty() {
        let list: Vec<String> = backend_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        out.push_str(&format!("backends {}\n", list.join(",")));
    }
    out.push_str(&format!(
        "try: easdirect list {} (stop with Ctrl-C)\n",
        emu.target(service)
    ));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    drop(stdout);

    sleep_until(args.duration.map(|d| Instant::now() + d));
    drop(_script);
    emu.stop();
    Ok(ExitCode::SUCCESS)
}

/// `n` instances 10.0.x.y:50000 of weight 100.
fn made_up(n: u32) -> Vec<Endpoint> {
    (0..n)
        .map(|i| {
            let ip = format!("10.0.{}.{}", i / 250, i % 250 + 1);
            Endpoint::new(&ip, 50000, 100)
        })
        .collect()
}

fn read_json(path: &std::path::Path) -> Result<Value, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Runtime(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Failure::Usage(format!("{} is not JSON: {e}", path.display())))
}

/// The items of a list file: an array, or the array at `endpoints.items` of a discovery answer.
fn read_items(path: &std::path::Path) -> Result<Value, Failure> {
    let v = read_json(path)?;
    if v.is_array() {
        return Ok(v);
    }
    match v.pointer("/endpoints/items") {
        Some(items) if items.is_array() => Ok(items.clone()),
        _ => Err(Failure::Usage(format!(
            "{}: expected an array of items or a discovery answer with endpoints.items",
            path.display()
        ))),
    }
}
