//! The Swarm discovery task: read, build, publish if changed, wait, repeat.
//!
//! One read asks this node's engine for services, nodes and the tasks whose
//! desired state is `running`, then inspects the tasks that were backends and
//! left that list (to keep draining those still running). When the engine
//! refuses (a worker answers 503) or is unreachable, the manager gateways are
//! asked in order. Reads happen every poll interval and at once after a service
//! or node event; a failed read keeps the set and is retried with backoff.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::engine::{Endpoint, RequestError};
use super::model::{Node, Service, Task};
use super::report::{SwarmReport, TaskRole};
use super::{build, rfc3339, Board, Context, Options, Source, SwarmExport};
use crate::control_plane::config::spec::SwarmSpec;
use crate::control_plane::discovery::{DiscoveredSet, DiscoveryStatus, DrainHint};

/// `filters={"desired-state":["running"]}`, URL-encoded.
const RUNNING_TASKS: &str = "/v1.41/tasks?filters=%7B%22desired-state%22%3A%5B%22running%22%5D%7D";
/// `filters={"type":["service","node"]}`, URL-encoded.
const EVENTS: &str = "/v1.41/events?filters=%7B%22type%22%3A%5B%22service%22%2C%22node%22%5D%7D";
/// Where a manager gateway serves its set.
pub(super) const EXPORT_PATH: &str = "/api/v1/discovery/swarm";
/// Concurrent inspections of stopping tasks.
const INSPECT_CONCURRENCY: usize = 8;
/// Longest wait between event stream reconnects.
const EVENTS_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why a read found no set.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// The engine failed and there are no managers to ask.
    #[error("cannot read the swarm from the Docker engine ({engine}) and [discovery.swarm].managers names no manager gateway to ask instead")]
    Engine { engine: String },
    /// Neither the engine nor any manager gateway answered.
    #[error("can reach neither the Docker engine as a swarm manager ({engine}) nor a manager gateway ({})", .managers.join("; "))]
    Neither {
        engine: String,
        managers: Vec<String>,
    },
    #[error("{0}")]
    Setup(RequestError),
}

