//! Keep-alive HTTP/1.1 connections to one backend, over TCP or TLS.
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
//!
//! A pool with `tls = { … }` gives its backends an [`UpstreamTls`]: a new
//! connection then runs the TLS handshake (within the same connect timeout)
//! before HTTP/1.1; pooled connections are TLS streams like any other.
//!
//! A pool holds two kinds of connection: hyper's (a [`Sender`] whose connection
//! runs as a task of its own) and the gateway's own ([`h1::H1Conn`], driven by the
//! request's task). Their failures are one [`WireError`] and their connects one
//! [`ConnectError`], so the proxy's exchange and retry rules read the same for
//! both. This module sits below `proxy`: it knows the request body
//! (`body::RequestBody`) and nothing of routing or of the gateway's answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::control_plane::config::spec::{H2Spec, Protocol, UpstreamTlsSpec};
use crate::data_plane::http1::client as h1;
use crate::data_plane::tls::upstream::UpstreamTls;
use body::RequestBody;

pub(crate) mod body;
pub(crate) mod h2;

/// The sending half of one upstream connection.
pub type Sender = http1::SendRequest<RequestBody>;

/// Idle connections kept per backend; more are closed when they come back.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed instead of reused: many servers
/// close idle keep-alive connections after 5-75 s, and reusing one they are about to
/// close is how a proxy loses requests.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

pub use crate::data_plane::http1::client::{MAX_RESPONSE_HEADERS, MAX_RESPONSE_HEAD_BYTES};

