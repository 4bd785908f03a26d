//! The controller task: the one place where changes become snapshots.
//!
//! Every source of change sends an [`Update`] on one channel: the file watcher a
//! newly validated spec (or news that the file was invalid, to be counted), the
//! admin API a [`Change`] (and the rollout manager its steps, [`Change::Rollout`]),
//! and callers that only read (state, plan, rollout records) a question. Docker
//! discovery, when on, is a second input ([`DockerFeed`]: whole sets on a `watch`,
//! drain hints on a queue; see `discovered`). The task owns the last good file
//! spec, the last discovered set and the admin `Overrides`; after each change it
//! computes the effective spec (`overrides.merge(file + discovered)`), persists the
//! overrides when they changed, and calls [`Controller::apply_off_worker`] — the
//! single publish path.
//! Replies go back on a oneshot *after* the snapshot is live, so an API call that
//! returned 2xx is already routing traffic. The same loop wakes for TTL expiries and
//! for closing streams of removed backends.

mod change;
mod cluster;
mod discovered;
mod file;

pub(crate) use cluster::ClusterFeed;
pub use discovered::DockerFeed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::state_view::{BackendView, ReplicaView, RouteView, StateParts, StateView};
use super::{Controller, Refusal, SharedSnapshot, Stopped};
use crate::control_plane::config::spec::PoolName;
use crate::control_plane::config::validate::ApiBackend;
use crate::control_plane::config::Spec;
use crate::control_plane::discovery::DiscoveredSet;
use crate::control_plane::events::diff::Summary;
use crate::control_plane::events::{By, EventHub, EventKind};
use crate::control_plane::off_worker;
use crate::control_plane::overrides::Overrides;
use crate::control_plane::plan::Plan;
use crate::control_plane::rollout_record::{Rollout, Weight};
use crate::control_plane::state_file::{self, StateFileError};
use crate::data_plane::health::{HealthChange, HealthEvent};

use file::load_overrides;

/// Queue length of the update channel; senders wait when it is full.
const QUEUE: usize = 64;

/// What happened so far (tests wait on these; `GET /api/v1/state` shows them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Snapshots published (1 = the first).
    pub generation: u64,
    /// File reloads applied.
    pub reloads_ok: u64,
    /// File reloads rejected (invalid file): nothing changed.
    pub reloads_failed: u64,
    /// Streams closed because their backend was removed.
    pub streams_closed: u64,
}

/// A message to the controller task.
#[derive(Debug)]
pub enum Update {
    /// The config file changed and is valid.
    File {
        spec: Box<Spec>,
        reply: oneshot::Sender<()>,
    },
    /// The config file changed but is invalid (already logged); only counted.
    FileInvalid { errors: String },
    /// An admin API write.
    Change {
        change: Change,
        reply: oneshot::Sender<Result<Written, Refusal>>,
    },
    /// `GET /api/v1/state`: what the task holds of it (see [`StateParts`]).
    State { reply: oneshot::Sender<StateParts> },
    /// What loading `spec` as the file would change.
    Plan {
        spec: Box<Spec>,
        reply: oneshot::Sender<Plan>,
    },
    /// The persisted rollout records (the rollout manager reads them at start).
    Rollouts {
        reply: oneshot::Sender<Vec<Rollout>>,
    },
    /// Who drives rollout `id` (with `[cluster]`); with `take`, this replica
    /// takes its lease from the replica holding it (an admin action on the
    /// rollout was received here).
    RolloutClaim {
        id: String,
        take: bool,
        reply: oneshot::Sender<Result<Claimed, Refusal>>,
    },
    /// The shared rollout records another replica drives or drove (with
    /// `[cluster]`; none without): the rollout list shows them beside this
    /// replica's own.
    SharedRollouts {
        reply: oneshot::Sender<Result<Vec<Rollout>, Refusal>>,
    },
}

/// The answer to [`ControlHandle::claim_rollout`].
#[derive(Debug)]
pub enum Claimed {
    /// This replica's rollout manager answers for it (no `[cluster]`, this
    /// replica drives it, or the shared document does not know it).
    Local,
    /// Another replica drives it (or it has ended there): the shared record.
    Shared(Box<Rollout>),
    /// This replica took the lease from another replica: the record to drive on.
    Taken(Box<Rollout>),
}

