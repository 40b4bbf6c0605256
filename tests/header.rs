//! The checked-in header is exactly what the pinned cbindgen generates from src/.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cbindgen() -> PathBuf {
    if let Some(path) = std::env::var_os("EASDIRECT_CBINDGEN") {
        return path.into();
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    Path::new(&home).join(".cache/easdirect/tools/cbindgen-0.29.4/bin/cbindgen")
}

#[test]
fn checked_in_header_matches_cbindgen_output() {
    let tool = cbindgen();
    assert!(
        tool.exists(),
        "cbindgen 0.29.4 not found at {}: run `make test` (it installs it) or set EASDIRECT_CBINDGEN",
        tool.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("easdirect-header-{}.h", std::process::id()));
    let status = Command::new(&tool)
        .current_dir(root)
        .args(["--config", "cbindgen.toml", "--quiet", "--output"])
        .arg(&out)
        .status()
        .expect("cbindgen runs");
    assert!(status.success(), "cbindgen failed");
    // The version is Cargo.toml's, put in as `make header` does.
    let generated = std::fs::read_to_string(&out)
        .unwrap()
        .replace("@EAS_VERSION@", env!("CARGO_PKG_VERSION"));
    let _ = std::fs::remove_file(&out);
    let checked_in = std::fs::read_to_string(root.join("include/easdirect.h")).unwrap();
    assert!(
        generated == checked_in,
        "include/easdirect.h differs from cbindgen's output: run `make header` and commit"
    );
}

/// Only the `eas_*` API is in the header: a core constant that cbindgen picked up (every `pub
/// const` of the crate is a candidate) must be excluded in cbindgen.toml, not shipped.
#[test]
fn every_name_the_header_defines_is_eas_prefixed() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/easdirect.h"))
            .unwrap();
    for line in header.lines() {
        if let Some(rest) = line.strip_prefix("#define ") {
            let name = rest.split_whitespace().next().unwrap_or("");
            assert!(
                name.starts_with("EAS_") || name == "EASDIRECT_H",
                "the header defines {name}: exclude it in cbindgen.toml"
            );
        }
    }
}
