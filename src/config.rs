//! Option keys: what each means, which sources take it, how its value is checked.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::Error;
use crate::source::nacos::ServerListProvider;

/// Which discovery source a target names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Eas,
    Nacos,
    Static,
    Dns,
    /// The caller's own fetch function.
    Callback,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Eas => "eas",
            SourceKind::Nacos => "nacos",
            SourceKind::Static => "static",
            SourceKind::Dns => "dns",
            SourceKind::Callback => "callback",
        }
    }
}

const ALL: &[SourceKind] = &[
    SourceKind::Eas,
    SourceKind::Nacos,
    SourceKind::Static,
    SourceKind::Dns,
    SourceKind::Callback,
];
const HTTPS_SOURCES: &[SourceKind] = &[SourceKind::Eas, SourceKind::Nacos];

#[derive(Clone, Copy)]
enum Check {
    /// An unsigned integer within [min, max].
    Integer { min: u64, max: u64 },
    /// A non-empty string.
    Text,
    /// A path template that starts with `/` and contains `{service}`.
    PathTemplate,
    /// A decimal number within [min, max] (`1.25`, `2`).
    Decimal { min: f64, max: f64 },
    /// One of these words.
    Choice(&'static [&'static str]),
}

struct KeySpec {
    key: &'static str,
    sources: &'static [SourceKind],
    check: Check,
    secret: bool,
}

#[rustfmt::skip]
const KEYS: &[KeySpec] = &[
    KeySpec { key: "refresh_interval_ms", sources: ALL, check: Check::Integer { min: 10, max: 86_400_000 }, secret: false },
    KeySpec { key: "request_timeout_ms", sources: ALL, check: Check::Integer { min: 1, max: 3_600_000 }, secret: false },
    KeySpec { key: "failures_before_ejection", sources: ALL, check: Check::Integer { min: 1, max: 1_000_000 }, secret: false },
    KeySpec { key: "ejection_base_ms", sources: ALL, check: Check::Integer { min: 1, max: 86_400_000 }, secret: false },
    KeySpec { key: "ejection_max_ms", sources: ALL, check: Check::Integer { min: 1, max: 86_400_000 }, secret: false },
    KeySpec { key: "max_ejection_percent", sources: ALL, check: Check::Integer { min: 0, max: 100 }, secret: false },
    KeySpec { key: "tls_ca_file", sources: HTTPS_SOURCES, check: Check::Text, secret: false },
    KeySpec { key: "snapshot_file", sources: ALL, check: Check::Text, secret: false },
    KeySpec { key: "lb_policy", sources: ALL, check: Check::Choice(LB_POLICIES), secret: false },
    KeySpec { key: "max_attempts", sources: ALL, check: Check::Integer { min: 1, max: 1_000 }, secret: false },
    KeySpec { key: "affinity_load_factor", sources: ALL, check: Check::Decimal { min: 1.0, max: 1_000_000.0 }, secret: false },
    KeySpec { key: "ewma_decay_ms", sources: ALL, check: Check::Integer { min: 1, max: 86_400_000 }, secret: false },
    KeySpec { key: "load_report_ttl_ms", sources: ALL, check: Check::Integer { min: 1, max: 86_400_000 }, secret: false },
    KeySpec { key: "discovery_path", sources: &[SourceKind::Eas], check: Check::PathTemplate, secret: false },
    KeySpec { key: "dns_server", sources: &[SourceKind::Dns], check: Check::Text, secret: false },
    KeySpec { key: "namespace", sources: &[SourceKind::Nacos], check: Check::Text, secret: false },
    KeySpec { key: "group", sources: &[SourceKind::Nacos], check: Check::Text, secret: false },
    KeySpec { key: "cluster", sources: &[SourceKind::Nacos], check: Check::Text, secret: false },
    KeySpec { key: "username", sources: &[SourceKind::Nacos], check: Check::Text, secret: false },
    KeySpec { key: "password", sources: &[SourceKind::Nacos], check: Check::Text, secret: true },
    KeySpec { key: "access_key", sources: &[SourceKind::Nacos], check: Check::Text, secret: false },
    KeySpec { key: "secret_key", sources: &[SourceKind::Nacos], check: Check::Text, secret: true },
    KeySpec { key: "context_path", sources: &[SourceKind::Nacos], check: Check::Text, secret: false },
    KeySpec { key: "nacos_transport", sources: &[SourceKind::Nacos], check: Check::Choice(NACOS_TRANSPORTS), secret: false },
    KeySpec { key: "grpc_port", sources: &[SourceKind::Nacos], check: Check::Integer { min: 1, max: 65_535 }, secret: false },
];