/// An admin write, as received (validated by the task against the running config).
#[derive(Debug)]
pub enum Change {
    /// `PUT /api/v1/routes/{route}/split`.
    SetSplit {
        route: String,
        weights: Vec<(String, i64)>,
    },
    /// `DELETE /api/v1/routes/{route}/split`: back to the file's split.
    ClearSplit { route: String },
    /// `POST /api/v1/pools/{pool}/backends/{addr}/drain|undrain`.
    Drain {
        pool: String,
        addr: String,
        action: DrainAction,
    },
    /// `POST /api/v1/pools/{pool}/backends` (also the heartbeat).
    Register { pool: String, body: ApiBackend },
    /// `DELETE /api/v1/pools/{pool}/backends[/{addr}]`.
    Deregister { pool: String, addr: String },
    /// `POST /api/v1/routes/{route}/pause` (`Some`) and `…/resume` (`None`).
    Pause {
        route: String,
        pause: Option<crate::control_plane::config::spec::PauseSpec>,
    },
    /// `PUT /api/v1/routes/{route}/mirror` (`Some`: checked against the running
    /// pools) and `DELETE` (`None`: back to the file's or the labels' mirror).
    Mirror {
        route: String,
        mirror: Option<crate::control_plane::config::raw::RawMirror>,
    },
    /// `PUT /api/v1/routes/{route}/maintenance` (`Some`) and `DELETE` (`None`).
    Maintenance {
        route: String,
        maintenance: Option<crate::control_plane::config::spec::MaintenanceSpec>,
    },
    /// `PUT /api/v1/routes/{route}/rate_limit` (`Some`) and `DELETE` (`None`:
    /// back to the file's).
    RateLimit {
        route: String,
        limit: Option<crate::control_plane::config::spec::RateLimitSpec>,
    },
    /// The rollout manager: set the route's split (or not) and record the rollout
    /// that explains it, persisted together. With `expect`, refused unless the
    /// route's split is still exactly that (a rollout's start).
    Rollout {
        record: Box<Rollout>,
        split: RolloutSplit,
        expect: Option<Vec<Weight>>,
    },
}

/// What a rollout change does to its route's split.
#[derive(Debug)]
pub enum RolloutSplit {
    /// Set these weights (validated like an admin split).
    Set(Vec<(String, i64)>),
    /// Back to the file's split (a rollback to where the file had it).
    File,
    /// Leave it (the record alone changed: a verdict, a pause).
    Keep,
}

/// Take a backend out of rotation (in-flight requests finish) or put it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainAction {
    Drain,
    Undrain,
}

impl DrainAction {
    /// Whether the backend is draining afterwards.
    pub fn draining(self) -> bool {
        self == DrainAction::Drain
    }
}

/// What an admin write changed, as the state shows it once the change is live
/// (the admin layer renders it).
#[derive(Clone, Debug)]
pub enum Written {
    /// A split or rollout write: the route (`None` only if it vanished meanwhile).
    Route(Option<Box<RouteView>>),
    /// A drain, undrain or registration: the backend, and its pool.
    Backend {
        pool: PoolName,
        backend: Option<BackendView>,
    },
    /// A deregistration: the backend is gone.
    Removed { pool: PoolName, addr: SocketAddr },
}

/// The sending side, shared by the file watcher, the admin API and tests.
#[derive(Clone, Debug)]
pub struct ControlHandle {
    tx: mpsc::Sender<Update>,
    counters: watch::Receiver<Counters>,
    events: EventHub,
    /// This replica as its peers see it, with `[cluster]`.
    replica: watch::Receiver<Option<ReplicaView>>,
    /// Bumped when this replica took over rollouts whose driver's lease expired.
    takeovers: watch::Receiver<u64>,
}

impl ControlHandle {
    /// Sends an update; `None` when the task has stopped.
    pub async fn send(&self, update: Update) -> Option<()> {
        self.tx.send(update).await.ok()
    }

    /// Applies an admin write; returns once it is live.
    pub async fn change(&self, change: Change) -> Result<Written, Refusal> {
        let closed = || Refusal::Closed(Stopped::Controller);
        let (reply, answer) = oneshot::channel();
        self.send(Update::Change { change, reply })
            .await
            .ok_or_else(closed)?;
        answer.await.map_err(|_| closed())?
    }

