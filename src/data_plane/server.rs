//! The traffic listeners: accept client connections and serve them with the proxy.
//!
//! HTTP/1.1 and HTTP/2 are served on the same port with upgrades enabled: on a
//! plain listener h2c prior knowledge is detected from the connection preface; on
//! a TLS listener ([`Transport::Tls`]) the handshake (bounded by its timeout) runs
//! first and ALPN decides. The HTTP listener may instead redirect everything to
//! HTTPS ([`Handler::Redirect`]). On shutdown the listener stops
//! accepting, every connection finishes its in-flight requests (keep-alive is turned
//! off), open tunnels run to their end, all bounded by the drain timeout.
//!
//! Client-side limits (head size and count, head timeout, idle timeout, HTTP/2
//! streams and resets, connection cap) are applied per connection in `conn`.
//!
//! A plain connection starts on the gateway's own HTTP/1.1 loop
//! ([`crate::data_plane::http1::server`]), which serves bodiless requests and hands the
//! connection to hyper at the first request it does not serve (and h2c from the
//! first byte); with `listen.http1_fast_path = false` hyper serves it from the start.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::{self, UpgradeableConnection};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control_plane::config::spec::ClientLimits;
use crate::data_plane::http1::server as h1;
use crate::data_plane::http1::{fields, prefixed};
use crate::data_plane::log_limit::{self, Allowed, LogLimit};
use crate::data_plane::proxy::body::ResponseBody;
use crate::data_plane::proxy::error::ERROR_HEADER;
use crate::data_plane::proxy::{Client, Proxy};
pub use redirect::RedirectHttps;

mod conn;
mod redirect;

/// Client-side limits of a listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time a client has to send a complete request head (slowloris guard).
    pub header_read_timeout: Duration,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: Option<usize>,
    /// Head size and count, idle timeout, HTTP/2 streams and resets.
    pub client: ClientLimits,
}

/// How a drain ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every request and tunnel finished.
    Clean,
    /// The drain timeout cut what was still running.
    TimedOut,
}

/// How a listener's connections are secured.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP: HTTP/1.1 and h2c.
    Plain,
    /// TLS terminated here; ALPN offers `h2` and `http/1.1`.
    Tls {
        /// Handshakes with the live certificates.
        acceptor: TlsAcceptor,
        /// A client that has not finished its handshake by then is dropped.
        handshake_timeout: Duration,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Plain => f.write_str("Plain"),
            Transport::Tls {
                handshake_timeout, ..
            } => f
                .debug_struct("Tls")
                .field("handshake_timeout", handshake_timeout)
                .finish_non_exhaustive(),
        }
    }
}

/// What a listener does with each request.
#[derive(Clone, Debug)]
pub enum Handler {
    /// Route and forward to a backend.
    Proxy(Arc<Proxy>),
    /// Answer 308 to the same host and path over HTTPS (`listen.redirect_https`).
    Redirect(Arc<RedirectHttps>),
}

impl Handler {
    /// `req`'s body is `None` when the request has none (read by [`h1`]).
    ///
    /// Not an `async fn`: that would wrap the proxy's future in a state machine of
    /// its own, whose every step copies the request or the response once more.
    fn handle<'a>(
        &'a self,
        req: Request<Option<Incoming>>,
        client: &'a Client,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'a {
        match self {
            Handler::Proxy(proxy) => Either::Left(proxy.handle(req, client)),
            Handler::Redirect(redirect) => {
                Either::Right(std::future::ready(redirect.respond(&req)))
            }
        }
    }
}

/// A bound listener and how to serve it.
#[derive(Debug)]
pub struct Listener {
    /// The bound socket.
    pub tcp: TcpListener,
    /// Plain or TLS.
    pub transport: Transport,
    /// Proxy or redirect.
    pub handler: Handler,
    /// Head timeout, connection cap and the other client limits.
    pub limits: Limits,
    /// The gateway's metrics: open connections count here.
    pub metrics: crate::metrics::Registrar,
    /// Plain connections start on the gateway's own HTTP/1.1 loop
    /// (`listen.http1_fast_path`); `false`: hyper serves every connection.
    pub http1_fast_path: bool,
}

