//! Serving the admin router with the limits a control plane needs.
//!
//! `axum::serve` sets no HTTP/1 head timeout and no limit on connections, so a
//! slow client could hold the admin port forever. This loop serves the same
//! router with hyper-util directly: a head timeout, a cap on open connections
//! (more wait in the kernel backlog), and a graceful close on shutdown. Body size
//! and whole-request time are bounded by layers of the router (see `api`).
//!
//! Health checks have their own small budget: a connection accepted while all
//! [`MAX_CONNECTIONS`] regular slots are taken (by idle or silent clients, say)
//! takes one of [`HEALTH_CONNECTIONS`] spare slots, where only `/healthz` and
//! `/readyz` are answered and the head must arrive within
//! [`HEALTH_HEADER_READ_TIMEOUT`]. Silent connections in the spare slots are cut
//! off quickly, so a local process cannot make a health check wait out the
//! regular head timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Time an admin client has to send its request head.
pub(super) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections served at once.
pub(super) const MAX_CONNECTIONS: usize = 64;
/// Spare connections for `/healthz` and `/readyz` when the regular ones are taken.
pub(super) const HEALTH_CONNECTIONS: usize = 8;
/// Time a connection in a spare slot has to send its request head.
pub(super) const HEALTH_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for open admin connections after shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Which budget a connection is served from.
enum Slot {
    Regular(OwnedSemaphorePermit),
    Health(OwnedSemaphorePermit),
}

/// Serves `router` on `listener` until `shutdown` is cancelled; `health` on
/// connections beyond the regular budget.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    health: Router,
    shutdown: CancellationToken,
) {
    let builder = |head_timeout| {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout);
        Arc::new(builder)
    };
    let (regular_builder, health_builder) = (
        builder(HEADER_READ_TIMEOUT),
        builder(HEALTH_HEADER_READ_TIMEOUT),
    );
    let regular = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let spare = Arc::new(Semaphore::new(HEALTH_CONNECTIONS));
    let conns = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&regular).acquire_owned() => match permit {
                Ok(permit) => Slot::Regular(permit),
                Err(_) => break,
            },
            permit = Arc::clone(&spare).acquire_owned() => match permit {
                Ok(permit) => Slot::Health(permit),
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
        // A regular slot may have come free while this one waited for a client.
        let slot = match slot {
            Slot::Health(spare) => match Arc::clone(&regular).try_acquire_owned() {
                Ok(permit) => {
                    drop(spare);
                    Slot::Regular(permit)
                }
                Err(_) => Slot::Health(spare),
            },
            regular => regular,
        };
        let (builder, service, permit) = match slot {
            Slot::Regular(permit) => (&regular_builder, router.clone(), permit),
            Slot::Health(permit) => (&health_builder, health.clone(), permit),
        };
        let conn = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
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
