//! In-cluster callers (env NAMESPACE and POD_NAME both set) ask with `?internal=true`.
//! Its own test binary: it sets process environment variables.

use std::time::Duration;

use easdirect::{Client, Options};
use easdirect_emulator::{Emulator, Endpoint};

#[test]
fn internal_is_added_only_when_namespace_and_pod_name_are_set() {
    let emu = Emulator::start().unwrap();
    emu.set_endpoints("svc", vec![Endpoint::new("127.0.0.1", 50001, 100)]);
    let target = format!("eas://{}/svc", emu.endpoint());

    std::env::set_var("NAMESPACE", "default");
    std::env::remove_var("POD_NAME");
    let c = Client::new(&target, &Options::new()).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let path = emu.last_request_target().unwrap();
    assert!(!path.contains("internal"), "{path}");
    drop(c);

    std::env::set_var("POD_NAME", "client-0");
    let c = Client::new(&target, &Options::new()).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    let path = emu.last_request_target().unwrap();
    assert!(path.ends_with("/upstreams/svc?internal=true"), "{path}");
}

#[test]
fn an_address_server_from_the_environment_is_checked_and_printed_without_secrets() {
    std::env::set_var(
        "ALIBABA_ALIWARE_ENDPOINT_URL",
        "http://user:t0psecret@<html>/x",
    );
    let err = Client::new("nacos://127.0.0.1:1/svc", &Options::new())
        .err()
        .expect("no address server in the environment's value");
    std::env::remove_var("ALIBABA_ALIWARE_ENDPOINT_URL");
    assert!(
        err.message.contains("ALIBABA_ALIWARE_ENDPOINT_URL"),
        "{err}"
    );
    assert!(!err.message.contains("t0psecret"), "{err}");
}