/// Serves `listener` until `shutdown` resolves, then drains for at most `drain_timeout`.
///
/// Plain and TLS listeners share this loop, so `max_connections` and the drain
/// apply to both. A TLS connection counts from accept, handshake included; over
/// the limit it is closed before the handshake (answering 503 would cost the
/// handshake the limit is there to avoid).
pub async fn serve(
    listener: Listener,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) -> Drained {
    let Listener {
        tcp,
        transport,
        handler,
        limits,
        metrics,
        http1_fast_path,
    } = listener;
    let builder = Arc::new(conn::builder(&limits));
    let closing = CancellationToken::new();
    // Set before `closing` is cancelled: what [`h1`] reads on every request.
    let draining = Arc::new(AtomicBool::new(false));
    let settings = h1::Settings {
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: limits.client.idle_timeout,
        max_head_bytes: limits.client.max_header_bytes,
        max_headers: limits.client.max_headers,
    };
    let conns = TaskTracker::new();
    let timeouts = conn::Timeouts {
        first_request: limits.header_read_timeout,
        idle: limits.client.idle_timeout,
    };
    let capacity = limits.max_connections.map(|n| Arc::new(Semaphore::new(n)));

    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Usually EMFILE/ENFILE: back off briefly instead of spinning.
                    static ACCEPT_FAILED: LogLimit = LogLimit::new(log_limit::PER_SECOND);
                    if let Some(Allowed { suppressed }) = ACCEPT_FAILED.check() {
                        tracing::warn!(%err, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "set_nodelay failed");
        }
        let permit = match &capacity {
            None => None,
            Some(sem) => match Arc::clone(sem).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    if let Transport::Plain = transport {
                        tokio::spawn(refuse(stream));
                    }
                    continue;
                }
            },
        };
        let conn = Connection {
            builder: Arc::clone(&builder),
            handler: handler.clone(),
            peer,
            closing: closing.clone(),
            draining: Arc::clone(&draining),
            settings,
            timeouts,
            max_cancels: limits.client.http2_max_client_resets,
            http1_fast_path,
        };
        let transport = transport.clone();
        // Tracked from accept, so a connection still in its TLS handshake holds up
        // the drain (and counts in `active_connections`).
        let open = metrics.connection_opened();
        conns.spawn(async move {
            let _open = open;
            match transport {
                Transport::Plain => conn.serve_plain(stream).await,
                // Boxed: the handshake and TLS stream make a larger future, and inline
                // they would size every plain connection's task too.
                Transport::Tls {
                    acceptor,
                    handshake_timeout,
                } => {
                    Box::pin(async move {
                        let accept = acceptor.accept(stream);
                        match tokio::time::timeout(handshake_timeout, accept).await {
                            Ok(Ok(tls)) => {
                                let client = Client::new(peer);
                                conn.serve(tls, client).await;
                            }
                            Ok(Err(err)) => {
                                tracing::debug!(client = %peer, %err, "TLS handshake failed");
                            }
                            Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
                        }
                    })
                    .await
                }
            }
            drop(permit);
        });
    }
    drop(tcp);

    let drain = async {
        draining.store(true, Ordering::Release);
        closing.cancel();
        conns.close();
        conns.wait().await;
        if let Handler::Proxy(proxy) = &handler {
            proxy.tunnels().close();
            proxy.tunnels().wait().await;
        }
    };
    match tokio::time::timeout(drain_timeout, drain).await {
        Ok(()) => Drained::Clean,
        Err(_) => Drained::TimedOut,
    }
}