    /// The running state; `None` when the task has stopped.
    ///
    /// The task answers with its parts at once; the backends' part, milliseconds
    /// in a large fleet, is built here on the blocking pool, not on the task's
    /// worker.
    pub async fn state(&self) -> Option<StateView> {
        let parts = self.state_parts().await?;
        off_worker::run("state view", move || parts.finish()).await
    }

    /// What the task holds of the running state, for [`StateParts::finish`] to
    /// build; `None` when the task has stopped.
    pub async fn state_parts(&self) -> Option<StateParts> {
        let (reply, answer) = oneshot::channel();
        self.send(Update::State { reply }).await?;
        answer.await.ok()
    }

    /// What loading `spec` as the file would change; `None` when stopped.
    pub async fn plan(&self, spec: Spec) -> Option<Plan> {
        let (reply, answer) = oneshot::channel();
        let spec = Box::new(spec);
        self.send(Update::Plan { spec, reply }).await?;
        answer.await.ok()
    }

    /// The persisted rollout records; `None` when the task has stopped.
    pub async fn rollouts(&self) -> Option<Vec<Rollout>> {
        let (reply, answer) = oneshot::channel();
        self.send(Update::Rollouts { reply }).await?;
        answer.await.ok()
    }

    /// Who drives rollout `id`; with `take`, this replica takes over its lease
    /// if another replica holds it (see [`Claimed`]).
    pub async fn claim_rollout(&self, id: &str, take: bool) -> Result<Claimed, Refusal> {
        let closed = || Refusal::Closed(Stopped::Controller);
        let (reply, answer) = oneshot::channel();
        let id = id.to_owned();
        self.send(Update::RolloutClaim { id, take, reply })
            .await
            .ok_or_else(closed)?;
        answer.await.map_err(|_| closed())?
    }

    /// The shared rollout records another replica drives or drove, as
    /// [`claim_rollout`](Self::claim_rollout) would answer them
    /// ([`Claimed::Shared`]); empty without `[cluster]`.
    pub async fn shared_rollouts(&self) -> Result<Vec<Rollout>, Refusal> {
        let closed = || Refusal::Closed(Stopped::Controller);
        let (reply, answer) = oneshot::channel();
        self.send(Update::SharedRollouts { reply })
            .await
            .ok_or_else(closed)?;
        answer.await.map_err(|_| closed())?
    }

    /// This replica (ID, node, state version served) with `[cluster]`, else `None`;
    /// read without a round trip to the task.
    pub fn replica(&self) -> Option<ReplicaView> {
        self.replica.borrow().clone()
    }

    /// Bumped whenever this replica took over rollouts from a replica whose lease
    /// expired (`[cluster]`): the rollout manager then resumes them.
    pub fn takeovers(&self) -> watch::Receiver<u64> {
        self.takeovers.clone()
    }

    /// A watch on the counters (reloads, generation, closed streams).
    pub fn counters(&self) -> watch::Receiver<Counters> {
        self.counters.clone()
    }

    /// The event stream of what the task changes (see `crate::control_plane::events`).
    pub fn events(&self) -> &EventHub {
        &self.events
    }
}

/// The task's state; run it with [`Task::run`].
#[derive(Debug)]
pub struct Task {
    controller: Controller,
    /// The last valid file spec (never contains overrides).
    file: Spec,
    /// Docker discovery's channels, when it runs.
    docker: Option<DockerFeed>,
    /// The last set discovery published (empty without discovery).
    discovered: DiscoveredSet,
    /// `file` + `discovered`: what the overrides are laid over.
    base: Spec,
    overrides: Overrides,
    state_file: Option<PathBuf>,
    config_path: Option<PathBuf>,
    counters: watch::Sender<Counters>,
    rx: mpsc::Receiver<Update>,
    /// When pooled upstream connections are next checked (see [`IDLE_SWEEP`]).
    next_sweep: Instant,
    /// Where what changed is told (see [`crate::control_plane::events`]).
    events: EventHub,
    /// What the last publish showed, for the next one's events.
    summary: Summary,
    /// Whether discovery was connected when last told (`None`: not yet).
    discovery_connected: Option<bool>,
    /// The shared store, with `[cluster]` (see `cluster`).
    cluster: Option<cluster::Link>,
    /// What [`ControlHandle::replica`] reads.
    replica: watch::Sender<Option<ReplicaView>>,
    /// What [`ControlHandle::takeovers`] reads.
    takeovers: watch::Sender<u64>,
}

