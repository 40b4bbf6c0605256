//! `eas+https://` with `tls_ca_file`: a TLS discovery upstream on loopback with a test CA.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use easdirect::{Client, ErrorKind, Options};

const BODY: &str = r#"{"endpoints":{"items":[{"ip":"127.0.0.1","port":50001,"weight":100}]}}"#;

struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

/// Serves the discovery answer over TLS to every connection; returns the port.
fn serve(config: Arc<rustls::ServerConfig>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                let _ = tls.write_all(answer.as_bytes());
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

#[test]
fn https_discovery_trusts_the_given_ca_and_only_it() {
    let pki = pki();
    let port = serve(pki.server.clone());
    let dir = std::env::temp_dir().join(format!("easdirect-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &pki.ca_pem).unwrap();

    let mut options = Options::new();
    options
        .set("tls_ca_file", ca_path.to_str().unwrap())
        .unwrap();
    options.set("refresh_interval_ms", "50").unwrap();
    let c = Client::new(&format!("eas+https://localhost:{port}/svc"), &options).unwrap();
    c.wait_ready(Duration::from_secs(5)).unwrap();
    assert_eq!(c.select().unwrap().port, 50001);

    // The system roots do not know this CA: the fetch fails and says so.
    let mut options = Options::new();
    options.set("request_timeout_ms", "500").unwrap();
    let c = Client::new(&format!("eas+https://localhost:{port}/svc"), &options).unwrap();
    let err = c.wait_ready(Duration::from_millis(500)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.message.contains("https://localhost"), "{err}");

    // A file that holds no certificate is rejected at creation, naming the key.
    std::fs::write(&ca_path, "not a certificate").unwrap();
    let mut options = Options::new();
    options
        .set("tls_ca_file", ca_path.to_str().unwrap())
        .unwrap();
    let err = Client::new(&format!("eas+https://localhost:{port}/svc"), &options)
        .err()
        .unwrap();
    assert!(err.message.contains("tls_ca_file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
