//! `easdirect stats`: wait for the instance list and print the client's metrics as Prometheus
//! text (exposition format 0.0.4).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::common::{from_lib, ClientArgs, Failure};

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// How long to wait for the first list, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub timeout_ms: u64,
}

pub fn run(args: StatsArgs) -> Result<ExitCode, Failure> {
    let client = args.client.client()?;
    if let Err(e) = client.wait_ready(Duration::from_millis(args.timeout_ms)) {
        client.close();
        return Err(match from_lib(e) {
            Failure::Usage(m) | Failure::Runtime(m) => Failure::Runtime(m),
        });
    }
    let text = client
        .metrics_text()
        .map_err(|k| Failure::Runtime(easdirect::Error::from(k).message))?;
    client.close();
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    Ok(ExitCode::SUCCESS)
}
