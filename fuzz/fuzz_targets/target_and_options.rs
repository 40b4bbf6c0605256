//! Targets and option values from arbitrary bytes: an answer or an error, never a crash.
#![no_main]

use easdirect::internals::Target;
use easdirect::Options;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Target::parse(text);
        let (key, value) = text.split_once('=').unwrap_or((text, ""));
        let _ = Options::new().set(key, value);
    }
});
