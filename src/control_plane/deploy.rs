//! Deploys: `POST /api/v1/routes/{route}/deploy`, the server side of `ctl deploy`.
//!
//! A deploy moves one route to one pool and is done only when the pools that lost
//! their share have nothing in flight, so that a CI script may remove them when
//! it returns. Three phases, each bounded (see `run`):
//! 1. *healthy*: every backend of the target pool is healthy in the gateway's view
//!    and stays so for `settle`; not within `wait_healthy` → failed, nothing changed;
//! 2. *switch*: at once (one admin split, the pool 100, the others 0), or with
//!    `steps` as a rollout (`crate::control_plane::rollout`) whose gates judge each
//!    step; a failed gate rolls the route back and fails the deploy;
//! 3. *drain*: until the old pools' backends have no request, stream or tunnel in
//!    flight, or `drain_timeout`.
//!
//! The deploy runs in the gateway, not in the client: a client that goes away
//! does not leave a half-done switch behind. `POST /api/v1/deploys/{id}/cancel`
//! (what `ctl deploy` sends on Ctrl-C) ends it in a consistent state and the
//! record says which: before the switch nothing changed; during a stepped switch
//! the rollout is aborted (rolled back); after the switch the route stays on the
//! new pool and only the wait for the drain ends.
//!
//! Owns the deploy records and their tasks; splits change only through the
//! controller (`Change::SetSplit`) or the rollout manager. Records are kept in
//! memory (the last `HISTORY` of them), not in the state file: what a deploy changed
//! (the split override, the rollout) is persisted by those that made the change.

mod run;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control_plane::config::spec::MAX_DURATION;
use crate::control_plane::config::validate::too_long;
use crate::control_plane::config::{ConfigError, ConfigErrors};
use crate::control_plane::controller::task::ControlHandle;
use crate::control_plane::controller::{Refusal, Stopped};
use crate::control_plane::rollout::{RolloutHandle, RolloutRequest};

/// Finished deploys kept for `GET` (oldest forgotten first).
const HISTORY: usize = 100;
/// Default `wait_healthy`.
pub const DEFAULT_WAIT_HEALTHY: Duration = Duration::from_secs(60);
/// Default `settle`.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(1);
/// Default `drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `step_interval` of a stepped deploy.
pub const DEFAULT_STEP_INTERVAL: &str = "30s";
/// How often a deploy looks at the state (health, in-flight, its rollout).
const POLL: Duration = Duration::from_millis(100);
/// Longest a cancel waits for the deploy to reach its consistent end.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// The body of `POST /api/v1/routes/{route}/deploy`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The pool that gets the whole route.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_healthy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<String>,
    /// Percent on the target per step, ending at 100: a rollout with gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<i64>>,
    /// The rollout's keys (see `RolloutRequest`); only with `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<i64>,
}

/// Where a deploy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployPhase {
    /// Waiting for every backend of the target to be healthy; nothing changed yet.
    WaitingHealthy,
    /// A stepped switch: its rollout runs.
    RollingOut,
    /// Switched; waiting for the old pools' in-flight work to end.
    Draining,
    /// Done: switched and the old pools have nothing in flight.
    Drained,
    /// Done: switched, but work was still in flight at `drain_timeout`.
    DrainTimedOut,
    /// Not done: `outcome` says why and what routing is now.
    Failed,
    /// Cancelled (`ctl deploy` interrupted): `outcome` says what routing is now.
    Cancelled,
}

impl DeployPhase {
    /// Still running.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            DeployPhase::WaitingHealthy | DeployPhase::RollingOut | DeployPhase::Draining
        )
    }
}

/// A deploy as the admin API returns it. Times are milliseconds from its start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deploy {
    /// `{route}-deploy-{n}`.
    pub id: String,
    pub route: String,
    pub to: String,
    /// Empty: switched at once.
    pub steps: Vec<u32>,
    pub phase: DeployPhase,
    /// The pools that lost their share (known once switched).
    pub old_pools: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_after_ms: Option<u64>,
    /// When the route was wholly on the target (a stepped deploy: its last step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_at_ms: Option<u64>,
    /// In flight on the old pools when last looked at.
    pub in_flight: u64,
    /// The rollout of a stepped deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// What the deploy waits for now (e.g. which backends are not healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// How it ended, in one sentence that says what routing is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// `GET /api/v1/deploys`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeployList {
    /// Running first, then the latest finished.
    pub deploys: Vec<Deploy>,
}

/// A checked request.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub(crate) route: String,
    pub(crate) to: String,
    pub(crate) wait_healthy: Duration,
    pub(crate) settle: Duration,
    pub(crate) drain_timeout: Duration,
    /// The rollout of a stepped deploy (checked when the target is healthy).
    pub(crate) rollout: Option<RolloutRequest>,
    pub(crate) poll: Duration,
}

/// One deploy's record and its stop.
#[derive(Debug)]
struct Entry {
    record: watch::Sender<Deploy>,
    cancel: CancellationToken,
    /// Order of start, for the history.
    seq: u64,
}