pub(super) struct Worker {
    spec: SwarmSpec,
    options: Options,
    board: Arc<Board>,
    engine: Result<Endpoint, String>,
    sets: watch::Sender<DiscoveredSet>,
    drains: mpsc::Sender<DrainHint>,
    status: watch::Sender<DiscoveryStatus>,
    reports: watch::Sender<Arc<SwarmReport>>,
    source: Option<Source>,
    /// Skip reasons already logged, by service or task id.
    warned: std::collections::HashMap<String, String>,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        spec: SwarmSpec,
        options: Options,
        board: Arc<Board>,
        sets: watch::Sender<DiscoveredSet>,
        drains: mpsc::Sender<DrainHint>,
        status: watch::Sender<DiscoveryStatus>,
        reports: watch::Sender<Arc<SwarmReport>>,
    ) -> Worker {
        let engine = Endpoint::docker(options.docker_host.as_deref()).map_err(|e| e.to_string());
        Worker {
            spec,
            options,
            board,
            engine,
            sets,
            drains,
            status,
            reports,
            source: None,
            warned: Default::default(),
        }
    }

    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        let hints = Arc::new(Notify::new());
        if let Ok(engine) = &self.engine {
            let events = follow_events(
                engine.clone(),
                Arc::clone(&hints),
                self.options.request_timeout,
            );
            let stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = events => {}
                }
            });
        }
        let poll = self.spec.poll_interval;
        let backoff_max = poll.max(self.options.backoff_min);
        let mut backoff = self.options.backoff_min;
        let mut failures = 0u32;
        loop {
            let next = match self.read().await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(source = ?self.source.as_ref().map(ToString::to_string), "swarm discovery: reading again; set resynced");
                    }
                    failures = 0;
                    backoff = self.options.backoff_min;
                    Instant::now() + poll
                }
                Err(error) => {
                    failures += 1;
                    self.failed(&error, failures);
                    let at = Instant::now() + backoff;
                    backoff = backoff.saturating_mul(2).min(backoff_max);
                    at
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sleep_until(next) => {}
                // A service or node event: read now (the poll stays the truth).
                () = hints.notified() => {}
            }
        }
    }

    fn failed(&mut self, error: &ReadError, failures: u32) {
        let text = error.to_string();
        let had_set = self.status.borrow().lists > 0;
        if failures == 1 {
            if had_set {
                tracing::warn!("swarm discovery: {text}; keeping the last known set and retrying");
            } else {
                tracing::error!(
                    "swarm discovery: {text}; no backends from the swarm until one answers"
                );
            }
        } else {
            tracing::debug!(attempt = failures, "swarm discovery: {text}");
        }
        if !had_set {
            self.board
                .not_ready
                .store(Some(Arc::new(format!("swarm discovery: {text}"))));
        }
        self.status.send_modify(|s| {
            s.connected = false;
            s.last_error = Some(text);
        });
    }

    /// One read from the engine, else from the managers; publishes on success.
    async fn read(&mut self) -> Result<(), ReadError> {
        let engine = match &self.engine {
            Ok(engine) => engine.clone(),
            Err(e) => return Err(ReadError::Setup(RequestError::Scheme(e.clone()))),
        };
        let (report, source) = match self.read_engine(&engine).await {
            Ok(report) => {
                let export = SwarmExport {
                    confirmed_at: rfc3339(SystemTime::now()),
                    engine: engine.to_string(),
                    report: report.clone(),
                };
                self.board.export.store(Some(Arc::new(export)));
                (report, Source::Engine(engine.to_string()))
            }
            Err(engine_error) => {
                // Relay nothing: a gateway that reads another is no source.
                self.board.export.store(None);
                if self.spec.managers.is_empty() {
                    return Err(ReadError::Engine {
                        engine: engine_error.to_string(),
                    });
                }
                match self.read_managers().await {
                    Ok((report, url)) => (report, Source::Manager(url)),
                    Err(managers) => {
                        return Err(ReadError::Neither {
                            engine: engine_error.to_string(),
                            managers,
                        })
                    }
                }
            }
        };
        if self.source.as_ref() != Some(&source) {
            tracing::info!(%source, "swarm discovery: reading the swarm from {source}");
            self.source = Some(source.clone());
        }
        self.publish(report, &source);
        Ok(())
    }

    async fn read_engine(&self, engine: &Endpoint) -> Result<SwarmReport, RequestError> {
        let t = self.options.request_timeout;
        let (services, nodes, tasks) = tokio::try_join!(
            engine.get_json::<Vec<Service>>("/v1.41/services", None, t),
            engine.get_json::<Vec<Node>>("/v1.41/nodes", None, t),
            engine.get_json::<Vec<Task>>(RUNNING_TASKS, None, t),
        )?;
        let listed: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        let gone: Vec<String> = self
            .reports
            .borrow()
            .services
            .iter()
            .flat_map(|s| &s.tasks)
            .filter(|t| matches!(t.role, TaskRole::Backend | TaskRole::Draining))
            .filter(|t| !listed.contains(t.id.as_str()))
            .map(|t| t.id.clone())
            .take(self.options.max_stopping)
            .collect();
        let inspected: Vec<Result<Task, RequestError>> = futures_util::stream::iter(gone)
            .map(|id| async move {
                engine
                    .get_json::<Task>(&format!("/v1.41/tasks/{id}"), None, t)
                    .await
            })
            .buffer_unordered(INSPECT_CONCURRENCY)
            .collect()
            .await;
        let mut stopping = Vec::new();
        for result in inspected {
            match result {
                Ok(task) => stopping.push(task),
                // Removed already: nothing left to drain.
                Err(e) if e.status() == Some(http::StatusCode::NOT_FOUND) => {}
                Err(e) => return Err(e),
            }
        }
        let ctx = Context {
            prefix: &self.spec.label_prefix,
            network: self.spec.network.as_deref(),
        };
        Ok(build(&services, &tasks, &stopping, &nodes, &ctx))
    }

    /// The first manager gateway that serves its own engine's set; else every
    /// manager's error.
    async fn read_managers(&self) -> Result<(SwarmReport, String), Vec<String>> {
        let mut errors = Vec::new();
        let token = self.options.manager_token.as_deref();
        for url in &self.spec.managers {
            let addrs = match tokio::net::lookup_host((&*url.host, url.port)).await {
                Ok(addrs) => addrs.collect::<Vec<_>>(),
                Err(e) => {
                    errors.push(format!("{url}: cannot resolve {}: {e}", url.host));
                    continue;
                }
            };
            if addrs.is_empty() {
                errors.push(format!("{url}: {} resolves to no address", url.host));
            }
            for addr in addrs {
                let endpoint = Endpoint::Tcp(addr.to_string());
                match endpoint
                    .get_json::<SwarmExport>(EXPORT_PATH, token, self.options.request_timeout)
                    .await
                {
                    Ok(export) => return Ok((export.report, format!("{url} ({addr})"))),
                    Err(e) => errors.push(format!("{url}: {e}")),
                }
            }
        }
        Err(errors)
    }

    /// Publishes `report`'s set if it changed, hints for newly draining
    /// backends, and the status.
    fn publish(&mut self, report: SwarmReport, source: &Source) {
        let set = report.set();
        self.log_changes(&set);
        let hints = newly_draining(&self.sets.borrow(), &set);
        let changed = self.sets.send_if_modified(|current| {
            let changed = *current != set;
            if changed {
                *current = set;
            }
            changed
        });
        for hint in hints {
            tracing::info!(task = %hint.container_name, pool = %hint.pool, addr = %hint.addr, reason = %hint.action, "swarm discovery: draining");
            if let Err(mpsc::error::TrySendError::Full(hint)) = self.drains.try_send(hint) {
                tracing::warn!(task = %hint.container_name, "swarm discovery: drain hint queue full; the set still marks it draining");
            }
        }
        self.reports.send_if_modified(|current| {
            let changed = **current != report;
            if changed {
                *current = Arc::new(report);
            }
            changed
        });
        self.board.not_ready.store(None);
        self.status.send_modify(|s| {
            s.connected = true;
            s.lists += 1;
            s.last_error = None;
            s.last_confirmed = Some(SystemTime::now());
            s.source = Some(source.to_string());
            if changed {
                s.sets_published += 1;
            }
        });
    }

    fn log_changes(&mut self, next: &DiscoveredSet) {
        let current = self.sets.borrow().clone();
        for (pool, backends) in &next.pools {
            for b in backends {
                if current.by_container(&b.container_id).is_none() {
                    tracing::info!(task = %b.container_name, %pool, addr = %b.addr, draining = b.draining, "swarm discovery: backend added");
                }
            }
        }
        for (pool, backends) in &current.pools {
            for b in backends {
                if next.by_container(&b.container_id).is_none() {
                    tracing::info!(task = %b.container_name, %pool, addr = %b.addr, "swarm discovery: backend removed");
                }
            }
        }
        let mut warned = std::collections::HashMap::new();
        for s in &next.skipped {
            let reason = s.reason.to_string();
            if self.warned.get(&*s.container_id) != Some(&reason) {
                tracing::warn!(name = %s.container_name, "swarm discovery: skipped: {reason}");
            }
            warned.insert(s.container_id.to_string(), reason);
        }
        self.warned = warned;
    }
}

