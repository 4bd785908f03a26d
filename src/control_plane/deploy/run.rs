//! One deploy, from the wait for health to the drain (see the parent module).
//!
//! Every wait looks at the state every `poll` and is bounded by its own timeout;
//! the cancel token is looked at in each of them, so a cancel ends the deploy at
//! the next look with the record saying what routing is now.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Deploy, DeployPhase, Plan};
use crate::control_plane::controller::state_view::{BackendView, StateView};
use crate::control_plane::controller::task::{Change, ControlHandle};
use crate::control_plane::rollout::{Action, Phase, RolloutHandle};

/// What runs one deploy.
pub(super) struct Runner {
    pub(super) control: ControlHandle,
    pub(super) rollouts: RolloutHandle,
    pub(super) record: watch::Sender<Deploy>,
    pub(super) cancel: CancellationToken,
}

impl Runner {
    /// Runs the deploy to its end and records how it ended.
    pub(super) async fn run(self, plan: Plan) {
        let start = Instant::now();
        let (phase, outcome) = match self.phases(&plan, start).await {
            Ok(outcome) => outcome,
            Err(outcome) => outcome,
        };
        tracing::info!(deploy = %self.record.borrow().id, phase = ?phase, %outcome, "deploy ended");
        self.record.send_modify(|d| {
            d.phase = phase;
            d.outcome = Some(outcome);
            d.waiting_for = None;
        });
    }

    /// The three phases; `Err` is a deploy that did not complete.
    async fn phases(
        &self,
        plan: &Plan,
        start: Instant,
    ) -> Result<(DeployPhase, String), (DeployPhase, String)> {
        let (route, to) = (&plan.route, &plan.to);
        let as_before = |why: String| {
            (
                DeployPhase::Failed,
                format!("{why}; nothing changed, route {route} routes as before"),
            )
        };
        let closed = || as_before("the gateway is shutting down".into());

        // 1. healthy, and stays so for `settle`.
        let deadline = crate::clock::later(start, plan.wait_healthy);
        let mut healthy_since: Option<Instant> = None;
        loop {
            let state = self.state().await.ok_or_else(closed)?;
            let now = Instant::now();
            match not_ready(&state, to) {
                None => {
                    let since = *healthy_since.get_or_insert(now);
                    if now.duration_since(since) >= plan.settle {
                        let ms = millis(now.duration_since(start));
                        self.record.send_modify(|d| {
                            d.healthy_after_ms = Some(ms);
                            d.waiting_for = None;
                        });
                        break;
                    }
                }
                Some(why) => {
                    healthy_since = None;
                    if now >= deadline {
                        return Err(as_before(format!(
                            "pool {to} was not healthy within {} ({why})",
                            humantime::format_duration(plan.wait_healthy)
                        )));
                    }
                    self.record.send_modify(|d| d.waiting_for = Some(why));
                }
            }
            if self.cancelled_within(plan.poll).await {
                return Err((
                    DeployPhase::Cancelled,
                    format!("interrupted while waiting for pool {to} to be healthy; nothing changed, route {route} routes as before"),
                ));
            }
        }

        // 2. switch.
        let state = self.state().await.ok_or_else(closed)?;
        let Some(view) = state.route(route) else {
            return Err(as_before(format!("route {route} is gone")));
        };
        let old_pools: Vec<String> = view
            .split
            .iter()
            .filter(|s| s.pool != *to && s.weight > 0)
            .map(|s| s.pool.clone())
            .collect();
        self.record
            .send_modify(|d| d.old_pools.clone_from(&old_pools));
        match &plan.rollout {
            None => {
                let mut weights: Vec<(String, i64)> = view
                    .split
                    .iter()
                    .map(|s| (s.pool.clone(), i64::from(s.pool == *to) * 100))
                    .collect();
                if !weights.iter().any(|(p, _)| p == to) {
                    weights.push((to.clone(), 100));
                }
                let change = Change::SetSplit {
                    route: route.clone(),
                    weights,
                };
                if let Err(e) = self.control.change(change).await {
                    return Err(as_before(format!("switching route {route} failed ({e})")));
                }
            }
            Some(req) => {
                let rollout = match self.rollouts.start(req.clone()).await {
                    Ok(r) => r,
                    Err(e) => {
                        return Err(as_before(format!("the rollout was refused ({e})")));
                    }
                };
                let id = rollout.id.clone();
                self.record.send_modify(|d| {
                    d.phase = DeployPhase::RollingOut;
                    d.rollout = Some(id.clone());
                });
                self.follow_rollout(&id, route).await?;
            }
        }
        let switched_at = millis(start.elapsed());
        self.record.send_modify(|d| {
            d.phase = DeployPhase::Draining;
            d.switched_at_ms = Some(switched_at);
        });

        // 3. drain.
        let drain_deadline = crate::clock::later(Instant::now(), plan.drain_timeout);
        loop {
            let Some(state) = self.state().await else {
                return Err((
                    DeployPhase::Failed,
                    format!("the gateway is shutting down while waiting for drain: route {route} now serves pool {to}"),
                ));
            };
            let n = in_flight(&state, &old_pools);
            self.record.send_modify(|d| d.in_flight = n);
            if n == 0 {
                let ms = millis(start.elapsed());
                self.record.send_modify(|d| d.drained_at_ms = Some(ms));
                return Ok((
                    DeployPhase::Drained,
                    format!("route {route} serves pool {to}; the old pools have nothing in flight"),
                ));
            }
            if Instant::now() >= drain_deadline {
                return Ok((
                    DeployPhase::DrainTimedOut,
                    format!(
                        "route {route} serves pool {to}; drain timed out after {}: {n} still in flight on the old pools",
                        humantime::format_duration(plan.drain_timeout)
                    ),
                ));
            }
            if self.cancelled_within(plan.poll).await {
                return Err((
                    DeployPhase::Cancelled,
                    format!("interrupted while waiting for drain: route {route} now serves pool {to}; old pools still draining ({n} in flight)"),
                ));
            }
        }
    }

