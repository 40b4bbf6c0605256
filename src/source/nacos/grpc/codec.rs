//! The bytes of Nacos's gRPC protocol: the protobuf messages of `nacos_grpc_service.proto` and
//! gRPC's length-prefixed message framing. Only what Nacos sends is coded, by hand (three small
//! messages do not need a protobuf compiler):
//!
//! ```text
//! message Metadata { string type = 3; string clientIp = 8; map<string, string> headers = 7; }
//! message Payload  { Metadata metadata = 2; google.protobuf.Any body = 3; }
//! message Any      { string type_url = 1; bytes value = 2; }   // value: the JSON body
//! ```
//!
//! Decoding skips unknown fields of every wire type (a newer server may add some), and refuses
//! what no encoder writes: a truncated varint or length, a length past the end, a group, a
//! string that is not UTF-8. Nothing an upstream sends can make it panic or allocate more than
//! the bytes it was given.

use std::collections::BTreeMap;

/// The largest message taken from a stream (a service of tens of thousands of instances fits).
pub(crate) const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// One message of the Nacos protocol: what it is (`type`, e.g. `NotifySubscriberRequest`), the
/// headers it carries, and its JSON body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Payload {
    pub(crate) kind: String,
    pub(crate) client_ip: String,
    pub(crate) headers: BTreeMap<String, String>,
    /// `Any.type_url`; Nacos writes the type here too.
    pub(crate) type_url: String,
    pub(crate) body: Vec<u8>,
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

