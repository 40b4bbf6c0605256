//! A client's stats as Prometheus text (exposition format 0.0.4), for
//! `eas_client_metrics_text`. The metric names are stable and listed in the README; every
//! sample carries the printable target, per-instance samples also the instance's `host:port`.

use std::fmt::Write as _;

use crate::client::Stats;
use crate::load::InstanceStats;

/// What a client's metrics are made of (read in one go by the client).
pub(crate) struct ClientFigures<'a> {
    pub target: &'a str,
    pub stats: Stats,
    pub pushing: bool,
    pub malformed_load_reports: u64,
    pub log_lines_dropped: u64,
    /// Each instance of the current list: its `host:port` and stats.
    pub instances: Vec<(&'a str, InstanceStats)>,
    /// Unix ms now, to tell which instances are held out of picks.
    pub now_unix_ms: u64,
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const fn family(name: &'static str, kind: &'static str, help: &'static str) -> Family {
    Family { name, kind, help }
}

const CLIENT: [Family; 8] = [
    family(
        "easdirect_list_generation",
        "gauge",
        "Generation of the instance list in use (0 before the first).",
    ),
    family(
        "easdirect_instances",
        "gauge",
        "Instances in the list in use.",
    ),
    family(
        "easdirect_instances_ejected",
        "gauge",
        "Instances ejected now (back-offs not counted).",
    ),
    family(
        "easdirect_discovery_fetches_total",
        "counter",
        "Discovery fetches and pushes, by result (ok or failed).",
    ),
    family(
        "easdirect_discovery_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful fetch or push (0 before one).",
    ),
    family(
        "easdirect_push_connected",
        "gauge",
        "1 while a push stream delivers the list, else 0 (polling).",
    ),
    family(
        "easdirect_load_reports_malformed_total",
        "counter",
        "Load reports ignored, in whole or in part, as malformed.",
    ),
    family(
        "easdirect_log_lines_dropped_total",
        "counter",
        "Log lines dropped by the rate limit or a full queue.",
    ),
];

const INSTANCE: [Family; 10] = [
    family(
        "easdirect_instance_weight",
        "gauge",
        "The instance's weight from discovery.",
    ),
    family(
        "easdirect_instance_attempts_total",
        "counter",
        "Call attempts sent to the instance since it joined the list.",
    ),
    family(
        "easdirect_instance_failures_total",
        "counter",
        "Failures the ejection state saw: failed attempts and reported failures.",
    ),
    family(
        "easdirect_instance_in_flight",
        "gauge",
        "Attempts of this client in flight to the instance.",
    ),
    family(
        "easdirect_instance_latency_ewma_seconds",
        "gauge",
        "Peak EWMA of the time to response headers (0 before a sample).",
    ),
    family(
        "easdirect_instance_held_out",
        "gauge",
        "1 while the instance is ejected or backing off, else 0.",
    ),
    family(
        "easdirect_instance_held_out_until_timestamp_seconds",
        "gauge",
        "Unix time the hold-out ends (0 when none).",
    ),
    family(
        "easdirect_instance_reported_running",
        "gauge",
        "Requests running, from the instance's last load report.",
    ),
    family(
        "easdirect_instance_reported_waiting",
        "gauge",
        "Requests waiting, from the instance's last load report.",
    ),
    family(
        "easdirect_instance_reported_kv_cache_usage_ratio",
        "gauge",
        "KV-cache use 0-1, from the instance's last load report.",
    ),
];

/// The text: HELP and TYPE once per family, then its samples.
pub(crate) fn text(f: &ClientFigures<'_>) -> String {
    let target = escape_label(f.target);
    let mut out = String::with_capacity(2048 + f.instances.len() * 1024);
    let s = &f.stats;
    let client_values: [&[(Option<&str>, f64)]; 8] = [
        &[(None, s.generation as f64)],
        &[(None, f64::from(s.instances))],
        &[(None, f64::from(s.ejected))],
        &[
            (Some("result=\"ok\""), s.refresh_ok as f64),
            (Some("result=\"failed\""), s.refresh_failed as f64),
        ],
        &[(None, s.last_ok_unix_ms as f64 / 1000.0)],
        &[(None, if f.pushing { 1.0 } else { 0.0 })],
        &[(None, f.malformed_load_reports as f64)],
        &[(None, f.log_lines_dropped as f64)],
    ];
    for (fam, values) in CLIENT.iter().zip(client_values) {
        head(&mut out, fam);
        for (extra, v) in values {
            let extra = extra.map(|e| format!(",{e}")).unwrap_or_default();
            sample(
                &mut out,
                fam.name,
                &format!("target=\"{target}\"{extra}"),
                *v,
            );
        }
    }
    let labels: Vec<String> = f
        .instances
        .iter()
        .map(|(host, _)| format!("target=\"{target}\",instance=\"{}\"", escape_label(host)))
        .collect();
    for (k, fam) in INSTANCE.iter().enumerate() {
        if f.instances.is_empty() {
            break;
        }
        head(&mut out, fam);
        for ((_, st), labels) in f.instances.iter().zip(&labels) {
            let held = st.ejected_until_unix_ms > f.now_unix_ms;
            let v = match k {
                0 => f64::from(st.weight),
                1 => st.attempts as f64,
                2 => st.failures as f64,
                3 => f64::from(st.in_flight),
                4 => f64::from(st.latency_ewma_us) / 1e6,
                5 => f64::from(u8::from(held)),
                6 if held => st.ejected_until_unix_ms as f64 / 1000.0,
                6 => 0.0,
                7 => f64::from(st.reported_running),
                8 => f64::from(st.reported_waiting),
                _ => f64::from(st.reported_kv_permille) / 1000.0,
            };
            sample(&mut out, fam.name, labels, v);
        }
    }
    out
}

fn head(out: &mut String, fam: &Family) {
    let _ = writeln!(out, "# HELP {} {}", fam.name, fam.help);
    let _ = writeln!(out, "# TYPE {} {}", fam.name, fam.kind);
}

fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    // Integers print without a fraction; every value here is finite.
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

/// A label value as the text format writes it: `\`, `"` and newlines escaped.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes() {
        let st = InstanceStats {
            id: 1,
            in_flight: 2,
            reported_waiting: 3,
            attempts: 10,
            failures: 1,
            latency_ewma_us: 25_000,
            reported_kv_permille: 400,
            ejected_until_unix_ms: 2_000_500,
            report_unix_ms: 1,
            weight: 100,
            reported_running: 4,
        };
        let t = text(&ClientFigures {
            target: "eas://h/s\"x\\",
            stats: Stats {
                generation: 3,
                refresh_ok: 5,
                refresh_failed: 1,
                last_ok_unix_ms: 1_500,
                instances: 1,
                ejected: 0,
            },
            pushing: false,
            malformed_load_reports: 0,
            log_lines_dropped: 0,
            instances: vec![("10.0.0.1:80", st)],
            now_unix_ms: 2_000_000,
        });
        let l = r#"target="eas://h/s\"x\\""#;
        assert!(t.contains(&format!("easdirect_list_generation{{{l}}} 3\n")));
        assert!(t.contains(&format!(
            "easdirect_discovery_fetches_total{{{l},result=\"failed\"}} 1\n"
        )));
        assert!(t.contains(&format!(
            "easdirect_discovery_last_success_timestamp_seconds{{{l}}} 1.5\n"
        )));
        let i = format!("{l},instance=\"10.0.0.1:80\"");
        assert!(t.contains(&format!(
            "easdirect_instance_latency_ewma_seconds{{{i}}} 0.025\n"
        )));
        assert!(t.contains(&format!("easdirect_instance_held_out{{{i}}} 1\n")));
        assert!(t.contains(&format!(
            "easdirect_instance_reported_kv_cache_usage_ratio{{{i}}} 0.4\n"
        )));
        assert_eq!(t.matches("# TYPE ").count(), 18);
        assert!(t.ends_with('\n'));
    }
}
