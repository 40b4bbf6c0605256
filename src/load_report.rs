//! Load reports: the `endpoint-load-metrics` response header (ORCA) that vLLM and Triton send
//! when the request carries `endpoint-load-metrics-format: text` (or `json`).
//!
//! What the senders write (read from their sources):
//! - vLLM (`vllm/entrypoints/openai/orca_metrics.py`, `create_orca_header`): `TEXT ` followed by
//!   `", ".join(f"named_metrics.{name}={value}")`, values being Python floats (`repr`: `3.0`,
//!   `0.4`, `1e-05`), or `JSON ` followed by `json.dumps({"named_metrics": {...}})`. It reports
//!   `kv_cache_usage_perc` (0-1, despite the name) and `num_requests_waiting`. With no metric
//!   the TEXT form is `TEXT ` and nothing else.
//! - Triton (client docs, "ORCA Header Metrics"): `TEXT cpu_utilization=0.3, mem_utilization=0.8,
//!   rps_fractional=10.0, eps=1, named_metrics.custom_metric_util=0.4`; JSON like vLLM's, with the
//!   top-level fields of xDS `OrcaLoadReport` beside `named_metrics`. Its TensorRT-LLM metrics
//!   include `kv_cache_utilization`.
//! - Envoy (`source/common/orca/orca_parser.cc`) reads the same header: a `TEXT `, `JSON ` or
//!   `BIN ` prefix; TEXT is a comma-separated list of `key=value` (older: `key:value`), map
//!   fields flattened as `named_metrics.KEY`; NaN, infinities and negative values are refused.
//!
//! So the grammar accepted here:
//! ```text
//! report = ( "TEXT" / "JSON" ) [ 1*WSP body ]   ; the word in any ASCII case
//! TEXT body = #entry                            ; commas, optional whitespace, empty entries skipped
//! entry = key OWS ( "=" / ":" ) OWS number
//! number = [ "-" / "+" ] ( 1*DIGIT [ "." *DIGIT ] / "." 1*DIGIT ) [ ( "e" / "E" ) [ "-" / "+" ] 1*DIGIT ]
//! JSON body = a JSON object; `named_metrics`, when present, an object of numbers
//! ```
//! Keys are case-sensitive, as proto field names are. A figure the core reads that is given
//! twice with different values is ambiguous, hence malformed. Python writes a NaN as `NaN` in
//! JSON, which is not JSON: such a JSON report is malformed as a whole (TEXT ones lose only that
//! figure). `BIN` (base64 protobuf) is not read: no client of this library asks for it.

/// The response header that carries a report.
pub(crate) const HEADER: &str = "endpoint-load-metrics";
/// The request header that asks for one, and the value the bindings send.
#[allow(dead_code)] // sent by the bindings' helpers; the core only reads the answer
pub(crate) const FORMAT_HEADER: &str = "endpoint-load-metrics-format";
#[allow(dead_code)]
pub(crate) const FORMAT_TEXT: &str = "text";

/// Larger counts are not believed: no instance queues a million requests, and keeping counts
/// this small keeps every sum the core makes of them far from overflow.
pub(crate) const MAX_COUNT: u32 = 1_000_000;
/// Longer header values are not reports (real ones are well under 1 KiB).
const MAX_LEN: usize = 64 * 1024;

const WAITING: &str = "num_requests_waiting";
const RUNNING: &str = "num_requests_running";
/// vLLM's name for the KV-cache figure, then Triton's.
const KV_NAMES: [&str; 2] = ["kv_cache_usage_perc", "kv_cache_utilization"];
const NAMED_PREFIX: &str = "named_metrics.";

/// What one report says about the instance's load. A figure is `None` when the report does not
/// give it or gives it malformed; the core then keeps the figure it had.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LoadReport {
    /// Requests queued on the instance (`named_metrics.num_requests_waiting`), rounded.
    pub waiting: Option<u32>,
    /// Requests being served (`named_metrics.num_requests_running`), rounded.
    pub running: Option<u32>,
    /// KV-cache use, 0-1000 (`named_metrics.kv_cache_usage_perc` or `kv_cache_utilization`,
    /// 0-1, times 1000, rounded).
    pub kv_permille: Option<u32>,
    /// Some entry was malformed: a value not a number, not finite, negative, out of range, or
    /// a figure given twice differently. The core counts such a report and uses what remains.
    pub malformed: bool,
}

impl LoadReport {
    /// Whether it gives any figure the core reads.
    pub fn has_figures(&self) -> bool {
        self.waiting.is_some() || self.running.is_some() || self.kv_permille.is_some()
    }

    /// This report over an earlier one (of the same response): its figures, and the earlier
    /// one's where it lacks them.
    pub fn over(self, earlier: &LoadReport) -> LoadReport {
        LoadReport {
            waiting: self.waiting.or(earlier.waiting),
            running: self.running.or(earlier.running),
            kv_permille: self.kv_permille.or(earlier.kv_permille),
            malformed: self.malformed || earlier.malformed,
        }
    }
}