impl Payload {
    /// The protobuf encoding of the `Payload` message.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut metadata = Vec::new();
        put_bytes(&mut metadata, 3, self.kind.as_bytes());
        for (key, value) in &self.headers {
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, key.as_bytes());
            put_bytes(&mut entry, 2, value.as_bytes());
            put_bytes(&mut metadata, 7, &entry);
        }
        if !self.client_ip.is_empty() {
            put_bytes(&mut metadata, 8, self.client_ip.as_bytes());
        }
        let mut any = Vec::new();
        put_bytes(&mut any, 1, self.type_url.as_bytes());
        put_bytes(&mut any, 2, &self.body);
        let mut out = Vec::with_capacity(metadata.len() + any.len() + 12);
        put_bytes(&mut out, 2, &metadata);
        put_bytes(&mut out, 3, &any);
        out
    }

    /// Decodes a `Payload` message; the error names what is wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Payload, String> {
        let mut payload = Payload::default();
        for field in Fields(bytes) {
            match field? {
                (2, Value::Len(metadata)) => payload.read_metadata(metadata)?,
                (3, Value::Len(any)) => {
                    for field in Fields(any) {
                        match field? {
                            (1, Value::Len(url)) => payload.type_url = text(url, "type_url")?,
                            (2, Value::Len(value)) => payload.body = value.to_vec(),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(payload)
    }

    fn read_metadata(&mut self, bytes: &[u8]) -> Result<(), String> {
        for field in Fields(bytes) {
            match field? {
                (3, Value::Len(kind)) => self.kind = text(kind, "metadata type")?,
                (8, Value::Len(ip)) => self.client_ip = text(ip, "clientIp")?,
                (7, Value::Len(entry)) => {
                    let (mut key, mut value) = (String::new(), String::new());
                    for field in Fields(entry) {
                        match field? {
                            (1, Value::Len(k)) => key = text(k, "header name")?,
                            (2, Value::Len(v)) => value = text(v, "header value")?,
                            _ => {}
                        }
                    }
                    self.headers.insert(key, value);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn text(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("the payload's {what} is not UTF-8"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field; proto3 leaves empty ones out.
fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    put_varint(out, u64::from(field) << 3 | u64::from(LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A field's value; only length-delimited ones are kept, the others are skipped.
enum Value<'a> {
    Len(&'a [u8]),
    Other,
}

/// The fields of one message, in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            self.0 = &[]; // no field after a malformed one
        }
        Some(item)
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u64, Value<'a>), String> {
        let key = self.varint()?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        if number == 0 {
            return Err("a field numbered 0".into());
        }
        let value = match wire {
            VARINT => {
                self.varint()?;
                Value::Other
            }
            FIXED64 => {
                self.take(8)?;
                Value::Other
            }
            FIXED32 => {
                self.take(4)?;
                Value::Other
            }
            LEN => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| "a length past the end")?;
                Value::Len(self.take(len)?)
            }
            _ => return Err(format!("wire type {wire} (groups are not used by Nacos)")),
        };
        Ok((number, value))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.0.split_first().ok_or("a truncated varint")?;
            self.0 = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err("a length past the end".into());
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }
}

/// A gRPC message on the wire: a flag byte (0: not compressed), a 4-byte big-endian length,
/// the message.
pub(crate) fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Cuts the messages out of a stream's DATA bytes, however they were split.
#[derive(Default)]
pub(crate) struct Deframer {
    buf: Vec<u8>,
}

impl Deframer {
    /// Takes the next bytes of the stream.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` until one is complete. An error (a compressed
    /// message, which was never negotiated, or one over [`MAX_MESSAGE`]) ends the stream.
    pub(crate) fn next_message(&mut self) -> Result<Option<Vec<u8>>, String> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err("a compressed gRPC message (no compression was negotiated)".into());
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(format!(
                "a gRPC message of {len} bytes (at most {MAX_MESSAGE} taken)"
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let message = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What protoc's encoder writes for a Payload with these fields (built by hand from the
    /// proto definitions: tag = field << 3 | wire type 2, then the length).
    fn reference_bytes() -> Vec<u8> {
        let kind = b"NotifySubscriberRequest";
        let body = br#"{"requestId":"7"}"#;
        let mut metadata = vec![0x1a, kind.len() as u8]; // field 3, LEN
        metadata.extend_from_slice(kind);
        // field 7, LEN: one map entry { 1: "accessToken", 2: "t" }
        let entry = [&[0x0a, 11][..], b"accessToken", &[0x12, 1], b"t"].concat();
        metadata.extend_from_slice(&[0x3a, entry.len() as u8]);
        metadata.extend_from_slice(&entry);
        metadata.extend_from_slice(&[0x42, 8]); // field 8, LEN
        metadata.extend_from_slice(b"10.0.0.1");
        let mut any = vec![0x0a, kind.len() as u8];
        any.extend_from_slice(kind);
        any.extend_from_slice(&[0x12, body.len() as u8]);
        any.extend_from_slice(body);
        let mut out = vec![0x12, metadata.len() as u8];
        out.extend_from_slice(&metadata);
        out.extend_from_slice(&[0x1a, any.len() as u8]);
        out.extend_from_slice(&any);
        out
    }

    fn reference_payload() -> Payload {
        Payload {
            kind: "NotifySubscriberRequest".into(),
            client_ip: "10.0.0.1".into(),
            headers: [("accessToken".to_string(), "t".to_string())].into(),
            type_url: "NotifySubscriberRequest".into(),
            body: br#"{"requestId":"7"}"#.to_vec(),
        }
    }

    #[test]
    fn payloads_code_as_the_proto_definitions_say() {
        assert_eq!(reference_payload().encode(), reference_bytes());
        assert_eq!(
            Payload::decode(&reference_bytes()).unwrap(),
            reference_payload()
        );
    }

    #[test]
    fn long_fields_take_multi_byte_lengths() {
        let payload = Payload {
            kind: "SubscribeServiceResponse".into(),
            body: vec![b'x'; 300],
            ..Payload::default()
        };
        let bytes = payload.encode();
        // The Any's value: field 2, then 300 as a varint (0xac 0x02).
        let at = bytes.windows(3).position(|w| w == [0x12, 0xac, 0x02]);
        assert!(at.is_some(), "{bytes:02x?}");
        assert_eq!(Payload::decode(&bytes).unwrap(), payload);
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped() {
        let mut bytes = vec![0x08, 0x96, 0x01]; // field 1, varint 150
        bytes.extend_from_slice(&[0x21, 1, 2, 3, 4, 5, 6, 7, 8]); // field 4, fixed64
        bytes.extend_from_slice(&[0x2d, 1, 2, 3, 4]); // field 5, fixed32
        bytes.extend_from_slice(&[0x32, 2, b'h', b'i']); // field 6, LEN
        bytes.extend_from_slice(&reference_bytes());
        assert_eq!(Payload::decode(&bytes).unwrap(), reference_payload());
    }

    #[test]
    fn malformed_bytes_are_errors_never_panics() {
        let good = reference_bytes();
        for cut in 1..good.len() {
            // Every truncation is an error or, where it cuts between fields, a smaller payload.
            let _ = Payload::decode(&good[..cut]);
        }
        for bad in [
            &[0x12, 0x05, 0x01][..], // length past the end
            &[0x12][..],             // truncated length
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ][..], // varint
            &[0x13][..],             // start group
            &[0x00, 0x00][..],       // field 0
            &[0x12, 0x04, 0x1a, 0x02, 0xff, 0xfe][..], // type not UTF-8
            &[
                0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..], // huge length
        ] {
            assert!(Payload::decode(bad).is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn frames_are_cut_out_however_the_bytes_arrive() {
        let (a, b) = (reference_payload().encode(), b"second".to_vec());
        let stream = [frame(&a), frame(&b)].concat();
        assert_eq!(&stream[..5], &[0, 0, 0, 0, a.len() as u8]);
        for split in 0..stream.len() {
            let mut d = Deframer::default();
            let mut got = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                d.push(part);
                while let Some(m) = d.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, vec![a.clone(), b.clone()], "split at {split}");
        }
    }

    #[test]
    fn compressed_or_oversized_frames_end_the_stream() {
        let mut d = Deframer::default();
        d.push(&[1, 0, 0, 0, 1, 0]);
        assert!(d.next_message().is_err());
        let mut d = Deframer::default();
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_message().unwrap_err().contains("at most"));
    }
}
