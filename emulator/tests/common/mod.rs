//! A tiny HTTP/1.1 client on std::net::TcpStream, for checking wire behaviour.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

pub const DOC: &str = "/exported/apis/eas.alibaba-inc.k8s.io/v1/upstreams/";
pub const NEW: &str = "/api/v1/servicediscovery/upstreams/";

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length").map(|v| v.parse().unwrap())
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads the status line and headers.
pub fn read_head(r: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((status, headers))
}

/// Reads one whole response: body by Content-Length, chunked, or to EOF.
pub fn read_reply(r: &mut impl BufRead, head_request: bool) -> io::Result<Reply> {
    let (status, headers) = read_head(r)?;
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    if head_request || status == 204 || status == 304 {
        return Ok(reply);
    }
    if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            reply.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = reply.content_length() {
        reply.body.resize(n, 0);
        r.read_exact(&mut reply.body)?;
    } else {
        r.read_to_end(&mut reply.body)?;
    }
    Ok(reply)
}

/// Sends one request (with `Connection: close`) and reads the reply.
pub fn request(addr: SocketAddr, method: &str, target: &str, body: Option<&str>) -> Reply {
    let mut s = connect(addr);
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).unwrap();
    read_reply(&mut BufReader::new(s), method == "HEAD").unwrap()
}

pub fn get(addr: SocketAddr, target: &str) -> Reply {
    request(addr, "GET", target, None)
}

pub fn put(addr: SocketAddr, target: &str, body: &str) -> Reply {
    request(addr, "PUT", target, Some(body))
}

/// Opens a connection and sends a GET without reading anything.
pub fn send_get(addr: SocketAddr, target: &str) -> TcpStream {
    let mut s = connect(addr);
    write!(s, "GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    s
}
