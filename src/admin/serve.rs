//! Serving the admin router with the limits a control plane needs.
//!
//! `axum::serve` sets no HTTP/1 head timeout and no limit on connections, so a
//! slow client could hold the admin port forever. This loop serves the same
//! router with hyper-util directly: a head timeout, a cap on open connections
//! (more wait in the kernel backlog), and a graceful close on shutdown. Body size
//! and whole-request time are bounded by layers of the router (see `api`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time an admin client has to send its request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest wait for open admin connections after shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub(super) async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let conns = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(%err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = ended {
                tracing::debug!(%err, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    conns.close();
    if tokio::time::timeout(DRAIN, conns.wait()).await.is_err() {
        tracing::warn!("admin connections still open after the drain; closing them");
    }
}