/// Parses an `endpoint-load-metrics` value. `None` when it is not a report at all (no TEXT or
/// JSON word, JSON that does not parse or is not an object, too long): the core ignores it and
/// counts it as malformed. Unknown keys (cpu_utilization, other named metrics) are ignored.
#[cfg(test)]
pub(crate) fn parse(value: &str) -> Option<LoadReport> {
    parse_bytes(value.as_bytes())
}

/// [`parse`] of the header's bytes as they came (the C ABI passes them unchecked). Bytes that
/// are not UTF-8 read as U+FFFD would: they match no key, separator or digit either way.
pub(crate) fn parse_bytes(value: &[u8]) -> Option<LoadReport> {
    if value.len() > MAX_LEN {
        return None;
    }
    // The limit is on the UTF-8 text, where each bad byte stands as 3 (U+FFFD): only a value
    // long enough to cross it that way needs the check.
    if value.len() > MAX_LEN / 3 && std::str::from_utf8(value).is_err() {
        let text = String::from_utf8_lossy(value);
        if text.len() > MAX_LEN {
            return None;
        }
    }
    let value = trim_wsp(value);
    let word_end = value.iter().position(|&b| is_wsp(b)).unwrap_or(value.len());
    let (word, body) = value.split_at(word_end);
    let body = trim_start_wsp(body);
    if word.eq_ignore_ascii_case(b"TEXT") {
        Some(parse_text(body))
    } else if word.eq_ignore_ascii_case(b"JSON") {
        parse_json(&String::from_utf8_lossy(body))
    } else {
        None
    }
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_start_wsp(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if !is_wsp(*first) {
            break;
        }
        b = rest;
    }
    b
}

fn trim_end_wsp(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., last] = b {
        if !is_wsp(*last) {
            break;
        }
        b = rest;
    }
    b
}

fn trim_wsp(b: &[u8]) -> &[u8] {
    trim_end_wsp(trim_start_wsp(b))
}

/// The figures as they come, before range checks, with duplicates noticed.
#[derive(Default)]
struct Figures {
    waiting: Slot,
    running: Slot,
    kv: Slot,
    malformed: bool,
}

#[derive(Default)]
enum Slot {
    #[default]
    Absent,
    Value(f64),
    Bad,
}

impl Slot {
    fn set(&mut self, v: Option<f64>) {
        *self = match (&*self, v) {
            (_, None) | (Slot::Bad, _) => Slot::Bad,
            (Slot::Absent, Some(v)) => Slot::Value(v),
            (Slot::Value(old), Some(v)) if *old == v => Slot::Value(v),
            (Slot::Value(_), Some(_)) => Slot::Bad,
        };
    }
}

impl Figures {
    /// The slot of `name` (a named metric, prefix removed), `None` for a metric not read.
    fn slot(&mut self, name: &[u8]) -> Option<&mut Slot> {
        if name == WAITING.as_bytes() {
            Some(&mut self.waiting)
        } else if name == RUNNING.as_bytes() {
            Some(&mut self.running)
        } else if KV_NAMES.iter().any(|k| name == k.as_bytes()) {
            Some(&mut self.kv)
        } else {
            None
        }
    }

    fn slot_of(&mut self, which: Which) -> &mut Slot {
        match which {
            Which::Waiting => &mut self.waiting,
            Which::Running => &mut self.running,
            Which::Kv => &mut self.kv,
        }
    }

    fn finish(self) -> LoadReport {
        let mut malformed = self.malformed;
        let mut take = |slot: Slot, convert: fn(f64) -> Option<u32>| match slot {
            Slot::Absent => None,
            Slot::Value(v) => {
                let out = convert(v);
                malformed |= out.is_none();
                out
            }
            Slot::Bad => {
                malformed = true;
                None
            }
        };
        let waiting = take(self.waiting, count);
        let running = take(self.running, count);
        let kv_permille = take(self.kv, permille);
        LoadReport {
            waiting,
            running,
            kv_permille,
            malformed,
        }
    }
}

/// A count written as a number (`7`, `7.0`, `6.6`): rounded; negative or above [`MAX_COUNT`]
/// is malformed.
fn count(v: f64) -> Option<u32> {
    // `v >= 0.0` holds for `-0.0` too, and fails for NaN.
    (v >= 0.0 && v < f64::from(MAX_COUNT) + 0.5).then(|| round_small(v))
}

/// A fraction 0-1 as thousandths.
fn permille(v: f64) -> Option<u32> {
    (v.is_finite() && (0.0..=1.0).contains(&v)).then(|| round_small(v * 1000.0))
}

/// `v.round()` (half away from zero) for `0 <= v < 2^32`, without the libm call that
/// `f64::round` is on baseline x86-64: `v - trunc(v)` is exact in that range.
fn round_small(v: f64) -> u32 {
    let whole = v as u32;
    whole + u32::from(v - f64::from(whole) >= 0.5)
}

