//! What a publish changed, as events: the controller task takes a [`Summary`] of
//! the effective spec and the rollout records before and after, and emits the
//! differences.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{By, EventKind, PoolWeight, StepFigures};
use crate::control_plane::config::spec::RouteName;
use crate::control_plane::config::Spec;
use crate::control_plane::rollout_record::{Phase, Rollout, Verdict};

/// The parts of the routing state events are about.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Summary {
    splits: BTreeMap<String, Vec<PoolWeight>>,
    /// (pool, address) → draining.
    backends: BTreeMap<(String, SocketAddr), bool>,
    /// Rollout id → (route, phase, step verdicts with their weights).
    rollouts: BTreeMap<String, RolloutSummary>,
}

#[derive(Clone, Debug, PartialEq)]
struct RolloutSummary {
    route: String,
    phase: Phase,
    steps: Vec<(u32, Verdict)>,
}

impl Summary {
    /// The summary of `spec` (effective) and `rollouts` (the records).
    pub(crate) fn of(spec: &Spec, rollouts: &BTreeMap<RouteName, Rollout>) -> Summary {
        let splits = spec
            .routes
            .iter()
            .map(|r| {
                let split = r
                    .split
                    .iter()
                    .map(|s| PoolWeight {
                        pool: s.pool.to_string(),
                        weight: s.weight,
                    })
                    .collect();
                (r.name.to_string(), split)
            })
            .collect();
        let backends = spec
            .pools
            .iter()
            .flat_map(|p| {
                p.backends
                    .iter()
                    .map(move |b| ((p.name.to_string(), b.addr), b.draining))
            })
            .collect();
        let rollouts = rollouts
            .values()
            .map(|r| {
                let steps = r.steps.iter().map(|s| (s.weight, s.verdict)).collect();
                let summary = RolloutSummary {
                    route: r.spec.route.clone(),
                    phase: r.phase,
                    steps,
                };
                (r.id.clone(), summary)
            })
            .collect();
        Summary {
            splits,
            backends,
            rollouts,
        }
    }

    /// The events that lead from `self` to `next`, in a stable order: rollout
    /// steps, splits, then backends. `records` gives the step figures.
    pub(crate) fn diff(
        &self,
        next: &Summary,
        by: By,
        records: &BTreeMap<RouteName, Rollout>,
    ) -> Vec<EventKind> {
        let mut events = Vec::new();
        for (id, after) in &next.rollouts {
            let before = self.rollouts.get(id);
            let record = records.values().find(|r| &r.id == id);
            for (i, &(weight, verdict)) in after.steps.iter().enumerate() {
                let was = before.and_then(|b| b.steps.get(i)).map(|s| s.1);
                if was == Some(verdict) {
                    continue;
                }
                let figures = || {
                    let step = record.and_then(|r| r.steps.get(i));
                    StepFigures {
                        rollout: id.clone(),
                        route: after.route.clone(),
                        step: i,
                        weight,
                        requests: step.map_or(0, |s| s.requests),
                        error_rate: step.map_or(0.0, |s| s.error_rate),
                        p99_ms: step.and_then(|s| s.p99_ms),
                        note: step.and_then(|s| s.note.clone()),
                    }
                };
                if was.is_none() {
                    events.push(EventKind::RolloutStepStarted {
                        rollout: id.clone(),
                        route: after.route.clone(),
                        step: i,
                        weight,
                    });
                }
                match verdict {
                    Verdict::Passed => events.push(EventKind::RolloutStepPassed(figures())),
                    Verdict::Failed => events.push(EventKind::RolloutStepFailed(figures())),
                    _ => {}
                }
            }
            let changed = match before {
                Some(b) => b.phase != after.phase,
                None => after.phase != Phase::Running,
            };
            if changed {
                events.push(EventKind::RolloutPhase {
                    rollout: id.clone(),
                    route: after.route.clone(),
                    phase: after.phase.as_str(),
                });
            }
        }
        for (route, split) in &next.splits {
            if self.splits.get(route) != Some(split) {
                events.push(EventKind::SplitChanged {
                    route: route.clone(),
                    split: split.clone(),
                    by,
                });
            }
        }
        for ((pool, addr), &draining) in &next.backends {
            let (pool, addr) = (pool.clone(), *addr);
            match self.backends.get(&(pool.clone(), addr)) {
                None => {
                    events.push(EventKind::BackendAdded {
                        pool: pool.clone(),
                        addr,
                        by,
                    });
                    if draining {
                        events.push(EventKind::BackendDraining {
                            pool,
                            addr,
                            draining,
                            by,
                        });
                    }
                }
                Some(&was) if was != draining => events.push(EventKind::BackendDraining {
                    pool,
                    addr,
                    draining,
                    by,
                }),
                Some(_) => {}
            }
        }
        for (pool, addr) in self.backends.keys() {
            if !next.backends.contains_key(&(pool.clone(), *addr)) {
                events.push(EventKind::BackendRemoved {
                    pool: pool.clone(),
                    addr: *addr,
                    by,
                });
            }
        }
        events
    }
}
