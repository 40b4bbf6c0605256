//! Property tests: whatever a caller or an upstream sends, the parsers answer with a value or an
//! error and never panic, and what they accept is well-formed.

use easdirect::internals::eas::parse_upstreams;
use easdirect::internals::nacos::{parse_v1, parse_v3};
use easdirect::internals::{Target, TargetSpec};
use easdirect::Options;
use proptest::prelude::*;
use serde_json::{json, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::String),
        Just(json!("10.0.0.1")),
        Just(json!("::1")),
        Just(json!(8080)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("ip".to_string()),
                    Just("port".to_string()),
                    Just("weight".to_string()),
                    Just("healthy".to_string()),
                    Just("enabled".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn assert_well_formed(list: &[easdirect::Instance]) {
    for inst in list {
        assert!(inst.port > 0);
        assert!(inst.id != 0);
        assert!(inst.ip_str().parse::<std::net::IpAddr>().is_ok());
        assert!(inst.host_str().ends_with(&format!(":{}", inst.port)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn target_parser_never_panics(text in "\\PC{0,80}") {
        let _ = Target::parse(&text);
    }

    #[test]
    fn target_parser_never_panics_on_target_like_text(
        scheme in prop_oneof![
            Just("eas".to_string()),
            Just("eas+https".to_string()),
            Just("static".to_string()),
            Just("nacos".to_string()),
            Just("nacos+endpoint".to_string()),
            "[a-z+]{0,8}"
        ],
        body in "[a-zA-Z0-9.:/\\[\\]@,;*%?&=_\\- ]{0,60}",
    ) {
        let _ = Target::parse(&format!("{scheme}://{body}"));
    }

    #[test]
    fn accepted_eas_service_names_need_no_encoding(service in "\\PC{1,20}") {
        if let Ok(t) = Target::parse(&format!("eas://127.0.0.1:80/{service}")) {
            let TargetSpec::Eas { service: s, .. } = t.spec else { panic!("not eas") };
            prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)));
        }
    }

    #[test]
    fn option_parser_never_panics_and_integers_are_checked(key in "[a-z_]{0,30}", value in "\\PC{0,20}") {
        let mut o = Options::new();
        let _ = o.set(&key, &value);
        let _ = o.set("refresh_interval_ms", &value);
        if o.set("max_ejection_percent", &value).is_ok() {
            let v: u64 = value.trim().parse().unwrap();
            prop_assert!(v <= 100);
        }
    }

    #[test]
    fn eas_parser_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(list) = parse_upstreams(&body) {
            assert_well_formed(&list);
        }
    }

    #[test]
    fn eas_parser_keeps_only_well_formed_items(items in prop::collection::vec(arb_json(), 0..8)) {
        let body = json!({"endpoints": {"items": items}}).to_string();
        let list = parse_upstreams(body.as_bytes()).unwrap();
        assert_well_formed(&list);
    }

    #[test]
    fn nacos_parsers_never_panic(value in arb_json(), items in prop::collection::vec(arb_json(), 0..8)) {
        let _ = parse_v1(value.to_string().as_bytes());
        let _ = parse_v3(value.to_string().as_bytes());
        if let Ok(list) = parse_v1(json!({"hosts": items.clone()}).to_string().as_bytes()) {
            assert_well_formed(&list);
        }
        if let Ok(list) = parse_v3(json!({"code": 0, "data": items}).to_string().as_bytes()) {
            assert_well_formed(&list);
        }
    }
}

/// A secret of uppercase runs joined by the characters that split a URL in odd places; nothing
/// else in a target or a message has four uppercase letters in a row.
fn arb_secret() -> impl Strategy<Value = String> {
    prop::collection::vec(("[A-Z]{4,6}", "[/?@#&=:%]{0,2}"), 1..4)
        .prop_map(|parts| parts.into_iter().map(|(a, b)| a + &b).collect())
}

fn shows_a_secret(text: &str) -> bool {
    text.as_bytes()
        .windows(4)
        .any(|w| w.iter().all(u8::is_ascii_uppercase))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn no_message_about_a_target_shows_a_secret_in_it(
        scheme in prop_oneof![
            Just("eas://"), Just("eas+https://"), Just("nacos://"), Just("nacos+https://"),
            Just("nacos+endpoint://"), Just("dns://"), Just("static://"), Just(""), Just("ftp://"),
        ],
        shape in 0..6usize,
        secret in arb_secret(),
        tail in prop_oneof![Just(""), Just("/svc"), Just("/a/b"), Just(":0/svc"), Just("/svc?bogus=1")],
    ) {
        let host = "127.0.0.1:1";
        let text = match shape {
            0 => format!("{scheme}user:{secret}@{host}{tail}"),
            1 => format!("{scheme}{secret}@{host}{tail}"),
            2 => format!("{scheme}{host}/svc?password={secret}{tail}"),
            3 => format!("{scheme}{host}/svc?secret_key={secret}&group=g{tail}"),
            4 => format!("{scheme}127.0.0.1:2,user:{secret}@{host}{tail}"),
            _ => format!("{scheme}{host}{tail}?username=u&password={secret}&x=1"),
        };
        match easdirect::Client::new(&text, &Options::new()) {
            Err(e) => prop_assert!(!shows_a_secret(&e.message), "{text:?} -> {:?}", e.message),
            Ok(client) => {
                prop_assert!(!shows_a_secret(client.target()), "{text:?} -> {:?}", client.target());
                let debug = format!("{:?}", Target::parse(&text));
                prop_assert!(!shows_a_secret(&debug), "{text:?} -> {debug}");
            }
        }
    }
}
