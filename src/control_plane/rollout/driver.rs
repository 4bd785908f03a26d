//! One rollout's state transitions: enter a step, judge it, roll back, pause,
//! resume, promote.
//!
//! A [`Driver`] holds the rollout's record and, while a step is measured, the
//! samples of the target and `from` pools taken when the step's split went live.
//! Every transition that changes the record is sent to the controller task as one
//! `Change::Rollout` (split and record together, persisted before it is live); the
//! measuring window starts only after the controller answered, so a step's figures
//! are the traffic routed by that step's split. Clocks are `tokio::time`.
//!
//! If the controller refuses a step (its pool was removed, the state file cannot be
//! written) the rollout rolls back; if the controller has stopped (shutdown) nothing
//! is changed, and the persisted record resumes at the next start. With
//! `[cluster]`, a refusal because another replica took the rollout's lease over
//! (`cluster::lease`) makes this driver stand down: it changes nothing more and
//! the other replica carries on from the recorded step.

use std::time::Duration;

use tokio::time::Instant;

use super::gate::{judge, target_health, Judgement};
use super::measure::{fill, fresh, Measure};
use super::request::split_at;
use super::{export_metrics, unix_ms, Action, Phase, Reason, Rollout, Verdict};
use crate::control_plane::cluster::counters::PeerSource;
use crate::control_plane::controller::task::{Change, ControlHandle, RolloutSplit};
use crate::control_plane::controller::Refusal;
use crate::control_plane::controller::SharedSnapshot;

/// What the driver needs from the gateway.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx<'a> {
    pub control: &'a ControlHandle,
    pub snapshot: &'a SharedSnapshot,
    /// The other replicas' counters (`[cluster].peers`), summed into the gate's.
    pub peers: Option<&'a dyn PeerSource>,
}

/// One rollout and its measuring state.
#[derive(Debug)]
pub(crate) struct Driver {
    pub record: Rollout,
    measure: Option<Measure>,
    /// When the target's health is next looked at.
    next_check: Instant,
    /// Another replica holds this rollout's lease now: nothing more to do here.
    pub(crate) handed_over: bool,
}

impl Driver {
    /// A driver for `record`, not measuring yet.
    pub(crate) fn new(record: Rollout) -> Driver {
        Driver {
            record,
            measure: None,
            next_check: Instant::now(),
            handed_over: false,
        }
    }

