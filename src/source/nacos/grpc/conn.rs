//! One gRPC connection to a Nacos server over HTTP/2 (h2 on tokio, TLS through the source's
//! rustls configuration for `nacos+https://`): unary calls to `/Request/request` and the
//! `/BiRequestStream/requestBiStream` stream. Every wait is bounded by a timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::codec::{frame, Deframer, Payload};

const UNARY_PATH: &str = "/Request/request";
const STREAM_PATH: &str = "/BiRequestStream/requestBiStream";

pub(crate) struct Conn {
    send: SendRequest<Bytes>,
    /// `http` or `https`, and `host:port`, for the requests' URIs.
    scheme: &'static str,
    authority: String,
    timeout: Duration,
}

/// The server's half of the bi-stream: the messages it pushes, in order.
pub(crate) struct Incoming {
    recv: RecvStream,
    deframer: Deframer,
}

/// Connects to `authority` (`host:port`) and completes the HTTP/2 handshake within `limit`.
pub(crate) async fn connect(
    authority: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    limit: Duration,
) -> Result<Conn, String> {
    let work = async {
        let tcp = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect to {authority}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => {
                let (send, connection) = h2::client::handshake(tcp)
                    .await
                    .map_err(|e| format!("HTTP/2 handshake with {authority}: {e}"))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok::<_, String>((send, "http"))
            }
            Some(config) => {
                let mut config = (*config).clone();
                config.alpn_protocols = vec![b"h2".to_vec()];
                let host = authority
                    .rsplit_once(':')
                    .map_or(authority, |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|_| format!("{authority}: not a TLS server name"))?;
                let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {authority}: {e}"))?;
                let (send, connection) = h2::client::handshake(stream)
                    .await
                    .map_err(|e| format!("HTTP/2 handshake with {authority}: {e}"))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok((send, "https"))
            }
        }
    };
    let (send, scheme) = timeout(limit, work).await.map_err(|_| {
        format!(
            "connect to {authority}: no answer within {} ms",
            limit.as_millis()
        )
    })??;
    Ok(Conn {
        send,
        scheme,
        authority: authority.to_owned(),
        timeout: limit,
    })
}

impl Conn {
    fn request(&self, path: &str) -> http::Request<()> {
        http::Request::builder()
            .method("POST")
            .uri(format!("{}://{}{path}", self.scheme, self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("a well-formed request")
    }

    /// Opens a stream on `path`, sending `first` (and ending the request side when `end`).
    async fn open(
        &mut self,
        path: &str,
        first: &Payload,
        end: bool,
    ) -> Result<(h2::client::ResponseFuture, SendStream<Bytes>), String> {
        let ready = timeout(self.timeout, self.send.clone().ready())
            .await
            .map_err(|_| "the connection did not take a new stream in time".to_string())?
            .map_err(|e| format!("the connection failed: {e}"))?;
        self.send = ready;
        let (response, mut body) = self
            .send
            .send_request(self.request(path), false)
            .map_err(|e| format!("{path}: {e}"))?;
        body.send_data(Bytes::from(frame(&first.encode())), end)
            .map_err(|e| format!("{path}: {e}"))?;
        Ok((response, body))
    }

    /// One unary call: the request, its one answer.
    pub(crate) async fn call(&mut self, request: &Payload) -> Result<Payload, String> {
        let limit = self.timeout;
        let kind = request.kind.clone();
        let work = async {
            let (response, _body) = self.open(UNARY_PATH, request, true).await?;
            let response = response.await.map_err(|e| format!("{kind}: {e}"))?;
            status_ok(response.status(), response.headers(), &kind)?;
            let mut recv = response.into_body();
            let mut deframer = Deframer::default();
            let mut answer = None;
            while let Some(chunk) = recv.data().await {
                let chunk = chunk.map_err(|e| format!("{kind}: {e}"))?;
                let _ = recv.flow_control().release_capacity(chunk.len());
                deframer.push(&chunk);
                if answer.is_none() {
                    answer = deframer.next_message()?;
                }
            }
            if let Some(trailers) = recv.trailers().await.map_err(|e| format!("{kind}: {e}"))? {
                grpc_status_ok(&trailers, &kind)?;
            }
            let answer = answer.ok_or_else(|| format!("{kind}: the server answered no message"))?;
            Payload::decode(&answer)
        };
        timeout(limit, work)
            .await
            .map_err(|_| format!("{kind}: no answer within {} ms", limit.as_millis()))?
    }

    /// Opens the bi-stream with `setup` as its first message: the half to send answers on, and
    /// the server's half.
    pub(crate) async fn stream(
        &mut self,
        setup: &Payload,
    ) -> Result<(SendStream<Bytes>, Incoming), String> {
        let limit = self.timeout;
        let (response, send) = self.open(STREAM_PATH, setup, false).await?;
        let response = timeout(limit, response)
            .await
            .map_err(|_| "the push stream was not answered in time".to_string())?
            .map_err(|e| format!("the push stream: {e}"))?;
        status_ok(response.status(), response.headers(), "the push stream")?;
        Ok((
            send,
            Incoming {
                recv: response.into_body(),
                deframer: Deframer::default(),
            },
        ))
    }
}

impl Incoming {
    /// The next message the server pushes; `Err` when the stream ends or breaks.
    pub(crate) async fn next(&mut self) -> Result<Payload, String> {
        loop {
            if let Some(message) = self.deframer.next_message()? {
                return Payload::decode(&message);
            }
            match self.recv.data().await {
                Some(Ok(chunk)) => {
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    self.deframer.push(&chunk);
                }
                Some(Err(e)) => return Err(format!("the push stream broke: {e}")),
                None => return Err("the server ended the push stream".into()),
            }
        }
    }
}

/// Sends `p` on the client's half of the bi-stream.
pub(crate) fn send(stream: &mut SendStream<Bytes>, p: &Payload) -> Result<(), String> {
    stream
        .send_data(Bytes::from(frame(&p.encode())), false)
        .map_err(|e| format!("the push stream: {e}"))
}

fn status_ok(
    status: http::StatusCode,
    headers: &http::HeaderMap,
    what: &str,
) -> Result<(), String> {
    if status != http::StatusCode::OK {
        return Err(format!(
            "{what}: the server answered HTTP {}",
            status.as_u16()
        ));
    }
    // A trailers-only answer carries grpc-status in the headers.
    if headers.contains_key("grpc-status") {
        grpc_status_ok(headers, what)?;
    }
    Ok(())
}

fn grpc_status_ok(headers: &http::HeaderMap, what: &str) -> Result<(), String> {
    let status = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0");
    if status == "0" {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Err(format!(
        "{what}: grpc-status {}: {}",
        crate::source::quoted_upstream(status),
        crate::source::quoted_upstream(message)
    ))
}