/// One accepted connection, ready to be served on whatever stream it ends up on.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: Handler,
    peer: SocketAddr,
    /// Cancelled when the listener drains.
    closing: CancellationToken,
    /// Set when the listener drains, before `closing` is cancelled.
    draining: Arc<AtomicBool>,
    settings: h1::Settings,
    timeouts: conn::Timeouts,
    /// `http2_max_client_resets`.
    max_cancels: u32,
    /// `listen.http1_fast_path`.
    http1_fast_path: bool,
}

impl Connection {
    /// A plain connection: the gateway's HTTP/1.1 loop first, hyper if it hands
    /// the connection over.
    async fn serve_plain(self, stream: TcpStream) {
        let client = Client::new(self.peer);
        if !self.http1_fast_path {
            // Boxed as in the hand-off below: only with the switch off.
            return Box::pin(self.serve(stream, client)).await;
        }
        let drain = h1::Drain {
            started: &self.draining,
            token: &self.closing,
        };
        let handle = |req| self.handler.handle(req, &client);
        match h1::serve(stream, handle, self.settings, drain).await {
            h1::Outcome::Done => {}
            h1::Outcome::HandOff(stream, read) => {
                let io = prefixed::Prefixed::new(read.freeze(), stream);
                // Boxed: rare, and inline it would size every connection's task.
                Box::pin(self.serve(io, client)).await;
            }
        }
    }

    async fn serve<I>(self, io: I, client: Client)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            builder,
            handler,
            peer,
            closing,
            timeouts,
            max_cancels,
            ..
        } = self;
        let activity = conn::Activity::new(max_cancels);
        let active = Arc::clone(&activity);
        // One shared value, so a request costs one reference count.
        let shared = Arc::new((handler, client));
        let service = service_fn(move |req: Request<Incoming>| {
            let shared = Arc::clone(&shared);
            let guard = active.begin();
            async move {
                let (handler, client) = &*shared;
                let mut resp = handler.handle(req.map(Some), client).await;
                // hyper writes the head from the map: a backend's raw fields go in.
                if let Some(raw) = resp.body_mut().take_raw_fields() {
                    fields::put_raw_first(&raw, resp.headers_mut());
                }
                Ok::<_, Infallible>(resp.map(|body| conn::Tracked::new(body, guard)))
            }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let graceful = UpgradeableConnection::graceful_shutdown;
        let (ended, closed) = conn::serve(conn, graceful, &activity, timeouts, &closing).await;
        if let Err(err) = ended {
            tracing::debug!(client = %peer, %err, "client connection ended with an error");
        }
        match closed {
            Some(conn::Close::Idle) => {
                tracing::debug!(client = %peer, "client connection closed: idle");
            }
            Some(conn::Close::Abusive) => {
                // A reconnecting attacker provokes this once per connection.
                static ABUSIVE: LogLimit = LogLimit::new(log_limit::PER_SECOND);
                if let Some(Allowed { suppressed }) = ABUSIVE.check() {
                    tracing::info!(
                        client = %peer,
                        suppressed,
                        "client connection dropped: too many cancelled requests"
                    );
                }
            }
            Some(conn::Close::NoRequest) => {
                tracing::debug!(client = %peer, "client connection closed: no request within the head timeout");
            }
            Some(conn::Close::Shutdown) | None => {}
        }
    }
}

/// Answers one request with 503 and closes: the listener is at `max_connections`.
async fn refuse(stream: TcpStream) {
    let service = service_fn(|_req: Request<Incoming>| async {
        let mut resp = Response::new(ResponseBody::full(Bytes::from_static(
            b"Service Unavailable: too_many_connections\n",
        )));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        resp.headers_mut().insert(
            ERROR_HEADER,
            HeaderValue::from_static("too_many_connections"),
        );
        Ok::<_, Infallible>(resp)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(2))
        .serve_connection(TokioIo::new(stream), service);
    if let Err(err) = conn.await {
        tracing::debug!(%err, "refused connection ended with an error");
    }
}

/// Binds the traffic listener, with a message that names the address on failure.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|err| {
        std::io::Error::new(
            err.kind(),
            format!("cannot listen on {addr}: {err} (is another process using the port?)"),
        )
    })
}