/// Why no connection to a backend could be made: the request was not sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Refused, unreachable, or the new connection failed before it was ready.
    #[error("connecting to the backend failed: {0}")]
    Io(#[source] std::io::Error),
    /// Neither connected nor (with TLS) handshaken within the connect timeout.
    #[error("connecting to the backend timed out")]
    TimedOut,
    /// The TLS handshake failed (certificate not trusted or not for the name, no
    /// common protocol).
    #[error("TLS handshake with the backend failed: {0}")]
    Tls(#[source] std::io::Error),
    /// An `h2c`/`h2` pool's backend did not answer the HTTP/2 preface with
    /// HTTP/2 (an HTTP/1.1-only server, most often).
    #[error("the backend does not speak HTTP/2: {0}")]
    NotH2(#[source] NotH2),
}

/// What a backend of an `h2c`/`h2` pool did instead of sending its SETTINGS.
#[derive(Debug, thiserror::Error)]
pub enum NotH2 {
    /// It closed the connection after the preface.
    #[error("it closed the connection without sending SETTINGS")]
    Closed,
    /// It sent something that is not HTTP/2.
    #[error("its answer to the preface is not HTTP/2 ({0})")]
    Garbled(#[source] ::h2::Error),
}

/// What broke an exchange on a backend connection, whichever HTTP client drove
/// it: whether the request had been sent is the caller's to say (it knows at
/// which step it failed), so one error serves every kind of connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// hyper's client (requests with a body, upgrades, TLS backends).
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// The gateway's own client (`http1::client`).
    #[error(transparent)]
    Http1(#[from] h1::H1Error),
    /// An HTTP/2 stream (`protocol = "h2c"` or `"h2"`).
    #[error("HTTP/2: {0}")]
    H2(#[from] ::h2::Error),
}

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

/// An idle connection driven by the gateway itself ([`h1`]).
struct IdleH1 {
    conn: h1::H1Conn,
    since: Instant,
}

impl IdleH1 {
    /// Young enough at `now`, and not closed by the backend (as far as the socket
    /// tells).
    fn usable(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) <= MAX_IDLE_AGE && self.conn.looks_alive()
    }
}

/// Pooled connections to one backend address.
pub struct ConnPool {
    addr: SocketAddr,
    tls: Option<Arc<UpstreamTls>>,
    idle: ArrayQueue<Idle>,
    /// Idle connections for the bodiless fast path ([`h1`]); plain TCP only.
    idle_h1: ArrayQueue<IdleH1>,
    /// The backend's close signal: ends every connection task (see `BackendState`).
    closed: CancellationToken,
    /// Set by [`close`](Self::close): read on every check-in, where the token's own
    /// check would take its mutex (one per backend, shared by every worker).
    closing: AtomicBool,
    /// The multiplexed connections of an h2c or h2 pool.
    h2: Option<h2::H2Pool>,
    protocol: Protocol,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .field("idle", &self.idle.len())
            .field("idle_h1", &self.idle_h1.len())
            .finish()
    }
}

impl ConnPool {
    /// A pool of plain HTTP/1.1 connections to `addr`, which end when `closed`
    /// is cancelled.
    pub fn new(addr: SocketAddr, closed: CancellationToken) -> Self {
        Self::with_tls(addr, closed, None)
    }

    /// Like [`new`](Self::new), with connections wrapped in TLS when `tls` is given.
    pub fn with_tls(
        addr: SocketAddr,
        closed: CancellationToken,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Self {
        Self::with_protocol(addr, closed, tls, Protocol::Http1, &H2Spec::default())
    }

    /// Connections to `addr` speaking `protocol` (HTTP/2 ones with `h2`'s settings).
    pub fn with_protocol(
        addr: SocketAddr,
        closed: CancellationToken,
        tls: Option<Arc<UpstreamTls>>,
        protocol: Protocol,
        h2: &H2Spec,
    ) -> Self {
        let h2 = protocol
            .is_h2()
            .then(|| h2::H2Pool::new(addr, tls.clone(), h2.clone(), closed.clone()));
        // The HTTP/1 queues stay empty for an HTTP/2 pool: a zero-capacity
        // `ArrayQueue` panics, so they keep a token one.
        let idle_cap = if protocol.is_h2() { 1 } else { MAX_IDLE };
        ConnPool {
            addr,
            tls,
            idle: ArrayQueue::new(idle_cap),
            idle_h1: ArrayQueue::new(idle_cap),
            closed,
            closing: AtomicBool::new(false),
            h2,
            protocol,
        }
    }

    /// What these connections speak.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The multiplexed connections, when the pool speaks HTTP/2.
    pub(crate) fn h2(&self) -> Option<&h2::H2Pool> {
        self.h2.as_ref()
    }

    /// Whether these connections were made for the pool settings `tls`,
    /// `protocol` and `h2` (a backend whose pool changed them gets new ones).
    pub fn made_for(&self, tls: Option<&UpstreamTlsSpec>, protocol: Protocol, h2: &H2Spec) -> bool {
        self.tls_spec() == tls
            && self.protocol == protocol
            && self.h2.as_ref().is_none_or(|pool| pool.spec() == h2)
    }

    /// The TLS client side of these connections, if any.
    pub fn tls(&self) -> Option<&Arc<UpstreamTls>> {
        self.tls.as_ref()
    }

    /// The `tls = { … }` these connections were made for (`None`: plain HTTP).
    pub fn tls_spec(&self) -> Option<&UpstreamTlsSpec> {
        self.tls.as_deref().map(UpstreamTls::spec)
    }

    /// Idle connections currently pooled.
    pub fn idle_count(&self) -> usize {
        self.idle.len() + self.idle_h1.len()
    }

    /// Whether requests without a body may use [`h1`] connections: plain TCP
    /// backends (TLS ones go through hyper).
    pub fn fast_path(&self) -> bool {
        self.tls.is_none() && self.h2.is_none()
    }

    /// A pooled [`h1`] connection that still looks alive at `now` (the caller's
    /// clock reading), if there is one.
    pub fn pop_h1(&self, now: Instant) -> Option<h1::H1Conn> {
        while let Some(idle) = self.idle_h1.pop() {
            if idle.usable(now) {
                return Some(idle.conn);
            }
        }
        None
    }

    /// A new [`h1`] connection (within `connect_timeout`).
    pub async fn connect_h1(&self, connect_timeout: Duration) -> Result<h1::H1Conn, ConnectError> {
        let deadline = Instant::now() + connect_timeout;
        self.connect_tcp(deadline).await.map(h1::H1Conn::new)
    }

    /// Closes the pooled [`h1`] connections the backend closed (or that aged out)
    /// while idle: they have no task that would notice. The rest go back.
    pub fn sweep_idle(&self) {
        let now = Instant::now();
        for _ in 0..self.idle_h1.len() {
            let Some(idle) = self.idle_h1.pop() else {
                return;
            };
            if idle.usable(now) {
                // Full only if requests refilled it meanwhile: then this one goes.
                let _dropped_when_full = self.idle_h1.push(idle);
            }
        }
    }

    /// Returns an [`h1`] connection whose response ended cleanly.
    pub fn checkin_h1(&self, conn: h1::H1Conn) {
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        // A full pool drops the connection, which closes it.
        let _dropped_when_full = self.idle_h1.push(IdleH1 {
            conn,
            since: Instant::now(),
        });
    }

    /// A live pooled connection if there is one, else a new one.
    pub async fn checkout(&self, connect_timeout: Duration) -> Result<Conn, ConnectError> {
        if let Some(sender) = self.pop_idle() {
            return Ok(Conn {
                sender,
                reused: true,
            });
        }
        // Boxed: the connect and TLS handshake futures are large, and inline they
        // would size every request's future (kept per idle client connection by
        // hyper, and moved on every poll) for a path most requests never take.
        Box::pin(self.connect(connect_timeout))
            .await
            .map(|sender| Conn {
                sender,
                reused: false,
            })
    }

    /// Opens a new connection (used directly when a pooled one turned out stale).
    /// `connect_timeout` bounds TCP connect and TLS handshake together.
    pub async fn connect(&self, connect_timeout: Duration) -> Result<Sender, ConnectError> {
        let deadline = Instant::now() + connect_timeout;
        let stream = self.connect_tcp(deadline).await?;
        match &self.tls {
            None => self.handshake(stream).await,
            Some(tls) => {
                match tokio::time::timeout_at(deadline, tls.connect(self.addr, stream)).await {
                    Ok(Ok(stream)) => self.handshake(stream).await,
                    Ok(Err(err)) => Err(ConnectError::Tls(err)),
                    Err(_) => Err(ConnectError::TimedOut),
                }
            }
        }
    }

    /// A TCP connection to the backend by `deadline`, with `TCP_NODELAY`.
    async fn connect_tcp(&self, deadline: Instant) -> Result<TcpStream, ConnectError> {
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(self.addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(ConnectError::Io(err)),
            Err(_) => return Err(ConnectError::TimedOut),
        };
        // Small request/response exchanges must not wait for Nagle's algorithm.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(backend = %self.addr, %err, "set_nodelay failed");
        }
        Ok(stream)
    }

    /// The HTTP/1.1 client handshake on `io`; the connection task is spawned.
    async fn handshake<I>(&self, io: I) -> Result<Sender, ConnectError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(MAX_RESPONSE_HEAD_BYTES)
            // No `.max_headers(MAX_RESPONSE_HEADERS)`: that is the default, and
            // setting it makes hyper allocate per response (see the constant).
            .handshake(TokioIo::new(io))
            .await
            .map_err(|err| ConnectError::Io(std::io::Error::other(err)))?;
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

    /// Closes the idle connections and keeps none from now on (the backend is
    /// gone for good).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.clear_idle();
        if let Some(h2) = &self.h2 {
            h2.close();
        }
    }

    /// Closes every idle connection (the backend left the config; connections in
    /// use are left to finish).
    pub fn clear_idle(&self) {
        while self.idle.pop().is_some() {}
        while self.idle_h1.pop().is_some() {}
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    use super::{ConnPool, Instant, MAX_IDLE_AGE};

    #[tokio::test]
    async fn a_connection_idle_past_the_age_limit_at_the_callers_reading_is_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = ConnPool::new(listener.local_addr().unwrap(), CancellationToken::new());
        let conn = pool.connect_h1(Duration::from_secs(1)).await.unwrap();
        let _accepted = listener.accept().await.unwrap();
        pool.checkin_h1(conn);
        // The age counts to the reading the caller passes, not to a clock of its own.
        let checked_in = Instant::now();
        assert!(pool
            .pop_h1(checked_in + MAX_IDLE_AGE + Duration::from_secs(1))
            .is_none());
        assert_eq!(pool.idle_count(), 0, "the aged connection was dropped");

        let conn = pool.connect_h1(Duration::from_secs(1)).await.unwrap();
        let _accepted = listener.accept().await.unwrap();
        pool.checkin_h1(conn);
        assert!(
            pool.pop_h1(Instant::now()).is_some(),
            "a young one is handed out"
        );
    }

    #[tokio::test]
    async fn the_sweep_closes_pooled_connections_their_backend_closed_and_keeps_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = ConnPool::new(listener.local_addr().unwrap(), CancellationToken::new());
        let (a, b) = (
            pool.connect_h1(Duration::from_secs(1)).await.unwrap(),
            pool.connect_h1(Duration::from_secs(1)).await.unwrap(),
        );
        let (mut closing, _) = listener.accept().await.unwrap();
        let (mut kept, _) = listener.accept().await.unwrap();
        pool.checkin_h1(a);
        pool.checkin_h1(b);
        assert_eq!(pool.idle_count(), 2);

        // The backend closes one of them; the gateway's side learns it from epoll,
        // so sweep until it shows (bounded).
        drop(closing.shutdown().await);
        drop(closing);
        let swept = tokio::time::timeout(Duration::from_secs(5), async {
            while pool.idle_count() > 1 {
                pool.sweep_idle();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(swept.is_ok(), "the closed connection stayed pooled");
        assert_eq!(pool.idle_count(), 1, "the live one was swept too");

        // The kept connection is still the gateway's: it closes when the pool goes.
        drop(pool);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    }

    #[tokio::test]
    async fn a_closed_pool_keeps_no_connection_that_comes_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = ConnPool::new(listener.local_addr().unwrap(), CancellationToken::new());
        let (early, late) = (
            pool.connect_h1(Duration::from_secs(1)).await.unwrap(),
            pool.connect_h1(Duration::from_secs(1)).await.unwrap(),
        );
        pool.checkin_h1(early);
        assert_eq!(pool.idle_count(), 1);
        pool.clear_idle();
        assert_eq!(pool.idle_count(), 0);
        // Cleared, not closed: a connection whose response ends later is kept.
        pool.checkin_h1(late);
        assert_eq!(pool.idle_count(), 1);

        let last = pool.connect_h1(Duration::from_secs(1)).await.unwrap();
        pool.close();
        assert_eq!(pool.idle_count(), 0);
        pool.checkin_h1(last);
        assert_eq!(
            pool.idle_count(),
            0,
            "a response that ended after the close was pooled"
        );
    }
}