/// The values of `nacos_transport`, the default first.
const NACOS_TRANSPORTS: &[&str] = &["auto", "grpc", "http"];

/// The values of `lb_policy`, the default first.
const LB_POLICIES: &[&str] = &["least_request", "peak_ewma", "round_robin"];

fn spec(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|s| s.key == key)
}

/// Whether `key` holds a secret that must never be printed.
pub fn is_secret(key: &str) -> bool {
    spec(key).is_some_and(|s| s.secret)
}

/// Checks one key and value, with a message that names the key (and the value unless secret).
pub fn check_option(key: &str, value: &str) -> Result<(), Error> {
    let Some(spec) = spec(key) else {
        return Err(Error::invalid(format!("unknown option key \"{key}\"")));
    };
    let shown = if spec.secret { "(secret)" } else { value };
    // Text options go into URLs, paths and messages: a line break there would forge a line of
    // a log (secrets are never printed, so they may hold anything).
    if !spec.secret && value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "option \"{key}\" must not contain control characters (line breaks, tabs, ...)"
        )));
    }
    match spec.check {
        Check::Integer { min, max } => match value.trim().parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            Ok(_) => Err(Error::invalid(format!(
                "option \"{key}\" must be between {min} and {max}, got \"{shown}\""
            ))),
            Err(_) => Err(Error::invalid(format!(
                "option \"{key}\" must be an unsigned integer, got \"{shown}\""
            ))),
        },
        Check::Text if value.is_empty() => Err(Error::invalid(format!(
            "option \"{key}\" must not be empty"
        ))),
        Check::Text => Ok(()),
        Check::PathTemplate if value.starts_with('/') && value.contains("{service}") => Ok(()),
        Check::PathTemplate => Err(Error::invalid(format!(
            "option \"{key}\" must start with / and contain {{service}}, got \"{shown}\""
        ))),
        Check::Decimal { min, max } => match decimal(value) {
            Some(v) if (min..=max).contains(&v) => Ok(()),
            Some(_) => Err(Error::invalid(format!(
                "option \"{key}\" must be between {min} and {max}, got \"{shown}\""
            ))),
            None => Err(Error::invalid(format!(
                "option \"{key}\" must be a decimal number such as 1.25, got \"{shown}\""
            ))),
        },
        Check::Choice(words) if words.contains(&value.trim()) => Ok(()),
        Check::Choice(words) => Err(Error::invalid(format!(
            "option \"{key}\" must be one of {}, got \"{shown}\"",
            words.join(", ")
        ))),
    }
}

/// A plain decimal number (`1`, `1.25`, `.5`): digits and at most one point, nothing else (no
/// sign, exponent, `inf` or `nan`, which `f64::from_str` would take).
fn decimal(value: &str) -> Option<f64> {
    let v = value.trim();
    let digits = v.bytes().filter(u8::is_ascii_digit).count();
    let points = v.bytes().filter(|&b| b == b'.').count();
    (digits > 0 && points <= 1 && digits + points == v.len())
        .then(|| v.parse().ok())
        .flatten()
}

/// Key/value settings as a caller gives them, each checked when set, plus the callbacks some
/// sources take.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Options {
    values: BTreeMap<String, String>,
    /// Nacos: the caller's server-list function (wins over every other way to find servers).
    pub nacos_server_list: Option<ServerListProvider>,
    /// The caller's log function (`eas_options_set_log`); a client keeps the one it was made
    /// with.
    pub log: Option<crate::log::LogSink>,
}

impl Options {
    pub fn new() -> Options {
        Options::default()
    }

