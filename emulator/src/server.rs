//! The listener and its threads: one accept thread, one thread per connection. Shutting down
//! sets a stop flag (which every connection thread polls), wakes the accept thread with a
//! connection of its own, and joins everything.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::http::{Conn, Head, Incoming, Response};

/// Locks a mutex, ignoring poisoning (a panicking connection thread must not wedge the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What to do with a connection after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Wait for the next request on the same connection.
    KeepAlive,
    /// Close the connection.
    Close,
}

impl Flow {
    /// `KeepAlive` when `keep` is true.
    pub fn keep_if(keep: bool) -> Flow {
        if keep {
            Flow::KeepAlive
        } else {
            Flow::Close
        }
    }
}

/// Answers requests. The head is peeked, not consumed: the handler consumes it
/// ([`Conn::read_request`]) unless it means to close the connection with the request unread.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(&self, conn: &mut Conn, head: Head) -> Flow;
}

/// The address to connect to in order to reach a listener bound to `addr`.
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// A running listener.
pub(crate) struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Server {
    /// Binds `addr` and serves it on background threads with the handler that `make` builds
    /// from the bound address.
    pub fn bind<H: Handler>(
        addr: SocketAddr,
        name: &str,
        make: impl FnOnce(SocketAddr) -> Arc<H>,
    ) -> io::Result<(Server, Arc<H>)> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let handler = make(addr);
        let dyn_handler: Arc<dyn Handler> = handler.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (stop, conns, name) = (stop.clone(), conns.clone(), name.to_string());
            thread::Builder::new()
                .name(format!("{name}-accept"))
                .spawn(move || accept_loop(listener, stop, conns, dyn_handler, name))?
        };
        let server = Server {
            addr,
            stop,
            accept: Some(accept),
            conns,
        };
        Ok((server, handler))
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes the listener and every connection, and joins the threads.
    /// Idempotent.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            // Wake the blocking accept; if that fails, leave the thread: it exits on its next
            // accept and serves nothing in between.
            if TcpStream::connect_timeout(&reachable(self.addr), Duration::from_secs(1)).is_ok() {
                let _ = accept.join();
            }
        }
        let conns = std::mem::take(&mut *lock(&self.conns));
        for c in conns {
            let _ = c.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    handler: Arc<dyn Handler>,
    name: String,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(_) => {
                // EMFILE and the like: back off instead of spinning.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let (stop, handler) = (stop.clone(), handler.clone());
        let spawned = thread::Builder::new()
            .name(format!("{name}-conn"))
            .spawn(move || serve(Conn::new(stream, stop), handler.as_ref()));
        if let Ok(h) = spawned {
            let mut conns = lock(&conns);
            conns.retain(|h| !h.is_finished());
            conns.push(h);
        }
    }
}

fn serve(mut conn: Conn, handler: &dyn Handler) {
    loop {
        match conn.peek_head() {
            Incoming::Closed => return,
            Incoming::Bad(status, msg) => {
                // Read what arrived, so that closing does not reset the connection and lose
                // the answer.
                conn.discard_available();
                let _ = conn.send(&Response::text(status, msg), false, false);
                return;
            }
            Incoming::Head(head) => {
                if handler.handle(&mut conn, head) == Flow::Close {
                    return;
                }
            }
        }
    }
}
