//! Gives the shared library its SONAME, `libeasdirect.so.{ABI major}`, read from
//! `src/ffi/mod.rs` (the one place the ABI major is set): a program linked against it looks
//! for that name at run time, so an ABI-breaking release can be installed beside this one.

fn main() {
    println!("cargo:rerun-if-changed=src/ffi/mod.rs");
    let ffi = std::fs::read_to_string("src/ffi/mod.rs").expect("src/ffi/mod.rs is readable");
    let major = ffi
        .lines()
        .find_map(|l| l.trim().strip_prefix("pub const EAS_ABI_MAJOR: u32 = "))
        .and_then(|rest| rest.strip_suffix(';'))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .expect("src/ffi/mod.rs defines `pub const EAS_ABI_MAJOR: u32 = N;`");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libeasdirect.so.{major}");
    }
}
