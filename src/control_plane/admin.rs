//! The admin API listener (`[admin].listen`): JSON over HTTP/1.1, built with axum.
//!
//! Owns the admin socket, the bearer-token check and the mapping of HTTP requests
//! to controller [`Change`](crate::control_plane::controller::task::Change)s. It never touches a
//! snapshot: every write goes through the controller task and is answered once it is
//! live. It never shares the traffic port (validation rejects that), and it refuses
//! to start on a non-loopback address without a token.
//!
//! Endpoints (`/healthz` and `/readyz` need no token, so a Docker HEALTHCHECK does
//! not need the secret):
//! - `GET /healthz` — the process is alive; `GET /readyz` — config loaded and the
//!   traffic listener serving (503 while shutting down, 503 naming it once a
//!   background task ended: see `crate::tasks`, and 503 while a configured
//!   discovery source has never listed: see [`ListedGate`]);
//! - `GET /metrics` — Prometheus text (behind the token when one is set): the
//!   exporter's counters and histograms plus gauges sampled from the current
//!   snapshot at that moment (see `crate::metrics`), rendered on the blocking pool
//!   and one scrape at a time;
//! - `GET /api/v1/state`;
//! - `GET /api/v1/stats` — per pool and backend: in-flight, request rate, error
//!   rate and p99 over the last seconds (see `stats`);
//! - `GET /api/v1/events` — the event stream (see `events`); `GET /ui/` — the
//!   dashboard (see `ui`);
//! - `PUT|DELETE /api/v1/routes/{route}/split`;
//! - `POST /api/v1/pools/{pool}/backends/{addr}/drain|undrain`;
//! - `POST /api/v1/pools/{pool}/backends`, `DELETE …/backends[/{addr}]`;
//! - `POST /api/v1/plan` (body: a `routes.toml`);
//! - `GET /api/v1/discovery/swarm` — the Swarm set this gateway read from its own
//!   engine, for gateways on worker nodes (503 when it has none of its own);
//! - `GET|POST /api/v1/rollouts`, `GET /api/v1/rollouts/{id}`,
//!   `POST /api/v1/rollouts/{id}/pause|resume|promote|abort` (see `rollouts`);
//! - `POST /api/v1/routes/{route}/deploy`, `GET /api/v1/deploys[/{id}]`,
//!   `POST /api/v1/deploys/{id}/cancel` (see `deploys`).
//!
//! Every route refuses what a web page could send (see `guard`): a `Host` that
//! does not name this listener, a foreign `Origin` (403), a write that is not
//! `application/json` (415).
//!
//! Limits: request heads within 5 s, bodies up to 1 MiB (413 beyond), a whole
//! request (body and handler) within 10 s (408), at most 256 connections at once;
//! beyond those, 8 more get only `/healthz` and `/readyz` with a 1 s head
//! timeout, so idle connections cannot fail a health check.
//! The token is never logged and never part of `/api/v1/state` (only the *name*
//! of its environment variable is).

mod api;
pub(crate) mod auth;
mod deploys;
mod events;
mod guard;
mod rollouts;
pub(crate) mod serve;
mod stats;
mod ui;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::control_plane::config::spec::AdminSpec;
use crate::control_plane::controller::task::ControlHandle;
use crate::control_plane::controller::SharedSnapshot;
use crate::control_plane::deploy::Deploys;
use crate::control_plane::discovery::swarm::Board;
use crate::control_plane::discovery::ListedGate;
use crate::control_plane::rollout::RolloutHandle;
use crate::metrics::Exporter;
use crate::tasks::TaskWatch;
use auth::Token;

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `token_env` names a variable that is unset or empty.
    #[error("[admin].token_env names ${name}, but that environment variable is unset or empty; set it to the admin bearer token (refusing to start with an unprotected admin API)")]
    TokenMissing { name: String },
    /// A non-loopback address without a token (validation catches this first).
    #[error("refusing to serve the admin API on {addr} without a token: set [admin].token_env, or listen on 127.0.0.1")]
    Unprotected { addr: SocketAddr },
    /// The port could not be bound.
    #[error(
        "cannot listen for the admin API on {addr}: {error} (is another process using the port?)"
    )]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// What every admin handler can reach.
#[derive(Clone, Debug)]
struct AdminState {
    control: ControlHandle,
    rollouts: RolloutHandle,
    /// Runs `ctl deploy`'s deploys in the gateway.
    deploys: Deploys,
    token: Option<Token>,
    ready: Arc<AtomicBool>,
    tasks: TaskWatch,
    metrics: MetricsSource,
    /// Cancelled when the listener shuts down: ends open event streams.
    closing: CancellationToken,
    /// Discovery sources that must have listed once before `/readyz` is 200.
    listed: ListedGate,
    /// Swarm discovery's export and its reason for `/readyz` to say 503.
    board: Arc<Board>,
    /// What `GET /api/v1/stats` measures from.
    stats: stats::StatsWindow,
}

/// What `GET /metrics` renders: the exporter, and the snapshot its gauges come from.
#[derive(Clone, Debug)]
pub(crate) struct MetricsSource {
    exporter: Exporter,
    snapshot: SharedSnapshot,
    /// Held while a render runs: scrapes that arrive meanwhile wait their turn
    /// instead of rendering side by side.
    rendering: Arc<tokio::sync::Mutex<()>>,
}

impl MetricsSource {
    /// `exporter`'s text, with gauges sampled from the snapshot in `snapshot`.
    pub(crate) fn new(exporter: Exporter, snapshot: SharedSnapshot) -> MetricsSource {
        MetricsSource {
            exporter,
            snapshot,
            rendering: Arc::default(),
        }
    }

