//! A minimal HTTP/1.1 server-side connection: request heads are *peeked* before they are
//! consumed, so a handler can still close a connection with the request unread (the kernel then
//! resets it), and every blocking call polls the stop flag with short timeouts.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long any blocking socket call waits before the stop flag is checked again.
pub(crate) const POLL: Duration = Duration::from_millis(50);
/// Largest accepted request head.
const MAX_HEAD: usize = 64 * 1024;
/// Largest accepted request body.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A parsed request head (request line and headers).
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub method: String,
    /// The request target as sent: path and query.
    pub target: String,
    /// HTTP/1.1 or later (`false` for HTTP/1.0).
    pub http11: bool,
    pub headers: Vec<(String, String)>,
    /// Bytes of the head on the wire, the final empty line included.
    pub len: usize,
}

impl Head {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Whether the client allows the connection to stay open after the response.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.http11 {
            !conn.split(',').any(|t| t.trim() == "close")
        } else {
            conn.split(',').any(|t| t.trim() == "keep-alive")
        }
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false)
    }

    fn has_body(&self) -> bool {
        self.chunked()
            || self
                .header("content-length")
                .map(|v| v.trim() != "0")
                .unwrap_or(false)
    }
}

/// A whole request: head and de-chunked body.
pub(crate) struct Request {
    pub head: Head,
    pub body: Vec<u8>,
}

/// What [`Conn::peek_head`] found.
pub(crate) enum Incoming {
    /// A complete head, still unread in the socket.
    Head(Head),
    /// The client closed, the server is stopping, or the socket failed.
    Closed,
    /// A malformed or oversized head: answer this status and close.
    Bad(u16, &'static str),
}

/// How a parked connection woke up.
pub(crate) enum Parked {
    /// The caller's abort condition became true.
    Aborted,
    /// The server is stopping or the client went away.
    Gone,
}

/// A response to send.
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a body of the given content type.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    /// A response with a JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", value.to_string())
    }

    /// A response with a plain-text body (a newline is appended).
    pub fn text(status: u16, text: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{text}\n"))
    }

    /// A response without a body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The status line and headers of a body sent in chunks (`Transfer-Encoding: chunked`).
    pub fn chunked_head_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let mut s = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("Transfer-Encoding: chunked\r\n");
        s.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        s.into_bytes()
    }

    /// The status line and headers, announcing `content_length` body bytes.
    pub fn head_bytes(&self, content_length: usize, keep_alive: bool) -> Vec<u8> {
        let mut s = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.status != 204 && self.status != 304 && !(100..200).contains(&self.status) {
            s.push_str(&format!("Content-Length: {content_length}\r\n"));
        }
        s.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        s.into_bytes()
    }
}

/// The reason phrase of a status code.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// One chunk of a chunked body (an empty `data` is the last chunk).
pub(crate) fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn stopped_error() -> io::Error {
    io::Error::other("server stopping")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(bytes: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let line = lines.next().ok_or("empty request")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if method.is_empty() || !target.starts_with('/') {
        return Err("malformed request line");
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err("unsupported HTTP version"),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once(':').ok_or("malformed header line")?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        http11,
        headers,
        len: bytes.len(),
    })
}

/// One accepted connection.
pub(crate) struct Conn {
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    peek_buf: Vec<u8>,
}

