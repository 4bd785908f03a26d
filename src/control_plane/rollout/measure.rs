//! A step's measuring window: the pool counters sampled when the step's split went
//! live, and the figures of the target and `from` pools since then; with
//! `[cluster].peers`, the other replicas' share of them too (`super::peers`).

use std::time::Duration;

use tokio::time::Instant;

use super::driver::Ctx;
use super::gate::millis;
use super::peers::PeerWindow;
use super::{unix_ms, Rollout, StepRecord, Verdict};
use crate::data_plane::pool_stats::{Sample, Window};

/// The samples a step's window started from.
#[derive(Debug)]
pub(super) struct Measure {
    pub started: Instant,
    /// When the gate looks next: the step's end, then every poll while it waits
    /// for traffic.
    pub judge_at: Instant,
    target: Sample,
    baseline: Vec<Sample>,
    /// The peers' share, as of their latest read.
    pub peers: PeerWindow,
}

impl Measure {
    pub(super) fn start(ctx: Ctx<'_>, record: &Rollout, len: Duration) -> Measure {
        let snapshot = ctx.snapshot.load();
        let sample = |pool: &str| {
            snapshot
                .pool(pool)
                .map(|p| p.health().traffic().sample())
                .unwrap_or_default()
        };
        let started = Instant::now();
        Measure {
            started,
            judge_at: crate::clock::later(started, len),
            target: sample(&record.spec.to),
            baseline: record.spec.from.iter().map(|p| sample(p)).collect(),
            peers: PeerWindow::default(),
        }
    }

    /// Reads every peer's counters (with `[cluster].peers`; else nothing): the
    /// first read starts their windows, later ones bring them up to now.
    pub(super) async fn read_peers(&mut self, ctx: Ctx<'_>, record: &Rollout) {
        let Some(source) = ctx.peers else {
            return;
        };
        let reads = source.read().await;
        let at = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.peers
            .absorb(reads, &record.spec.to, &record.spec.from, at);
    }

    /// The target's and the `from` pools' traffic since the start.
    pub(super) fn windows(&self, ctx: Ctx<'_>, record: &Rollout) -> (Window, Window) {
        let snapshot = ctx.snapshot.load();
        let now = |pool: &str| {
            snapshot
                .pool(pool)
                .map(|p| p.health().traffic().sample())
                .unwrap_or_default()
        };
        let target = now(&record.spec.to).since(&self.target);
        let mut baseline = Window::default();
        for (pool, then) in record.spec.from.iter().zip(&self.baseline) {
            baseline.absorb(&now(pool).since(then));
        }
        let mut target = target;
        target.absorb(&self.peers.target);
        baseline.absorb(&self.peers.baseline);
        (target, baseline)
    }
}

/// Copies a window's figures into a step, with what the peers' reads say.
pub(super) fn fill(
    step: &mut StepRecord,
    m: &Measure,
    target: &Window,
    baseline: &Window,
    elapsed: Duration,
) {
    if m.peers.started {
        step.replicas = u32::try_from(m.peers.counted.saturating_add(1)).unwrap_or(u32::MAX);
        step.peers = m.peers.notes();
    }
    step.elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    step.requests = target.requests;
    step.errors = target.errors;
    step.error_rate = target.error_rate();
    step.p99_ms = target.p99().map(millis);
    step.baseline_error_rate = (baseline.requests > 0).then(|| baseline.error_rate());
}

/// A step record with no figures yet.
pub(super) fn fresh(weight: u32, verdict: Verdict) -> StepRecord {
    StepRecord {
        weight,
        started_ms: unix_ms(),
        elapsed_ms: 0,
        requests: 0,
        errors: 0,
        error_rate: 0.0,
        p99_ms: None,
        baseline_error_rate: None,
        verdict,
        note: None,
        replicas: 0,
        peers: Vec::new(),
    }
}