    /// The Prometheus text, rendered on the blocking pool: with 10 000 backends it
    /// is ~130 000 series and takes ~0.6 s, which on a runtime worker would hold
    /// up every request that worker serves (with `--workers 1`, all of them).
    /// `None` when the runtime is shutting down.
    pub(crate) async fn render(&self) -> Option<String> {
        let source = self.clone();
        render_one_at_a_time(&self.rendering, move || {
            let snapshot = source.snapshot.load();
            source.exporter.render(&snapshot)
        })
        .await
    }
}

/// Runs `render` on the blocking pool once `lock` is free.
async fn render_one_at_a_time<F>(lock: &tokio::sync::Mutex<()>, render: F) -> Option<String>
where
    F: FnOnce() -> String + Send + 'static,
{
    let _turn = lock.lock().await;
    crate::control_plane::off_worker::run("metrics render", render).await
}

/// A bound admin listener, ready to serve.
#[derive(Debug)]
pub(crate) struct AdminServer {
    listener: TcpListener,
    router: Router,
    board: Arc<Board>,
    /// Served on connections beyond the regular budget (see `serve`).
    health: Router,
    /// Ends open event streams at shutdown.
    closing: CancellationToken,
    listed: ListedGate,
}

impl AdminServer {
    /// Resolves the token and binds `[admin].listen`. `ready` is what `/readyz`
    /// reports, unless a task in `tasks` ended; `rollouts` serves
    /// `/api/v1/rollouts`; `metrics` what `/metrics` serves.
    pub(crate) async fn bind(
        spec: &AdminSpec,
        control: ControlHandle,
        rollouts: RolloutHandle,
        ready: Arc<AtomicBool>,
        tasks: TaskWatch,
        metrics: MetricsSource,
    ) -> Result<AdminServer, AdminError> {
        let token = resolve_token(spec)?;
        if token.is_none() {
            tracing::warn!(addr = %spec.listen, "admin API without a token (loopback only); set [admin].token_env to require one");
        }
        let listener = TcpListener::bind(spec.listen)
            .await
            .map_err(|error| AdminError::Bind {
                addr: spec.listen,
                error,
            })?;
        let closing = CancellationToken::new();
        let board = Arc::new(Board::default());
        let stats = stats::StatsWindow::start(metrics.snapshot.clone());
        let deploys = Deploys::new(control.clone(), rollouts.clone(), closing.clone());
        let state = AdminState {
            stats,
            control,
            rollouts,
            deploys,
            token,
            ready,
            tasks,
            metrics,
            closing: closing.clone(),
            listed: ListedGate::default(),
            board: Arc::clone(&board),
        };
        let hosts = guard::HostPolicy::new(spec.listen.ip(), &spec.allowed_hosts);
        Ok(AdminServer {
            listener,
            listed: state.listed.clone(),
            router: api::router(state.clone(), hosts.clone()),
            health: api::health_router(state, hosts),
            closing,
            board,
        })
    }

    /// The discovery sources `/readyz` waits for (see [`ListedGate`]); a source
    /// registers there when it starts.
    pub(crate) fn listed_gate(&self) -> ListedGate {
        self.listed.clone()
    }

    /// What Swarm discovery shares with this API (its export, `/readyz`'s reason).
    pub(crate) fn board(&self) -> Arc<Board> {
        Arc::clone(&self.board)
    }

    /// The address actually bound.
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled.
    pub(crate) async fn serve(self, shutdown: CancellationToken) {
        let AdminServer {
            listener,
            router,
            health,
            closing,
            ..
        } = self;
        // Event streams never end by themselves: they must end for the drain to.
        let ends = shutdown.clone();
        let streams_end = tokio::spawn(async move {
            ends.cancelled().await;
            closing.cancel();
        });
        serve::serve(listener, router, health, shutdown).await;
        streams_end.abort();
    }
}

/// The bearer token from `token_env`, if configured.
fn resolve_token(spec: &AdminSpec) -> Result<Option<Token>, AdminError> {
    match &spec.token_env {
        Some(name) => match std::env::var(name) {
            Ok(value) if !value.is_empty() => Ok(Some(Token::new(&value))),
            _ => Err(AdminError::TokenMissing { name: name.clone() }),
        },
        None if !spec.listen.ip().is_loopback() => {
            Err(AdminError::Unprotected { addr: spec.listen })
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_scrape_renders_while_the_runtime_serves_other_tasks() {
        // The render waits for a message only another task on this one-thread
        // runtime sends: rendered on the runtime's thread, it would wait out the 10 s
        // and fail.
        let (tx, rx) = mpsc::channel();
        let other = tokio::spawn(async move { tx.send(()) });
        let lock = tokio::sync::Mutex::new(());
        let text = render_one_at_a_time(&lock, move || {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(()) => "rendered".to_owned(),
                Err(_) => "the runtime was held".to_owned(),
            }
        })
        .await;
        assert_eq!(text.as_deref(), Some("rendered"));
        assert!(other.await.unwrap().is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_that_arrive_together_render_one_after_the_other() {
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let scrapes: Vec<_> = (0..4)
            .map(|_| {
                let (lock, running, most) = (lock.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    render_one_at_a_time(&lock, move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                        String::new()
                    })
                    .await
                })
            })
            .collect();
        for scrape in scrapes {
            assert_eq!(scrape.await.unwrap().as_deref(), Some(""));
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }
}