/// The TEXT body in one pass. An entry that starts with a key the core reads is matched by
/// comparing it whole (no scan of its bytes for a separator); its value is read up to the next
/// comma. Other entries are scanned for their separator, only to tell whether they are
/// malformed.
fn parse_text(body: &[u8]) -> LoadReport {
    let mut figures = Figures::default();
    let mut rest = body;
    loop {
        rest = trim_start_wsp(rest);
        let entry = match rest {
            [] => break,
            // RFC 9110 5.6.1: empty list elements are allowed and mean nothing.
            [b',', more @ ..] => {
                rest = more;
                continue;
            }
            entry => entry,
        };
        // A key the core reads, then optional whitespace and the separator.
        if let Some((which, len)) = known_key(entry) {
            if let [b'=' | b':', value @ ..] = trim_start_wsp(&entry[len..]) {
                // The value in the same pass: a number, then only whitespace to the comma.
                let value = trim_start_wsp(value);
                let (number, used) = number_at(value);
                let (number, more) = match trim_start_wsp(&value[used..]) {
                    [] => (number, &[][..]),
                    [b',', more @ ..] => (number, more),
                    other => (None, after_comma(other)),
                };
                figures.slot_of(which).set(number);
                rest = more;
                continue;
            }
        }
        let Some(at) = entry
            .iter()
            .position(|&b| b == b'=' || b == b':' || b == b',')
        else {
            figures.malformed = true; // the last entry has no separator
            break;
        };
        if entry[at] == b',' {
            figures.malformed = true;
            rest = &entry[at + 1..];
            continue;
        }
        let key = trim_end_wsp(&entry[..at]);
        let value = &entry[at + 1..];
        let value_len = value.iter().position(|&b| b == b',').unwrap_or(value.len());
        if key.is_empty() {
            figures.malformed = true;
        } else if let Some(name) = key.strip_prefix(NAMED_PREFIX.as_bytes()) {
            // Not reached for a key the core reads (matched above), but kept exact.
            if let Some(slot) = figures.slot(name) {
                slot.set(number(trim_wsp(&value[..value_len])));
            }
        }
        rest = after_comma(value);
    }
    figures.finish()
}

/// What follows the first comma of `b` (nothing when it has none).
fn after_comma(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == b',') {
        Some(at) => &b[at + 1..],
        None => &[],
    }
}

#[derive(Clone, Copy)]
enum Which {
    Waiting,
    Running,
    Kv,
}

/// The figure named at the start of `entry` (`named_metrics.` and a name the core reads) and
/// the length of that key.
fn known_key(entry: &[u8]) -> Option<(Which, usize)> {
    let name = entry.strip_prefix(NAMED_PREFIX.as_bytes())?;
    let which = match name.first()? {
        b'n' if name.starts_with(WAITING.as_bytes()) => (Which::Waiting, WAITING.len()),
        b'n' if name.starts_with(RUNNING.as_bytes()) => (Which::Running, RUNNING.len()),
        b'k' => {
            let kv = KV_NAMES.iter().find(|k| name.starts_with(k.as_bytes()))?;
            (Which::Kv, kv.len())
        }
        _ => return None,
    };
    Some((which.0, NAMED_PREFIX.len() + which.1))
}

/// Powers of ten that an f64 holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A decimal number in the strict grammar of the module documentation (no `inf`, `nan`, hex,
/// quotes or trailing text, which `f64::from_str` alone would partly accept).
fn number(b: &[u8]) -> Option<f64> {
    match number_at(b) {
        (value, len) if len == b.len() => value,
        _ => None,
    }
}

/// Reads a number of that grammar at the start of `b`, in one pass: the value (`None` when the
/// grammar is not met, or the value is not finite) and the bytes read (up to the first that
/// cannot continue it).
///
/// What senders write (`3`, `3.0`, `0.4`, `1e-05`) has at most 15 significant digits and a
/// small exponent: then the digits as an integer (exact below 2^53) times or divided by an
/// exact power of ten is one correctly rounded operation, the same f64 as `f64::from_str`
/// (Clinger's fast path). Anything else goes to `f64::from_str`.
#[inline]
fn number_at(b: &[u8]) -> (Option<f64>, usize) {
    let len = b.len();
    let signed = len > 0 && (b[0] == b'-' || b[0] == b'+');
    let negative = signed && b[0] == b'-';
    let mut i = usize::from(signed);
    let mut mantissa: u64 = 0;
    let int_start = i;
    while i < len {
        let d = b[i].wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    let mut digits = i - int_start;
    let mut scale: i64 = 0;
    if i < len && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < len {
            let d = b[i].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
        }
        digits += i - frac_start;
        scale = -((i - frac_start) as i64);
    }
    if digits == 0 {
        return (None, i);
    }
    if i < len && (b[i] | 0x20) == b'e' {
        i += 1;
        let exp_negative = i < len && b[i] == b'-';
        if i < len && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let exp_start = i;
        let mut exp: i64 = 0;
        while i < len {
            let d = b[i].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            exp = (exp * 10 + i64::from(d)).min(1 << 20);
            i += 1;
        }
        if i == exp_start {
            return (None, i);
        }
        scale += if exp_negative { -exp } else { exp };
    }
    // Below 20 digits the wrapping products above did not wrap.
    if digits < 20 && mantissa <= 1 << 53 && (-22..=22).contains(&scale) {
        let m = mantissa as f64;
        let v = if scale >= 0 {
            m * POW10[scale as usize]
        } else {
            m / POW10[scale.unsigned_abs() as usize]
        };
        return (Some(if negative { -v } else { v }), i);
    }
    // Only ASCII digits, signs, '.' and 'e' are in there, so the text is UTF-8.
    let value = std::str::from_utf8(&b[..i])
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|v| v.is_finite());
    (value, i)
}

