//! What the commands share: errors and exit codes, `-o key=value` options, clients, signals,
//! timestamps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use easdirect::{Client, ErrorKind, Options};

/// Why a command failed, and so its exit status.
#[derive(Debug)]
pub enum Failure {
    /// A bad argument, target or option: exit 2.
    Usage(String),
    /// The work failed: exit 1.
    Runtime(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Runtime(m) => m,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Runtime(_) => 1,
        }
    }
}

/// A library error as a failure: invalid arguments are usage errors.
pub fn from_lib(e: easdirect::Error) -> Failure {
    if e.kind == ErrorKind::InvalidArgument {
        Failure::Usage(e.message)
    } else {
        Failure::Runtime(e.message)
    }
}

/// The target and options every client command takes.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// eas://HOST[:PORT]/SERVICE, eas+https://HOST[:PORT]/SERVICE or static://IP:PORT[*WEIGHT],...
    #[arg(value_name = "TARGET")]
    pub target: String,

    /// A client option, e.g. `-o refresh_interval_ms=1000` (repeatable).
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
}

impl ClientArgs {
    /// Parses the options and creates the client (discovery starts at once).
    pub fn client(&self) -> Result<Client, Failure> {
        self.client_with(&self.options()?)
    }

    /// The `-o` options, checked.
    pub fn options(&self) -> Result<Options, Failure> {
        parse_options(&self.options)
    }

    /// Creates the client with `options` (from [`ClientArgs::options`], maybe completed).
    pub fn client_with(&self, options: &Options) -> Result<Client, Failure> {
        Client::new(&self.target, options).map_err(from_lib)
    }
}

/// Parses `key=value` settings; the library checks each key and value.
pub fn parse_options(pairs: &[String]) -> Result<Options, Failure> {
    let mut options = Options::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Failure::Usage(format!(
                "option {pair:?} is not of the form key=value"
            )));
        };
        options.set(key.trim(), value).map_err(from_lib)?;
    }
    Ok(options)
}

/// A duration in seconds from the command line (fractions allowed).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.0..=1e9).contains(&secs) {
        return Err(format!("{text:?} is not a number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// An instance id as the C ABI prints it.
pub fn hex_id(id: u64) -> String {
    format!("{id:016x}")
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// From now on, SIGINT and SIGTERM set a flag ([`stop_requested`]) instead of killing the
/// process, so that commands end cleanly (terminal restored, emulator stopped).
pub fn catch_stop_signals() {
    let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; signal()
        // has no other precondition.
        unsafe { libc::signal(signal, handler) };
    }
}

/// Whether SIGINT or SIGTERM arrived since [`catch_stop_signals`].
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Sleeps until `deadline` (forever when `None`) or a stop signal, polling every 50 ms.
/// Returns true when a signal ended the wait.
pub fn sleep_until(deadline: Option<Instant>) -> bool {
    loop {
        if stop_requested() {
            return true;
        }
        let step = Duration::from_millis(50);
        match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return false;
                }
                std::thread::sleep(step.min(d - now));
            }
            None => std::thread::sleep(step),
        }
    }
}

/// Makes a write to a closed pipe end the process quietly (as `easdirect list | head` expects)
/// instead of failing the write, which would panic `println!`.
pub fn restore_sigpipe() {
    // SAFETY: restoring the default disposition of SIGPIPE has no precondition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// `2024-05-01T12:34:56.789Z` for `t`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // a leap day
        assert_eq!(utc_timestamp(t), "2024-02-29T12:34:56.789Z");
    }

    #[test]
    fn options() {
        assert!(parse_options(&["refresh_interval_ms=100".into()]).is_ok());
        let e = parse_options(&["no_such_key=1".into()]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message().contains("no_such_key"), "{}", e.message());
        assert_eq!(
            parse_options(&["novalue".into()]).unwrap_err().exit_code(),
            2
        );
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("x").is_err());
    }
}
