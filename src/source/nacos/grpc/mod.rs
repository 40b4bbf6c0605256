//! Nacos push over gRPC (see "Nacos push" in DESIGN.md): the wire coding (`codec`) and the
//! messages of a subscriber (`messages`). The transport that drives them (one connection per
//! client on the process's push runtime) comes next; until then only the tests use these.
#![cfg_attr(not(test), allow(dead_code))]

pub(crate) mod codec;
pub(crate) mod messages;
