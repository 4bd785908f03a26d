//! The rollout manager: one owned task that runs every rollout's clock.
//!
//! The admin API talks to it through a [`RolloutHandle`] (start, get, list,
//! pause/resume/promote/abort); it talks to the controller task through the
//! `ControlHandle` (rollout changes, the running state, the persisted records) and
//! reads pool counters and health from the shared snapshot. It sleeps until the
//! earliest moment a rollout needs it (a step's end, the next health look every
//! `poll`), so with no rollout running it never wakes. One rollout per route: a
//! second start is refused (409) while one runs or is paused.
//!
//! At start it restores what the state file held (see `persist`); on shutdown it
//! just stops: the persisted records say where each rollout was.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::driver::{Ctx, Driver};
use super::request::{check, RolloutRequest};
use super::{unix_ms, Action, Phase, Rollout};
use crate::control_plane::cluster::counters::PeerSource;
use crate::control_plane::controller::task::{Claimed, ControlHandle};
use crate::control_plane::controller::{Refusal, SharedSnapshot, Stopped};

/// How often a running rollout looks at its target's health (and, while a step
/// waits for `min_requests`, at its traffic).
pub(crate) const DEFAULT_POLL: Duration = Duration::from_millis(250);
/// Finished rollouts kept for `GET` (oldest forgotten first).
const HISTORY: usize = 100;
/// Queue length of the command channel.
const QUEUE: usize = 32;

/// Rollouts that ended since the gateway started, by result (`rollouts_total`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub succeeded: u64,
    pub rolled_back: u64,
    pub aborted: u64,
}

/// `GET /api/v1/rollouts`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolloutList {
    pub rollouts: Vec<Rollout>,
    pub totals: Totals,
}

enum Command {
    Start(Box<RolloutRequest>, Reply<Rollout>),
    Get(String, Reply<Rollout>),
    List(Reply<RolloutList>),
    Act(String, Action, Reply<Rollout>),
}

type Reply<T> = oneshot::Sender<Result<T, Refusal>>;

/// The admin API's side of the manager.
#[derive(Clone, Debug)]
pub struct RolloutHandle {
    tx: mpsc::Sender<Command>,
    changes: watch::Receiver<u64>,
}

impl RolloutHandle {
    /// Starts a rollout; returns it once its first step is live.
    pub async fn start(&self, req: RolloutRequest) -> Result<Rollout, Refusal> {
        self.ask(|reply| Command::Start(Box::new(req), reply)).await
    }

    /// A rollout, with the current step's figures as of now.
    pub async fn get(&self, id: &str) -> Result<Rollout, Refusal> {
        self.ask(|reply| Command::Get(id.to_owned(), reply)).await
    }

    /// Every known rollout (running first, then the latest finished) and totals;
    /// with `[cluster]`, also those other replicas drive or drove (their shared
    /// records).
    pub async fn list(&self) -> Result<RolloutList, Refusal> {
        self.ask(Command::List).await
    }

    /// `pause`, `resume`, `promote` or `abort`.
    pub async fn act(&self, id: &str, action: Action) -> Result<Rollout, Refusal> {
        self.ask(|reply| Command::Act(id.to_owned(), action, reply))
            .await
    }

    /// Bumped after every change of any rollout (tests and `--watch` wait on it).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, Refusal> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(command(reply))
            .await
            .map_err(|_| Refusal::Closed(Stopped::RolloutManager))?;
        answer
            .await
            .map_err(|_| Refusal::Closed(Stopped::RolloutManager))?
    }
}

/// The manager task's state; run it with [`Manager::run`].
#[derive(Debug)]
pub struct Manager {
    control: ControlHandle,
    snapshot: SharedSnapshot,
    rx: mpsc::Receiver<Command>,
    pub(super) drivers: BTreeMap<String, Driver>,
    totals: Totals,
    changes: watch::Sender<u64>,
    poll: Duration,
    /// The other replicas' counters (`[cluster].peers`), for the gate.
    peers: Option<Arc<dyn PeerSource>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Manager {
    /// A manager steering through `control`, reading pools from `snapshot`.
    pub fn new(control: ControlHandle, snapshot: SharedSnapshot) -> (Manager, RolloutHandle) {
        Manager::with_poll(control, snapshot, DEFAULT_POLL)
    }

    /// [`new`](Self::new) with another health/traffic poll interval.
    pub fn with_poll(
        control: ControlHandle,
        snapshot: SharedSnapshot,
        poll: Duration,
    ) -> (Manager, RolloutHandle) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (changes, changes_rx) = watch::channel(0);
        let manager = Manager {
            control,
            snapshot,
            rx,
            drivers: BTreeMap::new(),
            totals: Totals::default(),
            changes,
            poll,
            peers: None,
        };
        let handle = RolloutHandle {
            tx,
            changes: changes_rx,
        };
        (manager, handle)
    }

