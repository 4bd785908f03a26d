//! What a gateway start does with the rollouts the state file held.
//!
//! The controller task loaded them with the overrides (the split each one set is
//! already live). A finished rollout is kept for `GET`. A running or paused one
//! follows its `on_restart`:
//! - `resume` (the default): the current step's split is applied again (so the
//!   route's split is exactly the one the record explains) and, if it was running,
//!   the step is measured again from the start — counters did not survive the
//!   restart, so the step's earlier figures are dropped; `resumed` counts this;
//! - `rollback`: the route goes back to its starting split, reason `restart`.
//!
//! Either way the route never stays at a split nobody can explain.
//!
//! With `[cluster]` the same happens when this replica takes over the lease of a
//! rollout whose driver stopped renewing it (`cluster::lease`): the records it is
//! handed are the ones it now drives; those it already drives are left alone. The
//! step in progress had not been judged (a judgement and the next step's split are
//! one write), so it is measured again from the start: judged once, none skipped.

use super::driver::Driver;
use super::engine::Manager;
use super::request::split_at;
use super::{unix_ms, OnRestart, Phase, Reason, Rollout, Verdict};
use crate::control_plane::controller::task::{Change, RolloutSplit};
use crate::control_plane::controller::Refusal;

impl Manager {
    /// Restores the persisted rollouts (see the module doc).
    pub(super) async fn restore(&mut self) {
        let Some(records) = self.ctx().control.rollouts().await else {
            return;
        };
        for record in records {
            let id = record.id.clone();
            if self
                .drivers
                .get(&id)
                .is_some_and(|d| d.record.phase.is_active() && !d.handed_over)
            {
                continue;
            }
            let mut driver = Driver::new(record);
            if !driver.record.phase.is_active() {
                self.insert(driver);
                continue;
            }
            let resume = driver.record.spec.on_restart == OnRestart::Resume
                && !driver.record.steps.is_empty();
            if resume {
                match resume_step(self, &mut driver, "gateway restarted").await {
                    Ok(()) => {
                        tracing::info!(rollout = %id, phase = driver.record.phase.as_str(), step = driver.record.current_weight(), "rollout resumed after a restart");
                    }
                    Err(Refusal::Closed(_)) => return,
                    Err(err) => {
                        let reason = Reason::plain(
                            "restart",
                            format!("could not resume after a restart: {err}"),
                        );
                        driver
                            .rollback(self.ctx(), reason, Phase::RolledBack, Verdict::Skipped)
                            .await;
                        self.count(driver.record.phase);
                    }
                }
            } else {
                let reason = Reason::plain(
                    "restart",
                    "the gateway restarted mid-rollout (on_restart = rollback)",
                );
                tracing::warn!(rollout = %id, "rolling back a rollout interrupted by a restart");
                driver
                    .rollback(self.ctx(), reason, Phase::RolledBack, Verdict::Skipped)
                    .await;
                self.count(driver.record.phase);
            }
            self.insert(driver);
            self.changed();
        }
    }
}

impl Manager {
    /// Drives `record`, whose lease this replica just took from the replica
    /// driving it because an admin action on it was received here: its current
    /// step is applied again and measured again from the start, as after a
    /// takeover (whatever its `on_restart`: nothing restarted). A driver this
    /// replica kept from an earlier turn is replaced.
    pub(super) async fn take_over(&mut self, record: Rollout) -> Result<(), Refusal> {
        let mut driver = Driver::new(record);
        if !driver.record.steps.is_empty() {
            resume_step(
                self,
                &mut driver,
                "driver moved to the replica that received an admin action",
            )
            .await?;
        }
        self.insert(driver);
        self.changed();
        Ok(())
    }
}

/// Applies the current step again (with a fresh step record if it was measured)
/// and restarts its measuring; `why` goes in the step's note.
async fn resume_step(manager: &Manager, driver: &mut Driver, why: &str) -> Result<(), Refusal> {
    let mut next = driver.record.clone();
    next.resumed += 1;
    let running = next.phase == Phase::Running;
    if let Some(step) = next.steps.last_mut() {
        step.started_ms = unix_ms();
        step.elapsed_ms = 0;
        step.requests = 0;
        step.errors = 0;
        step.error_rate = 0.0;
        step.p99_ms = None;
        step.baseline_error_rate = None;
        step.note = Some(if running {
            format!("{why}: measured again from the start")
        } else {
            format!("{why} while paused")
        });
    }
    let split = split_at(&next.spec, &next.start_split, next.current_weight());
    let change = Change::Rollout {
        record: Box::new(next.clone()),
        split: RolloutSplit::Set(split),
        expect: None,
    };
    manager.ctx().control.change(change).await?;
    driver.record = next;
    if running {
        driver.remeasure(manager.ctx());
    }
    Ok(())
}