    /// Waits for the rollout `id` to end; a cancel aborts it (rolled back).
    async fn follow_rollout(&self, id: &str, route: &str) -> Result<(), (DeployPhase, String)> {
        let mut changes = self.rollouts.changes();
        loop {
            let rollout = self.rollouts.get(id).await.map_err(|e| {
                (
                    DeployPhase::Failed,
                    format!("rollout {id} cannot be read ({e}); see `ctl rollout status {id}`"),
                )
            })?;
            // The step reached (after a rollback the current weight is 0).
            let at = rollout.steps.last().map_or(0, |s| s.weight);
            let why = || {
                rollout
                    .reason
                    .as_ref()
                    .map_or_else(|| "no reason recorded".to_owned(), |r| r.message.clone())
            };
            match rollout.phase {
                Phase::Succeeded => return Ok(()),
                Phase::RolledBack | Phase::Aborted => {
                    return Err((
                        DeployPhase::Failed,
                        format!("rollout {id} rolled back at step {at}%: {}; route {route} routes as before", why()),
                    ));
                }
                Phase::Running | Phase::Paused => {}
            }
            self.record
                .send_modify(|d| d.waiting_for = Some(format!("rollout {id} at step {at}%")));
            tokio::select! {
                () = self.cancel.cancelled() => {
                    let aborted = self.rollouts.act(id, Action::Abort).await;
                    return Err((DeployPhase::Cancelled, match aborted {
                        Ok(_) => format!("interrupted during rollout {id} at step {at}%: the rollout was aborted and rolled back; route {route} routes as before"),
                        Err(e) => format!("interrupted during rollout {id} at step {at}%, and aborting it failed ({e}); see `ctl rollout status {id}`"),
                    }));
                }
                // A rollout's step change, or a look at its current figures.
                _ = changes.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn state(&self) -> Option<StateView> {
        self.control.state().await
    }

    /// Waits `poll`; true when cancelled meanwhile (by `ctl deploy`'s Ctrl-C or
    /// the gateway's shutdown), or before.
    async fn cancelled_within(&self, poll: Duration) -> bool {
        tokio::select! {
            () = self.cancel.cancelled() => true,
            () = tokio::time::sleep(poll) => false,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why `pool` is not ready, or `None` when it is.
pub(crate) fn not_ready(state: &StateView, pool: &str) -> Option<String> {
    let Some(p) = state.pools.iter().find(|p| p.name == pool) else {
        return Some(format!("pool {pool} does not exist"));
    };
    if p.backends.is_empty() {
        return Some(format!("pool {pool} has no backends"));
    }
    let bad: Vec<&str> = p
        .backends
        .iter()
        .filter(|b| !backend_ready(b))
        .map(|b| b.addr.as_str())
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "{} of {} backends of pool {pool} not healthy: {}",
            bad.len(),
            p.backends.len(),
            bad.join(", ")
        )
    })
}

fn backend_ready(b: &BackendView) -> bool {
    b.healthy && !b.ejected && !b.draining && b.docker_healthy != Some(false)
}

/// In flight on the backends of `pools`.
pub(crate) fn in_flight(state: &StateView, pools: &[String]) -> u64 {
    state
        .pools
        .iter()
        .filter(|p| pools.contains(&p.name))
        .flat_map(|p| &p.backends)
        .map(|b| u64::from(b.inflight))
        .sum()
}
