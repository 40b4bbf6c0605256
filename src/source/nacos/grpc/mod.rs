//! Nacos push over gRPC (see "Nacos push" in DESIGN.md): the wire coding (`codec`), the
//! messages of a subscriber (`messages`), one HTTP/2 connection (`conn`) and the subscription
//! loop that runs on the process's push runtime (`subscriber`).

pub(crate) mod codec;
mod conn;
pub(crate) mod messages;
pub(crate) mod subscriber;