/// How often pooled upstream connections are checked for ones their backend closed
/// while idle. hyper's connections notice by themselves (each has a task); the
/// gateway-driven ones (`http1::client`) are checked when taken from the pool and
/// here, so a backend that gets no traffic does not keep closed sockets around.
const IDLE_SWEEP: Duration = Duration::from_secs(5);

impl Task {
    /// Loads persisted overrides (if `[admin].state_file` is set), builds the first
    /// snapshot from file + overrides, and returns the task, its handle and the
    /// snapshot the data plane reads. Metrics are recorded into `metrics`, the
    /// gateway's own recorder.
    pub fn new(
        file: Spec,
        config_path: Option<PathBuf>,
        metrics: crate::metrics::Registrar,
    ) -> (Task, ControlHandle, SharedSnapshot) {
        let state_file = file.admin.as_ref().and_then(|a| a.state_file.clone());
        let overrides = match &state_file {
            Some(path) => load_overrides(path, &file),
            None => Overrides::default(),
        };
        let discovered = DiscoveredSet::default();
        let base = discovered::base_of(&file, &discovered);
        let controller = Controller::with_metrics(overrides.merge(&base), metrics);
        let shared = controller.shared();
        let (counters, counters_rx) = watch::channel(Counters {
            generation: controller.generation(),
            ..Counters::default()
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let (replica, replica_rx) = watch::channel(None);
        let (takeovers, takeovers_rx) = watch::channel(0);
        let events = EventHub::new();
        let summary = Summary::of(controller.shared.load().spec(), overrides.rollouts());
        let task = Task {
            controller,
            file,
            docker: None,
            discovered,
            base,
            overrides,
            state_file,
            config_path,
            counters,
            rx,
            next_sweep: Instant::now() + IDLE_SWEEP,
            events: events.clone(),
            summary,
            discovery_connected: None,
            cluster: None,
            replica,
            takeovers,
        };
        let handle = ControlHandle {
            tx,
            counters: counters_rx,
            events,
            replica: replica_rx,
            takeovers: takeovers_rx,
        };
        (task, handle, shared)
    }

    /// Where the probe tasks are watched (see [`crate::tasks`]).
    pub fn task_watch(&self) -> crate::tasks::TaskWatch {
        self.controller.health().task_watch()
    }

    /// Every health transition from now on (probe status changes, ejections).
    pub fn subscribe_health(
        &self,
    ) -> tokio::sync::broadcast::Receiver<crate::data_plane::health::HealthEvent> {
        self.controller.subscribe_health()
    }

    /// Serves updates until `shutdown` is cancelled or every handle is dropped.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut health = self.controller.subscribe_health();
        loop {
            let wake = [
                self.overrides.next_expiry(),
                self.controller.next_retirement(),
                Some(self.next_sweep),
            ]
            .into_iter()
            .flatten()
            .min();
            let timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let lease_at = cluster::lease_check_at(self.cluster.as_ref());
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                news = discovered::next_news(self.docker.as_mut()) => self.on_docker(news).await,
                seen = cluster::next_observed(self.cluster.as_mut()) => self.on_observed(seen).await,
                () = cluster::lease_check(lease_at) => self.keep_leases().await,
                update = self.rx.recv() => match update {
                    Some(update) => self.handle(update).await,
                    None => break,
                },
                () = timer => self.tick(Instant::now()).await,
                event = health.recv() => match event {
                    Ok(event) => self.events.emit(health_event(&event)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "health events came faster than the event stream took them");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        health = self.controller.subscribe_health();
                    }
                },
            }
        }
    }

    async fn handle(&mut self, update: Update) {
        match update {
            Update::File { spec, reply } => {
                self.reload(*spec).await;
                // The caller may have given up waiting; the reload stands either way.
                if reply.send(()).is_err() {
                    tracing::debug!("reload applied after its requester stopped waiting");
                }
            }
            Update::FileInvalid { errors } => {
                tracing::debug!(%errors, "invalid config counted");
                self.events.emit(EventKind::ReloadRefused { errors });
                self.controller.metrics().count_reload(false);
                self.counters.send_modify(|c| c.reloads_failed += 1);
            }
            Update::Change { change, reply } => {
                let result = self.change(change).await;
                if reply.send(result).is_err() {
                    tracing::debug!("admin change applied after its caller went away");
                }
            }
            Update::State { reply } => {
                if reply.send(self.state_parts()).is_err() {
                    tracing::debug!("state requester went away");
                }
            }
            Update::Plan { spec, reply } => {
                if reply.send(self.plan(&spec)).is_err() {
                    tracing::debug!("plan requester went away");
                }
            }
            Update::Rollouts { reply } => self.answer_rollouts(reply),
            Update::RolloutClaim { id, take, reply } => {
                let claimed = self.claim_rollout(&id, take).await;
                if reply.send(claimed).is_err() {
                    tracing::debug!("rollout claim answered after its caller went away");
                }
            }
            Update::SharedRollouts { reply } => {
                let shared = self.shared_rollouts().await;
                if reply.send(shared).is_err() {
                    tracing::debug!("shared rollouts answered after their caller went away");
                }
            }
        }
    }

    /// TTL expiries, stream closes and the idle-connection sweep that are due.
    async fn tick(&mut self, now: Instant) {
        let expired = self.overrides.expire(now);
        for (pool, addr) in &expired {
            tracing::warn!(%pool, backend = %addr, "registered backend missed its heartbeat (TTL): removed");
        }
        if !expired.is_empty() {
            self.persist_or_log();
            self.publish(By::Ttl).await;
        }
        let closed = self.controller.close_retired(now);
        if closed > 0 {
            self.counters.send_modify(|c| c.streams_closed += closed);
        }
        if now >= self.next_sweep {
            self.controller.sweep_idle_conns();
            self.next_sweep = now + IDLE_SWEEP;
        }
    }

    /// The one publish path: effective spec → [`Controller::apply_off_worker`].
    /// `by` is who made the change, for the events it causes.
    async fn publish(&mut self, by: By) {
        self.controller
            .apply_off_worker(self.overrides.merge(&self.base))
            .await;
        let generation = self.controller.generation();
        self.counters.send_modify(|c| c.generation = generation);
        let summary = Summary::of(
            self.controller.shared.load().spec(),
            self.overrides.rollouts(),
        );
        for event in self.summary.diff(&summary, by, self.overrides.rollouts()) {
            self.events.emit(event);
        }
        self.summary = summary;
    }

    /// Writes the overrides to the state file, if there is one.
    fn persist(&self, overrides: &Overrides) -> Result<(), StateFileError> {
        match &self.state_file {
            Some(path) => state_file::save(path, overrides),
            None => Ok(()),
        }
    }

    fn persist_or_log(&self) {
        if let Err(err) = self.persist(&self.overrides) {
            tracing::error!(%err, "admin overrides changed but could not be persisted; a restart would lose them");
        }
    }

    fn state_parts(&self) -> StateParts {
        StateParts::take(
            &self.controller,
            &self.file,
            &self.overrides,
            *self.counters.borrow(),
            self.config_path.as_deref(),
            self.docker_view(),
        )
        .with_cluster(self.cluster_view())
    }

    fn plan(&self, next: &Spec) -> Plan {
        let running = self.controller.shared.load_full();
        let next = discovered::base_of(next, &self.discovered);
        crate::control_plane::plan::plan(running.spec(), &self.base, &self.overrides, &next)
    }
}

/// A health transition as an event.
fn health_event(event: &HealthEvent) -> EventKind {
    let (pool, addr) = (event.pool.to_string(), event.addr);
    match event.change {
        HealthChange::Status { from, to } => EventKind::BackendHealth {
            pool,
            addr,
            from: from.as_str(),
            to: to.as_str(),
        },
        HealthChange::Ejected { level, .. } => EventKind::BackendEjected { pool, addr, level },
        HealthChange::Restored => EventKind::BackendRecovered { pool, addr },
    }
}
