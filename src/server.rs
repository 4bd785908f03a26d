//! The traffic listener: accepts client connections and serves them with the proxy.
//!
//! HTTP/1.1 and HTTP/2 (h2c prior knowledge, detected from the connection preface)
//! are served on the same port with upgrades enabled. On shutdown the listener stops
//! accepting, every connection finishes its in-flight requests (keep-alive is turned
//! off), open tunnels run to their end, all bounded by the drain timeout.
//!
//! Client-side limits (head size and count, head timeout, idle timeout, HTTP/2
//! streams and resets, connection cap) are applied per connection in [`conn`].

mod conn;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto::UpgradeableConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::spec::ClientLimits;
use crate::proxy::body::ResponseBody;
use crate::proxy::error::ERROR_HEADER;
use crate::proxy::Proxy;

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

/// Serves `listener` until `shutdown` resolves, then drains for at most `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) -> Drained {
    let builder = Arc::new(conn::builder(&limits));
    let closing = CancellationToken::new();
    let conns = TaskTracker::new();
    let capacity = limits.max_connections.map(|n| Arc::new(Semaphore::new(n)));

    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Usually EMFILE/ENFILE: back off briefly instead of spinning.
                    tracing::warn!(%err, "accept failed");
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
                    tokio::spawn(refuse(stream));
                    continue;
                }
            },
        };
        let proxy = Arc::clone(&proxy);
        let activity = conn::Activity::new(limits.client.http2_max_client_resets);
        let active = Arc::clone(&activity);
        let service = service_fn(move |req: Request<Incoming>| {
            let proxy = Arc::clone(&proxy);
            let guard = active.begin();
            async move {
                let resp = proxy.handle(req, peer).await;
                Ok::<_, Infallible>(resp.map(|body| conn::Tracked::new(body, guard)))
            }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let closing = closing.clone();
        let timeouts = conn::Timeouts {
            first_request: limits.header_read_timeout,
            idle: limits.client.idle_timeout,
        };
        conns.spawn(async move {
            let graceful = UpgradeableConnection::graceful_shutdown;
            let (ended, closed) =
                conn::serve(conn, graceful, &activity, timeouts, &closing).await;
            if let Err(err) = ended {
                tracing::debug!(client = %peer, %err, "client connection ended with an error");
            }
            match closed {
                Some(conn::Close::Idle) => {
                    tracing::debug!(client = %peer, "client connection closed: idle");
                }
                Some(conn::Close::Abusive) => {
                    tracing::info!(client = %peer, "client connection dropped: too many cancelled requests");
                }
                Some(conn::Close::NoRequest) => {
                    tracing::debug!(client = %peer, "client connection closed: no request within the head timeout");
                }
                Some(conn::Close::Shutdown) | None => {}
            }
            drop(permit);
        });
    }
    drop(listener);

    let drain = async {
        closing.cancel();
        conns.close();
        conns.wait().await;
        proxy.tunnels().close();
        proxy.tunnels().wait().await;
    };
    match tokio::time::timeout(drain_timeout, drain).await {
        Ok(()) => Drained::Clean,
        Err(_) => Drained::TimedOut,
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