impl Conn {
    /// Wraps an accepted stream; sets the short socket timeouts the stop checks rely on.
    pub fn new(stream: TcpStream, stop: Arc<AtomicBool>) -> Conn {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(POLL));
        let _ = stream.set_write_timeout(Some(POLL));
        Conn {
            stream,
            stop,
            peek_buf: vec![0; MAX_HEAD],
        }
    }

    /// Whether the server is stopping.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits for a complete request head and returns it *without consuming it*.
    pub fn peek_head(&mut self) -> Incoming {
        let mut last = 0;
        loop {
            if self.stopped() {
                return Incoming::Closed;
            }
            match self.stream.peek(&mut self.peek_buf) {
                Ok(0) => return Incoming::Closed,
                Ok(n) => {
                    let data = &self.peek_buf[..n];
                    // Empty lines before a request line are allowed (RFC 9112 2.2).
                    let blank = data
                        .iter()
                        .take_while(|b| **b == b'\r' || **b == b'\n')
                        .count();
                    if blank > 0 {
                        if self.consume(blank).is_err() {
                            return Incoming::Closed;
                        }
                        last = 0;
                        continue;
                    }
                    // A request line starts with a method token: a TLS handshake (0x16) or any
                    // other binary start is not HTTP/1.1 and never becomes it, so it is closed
                    // at once rather than waited on.
                    if !data[0].is_ascii_alphabetic() {
                        return Incoming::Closed;
                    }
                    if let Some(end) = find(data, b"\r\n\r\n") {
                        return match parse_head(&data[..end + 4]) {
                            Ok(head) => Incoming::Head(head),
                            Err(msg) => Incoming::Bad(400, msg),
                        };
                    }
                    if n >= MAX_HEAD {
                        return Incoming::Bad(431, "request head too large");
                    }
                    if n == last {
                        // Part of a head: wait for the rest without spinning.
                        thread::sleep(Duration::from_millis(2));
                    }
                    last = n;
                }
                Err(e) if is_timeout(&e) => {}
                Err(_) => return Incoming::Closed,
            }
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut off = 0;
        while off < buf.len() {
            if self.stopped() {
                return Err(stopped_error());
            }
            match self.stream.read(&mut buf[off..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => off += n,
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads and discards `n` bytes.
    fn consume(&mut self, mut n: usize) -> io::Result<()> {
        let mut scratch = [0u8; 8192];
        while n > 0 {
            let k = n.min(scratch.len());
            self.read_exact(&mut scratch[..k])?;
            n -= k;
        }
        Ok(())
    }

    /// Reads and drops whatever has arrived (one read, waiting at most [`POLL`]).
    pub fn discard_available(&mut self) {
        let mut scratch = vec![0u8; MAX_HEAD];
        let _ = self.stream.read(&mut scratch);
    }

    /// Reads one CRLF-terminated line byte by byte (so nothing past it is consumed).
    fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            self.read_exact(&mut b)?;
            if b[0] == b'\n' {
                break;
            }
            line.push(b[0]);
            if line.len() > 8192 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
    }

    /// Consumes the head returned by [`Conn::peek_head`] and the body it announces
    /// (Content-Length or chunked), answering `Expect: 100-continue` first.
    pub fn read_request(&mut self, head: Head) -> io::Result<Request> {
        self.consume(head.len)?;
        if head.has_body()
            && head
                .header("expect")
                .map(|v| v.eq_ignore_ascii_case("100-continue"))
                .unwrap_or(false)
        {
            self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
        let mut body = Vec::new();
        if head.chunked() {
            loop {
                let line = self.read_line()?;
                let size = line.split(';').next().unwrap_or("").trim();
                let size =
                    usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.read_line()?.is_empty() {}
                    break;
                }
                if body.len() + size > MAX_BODY {
                    return Err(invalid("body too large"));
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.read_exact(&mut body[start..])?;
                let mut crlf = [0u8; 2];
                self.read_exact(&mut crlf)?;
            }
        } else if let Some(len) = head.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| invalid("bad Content-Length"))?;
            if len > MAX_BODY {
                return Err(invalid("body too large"));
            }
            body.resize(len, 0);
            self.read_exact(&mut body)?;
        }
        Ok(Request { head, body })
    }

    /// Writes everything, polling the stop flag.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all_unless(data, &|| false)
    }

    /// Writes everything unless the server stops or `abort` becomes true first.
    pub fn write_all_unless(&mut self, data: &[u8], abort: &dyn Fn() -> bool) -> io::Result<()> {
        let mut off = 0;
        while off < data.len() {
            if self.stopped() || abort() {
                return Err(stopped_error());
            }
            match self.stream.write(&data[off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => off += n,
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends a whole response; no body for a HEAD request.
    pub fn send(&mut self, resp: &Response, keep_alive: bool, head_only: bool) -> io::Result<()> {
        let mut bytes = resp.head_bytes(resp.body.len(), keep_alive);
        if !head_only {
            bytes.extend_from_slice(&resp.body);
        }
        self.write_all(&bytes)
    }

    /// Sleeps for `dur`; returns false early if the server stops or `abort` becomes true.
    pub fn sleep_unless(&self, dur: Duration, abort: &dyn Fn() -> bool) -> bool {
        let deadline = Instant::now() + dur;
        loop {
            if self.stopped() || abort() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
    }

    /// Whether the client has closed its side (or the socket failed), without waiting and
    /// without consuming anything it sent.
    pub fn client_closed(&self) -> bool {
        let mut probe = [0u8; 1];
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let closed = match self.stream.peek(&mut probe) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !is_timeout(&e),
        };
        let _ = self.stream.set_nonblocking(false);
        closed
    }

    /// Waits, sending nothing, until `abort` becomes true, the server stops or the client closes.
    pub fn park(&mut self, abort: &dyn Fn() -> bool) -> Parked {
        let mut probe = [0u8; 1];
        loop {
            if self.stopped() {
                return Parked::Gone;
            }
            if abort() {
                return Parked::Aborted;
            }
            match self.stream.peek(&mut probe) {
                Ok(0) => return Parked::Gone,
                // The client sent more (a pipelined request): leave it unread.
                Ok(_) => thread::sleep(Duration::from_millis(10)),
                Err(e) if is_timeout(&e) => {}
                Err(_) => return Parked::Gone,
            }
        }
    }
}
