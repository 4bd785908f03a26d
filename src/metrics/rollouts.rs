//! Rollout series: `rollout_step{route}`, `rollout_state{route,state}` and
//! `rollouts_total{result}`.
//!
//! The rollout driver reports every change through `rollout::export_metrics`, which
//! calls [`Registrar::record_rollout`] of the gateway the rollout runs on. The
//! counter is incremented there; the two gauges are kept in the gateway's
//! [`Latest`] (the latest figures per route, a route's next rollout replacing its
//! last) and set at each scrape by [`sample`], like every gauge (see `gauges`): a
//! route that left the config stops being sampled, so its rollout gauges disappear
//! with it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::names::{self, label, ROLLOUT_STATES};
use super::Registrar;
use crate::data_plane::snapshot::Snapshot;

/// Route → (target's percentage, phase name) of the latest rollout of one gateway.
#[derive(Debug, Default)]
pub(crate) struct Latest(ArcSwap<BTreeMap<String, (u32, &'static str)>>);

impl Registrar {
    /// Records a change of the rollout on `route`: the target now has `step` % in
    /// `state`; `finished` counts it in `rollouts_total{result = state}` (once per
    /// rollout, when it ends). Rare: allocates freely.
    pub fn record_rollout(&self, route: &str, step: u32, state: &'static str, finished: bool) {
        let Some(recording) = self.get() else {
            return;
        };
        recording.rollouts.0.rcu(|map| {
            let mut map = BTreeMap::clone(map);
            map.insert(route.to_owned(), (step, state));
            Arc::new(map)
        });
        if finished {
            self.with(|| metrics::counter!(names::ROLLOUTS, label::RESULT => state).increment(1));
        }
    }
}

/// Sets the rollout gauges of the routes `snapshot` still has.
pub(super) fn sample(snapshot: &Snapshot, latest: &Latest) {
    for (route, &(step, state)) in latest.0.load().iter() {
        if !snapshot.routes().iter().any(|r| r.name.as_str() == route) {
            continue;
        }
        metrics::gauge!(names::ROLLOUT_STEP, label::ROUTE => route.clone()).set(f64::from(step));
        for s in ROLLOUT_STATES {
            let value = f64::from(u8::from(s == state));
            metrics::gauge!(
                names::ROLLOUT_STATE,
                label::ROUTE => route.clone(),
                label::STATE => s,
            )
            .set(value);
        }
    }
}