    /// Checks and stores one setting; a later set of the same key replaces the earlier one.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), Error> {
        check_option(key, value)?;
        self.values.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl std::fmt::Debug for Options {
    /// Secret values are shown as `(secret)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(k, v)| (k, if is_secret(k) { "(secret)" } else { v })),
            )
            .finish()
    }
}

/// How unkeyed calls pick (`lb_policy`); plain selects stay smooth weighted round-robin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LbPolicy {
    /// Power of two choices on `(in_flight + others + 1) / weight`.
    #[default]
    LeastRequest,
    /// Power of two choices on `ewma x (in_flight + 1) / weight`.
    PeakEwma,
    /// The smooth weighted round-robin cycle, the call's tried instances excluded.
    RoundRobin,
}

/// The settings of calls (`eas_call_*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CallSettings {
    pub lb_policy: LbPolicy,
    /// Attempts of one call at most (at least 1).
    pub max_attempts: u32,
    /// `c` of consistent hashing with bounded loads (at least 1).
    pub affinity_load_factor: f64,
    pub ewma_decay_ms: u64,
    pub load_report_ttl_ms: u64,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            lb_policy: LbPolicy::LeastRequest,
            max_attempts: 3,
            affinity_load_factor: 1.25,
            ewma_decay_ms: 10_000,
            load_report_ttl_ms: 2_000,
        }
    }
}

/// The settings every source shares, resolved from the target's query and the caller's options.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub refresh_interval: Duration,
    pub request_timeout: Duration,
    pub failures_before_ejection: u32,
    pub ejection_base_ms: u64,
    pub ejection_max_ms: u64,
    pub max_ejection_percent: u32,
    pub tls_ca_file: Option<String>,
    pub snapshot_file: Option<String>,
    pub calls: CallSettings,
}

