//! Backends from Docker Swarm: the running tasks of services labelled
//! `sluicegate.*`, addressed by their IP on an overlay network.
//!
//! Swarm sends no task events and task IPs change on every update, so the task
//! list is the truth: it is read every `poll_interval` (default 1 s) and at once
//! after any service or node event (`/events`, a hint only). Every read builds a
//! whole [`SwarmReport`] and its [`DiscoveredSet`]; a set equal to the last one
//! is not published, so an unchanged swarm rebuilds nothing. A task the
//! orchestrator wants stopped, or whose node is drained or down, is marked
//! draining in the set and sent as a [`DrainHint`] in the same poll, before its
//! container is signalled (Swarm changes the desired state first).
//!
//! A worker node's engine refuses cluster reads (503): then the set is read from
//! a gateway replica on a manager through its admin API (`[discovery.swarm]
//! managers`, `GET /api/v1/discovery/swarm`), which serves only what it read from
//! its own engine. When neither answers, the last set stays, reads are retried
//! with backoff, and the status (log, `/readyz` before the first set, the state
//! view, `sluicegate discover`) says that neither could be reached and why.
//!
//! This module owns reading Swarm; `build` (pure) turns answers into a report,
//! `report` a report into a set, `engine` speaks HTTP, `poll` is the task.

mod build;
pub(crate) mod engine;
pub(crate) mod model;
mod poll;
pub(crate) mod report;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use build::{build, effective_labels, short_name, Context, STACK_NAMESPACE};
pub use report::{ServiceReport, SwarmReport, TaskReport, TaskRole};

use super::{DiscoveredSet, DiscoveryStatus, DrainHint};
use crate::control_plane::config::spec::SwarmSpec;

/// Queued drain hints before new ones are dropped (the set marks them too).
const HINT_QUEUE: usize = 256;

/// What a gateway on a manager serves to gateways on workers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmExport {
    /// When this gateway last read the set from its engine (RFC 3339).
    pub confirmed_at: String,
    /// The engine it read (`unix:///var/run/docker.sock`).
    pub engine: String,
    pub report: SwarmReport,
}

/// Shared between Swarm discovery and the admin API: the export for worker
/// gateways, and why the gateway is not ready (`/readyz`), if discovery is the
/// reason.
#[derive(Debug, Default)]
pub struct Board {
    /// The last report read from this node's own engine; `None` while the set
    /// comes from elsewhere (a worker relays nothing) or was never read.
    pub export: ArcSwapOption<SwarmExport>,
    /// Set while discovery has no set at all and can reach no source.
    pub not_ready: ArcSwapOption<String>,
}

/// Timings and the engine of Swarm discovery; [`Default`] is what the gateway
/// uses (the poll interval comes from the spec).
#[derive(Clone, Debug)]
pub struct Options {
    /// `unix:///path`, `tcp://host:port` or `http://host:port`; `None` means
    /// `$DOCKER_HOST`, else `unix:///var/run/docker.sock`.
    pub docker_host: Option<String>,
    /// Bound on each API request (the event stream excepted).
    pub request_timeout: Duration,
    /// First retry delay after a failed read; doubles up to the poll interval
    /// (at least `backoff_min`), so a source that returns is read again soon.
    pub backoff_min: Duration,
    /// Tasks that left the running list inspected per read (to keep draining
    /// the ones still running); beyond that they are dropped at once.
    pub max_stopping: usize,
    /// The bearer token sent to manager gateways.
    pub manager_token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            docker_host: None,
            request_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(250),
            max_stopping: 64,
            manager_token: None,
        }
    }
}

/// Where the set in force was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// This node's engine (a manager).
    Engine(String),
    /// A gateway on a manager, through its admin API.
    Manager(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Engine(e) => write!(f, "swarm engine {e}"),
            Source::Manager(m) => write!(f, "manager gateway {m}"),
        }
    }
}

/// A running Swarm discovery task and what it publishes.
#[derive(Debug)]
pub struct SwarmDiscovery {
    /// The whole current set; `changed()` fires only when it differs.
    pub sets: watch::Receiver<DiscoveredSet>,
    /// Immediate "stop sending to this task" hints.
    pub drains: mpsc::Receiver<DrainHint>,
    /// Reads, errors, the source and when the set was last confirmed.
    pub status: watch::Receiver<DiscoveryStatus>,
    /// The last report (services, tasks, skips), for `sluicegate discover`.
    pub reports: watch::Receiver<Arc<SwarmReport>>,
    /// The task; it ends when the shutdown token is cancelled.
    pub task: JoinHandle<()>,
}

impl SwarmDiscovery {
    /// Starts discovering for `spec` until `shutdown` is cancelled. Never fails:
    /// unreachable sources are retried while the set stays as it was.
    pub fn spawn(
        spec: SwarmSpec,
        options: Options,
        board: Arc<Board>,
        shutdown: CancellationToken,
    ) -> SwarmDiscovery {
        let (sets_tx, sets) = watch::channel(DiscoveredSet::default());
        let (drains_tx, drains) = mpsc::channel(HINT_QUEUE);
        let (status_tx, status) = watch::channel(DiscoveryStatus::default());
        let (reports_tx, reports) = watch::channel(Arc::new(SwarmReport::default()));
        let worker = poll::Worker::new(
            spec, options, board, sets_tx, drains_tx, status_tx, reports_tx,
        );
        let task = tokio::spawn(worker.run(shutdown));
        SwarmDiscovery {
            sets,
            drains,
            status,
            reports,
            task,
        }
    }
}

/// The bearer token to send to manager gateways: the variable named by
/// `[discovery.swarm].token_env`, else by `[admin].token_env` (the token the
/// replicas share), when set and not empty.
pub fn manager_token(spec: &crate::control_plane::config::Spec) -> Option<String> {
    let name = spec
        .discovery
        .swarm
        .as_ref()
        .and_then(|s| s.token_env.clone())
        .or_else(|| spec.admin.as_ref().and_then(|a| a.token_env.clone()))?;
    std::env::var(name).ok().filter(|t| !t.is_empty())
}

/// `t` as RFC 3339 with seconds (what the state view and the export show).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
pub(crate) fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/swarm/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