    /// Sums the traffic of the replicas `peers` reads into every step's gate
    /// (`[cluster].peers`).
    pub(crate) fn sum_peers(&mut self, peers: Arc<dyn PeerSource>) {
        self.peers = Some(peers);
    }

    /// Restores persisted rollouts, then serves commands and clocks until
    /// `shutdown` is cancelled or every handle is dropped.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = self.restore() => {}
        }
        let mut takeovers = Some(self.control.takeovers());
        loop {
            let wake = self.drivers.values().filter_map(Driver::next_wake).min();
            let timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                command = self.rx.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                () = timer => self.tick(Instant::now()).await,
                taken = took_over(takeovers.as_mut()) => if taken {
                    // Rollouts whose driver's lease expired are this replica's now.
                    self.restore().await;
                } else {
                    // The controller stopped: nothing more will be taken over.
                    takeovers = None;
                },
            }
        }
    }

    pub(super) fn ctx(&self) -> Ctx<'_> {
        Ctx {
            control: &self.control,
            snapshot: &self.snapshot,
            peers: self.peers.as_deref(),
        }
    }

    async fn handle(&mut self, command: Command) {
        let answered = match command {
            Command::Start(req, reply) => reply.send(self.start(*req).await).is_ok(),
            Command::Get(id, reply) => reply.send(self.get(&id).await).is_ok(),
            Command::List(reply) => reply.send(self.list().await).is_ok(),
            Command::Act(id, action, reply) => reply.send(self.act(&id, action).await).is_ok(),
        };
        if !answered {
            tracing::debug!("rollout command answered after its caller went away");
        }
    }

    async fn tick(&mut self, now: Instant) {
        let due: Vec<String> = self
            .drivers
            .iter()
            .filter(|(_, d)| d.next_wake().is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let (ctx, poll) = (
                Ctx {
                    control: &self.control,
                    snapshot: &self.snapshot,
                    peers: self.peers.as_deref(),
                },
                self.poll,
            );
            let Some(driver) = self.drivers.get_mut(&id) else {
                continue;
            };
            let before = driver.record.clone();
            let ended = driver.tick(ctx, now, poll).await;
            let changed = driver.record != before;
            if ended {
                let phase = driver.record.phase;
                self.count(phase);
            }
            if changed || ended {
                self.changed();
            }
        }
    }

    async fn start(&mut self, req: RolloutRequest) -> Result<Rollout, Refusal> {
        // With `[cluster]`, the route's rollouts are the shared records of those
        // other replicas drive (an active one there refuses this start as a local
        // one would) and this manager's own; a local view of a rollout another
        // replica took over is stale and gives way to its shared record.
        let shared = self.control.shared_rollouts().await?;
        let mine = self
            .drivers
            .values()
            .filter(|d| !d.handed_over && !shared.iter().any(|r| r.id == d.record.id))
            .map(|d| &d.record);
        if let Some(r) = mine
            .chain(shared.iter())
            .find(|r| r.phase.is_active() && r.spec.route == req.route)
        {
            return Err(Refusal::conflict(
                "route",
                format!(
                    "rollout {} is {} on route {}; one rollout per route at a time",
                    r.id,
                    r.phase.as_str(),
                    req.route
                ),
            ));
        }
        let state = self
            .control
            .state()
            .await
            .ok_or(Refusal::Closed(Stopped::Controller))?;
        let checked = check(&req, &state)?;
        // The route's latest rollout may be another replica's: its ID must not
        // be taken again (its driver still holds it).
        let id = self.next_id(&req.route, &shared);
        let expect = checked.start_split.clone();
        let mut driver = Driver::new(Rollout {
            id: id.clone(),
            spec: checked.spec,
            phase: Phase::Running,
            start_split: checked.start_split,
            start_from_file: checked.start_from_file,
            steps: Vec::new(),
            reason: None,
            started_ms: unix_ms(),
            ended_ms: None,
            resumed: 0,
        });
        driver
            .enter_step(self.ctx(), 0, Some(expect), false)
            .await?;
        tracing::info!(rollout = %id, route = %req.route, to = %req.to, "rollout started");
        let ended = !driver.record.phase.is_active();
        let record = driver.view(self.ctx());
        self.insert(driver);
        if ended {
            self.count(record.phase);
        }
        self.changed();
        Ok(record)
    }

    /// With `[cluster]`, a rollout another replica drives is answered from the
    /// shared record (its current step's figures are the driver's to measure).
    async fn get(&self, id: &str) -> Result<Rollout, Refusal> {
        if let Claimed::Shared(record) = self.control.claim_rollout(id, false).await? {
            return Ok(*record);
        }
        self.drivers
            .get(id)
            .map(|d| d.view(self.ctx()))
            .ok_or_else(|| not_found(id))
    }

    /// With `[cluster]`, the rollouts other replicas drive (or drove) are listed
    /// too, from the shared records, each once: a shared record stands in for
    /// this manager's view of the same ID (a rollout another replica took over),
    /// as [`get`](Self::get) answers it. The totals stay this replica's.
    async fn list(&self) -> Result<RolloutList, Refusal> {
        let shared = self.control.shared_rollouts().await?;
        let mut rollouts: Vec<Rollout> = self
            .drivers
            .values()
            .filter(|d| !shared.iter().any(|r| r.id == d.record.id))
            .map(|d| d.view(self.ctx()))
            .collect();
        rollouts.extend(shared);
        rollouts.sort_by_key(|r| (!r.phase.is_active(), std::cmp::Reverse(r.started_ms)));
        Ok(RolloutList {
            rollouts,
            totals: self.totals,
        })
    }

    /// With `[cluster]`, an action on a rollout another replica drives makes
    /// this replica its driver first (see `persist::take_over`), then applies it
    /// as the driver would.
    async fn act(&mut self, id: &str, action: Action) -> Result<Rollout, Refusal> {
        match self.control.claim_rollout(id, true).await? {
            Claimed::Local => {}
            Claimed::Shared(record) => return Err(ended(id, record.phase)),
            Claimed::Taken(record) => self.take_over(*record).await?,
        }
        let ctx = Ctx {
            control: &self.control,
            snapshot: &self.snapshot,
            peers: self.peers.as_deref(),
        };
        let driver = self.drivers.get_mut(id).ok_or_else(|| not_found(id))?;
        let ended = driver
            .act(ctx, action)
            .await
            .map_err(|phase| ended(id, phase))?;
        let record = driver.view(ctx);
        if ended {
            self.count(record.phase);
        }
        self.changed();
        Ok(record)
    }

    /// Keeps `driver`, forgetting the oldest finished rollouts beyond the history.
    pub(super) fn insert(&mut self, driver: Driver) {
        self.drivers.insert(driver.record.id.clone(), driver);
        let finished: Vec<(u64, String)> = self
            .drivers
            .values()
            .filter(|d| !d.record.phase.is_active())
            .map(|d| (d.record.started_ms, d.record.id.clone()))
            .collect();
        if finished.len() > HISTORY {
            let mut finished = finished;
            finished.sort();
            for (_, id) in finished.iter().take(finished.len() - HISTORY) {
                self.drivers.remove(id);
            }
        }
    }

    /// `{route}-{n}`, n one more than any known for the route, here or in
    /// `shared` (the records other replicas drive or drove).
    fn next_id(&self, route: &str, shared: &[Rollout]) -> String {
        let prefix = format!("{route}-");
        let n = self
            .drivers
            .keys()
            .chain(shared.iter().map(|r| &r.id))
            .filter_map(|id| id.strip_prefix(&prefix)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        format!("{route}-{}", n + 1)
    }

    pub(super) fn count(&mut self, phase: Phase) {
        match phase {
            Phase::Succeeded => self.totals.succeeded += 1,
            Phase::RolledBack => self.totals.rolled_back += 1,
            Phase::Aborted => self.totals.aborted += 1,
            Phase::Running | Phase::Paused => {}
        }
    }

    pub(super) fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// The next takeover signal (`false`: the controller stopped); never resolves
/// without a receiver.
async fn took_over(rx: Option<&mut watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

fn ended(id: &str, phase: Phase) -> Refusal {
    Refusal::conflict(
        "id",
        format!(
            "rollout {id} has ended ({}); start a new one",
            phase.as_str()
        ),
    )
}

fn not_found(id: &str) -> Refusal {
    Refusal::not_found(
        "id",
        format!(
            "no rollout {id:?} (finished rollouts are kept until a restart, the last {HISTORY})"
        ),
    )
}