fn parse_json(body: &str) -> Option<LoadReport> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let obj = value.as_object()?;
    let mut figures = Figures::default();
    match obj.get("named_metrics") {
        None => {}
        Some(serde_json::Value::Object(named)) => {
            for (name, v) in named {
                if let Some(slot) = figures.slot(name.as_bytes()) {
                    slot.set(v.as_f64().filter(|v| v.is_finite()));
                }
            }
        }
        Some(_) => figures.malformed = true,
    }
    Some(figures.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn report(waiting: Option<u32>, running: Option<u32>, kv: Option<u32>) -> LoadReport {
        LoadReport {
            waiting,
            running,
            kv_permille: kv,
            malformed: false,
        }
    }

    fn malformed(waiting: Option<u32>, running: Option<u32>, kv: Option<u32>) -> LoadReport {
        LoadReport {
            malformed: true,
            ..report(waiting, running, kv)
        }
    }

    #[test]
    fn vllm_text_report_is_read() {
        assert_eq!(
            parse("TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=3.0"),
            Some(report(Some(3), None, Some(400)))
        );
    }

    #[test]
    fn vllm_json_report_is_read() {
        assert_eq!(
            parse(
                r#"JSON {"named_metrics": {"kv_cache_usage_perc": 0.4, "num_requests_waiting": 3.0}}"#
            ),
            Some(report(Some(3), None, Some(400)))
        );
    }

    #[test]
    fn vllm_text_report_without_metrics_is_an_empty_report() {
        // vLLM writes "TEXT " when it has nothing; HTTP stacks trim the trailing space.
        for v in ["TEXT ", "TEXT", "JSON {}", r#"JSON {"named_metrics": {}}"#] {
            let r = parse(v).unwrap_or_else(|| panic!("{v:?}"));
            assert_eq!(r, LoadReport::default(), "{v:?}");
            assert!(!r.has_figures());
        }
    }

    #[test]
    fn python_float_forms_are_numbers() {
        assert_eq!(
            parse("TEXT named_metrics.kv_cache_usage_perc=1e-05")
                .unwrap()
                .kv_permille,
            Some(0)
        );
        assert_eq!(
            parse("TEXT named_metrics.kv_cache_usage_perc=0.9996")
                .unwrap()
                .kv_permille,
            Some(1000)
        );
        assert_eq!(
            parse("TEXT named_metrics.num_requests_running=1.5e+2")
                .unwrap()
                .running,
            Some(150)
        );
    }

    #[test]
    fn triton_text_report_with_core_fields_is_read() {
        let v = "TEXT cpu_utilization=0.3, mem_utilization=0.8, rps_fractional=10.0, eps=1, \
                 named_metrics.kv_cache_utilization=0.25, named_metrics.max_token_capacity=4096";
        assert_eq!(parse(v), Some(report(None, None, Some(250))));
    }

    #[test]
    fn running_and_waiting_are_read_together() {
        let v = "TEXT named_metrics.num_requests_running=7.0,named_metrics.num_requests_waiting=2";
        let r = parse(v).unwrap();
        assert_eq!(r, report(Some(2), Some(7), None));
        assert!(r.has_figures());
    }

    #[test]
    fn counts_are_rounded() {
        let r = parse(
            "TEXT named_metrics.num_requests_waiting=6.6, named_metrics.num_requests_running=0.4",
        )
        .unwrap();
        assert_eq!(r, report(Some(7), Some(0), None));
    }

    #[test]
    fn colon_separator_and_loose_whitespace_are_accepted() {
        let v = "text\t named_metrics.num_requests_waiting : 3 ,, named_metrics.kv_cache_usage_perc=0.5 ,";
        assert_eq!(parse(v), Some(report(Some(3), None, Some(500))));
        assert_eq!(
            parse("  Json   {\"named_metrics\":{\"num_requests_running\":4}}  "),
            Some(report(None, Some(4), None))
        );
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let v = "TEXT named_metrics.foo=bar, utilization.total=0.5, whatever=1, named_metrics.num_requests_waiting=1";
        assert_eq!(parse(v), Some(report(Some(1), None, None)));
        let j = r#"JSON {"cpu_utilization": 0.3, "x": [1], "named_metrics": {"foo": "bar", "num_requests_waiting": 1}}"#;
        assert_eq!(parse(j), Some(report(Some(1), None, None)));
    }

    #[test]
    fn malformed_values_leave_their_figure_absent() {
        for bad in [
            "nan", "NaN", "inf", "-inf", "infinity", "1e999", "-1", "\"3\"", "3abc", "0x10", "",
            "1e", ".", "+", "3 4", "1_000", "2000000",
        ] {
            let v = format!(
                "TEXT named_metrics.num_requests_waiting={bad}, named_metrics.kv_cache_usage_perc=0.5"
            );
            assert_eq!(parse(&v), Some(malformed(None, None, Some(500))), "{v:?}");
        }
    }

    #[test]
    fn kv_outside_zero_to_one_is_malformed() {
        for bad in ["1.01", "40", "-0.1"] {
            let v = format!("TEXT named_metrics.kv_cache_usage_perc={bad}");
            assert_eq!(parse(&v), Some(malformed(None, None, None)), "{v:?}");
        }
        assert_eq!(
            parse("TEXT named_metrics.kv_cache_usage_perc=1")
                .unwrap()
                .kv_permille,
            Some(1000)
        );
    }

    #[test]
    fn malformed_json_values_leave_their_figure_absent() {
        let j = r#"JSON {"named_metrics": {"num_requests_waiting": "3", "num_requests_running": -2, "kv_cache_usage_perc": 0.1}}"#;
        assert_eq!(parse(j), Some(malformed(None, None, Some(100))));
        let j = r#"JSON {"named_metrics": {"num_requests_waiting": 1e999}}"#;
        assert_eq!(parse(j), Some(malformed(None, None, None)));
        let j = r#"JSON {"named_metrics": [1, 2]}"#;
        assert_eq!(parse(j), Some(malformed(None, None, None)));
    }

    #[test]
    fn entries_without_a_value_or_key_mark_the_report() {
        assert_eq!(
            parse("TEXT not-a-list-of-key-value-pairs, named_metrics.num_requests_waiting=2"),
            Some(malformed(Some(2), None, None))
        );
        assert_eq!(parse("TEXT =3"), Some(malformed(None, None, None)));
    }

    #[test]
    fn a_figure_given_twice_differently_is_malformed() {
        assert_eq!(
            parse(
                "TEXT named_metrics.num_requests_waiting=1, named_metrics.num_requests_waiting=2"
            ),
            Some(malformed(None, None, None))
        );
        assert_eq!(
            parse("TEXT named_metrics.kv_cache_usage_perc=0.2, named_metrics.kv_cache_utilization=0.3"),
            Some(malformed(None, None, None))
        );
        // The same value under both names (a server that serves both readers) is fine.
        assert_eq!(
            parse("TEXT named_metrics.kv_cache_usage_perc=0.2, named_metrics.kv_cache_utilization=0.2"),
            Some(report(None, None, Some(200)))
        );
    }

    #[test]
    fn keys_are_case_sensitive() {
        assert_eq!(
            parse(
                "TEXT Named_Metrics.num_requests_waiting=1, named_metrics.NUM_REQUESTS_WAITING=2"
            ),
            Some(report(None, None, None))
        );
    }

    #[test]
    fn what_is_not_a_report_is_refused() {
        for v in [
            "",
            "   ",
            "named_metrics.num_requests_waiting=3",
            "TEXTnamed_metrics.num_requests_waiting=3",
            "BIN CQAAAAAAAOA/",
            "XML <a/>",
            "JSON",
            "JSON not-a-valid-json-string",
            "JSON [1]",
            r#"JSON {"named_metrics": {"kv_cache_usage_perc": NaN}}"#,
            "JSON {\u{201c}named_metrics\u{201d}: {}}",
        ] {
            assert_eq!(parse(v), None, "{v:?}");
        }
        let long = format!("TEXT {}", "x=1,".repeat(MAX_LEN / 4));
        assert_eq!(parse(&long), None);
    }

    #[test]
    fn the_length_limit_counts_bad_bytes_as_their_replacement() {
        // 30,000 bad bytes are 90,000 bytes of text once each is U+FFFD: over the limit.
        let mut v = b"TEXT named_metrics.num_requests_waiting=2, x=".to_vec();
        v.extend(std::iter::repeat_n(0xffu8, 30_000));
        assert_eq!(parse_bytes(&v), None);
        assert_eq!(reference::parse(&String::from_utf8_lossy(&v)), None);
        // As many good bytes are under it.
        let mut v = b"TEXT named_metrics.num_requests_waiting=2, x=".to_vec();
        v.extend(std::iter::repeat_n(b'y', 30_000));
        assert_eq!(parse_bytes(&v), Some(report(Some(2), None, None)));
    }

    #[test]
    fn number_shapes_senders_write_read_exactly() {
        for (text, want) in [
            ("3", 3.0),
            ("3.0", 3.0),
            ("0.4", 0.4),
            ("1e-05", 1e-05),
            ("0.9996", 0.9996),
            ("1.5e+2", 150.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("+7", 7.0),
            ("0.30000000000000004", 0.30000000000000004),
            ("123456789012345678901234567890", 1.2345678901234568e29),
            ("1e-30", 1e-30),
        ] {
            assert_eq!(number(text.as_bytes()), Some(want), "{text}");
        }
        assert_eq!(number(b"-0").map(f64::to_bits), Some((-0.0f64).to_bits()));
        for bad in [
            "", "-", ".", "e5", "1e", "1e+", "1.2.3", "1 ", " 1", "0x1", "inf", "1e400",
        ] {
            assert_eq!(number(bad.as_bytes()), None, "{bad}");
        }
    }

    /// The emulator's LLM backends write reports in vLLM's form; this parser reads them. (Here
    /// rather than in tests/, because the parser is crate-private.)
    mod from_the_emulator {
        use super::*;
        use easdirect_emulator::{Backend, LlmConfig};
        use std::io::{BufRead, BufReader, Read, Write};
        use std::net::TcpStream;
        use std::time::Duration;

        /// Sends one request asking for a report in `format`; the header it got, if any.
        fn report_header(b: &Backend, format: Option<&str>) -> Option<String> {
            let mut s = TcpStream::connect(b.addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let ask = format.map_or(String::new(), |f| format!("{FORMAT_HEADER}: {f}\r\n"));
            write!(
                s,
                "GET / HTTP/1.1\r\nHost: llm\r\nx-tokens: 1\r\n{ask}Connection: close\r\n\r\n"
            )
            .unwrap();
            let mut rd = BufReader::new(s);
            let mut found = None;
            loop {
                let mut line = String::new();
                rd.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case(HEADER) {
                        found = Some(v.trim().to_string());
                    }
                }
            }
            let mut rest = Vec::new();
            let _ = rd.read_to_end(&mut rest);
            found
        }

        #[test]
        fn emulator_reports_parse_in_both_forms() {
            let b = Backend::start_llm(LlmConfig {
                slots: 2,
                base: Duration::ZERO,
                per_token: Duration::from_millis(1),
                ..LlmConfig::default()
            })
            .unwrap();
            assert_eq!(report_header(&b, None), None);
            for format in [FORMAT_TEXT, "json", "JSON"] {
                let v = report_header(&b, Some(format)).unwrap();
                // Alone on a 2-slot backend: itself running, half the KV cache.
                assert_eq!(
                    parse(&v),
                    Some(report(Some(0), Some(1), Some(500))),
                    "{format}: {v:?}"
                );
            }
            b.llm()
                .unwrap()
                .set_config(LlmConfig {
                    report_running: false,
                    ..b.llm().unwrap().config()
                })
                .unwrap();
            let v = report_header(&b, Some(FORMAT_TEXT)).unwrap();
            assert_eq!(parse(&v), Some(report(Some(0), None, Some(500))), "{v:?}");
        }
    }

    /// The parser before the byte-wise one (several passes by `char`, each number checked and
    /// then parsed by `f64::from_str`): the new one must agree with it on every input.
    mod reference {
        use crate::load_report::{
            LoadReport, KV_NAMES, MAX_COUNT, MAX_LEN, NAMED_PREFIX, RUNNING, WAITING,
        };

        /// Parses an `endpoint-load-metrics` value. `None` when it is not a report at all (no TEXT or
        /// JSON word, JSON that does not parse or is not an object, too long): the core ignores it and
        /// counts it as malformed. Unknown keys (cpu_utilization, other named metrics) are ignored.
        pub(crate) fn parse(value: &str) -> Option<LoadReport> {
            if value.len() > MAX_LEN {
                return None;
            }
            let value = value.trim_matches(is_wsp);
            let word_end = value.find(is_wsp).unwrap_or(value.len());
            let (word, body) = value.split_at(word_end);
            let body = body.trim_start_matches(is_wsp);
            if word.eq_ignore_ascii_case("TEXT") {
                Some(parse_text(body))
            } else if word.eq_ignore_ascii_case("JSON") {
                parse_json(body)
            } else {
                None
            }
        }

        fn is_wsp(c: char) -> bool {
            c == ' ' || c == '\t'
        }

        /// The figures as they come, before range checks, with duplicates noticed.
        #[derive(Default)]
        struct Figures {
            waiting: Slot,
            running: Slot,
            kv: Slot,
            malformed: bool,
        }

        #[derive(Default)]
        enum Slot {
            #[default]
            Absent,
            Value(f64),
            Bad,
        }

        impl Slot {
            fn set(&mut self, v: Option<f64>) {
                *self = match (&*self, v) {
                    (_, None) | (Slot::Bad, _) => Slot::Bad,
                    (Slot::Absent, Some(v)) => Slot::Value(v),
                    (Slot::Value(old), Some(v)) if *old == v => Slot::Value(v),
                    (Slot::Value(_), Some(_)) => Slot::Bad,
                };
            }
        }

        impl Figures {
            /// Records `name` (a named metric, prefix removed) with its value (`None`: not a number).
            fn record(&mut self, name: &str, value: Option<f64>) {
                let slot = if name == WAITING {
                    &mut self.waiting
                } else if name == RUNNING {
                    &mut self.running
                } else if KV_NAMES.contains(&name) {
                    &mut self.kv
                } else {
                    return;
                };
                slot.set(value);
            }

            fn finish(self) -> LoadReport {
                let mut malformed = self.malformed;
                let mut take = |slot: Slot, convert: fn(f64) -> Option<u32>| match slot {
                    Slot::Absent => None,
                    Slot::Value(v) => {
                        let out = convert(v);
                        malformed |= out.is_none();
                        out
                    }
                    Slot::Bad => {
                        malformed = true;
                        None
                    }
                };
                let waiting = take(self.waiting, count);
                let running = take(self.running, count);
                let kv_permille = take(self.kv, permille);
                LoadReport {
                    waiting,
                    running,
                    kv_permille,
                    malformed,
                }
            }
        }

        /// A count written as a number (`7`, `7.0`, `6.6`): rounded; negative or above [`MAX_COUNT`]
        /// is malformed.
        fn count(v: f64) -> Option<u32> {
            // `v >= 0.0` holds for `-0.0` too, and fails for NaN.
            (v >= 0.0 && v.round() <= f64::from(MAX_COUNT)).then(|| v.round() as u32)
        }

        /// A fraction 0-1 as thousandths.
        fn permille(v: f64) -> Option<u32> {
            (v.is_finite() && (0.0..=1.0).contains(&v)).then(|| (v * 1000.0).round() as u32)
        }

        fn parse_text(body: &str) -> LoadReport {
            let mut figures = Figures::default();
            for entry in body.split(',') {
                let entry = entry.trim_matches(is_wsp);
                if entry.is_empty() {
                    continue; // RFC 9110 5.6.1: empty list elements are allowed and mean nothing
                }
                let Some(sep) = entry.find(['=', ':']) else {
                    figures.malformed = true;
                    continue;
                };
                let key = entry[..sep].trim_end_matches(is_wsp);
                let value = entry[sep + 1..].trim_start_matches(is_wsp);
                if key.is_empty() {
                    figures.malformed = true;
                    continue;
                }
                if let Some(name) = key.strip_prefix(NAMED_PREFIX) {
                    figures.record(name, number(value));
                }
            }
            figures.finish()
        }

        /// A decimal number in the strict grammar of the module documentation (no `inf`, `nan`, hex,
        /// quotes or trailing text, which `f64::from_str` alone would partly accept).
        pub(super) fn number(s: &str) -> Option<f64> {
            let b = s.as_bytes();
            let mut i = 0;
            if matches!(b.first(), Some(b'+' | b'-')) {
                i += 1;
            }
            let int_start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let mut digits = i - int_start;
            if b.get(i) == Some(&b'.') {
                i += 1;
                let frac_start = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                digits += i - frac_start;
            }
            if digits == 0 {
                return None;
            }
            if matches!(b.get(i), Some(b'e' | b'E')) {
                i += 1;
                if matches!(b.get(i), Some(b'+' | b'-')) {
                    i += 1;
                }
                let exp_start = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                if i == exp_start {
                    return None;
                }
            }
            if i != b.len() {
                return None;
            }
            s.parse::<f64>().ok().filter(|v| v.is_finite())
        }

        fn parse_json(body: &str) -> Option<LoadReport> {
            let value: serde_json::Value = serde_json::from_str(body).ok()?;
            let obj = value.as_object()?;
            let mut figures = Figures::default();
            match obj.get("named_metrics") {
                None => {}
                Some(serde_json::Value::Object(named)) => {
                    for (name, v) in named {
                        let v = v.as_f64().filter(|v| v.is_finite());
                        figures.record(name, v);
                    }
                }
                Some(_) => figures.malformed = true,
            }
            Some(figures.finish())
        }
    }

    fn check_in_range(r: &LoadReport) {
        assert!(r.waiting.is_none_or(|w| w <= MAX_COUNT));
        assert!(r.running.is_none_or(|w| w <= MAX_COUNT));
        assert!(r.kv_permille.is_none_or(|k| k <= 1000));
    }

    fn arb_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<f64>().prop_map(|f| f.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            any::<u64>().prop_map(|n| n.to_string()),
            (0.0..1.2f64).prop_map(|f| f.to_string()),
            "[-+.eE0-9]{0,8}",
            "\\PC{0,6}",
        ]
    }

    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("named_metrics.num_requests_waiting".to_string()),
            Just("named_metrics.num_requests_running".to_string()),
            Just("named_metrics.kv_cache_usage_perc".to_string()),
            Just("named_metrics.kv_cache_utilization".to_string()),
            Just("cpu_utilization".to_string()),
            "[a-z_.]{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn parser_never_panics_on_any_text(text in "\\PC{0,120}") {
            if let Some(r) = parse(&text) {
                check_in_range(&r);
            }
        }

        #[test]
        fn parser_never_panics_on_report_like_text(
            word in prop_oneof![Just("TEXT"), Just("text"), Just("JSON"), Just("Tex")],
            entries in prop::collection::vec((arb_key(), prop_oneof![Just("="), Just(":"), Just(" = "), Just("")], arb_value()), 0..6),
        ) {
            let body: Vec<String> = entries.iter().map(|(k, s, v)| format!("{k}{s}{v}")).collect();
            let text = format!("{word} {}", body.join(", "));
            if let Some(r) = parse(&text) {
                check_in_range(&r);
            }
            let json: Vec<String> = entries
                .iter()
                .map(|(k, _, v)| format!("{:?}: {v}", k.trim_start_matches(NAMED_PREFIX)))
                .collect();
            let text = format!("JSON {{\"named_metrics\": {{{}}}}}", json.join(", "));
            if let Some(r) = parse(&text) {
                check_in_range(&r);
            }
        }

        #[test]
        fn the_byte_parser_agrees_with_the_reference_on_any_text(text in "\\PC{0,120}") {
            prop_assert_eq!(parse(&text), reference::parse(&text));
        }

        #[test]
        fn the_byte_parser_agrees_with_the_reference_on_report_like_text(
            word in prop_oneof![Just("TEXT"), Just("text"), Just("JSON"), Just("Tex")],
            entries in prop::collection::vec((arb_key(), prop_oneof![Just("="), Just(":"), Just(" = "), Just("")], arb_value()), 0..6),
        ) {
            let body: Vec<String> = entries.iter().map(|(k, s, v)| format!("{k}{s}{v}")).collect();
            let text = format!("{word} {}", body.join(", "));
            prop_assert_eq!(parse(&text), reference::parse(&text));
            let json: Vec<String> = entries
                .iter()
                .map(|(k, _, v)| format!("{:?}: {v}", k.trim_start_matches(NAMED_PREFIX)))
                .collect();
            let text = format!("JSON {{\"named_metrics\": {{{}}}}}", json.join(", "));
            prop_assert_eq!(parse(&text), reference::parse(&text));
        }

        #[test]
        fn the_byte_parser_agrees_with_the_reference_on_token_soup(
            tokens in prop::collection::vec(prop_oneof![
                Just("named_metrics."), Just("num_requests_waiting"), Just("num_requests_running"),
                Just("kv_cache_usage_perc"), Just("kv_cache_utilization"), Just("="), Just(":"),
                Just(","), Just(" "), Just("\t"), Just("0.4"), Just("3"), Just("."), Just("e"),
                Just("-"), Just("+"), Just("x"), Just("7.0"), Just("1e-05"),
            ], 0..24),
        ) {
            let text = format!("TEXT {}", tokens.concat());
            prop_assert_eq!(parse(&text), reference::parse(&text), "{:?}", text);
        }

        #[test]
        fn rounding_is_f64_round(v in 0.0..4.0e9f64, w in 0u32..1_000_000) {
            prop_assert_eq!(round_small(v), v.round() as u32);
            for v in [f64::from(w) + 0.5, f64::from(w) + 0.49999999999999994, f64::from(w)] {
                prop_assert_eq!(round_small(v), v.round() as u32, "{}", v);
            }
        }

        #[test]
        fn numbers_read_as_f64_from_str_reads_them(
            text in prop_oneof![
                any::<f64>().prop_map(|f| f.to_string()),
                any::<f64>().prop_map(|f| format!("{f:e}")),
                any::<u64>().prop_map(|n| n.to_string()),
                (0.0..1.2f64).prop_map(|f| f.to_string()),
                (0u32..100_000, 0u32..6).prop_map(|(m, d)| format!("{}", f64::from(m) / 10f64.powi(d as i32))),
                "[-+]?[0-9]{0,20}(\\.[0-9]{0,20})?([eE][-+]?[0-9]{1,3})?",
            ],
        ) {
            // Bit for bit: -0.0 too.
            prop_assert_eq!(
                number(text.as_bytes()).map(f64::to_bits),
                reference::number(&text).map(f64::to_bits),
                "{}",
                text
            );
        }

        #[test]
        fn bytes_that_are_not_utf8_read_as_their_lossy_text(
            head in "\\PC{0,40}",
            bad in prop::collection::vec(0x80u8..=0xff, 0..4),
            tail in "[a-z_.=:, 0-9]{0,40}",
        ) {
            let mut bytes = format!("TEXT named_metrics.num_requests_waiting=2, {head}").into_bytes();
            bytes.extend(&bad);
            bytes.extend(tail.as_bytes());
            prop_assert_eq!(parse_bytes(&bytes), reference::parse(&String::from_utf8_lossy(&bytes)));
        }

        #[test]
        fn counts_within_range_read_back_rounded(w in 0u32..=MAX_COUNT, frac in 0.0..0.49f64, kv in 0u32..=1000) {
            let text = format!(
                "TEXT named_metrics.num_requests_waiting={}, named_metrics.kv_cache_usage_perc={}",
                w as f64 + frac,
                kv as f64 / 1000.0
            );
            prop_assert_eq!(parse(&text), Some(report(Some(w), None, Some(kv))));
        }
    }
}
