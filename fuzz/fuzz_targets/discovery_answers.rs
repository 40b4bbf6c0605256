//! Discovery answers from arbitrary bytes (EAS, Nacos v1 and v3, address-server lists, DNS
//! replies): an answer or an error, never a crash; what is accepted is well-formed.
#![no_main]

use easdirect::internals::{dns, eas, nacos};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for list in [
        eas::parse_upstreams(data),
        nacos::parse_v1(data),
        nacos::parse_v3(data),
    ]
    .into_iter()
    .flatten()
    {
        for inst in list {
            assert!(inst.port > 0 && inst.id != 0);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nacos::parse_server_list(text);
    }
    dns::check_reply(data);
});