impl Settings {
    /// Resolves settings for a target of `kind`; `merged` holds every key the caller gave.
    pub fn resolve(kind: SourceKind, merged: &Options) -> Result<Settings, Error> {
        if merged.nacos_server_list.is_some() && kind != SourceKind::Nacos {
            return Err(Error::invalid(format!(
                "the Nacos server-list callback does not apply to {} sources",
                kind.name()
            )));
        }
        for (key, _) in merged.iter() {
            let spec = spec(key).expect("keys are checked when set");
            if !spec.sources.contains(&kind) {
                return Err(Error::invalid(format!(
                    "option \"{key}\" does not apply to {} sources",
                    kind.name()
                )));
            }
        }
        let int = |key: &str, default: u64| -> u64 {
            merged
                .get(key)
                .map(|v| v.trim().parse().expect("integers are checked when set"))
                .unwrap_or(default)
        };
        let settings = Settings {
            refresh_interval: Duration::from_millis(int("refresh_interval_ms", 5000)),
            request_timeout: Duration::from_millis(int("request_timeout_ms", 2000)),
            failures_before_ejection: int("failures_before_ejection", 1) as u32,
            ejection_base_ms: int("ejection_base_ms", 10_000),
            ejection_max_ms: int("ejection_max_ms", 300_000),
            max_ejection_percent: int("max_ejection_percent", 50) as u32,
            tls_ca_file: merged.get("tls_ca_file").map(str::to_owned),
            snapshot_file: merged.get("snapshot_file").map(str::to_owned),
            calls: CallSettings {
                lb_policy: match merged.get("lb_policy").map(str::trim) {
                    Some("peak_ewma") => LbPolicy::PeakEwma,
                    Some("round_robin") => LbPolicy::RoundRobin,
                    _ => LbPolicy::LeastRequest,
                },
                max_attempts: int("max_attempts", 3) as u32,
                affinity_load_factor: merged
                    .get("affinity_load_factor")
                    .and_then(decimal)
                    .unwrap_or(1.25),
                ewma_decay_ms: int("ewma_decay_ms", 10_000),
                load_report_ttl_ms: int("load_report_ttl_ms", 2_000),
            },
        };
        if settings.ejection_base_ms > settings.ejection_max_ms {
            return Err(Error::invalid(format!(
                "option \"ejection_base_ms\" ({}) must not exceed \"ejection_max_ms\" ({})",
                settings.ejection_base_ms, settings.ejection_max_ms
            )));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = Options::new().set("refresh_intervall_ms", "5").unwrap_err();
        assert!(err.message.contains("refresh_intervall_ms"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_not_clamped() {
        let mut o = Options::new();
        for (k, v) in [
            ("refresh_interval_ms", "9"),
            ("refresh_interval_ms", "-1"),
            ("refresh_interval_ms", "abc"),
            ("failures_before_ejection", "0"),
            ("max_ejection_percent", "101"),
            ("discovery_path", "api/{service}"),
            ("discovery_path", "/api/svc"),
            ("tls_ca_file", ""),
        ] {
            let err = o.set(k, v).unwrap_err();
            assert!(err.message.contains(k), "{k}={v}: {err}");
        }
        o.set("refresh_interval_ms", "10").unwrap();
    }

    #[test]
    fn secret_values_are_never_echoed() {
        let err = check_option("password", "").unwrap_err();
        assert!(err.message.contains("password"));
        assert!(is_secret("secret_key"));
        assert!(!is_secret("username"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut o = Options::new();
        o.set("password", "hunter2").unwrap();
        o.set("username", "nacos").unwrap();
        let shown = format!("{o:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("nacos"));
    }

    #[test]
    fn text_options_refuse_control_characters_but_secrets_may_hold_anything() {
        let mut o = Options::new();
        for (key, value) in [
            ("namespace", "dev\r\nX-Forged: 1"),
            ("context_path", "/nacos\n"),
            ("discovery_path", "/api/{service}\t"),
            ("snapshot_file", "/tmp/a\u{1b}[31m"),
        ] {
            let err = o.set(key, value).unwrap_err();
            assert!(
                err.message.contains(key) && err.message.contains("control"),
                "{err}"
            );
        }
        o.set("password", "p\tw").unwrap();
    }

    #[test]
    fn call_options_are_checked_and_resolved_for_every_source() {
        let mut o = Options::new();
        for (k, v) in [
            ("lb_policy", "fastest"),
            ("lb_policy", ""),
            ("max_attempts", "0"),
            ("affinity_load_factor", "0.99"),
            ("affinity_load_factor", "1e3"),
            ("affinity_load_factor", "-2"),
            ("affinity_load_factor", "nan"),
            ("affinity_load_factor", "1.2.3"),
            ("ewma_decay_ms", "0"),
            ("load_report_ttl_ms", "x"),
        ] {
            let err = o.set(k, v).unwrap_err();
            assert!(err.message.contains(k), "{k}={v}: {err}");
        }
        let defaults = Settings::resolve(SourceKind::Static, &o).unwrap().calls;
        assert_eq!(defaults, CallSettings::default());
        o.set("lb_policy", "peak_ewma").unwrap();
        o.set("max_attempts", "1").unwrap();
        o.set("affinity_load_factor", "2.5").unwrap();
        o.set("ewma_decay_ms", "500").unwrap();
        o.set("load_report_ttl_ms", "100").unwrap();
        for kind in ALL {
            let calls = Settings::resolve(*kind, &o).unwrap().calls;
            assert_eq!(calls.lb_policy, LbPolicy::PeakEwma);
            assert_eq!(calls.max_attempts, 1);
            assert_eq!(calls.affinity_load_factor, 2.5);
            assert_eq!((calls.ewma_decay_ms, calls.load_report_ttl_ms), (500, 100));
        }
    }

    #[test]
    fn base_above_max_is_rejected() {
        let mut o = Options::new();
        o.set("ejection_base_ms", "5000").unwrap();
        o.set("ejection_max_ms", "1000").unwrap();
        let err = Settings::resolve(SourceKind::Eas, &o).unwrap_err();
        assert!(err.message.contains("ejection_base_ms"));
    }

    #[test]
    fn a_key_of_another_source_is_rejected_naming_it() {
        let mut o = Options::new();
        o.set("group", "pai-eas").unwrap();
        let err = Settings::resolve(SourceKind::Eas, &o).unwrap_err();
        assert!(err.message.contains("group"), "{err}");
        assert!(Settings::resolve(SourceKind::Nacos, &o).is_ok());
    }
}