    /// When this rollout next needs attention; `None` once it ended.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        if !self.record.phase.is_active() || self.handed_over {
            return None;
        }
        let judge = self
            .measure
            .as_ref()
            .filter(|_| self.record.phase == Phase::Running)
            .map(|m| m.judge_at);
        Some(judge.map_or(self.next_check, |at| at.min(self.next_check)))
    }

    /// The record with the current step's figures as of now.
    pub(crate) fn view(&self, ctx: Ctx<'_>) -> Rollout {
        let mut record = self.record.clone();
        if let (Some(m), Some(step)) = (&self.measure, record.steps.last_mut()) {
            let (target, baseline) = m.windows(ctx, &self.record);
            fill(step, m, &target, &baseline, m.started.elapsed());
        }
        record
    }

    /// Sets step `i` live and starts measuring it; `expect` is the split the route
    /// must still have (the first step). The last step without `bake` (or any step
    /// entered by `promote`) is not judged and ends the rollout at once.
    pub(crate) async fn enter_step(
        &mut self,
        ctx: Ctx<'_>,
        i: usize,
        expect: Option<Vec<super::Weight>>,
        promote: bool,
    ) -> Result<(), Refusal> {
        let weight = self.record.spec.steps.get(i).copied().unwrap_or(100);
        let last = i + 1 >= self.record.spec.steps.len();
        let judged = !promote && (!last || self.record.spec.bake.is_some());
        let mut next = self.record.clone();
        let mut step = fresh(weight, Verdict::Measuring);
        if !judged {
            step.verdict = Verdict::NotJudged;
            step.note = Some(if promote {
                "promoted by the operator: not judged".to_owned()
            } else {
                "final step without bake: not judged".to_owned()
            });
            next.phase = Phase::Succeeded;
            next.ended_ms = Some(unix_ms());
        }
        next.steps.push(step);
        let split = split_at(&next.spec, &next.start_split, weight);
        apply(ctx, &next, RolloutSplit::Set(split), expect).await?;
        tracing::info!(rollout = %next.id, route = %next.spec.route, to = %next.spec.to, weight, "rollout step live");
        self.record = next;
        self.measure = judged.then(|| Measure::start(ctx, &self.record, self.step_len()));
        if let Some(m) = &mut self.measure {
            m.read_peers(ctx, &self.record).await;
        }
        export_metrics(ctx.snapshot.load().metrics(), &self.record, !judged);
        Ok(())
    }

    /// Looks at health and, when the step is due, judges it. Returns true when the
    /// rollout ended.
    pub(crate) async fn tick(&mut self, ctx: Ctx<'_>, now: Instant, poll: Duration) -> bool {
        if !self.record.phase.is_active() {
            return false;
        }
        if now >= self.next_check {
            self.next_check = crate::clock::later(now, poll);
            let reason = target_health(&ctx.snapshot.load(), &self.record.spec.to);
            if let Some(reason) = reason {
                self.rollback(ctx, reason, Phase::RolledBack, Verdict::Skipped)
                    .await;
                return true;
            }
        }
        let Some(m) = &mut self.measure else {
            return false;
        };
        if self.record.phase != Phase::Running {
            return false;
        }
        if !m.peers.started {
            // Measuring again (resume, restart, takeover): the peers' windows
            // start at this first look.
            m.read_peers(ctx, &self.record).await;
        }
        if now < m.judge_at {
            return false;
        }
        m.read_peers(ctx, &self.record).await;
        let elapsed = now.saturating_duration_since(m.started);
        let (target, baseline) = m.windows(ctx, &self.record);
        let waited_out = elapsed >= self.record.spec.max_wait;
        let judgement = if m.peers.missing.is_empty() || waited_out {
            judge(&self.record.spec, &target, &baseline, elapsed, waited_out)
        } else {
            // Judging without a peer's traffic could pass a canary whose errors
            // land on that peer: wait for it, up to `max_wait`.
            Judgement::Wait(format!(
                "waiting up to max_wait for peers: {}",
                m.peers.missing.join("; ")
            ))
        };
        if matches!(judgement, Judgement::Wait(_)) {
            m.judge_at = crate::clock::later(now, poll);
        }
        if let Some(step) = self.record.steps.last_mut() {
            fill(step, m, &target, &baseline, elapsed);
        }
        match judgement {
            Judgement::Wait(note) => {
                if let Some(step) = self.record.steps.last_mut() {
                    step.note = Some(note);
                }
                false
            }
            Judgement::Fail(reason) => {
                tracing::warn!(rollout = %self.record.id, reason = %reason.message, "rollout gate failed: rolling back");
                if let Some(step) = self.record.steps.last_mut() {
                    step.note = Some(reason.message.clone());
                }
                self.rollback(ctx, reason, Phase::RolledBack, Verdict::Failed)
                    .await;
                true
            }
            Judgement::Pass { note } => {
                if let Some(step) = self.record.steps.last_mut() {
                    step.verdict = Verdict::Passed;
                    step.note = note;
                }
                self.measure = None;
                let i = self.record.steps.len();
                let result = if i >= self.record.spec.steps.len() {
                    self.succeed(ctx).await
                } else {
                    self.enter_step(ctx, i, None, false).await
                };
                self.after_apply(ctx, result).await
            }
        }
    }

    /// `pause`, `resume`, `promote` or `abort`; returns true when it ended the
    /// rollout. A terminal rollout refuses with the phase it is in.
    pub(crate) async fn act(&mut self, ctx: Ctx<'_>, action: Action) -> Result<bool, Phase> {
        let phase = self.record.phase;
        if !phase.is_active() {
            return Err(phase);
        }
        let at = self.record.current_weight();
        match action {
            Action::Pause | Action::Resume => {
                let pause = action == Action::Pause;
                if pause == (phase == Phase::Paused) {
                    return Ok(false);
                }
                let mut next = self.view(ctx);
                next.phase = if pause { Phase::Paused } else { Phase::Running };
                if let Some(step) = next.steps.last_mut() {
                    if pause {
                        step.note = Some("paused: measured again from the start on resume".into());
                    } else {
                        *step = fresh(step.weight, step.verdict);
                    }
                }
                let result = apply(ctx, &next, RolloutSplit::Keep, None).await;
                if result.is_ok() {
                    self.record = next;
                    self.measure = None;
                    if !pause {
                        self.remeasure(ctx);
                    }
                    export_metrics(ctx.snapshot.load().metrics(), &self.record, false);
                }
                Ok(self.after_apply(ctx, result).await)
            }
            Action::Promote => {
                if let Some(step) = self.record.steps.last_mut() {
                    step.verdict = Verdict::Skipped;
                }
                let reason = format!("promoted by the operator at step {at}%");
                self.record.reason = Some(Reason::plain("promote", reason));
                self.measure = None;
                let result = if at == 100 {
                    if let Some(step) = self.record.steps.last_mut() {
                        step.verdict = Verdict::NotJudged;
                        step.note = Some("promoted by the operator: not judged".into());
                    }
                    self.succeed(ctx).await
                } else {
                    let last = self.record.spec.steps.len().saturating_sub(1);
                    self.enter_step(ctx, last, None, true).await
                };
                self.after_apply(ctx, result).await;
                Ok(true)
            }
            Action::Abort => {
                let reason =
                    Reason::plain("abort", format!("aborted by the operator at step {at}%"));
                self.rollback(ctx, reason, Phase::Aborted, Verdict::Skipped)
                    .await;
                Ok(true)
            }
        }
    }

    /// Rolls the route back to its starting split and ends the rollout as `phase`;
    /// the current step gets `verdict` (unless it was already judged).
    pub(crate) async fn rollback(
        &mut self,
        ctx: Ctx<'_>,
        reason: Reason,
        phase: Phase,
        verdict: Verdict,
    ) {
        let mut next = self.record.clone();
        if let Some(step) = next.steps.last_mut() {
            if matches!(step.verdict, Verdict::Measuring | Verdict::NotJudged) {
                step.verdict = verdict;
            }
        }
        next.phase = phase;
        next.reason = Some(reason);
        next.ended_ms = Some(unix_ms());
        let split = if next.start_from_file {
            RolloutSplit::File
        } else {
            let weights = next
                .start_split
                .iter()
                .map(|w| (w.pool.clone(), i64::from(w.weight)))
                .collect();
            RolloutSplit::Set(weights)
        };
        let mut result = apply(ctx, &next, split, None).await;
        if matches!(result, Err(Refusal::Invalid(_))) {
            // A pool of the starting split is gone: the file's split is what is left.
            tracing::warn!(rollout = %next.id, "starting split no longer valid; rolling back to the file's split");
            result = apply(ctx, &next, RolloutSplit::File, None).await;
        }
        match result {
            Ok(()) => {
                tracing::info!(rollout = %next.id, route = %next.spec.route, phase = phase.as_str(), "rollout rolled back to its starting split")
            }
            Err(Refusal::Closed(_)) => return,
            Err(err) if lease_lost(&err) => {
                self.stand_down(&err);
                return;
            }
            Err(err) => {
                tracing::error!(rollout = %next.id, %err, "ROLLBACK NOT APPLIED: the route keeps its current split; set it by hand")
            }
        }
        self.record = next;
        self.measure = None;
        export_metrics(ctx.snapshot.load().metrics(), &self.record, true);
    }

    /// The last step passed its bake: the rollout succeeded.
    async fn succeed(&mut self, ctx: Ctx<'_>) -> Result<(), Refusal> {
        let mut next = self.record.clone();
        next.phase = Phase::Succeeded;
        next.ended_ms = Some(unix_ms());
        apply(ctx, &next, RolloutSplit::Keep, None).await?;
        self.record = next;
        export_metrics(ctx.snapshot.load().metrics(), &self.record, true);
        Ok(())
    }

    /// After a refused change: roll back (unless the controller is gone). Returns
    /// whether the rollout has ended.
    async fn after_apply(&mut self, ctx: Ctx<'_>, result: Result<(), Refusal>) -> bool {
        match result {
            Ok(()) => !self.record.phase.is_active(),
            Err(Refusal::Closed(_)) => false,
            Err(err) if lease_lost(&err) => {
                self.stand_down(&err);
                false
            }
            Err(err) => {
                let reason =
                    Reason::plain("apply", format!("the controller refused the change: {err}"));
                self.rollback(ctx, reason, Phase::RolledBack, Verdict::Skipped)
                    .await;
                true
            }
        }
    }

    /// Another replica drives this rollout now (see the module doc).
    fn stand_down(&mut self, err: &Refusal) {
        tracing::warn!(rollout = %self.record.id, %err, "rollout lease lost: this replica stops driving it");
        self.handed_over = true;
        self.measure = None;
    }

    /// Restarts measuring the current step (after a resume or a gateway restart).
    pub(crate) fn remeasure(&mut self, ctx: Ctx<'_>) {
        let len = self.step_len();
        self.measure = self
            .measure_due()
            .then(|| Measure::start(ctx, &self.record, len));
    }

    /// Whether the current step is one that is judged.
    fn measure_due(&self) -> bool {
        self.record
            .steps
            .last()
            .is_some_and(|s| s.verdict == Verdict::Measuring)
    }

    /// How long the current step runs before it is judged.
    fn step_len(&self) -> Duration {
        let spec = &self.record.spec;
        match spec.bake {
            Some(bake) if self.record.steps.len() >= spec.steps.len() => bake,
            _ => spec.step_interval,
        }
    }
}

/// Whether `err` says another replica holds the rollout's lease.
fn lease_lost(err: &Refusal) -> bool {
    matches!(err, Refusal::Conflict { path, .. } if path == "lease")
}

/// Sends one rollout change to the controller and waits until it is live.
async fn apply(
    ctx: Ctx<'_>,
    record: &Rollout,
    split: RolloutSplit,
    expect: Option<Vec<super::Weight>>,
) -> Result<(), Refusal> {
    let change = Change::Rollout {
        record: Box::new(record.clone()),
        split,
        expect,
    };
    ctx.control.change(change).await.map(|_| ())
}
