//! TLS settings for https discovery: the caller's CA file, or the system's roots.

use std::sync::Arc;

use rustls::RootCertStore;

use crate::error::Error;

/// A rustls client configuration trusting the certificates of `ca_file` (PEM), or the system's
/// roots when none is given.
pub fn client_config(ca_file: Option<&str>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                Error::invalid(format!(
                    "option \"tls_ca_file\": cannot read \"{path}\": {e}"
                ))
            })?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| {
                    Error::invalid(format!(
                        "option \"tls_ca_file\": \"{path}\" is not PEM: {e}"
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    Error::invalid(format!(
                        "option \"tls_ca_file\": a certificate in \"{path}\" is unusable: {e}"
                    ))
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(Error::invalid(format!(
                    "option \"tls_ca_file\": \"{path}\" holds no PEM certificate"
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
