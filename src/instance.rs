//! One service instance, in the exact 128-byte layout the C ABI hands out.

use std::ffi::c_char;
use std::fmt::Write as _;
use std::net::IpAddr;

/// Weight given to an instance whose source says nothing about weight.
pub const DEFAULT_WEIGHT: u32 = 100;

/// A discovered instance. The layout is the C ABI's `eas_instance` (128 bytes: id @0, ip @8,
/// port @54, weight @56, host @60, reserved @124), so a pick copies it out without conversion.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    /// FNV-1a-64 of the bytes of `host`; 0 becomes 1. The same in every process.
    pub id: u64,
    /// NUL-terminated textual IPv4 or IPv6 address (RFC 5952; IPv4-mapped shown as IPv4).
    pub ip: [c_char; 46],
    /// TCP port, 1-65535.
    pub port: u16,
    /// The source's weight; 0 means known but never picked.
    pub weight: u32,
    /// NUL-terminated `ip:port` or `[ipv6]:port`.
    pub host: [c_char; 64],
    /// Always zero.
    pub reserved: [u8; 4],
}

const _: () = assert!(std::mem::size_of::<Instance>() == 128);
const _: () = assert!(std::mem::align_of::<Instance>() == 8);

impl Instance {
    /// An all-zero record, to be overwritten by a pick.
    pub const ZEROED: Instance = Instance {
        id: 0,
        ip: [0; 46],
        port: 0,
        weight: 0,
        host: [0; 64],
        reserved: [0; 4],
    };

    /// Builds an instance from a parsed address; the id is derived from the host string.
    pub fn new(ip: IpAddr, port: u16, weight: u32) -> Instance {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let ip_text = ip.to_string(); // std formats IPv6 as RFC 5952 wants
        let mut host_text = String::with_capacity(ip_text.len() + 8);
        match ip {
            IpAddr::V4(_) => write!(host_text, "{ip_text}:{port}"),
            IpAddr::V6(_) => write!(host_text, "[{ip_text}]:{port}"),
        }
        .expect("writing to a String cannot fail");
        let mut inst = Instance {
            id: host_id(host_text.as_bytes()),
            ip: [0; 46],
            port,
            weight,
            host: [0; 64],
            reserved: [0; 4],
        };
        // The longest IPv6 text is 45 bytes and the longest host 53: both fit with their NUL.
        copy_text(&mut inst.ip, &ip_text);
        copy_text(&mut inst.host, &host_text);
        inst
    }

    /// The address as text, e.g. `10.0.0.1` or `fe80::1`.
    pub fn ip_str(&self) -> &str {
        c_str(&self.ip)
    }

    /// `ip:port`, or `[ipv6]:port`.
    pub fn host_str(&self) -> &str {
        c_str(&self.host)
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("id", &format_args!("{:#018x}", self.id))
            .field("host", &self.host_str())
            .field("weight", &self.weight)
            .finish()
    }
}

fn copy_text(field: &mut [c_char], text: &str) {
    for (slot, &b) in field.iter_mut().zip(text.as_bytes()) {
        *slot = b as c_char;
    }
}

fn c_str(field: &[c_char]) -> &str {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    // SAFETY: c_char and u8 have the same size and alignment, and every bit pattern is valid
    // for both; the slice stays within `field`.
    let bytes = unsafe { std::slice::from_raw_parts(field.as_ptr().cast::<u8>(), end) };
    // Only ever filled from Rust strings above.
    std::str::from_utf8(bytes).unwrap_or("")
}

/// FNV-1a-64 of `bytes`, with 0 mapped to 1 so that 0 never names an instance.
pub fn host_id(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if hash == 0 {
        1
    } else {
        hash
    }
}

/// Parses a textual IPv4 or IPv6 address as sources deliver it (no brackets, no zone id).
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse().ok()
}

/// Rounds a source's weight to the integer `eas_instance.weight` carries: `None` for a value
/// that is not a finite number >= 0; a positive weight never becomes 0.
pub fn weight_from_f64(value: f64) -> Option<u32> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let rounded = value.round().min(f64::from(u32::MAX)) as u32;
    Some(if value > 0.0 { rounded.max(1) } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_c_abi() {
        let inst = Instance::new("10.0.0.1".parse().unwrap(), 50000, 100);
        let base = &inst as *const Instance as usize;
        assert_eq!(&inst.ip as *const _ as usize - base, 8);
        assert_eq!(&inst.port as *const _ as usize - base, 54);
        assert_eq!(&inst.weight as *const _ as usize - base, 56);
        assert_eq!(&inst.host as *const _ as usize - base, 60);
        assert_eq!(&inst.reserved as *const _ as usize - base, 124);
    }

    #[test]
    fn id_is_fnv1a_of_the_host_text() {
        let inst = Instance::new("10.0.0.1".parse().unwrap(), 50000, 100);
        assert_eq!(inst.host_str(), "10.0.0.1:50000");
        // FNV-1a-64 test vector: "a" hashes to 0xaf63dc4c8601ec8c.
        assert_eq!(host_id(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(inst.id, host_id(b"10.0.0.1:50000"));
    }

    #[test]
    fn ipv6_is_bracketed_and_mapped_ipv4_is_shown_as_ipv4() {
        let v6 = Instance::new("2001:db8:0:0:0:0:0:1".parse().unwrap(), 8080, 1);
        assert_eq!(v6.ip_str(), "2001:db8::1");
        assert_eq!(v6.host_str(), "[2001:db8::1]:8080");
        let mapped = Instance::new("::ffff:10.1.2.3".parse().unwrap(), 80, 1);
        assert_eq!(mapped.ip_str(), "10.1.2.3");
        let longest = Instance::new(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            65535,
            1,
        );
        assert_eq!(longest.host_str().len(), 47);
    }

    #[test]
    fn weights_round_and_a_positive_weight_stays_positive() {
        assert_eq!(weight_from_f64(100.0), Some(100));
        assert_eq!(weight_from_f64(0.4), Some(1));
        assert_eq!(weight_from_f64(2.5), Some(3));
        assert_eq!(weight_from_f64(0.0), Some(0));
        assert_eq!(weight_from_f64(-1.0), None);
        assert_eq!(weight_from_f64(f64::NAN), None);
    }
}
