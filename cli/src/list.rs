//! `easdirect list`: wait for the instance list and print it.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::common::{from_lib, hex_id, ClientArgs, Failure};

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// How long to wait for the first list, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub timeout_ms: u64,

    /// Print a JSON array of {"host","ip","port","weight","id"} instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ListArgs) -> Result<ExitCode, Failure> {
    let client = args.client.client()?;
    let ready = client.wait_ready(Duration::from_millis(args.timeout_ms));
    if let Err(e) = ready {
        client.close();
        return Err(match from_lib(e) {
            Failure::Usage(m) | Failure::Runtime(m) => Failure::Runtime(m),
        });
    }
    let instances = client
        .instances()
        .map_err(|k| Failure::Runtime(easdirect::Error::from(k).message))?;
    client.close();
    if args.json {
        let items: Vec<_> = instances
            .iter()
            .map(|i| {
                json!({
                    "host": i.host_str(),
                    "ip": i.ip_str(),
                    "port": i.port,
                    "weight": i.weight,
                    "id": hex_id(i.id),
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&items)
            .map_err(|e| Failure::Runtime(format!("cannot write JSON: {e}")))?;
        println!("{text}");
    } else {
        let width = instances
            .iter()
            .map(|i| i.host_str().len())
            .max()
            .unwrap_or(0)
            .max(4);
        println!("{:<width$}  {:>6}  ID", "HOST", "WEIGHT");
        for i in &instances {
            println!(
                "{:<width$}  {:>6}  {}",
                i.host_str(),
                i.weight,
                hex_id(i.id)
            );
        }
        println!(
            "{} instance{} of {}",
            instances.len(),
            if instances.len() == 1 { "" } else { "s" },
            client.target()
        );
    }
    Ok(ExitCode::SUCCESS)
}
