//! The `Retry-After` response header (RFC 9110 10.2.3): `delay-seconds` or an `HTTP-date`.
//!
//! An HTTP-date is accepted in the three forms RFC 9110 5.6.7 says a recipient must accept:
//! ```text
//! Sun, 06 Nov 1994 08:49:37 GMT    ; IMF-fixdate, what senders write
//! Sunday, 06-Nov-94 08:49:37 GMT   ; obsolete RFC 850 form, two-digit year
//! Sun Nov  6 08:49:37 1994         ; ANSI C asctime() form
//! ```
//! Names are case-sensitive, as the RFC says; runs of spaces count as one (asctime pads the day
//! with a space); the weekday must be a weekday name but is not checked against the date (the
//! date alone is unambiguous). Numbers are strict: fixed digit counts, ranges checked.

use std::time::Duration;

/// The header's name.
pub(crate) const HEADER: &str = "retry-after";

/// How long `value` asks the client to wait, counted from `now_unix_ms`: a date in the past is
/// a zero wait. `None` when it is neither form. Seconds beyond `u64` saturate.
pub(crate) fn parse(value: &str, now_unix_ms: u64) -> Option<Duration> {
    let value = value.trim_matches([' ', '\t']);
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.bytes().fold(0u64, |acc, b| {
            acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
        });
        return Some(Duration::from_secs(secs));
    }
    let date_ms = http_date_unix_secs(value, now_unix_ms)?.saturating_mul(1000);
    let wait_ms = u64::try_from(date_ms)
        .unwrap_or(0)
        .saturating_sub(now_unix_ms);
    Some(Duration::from_millis(wait_ms))
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Seconds since the Unix epoch of an HTTP-date (negative before 1970).
fn http_date_unix_secs(value: &str, now_unix_ms: u64) -> Option<i64> {
    let tokens: Vec<&str> = value.split(' ').filter(|t| !t.is_empty()).collect();
    let (year, month, day, time) = match tokens.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [wday, day, month, year, time, "GMT"] => {
            DAYS.contains(&wday.strip_suffix(',')?).then_some(())?;
            (
                digits(year, 4, 4)?,
                month_of(month)?,
                digits(day, 2, 2)?,
                *time,
            )
        }
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [wday, date, time, "GMT"] => {
            LONG_DAYS.contains(&wday.strip_suffix(',')?).then_some(())?;
            let mut parts = date.split('-');
            let (Some(day), Some(month), Some(yy), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return None;
            };
            let year = two_digit_year(digits(yy, 2, 2)?, now_unix_ms);
            (year, month_of(month)?, digits(day, 2, 2)?, *time)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [wday, month, day, time, year] => {
            DAYS.contains(wday).then_some(())?;
            (
                digits(year, 4, 4)?,
                month_of(month)?,
                digits(day, 1, 2)?,
                *time,
            )
        }
        _ => return None,
    };
    let (h, m, s) = time_of_day(time)?;
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// `s` as a number of `min..=max` ASCII digits.
fn digits(s: &str, min: usize, max: usize) -> Option<i64> {
    if !(min..=max).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month_of(s: &str) -> Option<i64> {
    MONTHS.iter().position(|m| *m == s).map(|i| i as i64 + 1)
}

/// `HH:MM:SS`, with 60 seconds allowed for a leap second.
fn time_of_day(s: &str) -> Option<(i64, i64, i64)> {
    let mut parts = s.split(':');
    let (Some(h), Some(m), Some(sec), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let (h, m, sec) = (digits(h, 2, 2)?, digits(m, 2, 2)?, digits(sec, 2, 2)?);
    (h < 24 && m < 60 && sec <= 60).then_some((h, m, sec))
}

/// RFC 9110 5.6.7: a two-digit year that looks more than 50 years in the future is the most
/// recent past year with those digits.
fn two_digit_year(yy: i64, now_unix_ms: u64) -> i64 {
    let now_days = i64::try_from(now_unix_ms / 86_400_000).unwrap_or(i64::MAX / 2);
    let now_year = civil_year(now_days);
    let mut year = now_year - now_year.rem_euclid(100) + yy;
    if year > now_year + 50 {
        year -= 100;
    }
    year
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year of a day counted from 1970-01-01 (the inverse of [`days_from_civil`], year only).
fn civil_year(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 1994-11-06 08:49:37 UTC, the RFC's example date.
    const RFC_EXAMPLE_SECS: u64 = 784_111_777;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn seconds_are_a_delay() {
        assert_eq!(parse("120", 0), secs(120));
        assert_eq!(parse(" 0 ", 5), secs(0));
        assert_eq!(parse("007", 5), secs(7));
        assert_eq!(parse("99999999999999999999999", 0), secs(u64::MAX));
    }

    #[test]
    fn the_three_date_forms_name_the_same_instant() {
        let now = (RFC_EXAMPLE_SECS - 90) * 1000;
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun Nov 06 08:49:37 1994",
        ] {
            assert_eq!(parse(v, now), secs(90), "{v:?}");
        }
    }

    #[test]
    fn a_date_is_counted_from_now_in_milliseconds() {
        let now = RFC_EXAMPLE_SECS * 1000 - 1500;
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn a_past_date_is_no_wait() {
        let now = (RFC_EXAMPLE_SECS + 10) * 1000;
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT", now), secs(0));
        assert_eq!(parse("Thu, 01 Jan 1970 00:00:00 GMT", now), secs(0));
        assert_eq!(parse("Mon, 01 Jan 1900 00:00:00 GMT", now), secs(0));
    }

    #[test]
    fn dates_are_converted_exactly() {
        let cases = [
            ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
            ("Tue, 29 Feb 2000 12:00:00 GMT", 951_825_600),
            ("Sat, 01 Jan 2000 00:00:00 GMT", 946_684_800),
            ("Fri, 13 Feb 2009 23:31:30 GMT", 1_234_567_890),
            ("Sun, 07 Feb 2106 06:28:16 GMT", 4_294_967_296),
        ];
        for (v, unix) in cases {
            assert_eq!(http_date_unix_secs(v, 0), Some(unix), "{v:?}");
        }
    }

    #[test]
    fn a_two_digit_year_is_at_most_fifty_years_ahead() {
        // Now: 2025-01-01. "75" would be 2075, 50 years ahead at most: kept; "76" is 1976.
        let now = 1_735_689_600_000;
        let year_of = |yy: &str| {
            let v = format!("Friday, 01-Jan-{yy} 00:00:00 GMT");
            civil_year(http_date_unix_secs(&v, now).unwrap().div_euclid(86_400))
        };
        assert_eq!(year_of("25"), 2025);
        assert_eq!(year_of("75"), 2075);
        assert_eq!(year_of("76"), 1976);
        assert_eq!(year_of("94"), 1994);
        assert_eq!(year_of("00"), 2000);
    }

    #[test]
    fn malformed_values_are_refused() {
        for v in [
            "",
            "   ",
            "-1",
            "+5",
            "1.5",
            "12 s",
            "0x10",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37",
            "sun, 06 nov 1994 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37:00 GMT",
            "Sun, 06 Nov +994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-94-1 08:49:37 GMT",
            "Sun Nov  6 08:49:37 94",
            "Sun Nov 123 08:49:37 1994",
        ] {
            assert_eq!(parse(v, RFC_EXAMPLE_SECS * 1000), None, "{v:?}");
        }
    }

    #[test]
    fn a_leap_second_is_accepted() {
        assert_eq!(
            http_date_unix_secs("Sat, 31 Dec 2016 23:59:60 GMT", 0),
            Some(1_483_228_800)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn parser_never_panics_on_any_text(text in "\\PC{0,64}", now in any::<u64>()) {
            let _ = parse(&text, now);
        }

        #[test]
        fn parser_never_panics_on_date_like_text(
            text in "[A-Z][a-z]{2,8},? [0-9]{1,3}[ -][A-Z][a-z]{2}[ -][0-9]{2,4} [0-9]{1,2}:[0-9]{2}:[0-9]{2}( GMT)?",
            now in any::<u64>(),
        ) {
            let _ = parse(&text, now);
        }

        #[test]
        fn a_future_date_waits_until_it(unix in 0i64..253_402_300_799, ahead in 0u64..100_000_000) {
            // Formats `unix` as an IMF-fixdate by the inverse conversion, then reads it back.
            let days = unix.div_euclid(86_400);
            let year = civil_year(days);
            let mut month = 1;
            let mut day = days - days_from_civil(year, 1, 1) + 1;
            while day > days_in_month(year, month) {
                day -= days_in_month(year, month);
                month += 1;
            }
            let wday = DAYS[(days + 3).rem_euclid(7) as usize]; // 1970-01-01 was a Thursday
            let rem = unix.rem_euclid(86_400);
            let v = format!(
                "{wday}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
                MONTHS[month as usize - 1], rem / 3600, rem / 60 % 60, rem % 60
            );
            let target_ms = unix as u64 * 1000;
            let now = target_ms.saturating_sub(ahead);
            prop_assert_eq!(parse(&v, now), Some(Duration::from_millis(target_ms - now)), "{}", v);
        }
    }
}
