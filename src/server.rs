//! The traffic listener: accepts client connections and serves them with the proxy.
//!
//! HTTP/1.1 and HTTP/2 (h2c prior knowledge, detected from the connection preface)
//! are served on the same port with upgrades enabled. On shutdown the listener stops
//! accepting, every connection finishes its in-flight requests (keep-alive is turned
//! off), open tunnels run to their end, all bounded by the drain timeout.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
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
        let service = service_fn(move |req: Request<Incoming>| {
            let proxy = Arc::clone(&proxy);
            async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let open = crate::metrics::connection_opened();
        tokio::spawn(async move {
            let _open = open;
            if let Err(err) = conn.await {
                tracing::debug!(client = %peer, %err, "client connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);

    let drain = async {
        graceful.shutdown().await;
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
