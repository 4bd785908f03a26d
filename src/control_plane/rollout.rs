//! Automated rollouts: progressive canary and blue-green with a metric gate and
//! automatic rollback.
//!
//! A rollout moves one route's traffic to a target pool (`to`) in steps
//! (`[5, 25, 50, 100]` % of the route). Each step sets the split, lets traffic flow
//! for `step_interval`, then judges the target pool's traffic *of that step only*
//! (the difference of two `pool_stats` samples): error rate, p99 latency, optionally
//! the error rate compared with the pools it replaces, and enough requests to tell.
//! A failed gate rolls the route back to its starting split at once and records
//! which figure broke which bound. Blue-green is `steps: [100]` with a `bake`: the
//! last step is judged for `bake` after the flip (without `bake` it is not judged).
//!
//! Who does what:
//! - [`request`]: the `POST /api/v1/rollouts` body and its checks against the
//!   running config;
//! - `gate`: the verdict on one step's figures, and the target pool's health;
//! - `engine`: the manager task that owns every rollout, runs their clocks under
//!   `tokio::time` and answers the admin API ([`RolloutHandle`]);
//! - `driver`: one rollout's state transitions;
//! - `persist`: what a restart does with a rollout that was running.
//!
//! Splits change only through the controller task (`Change::Rollout`), which
//! validates them like any admin split, writes the rollout record *together with*
//! the split to the state file (one atomic write), and publishes: the running split
//! is never one the state file cannot explain. The records themselves
//! (`crate::control_plane::rollout_record`, re-exported here) are what the admin API returns,
//! what `ctl` reads and what the state file holds.

pub(crate) mod driver;
pub(crate) mod engine;
pub(crate) mod gate;
mod measure;
mod peers;
pub(crate) mod persist;
pub mod request;

pub use crate::control_plane::rollout_record::{
    Action, LowTraffic, OnRestart, Phase, Reason, Rollout, RolloutSpec, StepRecord, Verdict, Weight,
};
pub use engine::{Manager, RolloutHandle, RolloutList, Totals};
pub use request::RolloutRequest;

/// **Metrics hook**, called on every change of a rollout: `rollout_step{route}` =
/// [`Rollout::current_weight`], `rollout_state{route,state}` = 1 for `phase`, 0 for
/// the others, and, when `finished`, `rollouts_total{result = phase}` += 1 (see
/// `crate::metrics::rollouts`). The same figures are in `GET /api/v1/rollouts`.
pub fn export_metrics(metrics: &crate::metrics::Registrar, rollout: &Rollout, finished: bool) {
    tracing::debug!(
        route = %rollout.spec.route,
        rollout_step = rollout.current_weight(),
        rollout_state = rollout.phase.as_str(),
        finished,
        "rollout metrics"
    );
    metrics.record_rollout(
        &rollout.spec.route,
        rollout.current_weight(),
        rollout.phase.as_str(),
        finished,
    );
}

/// Milliseconds since the Unix epoch (wall clock, for display only).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
