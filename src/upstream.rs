//! Keep-alive HTTP/1.1 connections to one backend.
//!
//! Each backend owns a [`ConnPool`]: a bounded lock-free queue of idle connections.
//! A request checks one out (or connects), sends on it, and the response body puts it
//! back after a clean end of stream (see `proxy::body`). A connection that failed,
//! timed out, was upgraded or whose body was abandoned is never put back, so a broken
//! connection is not reused.
//!
//! Owning the pool (instead of a generic client) is what lets the proxy tell "the
//! request never left" (connect error, stale pooled connection) from "the backend
//! failed while answering", which decides whether any request may be retried.

use std::net::SocketAddr;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::proxy::body::RequestBody;
use crate::proxy::error::ProxyError;

/// The sending half of one upstream connection.
pub type Sender = http1::SendRequest<RequestBody>;

/// Idle connections kept per backend; more are closed when they come back.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed instead of reused: many servers
/// close idle keep-alive connections after 5-75 s, and reusing one they are about to
/// close is how a proxy loses requests.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

/// A connection taken out of the pool (or freshly made) for one request.
#[derive(Debug)]
pub struct Conn {
    pub sender: Sender,
    /// True when it came from the pool (and so may be stale).
    pub reused: bool,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Pooled connections to one backend address.
pub struct ConnPool {
    addr: SocketAddr,
    idle: ArrayQueue<Idle>,
    /// The backend's close signal: ends every connection task (see `BackendState`).
    closed: CancellationToken,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool")
            .field("addr", &self.addr)
            .field("idle", &self.idle.len())
            .finish()
    }
}

impl ConnPool {
    /// A pool for `addr` whose connections end when `closed` is cancelled.
    pub fn new(addr: SocketAddr, closed: CancellationToken) -> Self {
        ConnPool {
            addr,
            idle: ArrayQueue::new(MAX_IDLE),
            closed,
        }
    }

    /// Idle connections currently pooled.
    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// A live pooled connection if there is one, else a new one.
    pub async fn checkout(&self, connect_timeout: Duration) -> Result<Conn, ProxyError> {
        if let Some(sender) = self.pop_idle() {
            return Ok(Conn {
                sender,
                reused: true,
            });
        }
        self.connect(connect_timeout).await.map(|sender| Conn {
            sender,
            reused: false,
        })
    }

    /// Opens a new connection (used directly when a pooled one turned out stale).
    pub async fn connect(&self, connect_timeout: Duration) -> Result<Sender, ProxyError> {
        let stream =
            match tokio::time::timeout(connect_timeout, TcpStream::connect(self.addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => return Err(ProxyError::Connect(err)),
                Err(_) => return Err(ProxyError::ConnectTimeout),
            };
        // Small request/response exchanges must not wait for Nagle's algorithm.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(backend = %self.addr, %err, "set_nodelay failed");
        }
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|err| ProxyError::Connect(std::io::Error::other(err)))?;
        let addr = self.addr;
        let closed = self.closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                ended = conn.with_upgrades() => if let Err(err) = ended {
                    tracing::debug!(backend = %addr, %err, "upstream connection ended with an error");
                },
                // Dropping the connection closes the socket: a body streaming on it ends
                // with an error, which the client sees as a closed stream.
                () = closed.cancelled() => {
                    tracing::debug!(backend = %addr, "upstream connection closed: backend removed");
                }
            }
        });
        Ok(sender)
    }

    /// Returns a connection after its response ended cleanly.
    pub fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        // A full pool drops the connection, which closes it.
        let _dropped_when_full = self.idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Closes every idle connection (the backend left the config; connections in
    /// use are left to finish).
    pub fn clear_idle(&self) {
        while self.idle.pop().is_some() {}
    }

    fn pop_idle(&self) -> Option<Sender> {
        while let Some(idle) = self.idle.pop() {
            if idle.sender.is_closed() || idle.since.elapsed() > MAX_IDLE_AGE {
                continue;
            }
            return Some(idle.sender);
        }
        None
    }
}