#[derive(Debug, Default)]
struct Registry {
    deploys: BTreeMap<String, Entry>,
    seq: u64,
}

/// The admin API's side of deploys.
#[derive(Clone, Debug)]
pub struct Deploys {
    control: ControlHandle,
    rollouts: RolloutHandle,
    registry: Arc<tokio::sync::Mutex<Registry>>,
    tasks: TaskTracker,
    /// Cancelled when the admin API shuts down: ends every running deploy.
    closing: CancellationToken,
}

impl Deploys {
    /// Deploys steering through `control` and `rollouts`, ended by `closing`.
    pub(crate) fn new(
        control: ControlHandle,
        rollouts: RolloutHandle,
        closing: CancellationToken,
    ) -> Deploys {
        Deploys {
            control,
            rollouts,
            registry: Arc::default(),
            tasks: TaskTracker::new(),
            closing,
        }
    }

    /// Checks `req` and starts the deploy; returns its first record.
    pub async fn start(&self, route: String, req: DeployRequest) -> Result<Deploy, Refusal> {
        let plan = check(route, &req)?;
        let state = self
            .control
            .state()
            .await
            .ok_or(Refusal::Closed(Stopped::Controller))?;
        if state.route(&plan.route).is_none() {
            let known: Vec<&str> = state.routes.iter().map(|r| r.name.as_str()).collect();
            return Err(Refusal::not_found(
                "route",
                format!(
                    "no route named {:?}; routes: {}",
                    plan.route,
                    known.join(", ")
                ),
            ));
        }
        if !state.pools.iter().any(|p| p.name == plan.to) {
            let known: Vec<&str> = state.pools.iter().map(|p| p.name.as_str()).collect();
            return Err(Refusal::invalid(
                "to",
                format!("no pool named {:?}; pools: {}", plan.to, known.join(", ")),
            ));
        }
        if let Some(rollout) = &plan.rollout {
            // The step values now; the target's health is what phase 1 waits for.
            if let Err(err @ (Refusal::Invalid(_) | Refusal::NotFound { .. })) =
                crate::control_plane::rollout::request::check(rollout, &state)
            {
                return Err(err);
            }
        }
        let mut registry = self.registry.lock().await;
        if let Some(running) = registry
            .deploys
            .values()
            .map(|e| e.record.borrow().clone())
            .find(|d| d.route == plan.route && d.phase.is_active())
        {
            return Err(Refusal::conflict(
                "route",
                format!(
                    "deploy {} is running on route {}; one deploy per route at a time",
                    running.id, plan.route
                ),
            ));
        }
        registry.seq += 1;
        let seq = registry.seq;
        let id = format!("{}-deploy-{seq}", plan.route);
        let record = Deploy {
            id: id.clone(),
            route: plan.route.clone(),
            to: plan.to.clone(),
            steps: plan
                .rollout
                .as_ref()
                .map(|r| {
                    r.steps
                        .iter()
                        .filter_map(|s| u32::try_from(*s).ok())
                        .collect()
                })
                .unwrap_or_default(),
            phase: DeployPhase::WaitingHealthy,
            old_pools: Vec::new(),
            healthy_after_ms: None,
            switched_at_ms: None,
            drained_at_ms: None,
            in_flight: 0,
            rollout: None,
            waiting_for: None,
            outcome: None,
        };
        let (tx, _) = watch::channel(record.clone());
        let cancel = self.closing.child_token();
        let runner = run::Runner {
            control: self.control.clone(),
            rollouts: self.rollouts.clone(),
            record: tx.clone(),
            cancel: cancel.clone(),
        };
        registry.deploys.insert(
            id.clone(),
            Entry {
                record: tx,
                cancel,
                seq,
            },
        );
        forget_old(&mut registry);
        drop(registry);
        tracing::info!(deploy = %id, route = %plan.route, to = %plan.to, "deploy started");
        self.tasks.spawn(runner.run(plan));
        Ok(record)
    }

    /// A deploy as of now.
    pub async fn get(&self, id: &str) -> Result<Deploy, Refusal> {
        let registry = self.registry.lock().await;
        registry
            .deploys
            .get(id)
            .map(|e| e.record.borrow().clone())
            .ok_or_else(|| not_found(id))
    }

    /// Every known deploy, running first.
    pub async fn list(&self) -> DeployList {
        let registry = self.registry.lock().await;
        let mut deploys: Vec<(u64, Deploy)> = registry
            .deploys
            .values()
            .map(|e| (e.seq, e.record.borrow().clone()))
            .collect();
        deploys.sort_by_key(|(seq, d)| (!d.phase.is_active(), std::cmp::Reverse(*seq)));
        DeployList {
            deploys: deploys.into_iter().map(|(_, d)| d).collect(),
        }
    }