/// Hints for backends that serve in `old` and drain in `new`.
fn newly_draining(old: &DiscoveredSet, new: &DiscoveredSet) -> Vec<DrainHint> {
    let mut hints = Vec::new();
    for (pool, backends) in &new.pools {
        for b in backends.iter().filter(|b| b.draining) {
            let was_serving = old
                .pool(pool.as_str())
                .iter()
                .any(|o| o.addr == b.addr && !o.draining);
            if was_serving {
                hints.push(DrainHint {
                    pool: pool.clone(),
                    addr: b.addr,
                    container_id: Arc::clone(&b.container_id),
                    container_name: Arc::clone(&b.container_name),
                    action: Arc::from("swarm"),
                });
            }
        }
    }
    hints
}

/// Follows service and node events, waking the poll on each; reconnects with
/// backoff (and wakes the poll after each reconnect, as events may be lost).
async fn follow_events(engine: Endpoint, hints: Arc<Notify>, timeout: Duration) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match engine.events(EVENTS, timeout).await {
            Ok(mut events) => {
                backoff = Duration::from_millis(250);
                hints.notify_one();
                while let Some(line) = events.next().await {
                    tracing::trace!(event = %String::from_utf8_lossy(&line), "swarm event");
                    hints.notify_one();
                }
            }
            Err(error) => tracing::debug!(%error, "swarm discovery: event stream unavailable"),
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(EVENTS_BACKOFF_MAX);
    }
}