    /// Cancels a running deploy and returns it once it reached its consistent end
    /// (or as it is after a bounded wait); an ended deploy is returned as it is.
    pub async fn cancel(&self, id: &str) -> Result<Deploy, Refusal> {
        let mut watcher = {
            let registry = self.registry.lock().await;
            let entry = registry.deploys.get(id).ok_or_else(|| not_found(id))?;
            entry.cancel.cancel();
            entry.record.subscribe()
        };
        let ended = tokio::time::timeout(CANCEL_WAIT, watcher.wait_for(|d| !d.phase.is_active()))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|record| record.clone());
        Ok(ended.unwrap_or_else(|| watcher.borrow().clone()))
    }
}

/// Drops the oldest finished deploys beyond [`HISTORY`].
fn forget_old(registry: &mut Registry) {
    let mut finished: Vec<(u64, String)> = registry
        .deploys
        .iter()
        .filter(|(_, e)| !e.record.borrow().phase.is_active())
        .map(|(id, e)| (e.seq, id.clone()))
        .collect();
    if finished.len() > HISTORY {
        finished.sort();
        let excess = finished.len() - HISTORY;
        for (_, id) in finished.into_iter().take(excess) {
            registry.deploys.remove(&id);
        }
    }
}

fn not_found(id: &str) -> Refusal {
    Refusal::not_found(
        "id",
        format!("no deploy {id:?} (the last {HISTORY} are kept until a restart)"),
    )
}

/// Checks the values of `req` (all problems, each with its key path).
pub(crate) fn check(route: String, req: &DeployRequest) -> Result<Plan, Refusal> {
    let mut errors = Vec::new();
    let mut duration = |text: &Option<String>, path: &str, default: Duration| -> Duration {
        let Some(text) = text else { return default };
        match humantime::parse_duration(text) {
            Ok(d) if d > MAX_DURATION => {
                errors.push(error(path, too_long(text)));
                default
            }
            Ok(d) => d,
            Err(e) => {
                errors.push(error(
                    path,
                    format!("{text:?} is not a duration like \"30s\" or \"2m\" ({e})"),
                ));
                default
            }
        }
    };
    let wait_healthy = duration(&req.wait_healthy, "wait_healthy", DEFAULT_WAIT_HEALTHY);
    let settle = duration(&req.settle, "settle", DEFAULT_SETTLE);
    let drain_timeout = duration(&req.drain_timeout, "drain_timeout", DEFAULT_DRAIN_TIMEOUT);
    if req.to.is_empty() {
        errors.push(error("to", "name the pool to deploy to".into()));
    }
    let rollout = match &req.steps {
        Some(steps) => Some(RolloutRequest {
            route: route.clone(),
            to: req.to.clone(),
            steps: steps.clone(),
            step_interval: req
                .step_interval
                .clone()
                .unwrap_or_else(|| DEFAULT_STEP_INTERVAL.to_owned()),
            max_error_rate: req.max_error_rate,
            max_p99: req.max_p99.clone(),
            min_requests: req.min_requests,
            ..RolloutRequest::default()
        }),
        None => {
            let keys = [
                ("step_interval", req.step_interval.is_some()),
                ("max_error_rate", req.max_error_rate.is_some()),
                ("max_p99", req.max_p99.is_some()),
                ("min_requests", req.min_requests.is_some()),
            ];
            for (key, given) in keys {
                if given {
                    errors.push(error(
                        key,
                        format!("{key} applies to a stepped deploy only; give steps too (e.g. [5, 25, 50, 100])"),
                    ));
                }
            }
            None
        }
    };
    if !errors.is_empty() {
        return Err(Refusal::Invalid(ConfigErrors(errors)));
    }
    Ok(Plan {
        route,
        to: req.to.clone(),
        wait_healthy,
        settle,
        drain_timeout,
        rollout,
        poll: POLL,
    })
}

fn error(path: &str, message: String) -> ConfigError {
    ConfigError {
        path: path.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_value_is_reported_with_its_key_path() {
        let req = DeployRequest {
            to: String::new(),
            wait_healthy: Some("soon".into()),
            drain_timeout: Some("9999999h".into()),
            max_p99: Some("1s".into()),
            ..DeployRequest::default()
        };
        let Err(Refusal::Invalid(errors)) = check("agents".into(), &req) else {
            panic!("expected invalid");
        };
        let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["wait_healthy", "drain_timeout", "to", "max_p99"]);
    }

    #[test]
    fn steps_make_a_rollout_with_the_default_interval() {
        let req = DeployRequest {
            to: "green".into(),
            steps: Some(vec![5, 25, 50, 100]),
            ..DeployRequest::default()
        };
        let plan = check("agents".into(), &req).expect("valid");
        let rollout = plan.rollout.expect("rollout");
        assert_eq!(rollout.steps, [5, 25, 50, 100]);
        assert_eq!(rollout.step_interval, DEFAULT_STEP_INTERVAL);
        assert_eq!(plan.wait_healthy, DEFAULT_WAIT_HEALTHY);
    }
}
