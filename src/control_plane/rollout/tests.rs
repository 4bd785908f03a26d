//! Component tests of rollouts: the real controller task and rollout manager under
//! a paused clock, with synthetic traffic recorded straight into the pools'
//! counters (no sockets). Each test says what the gate must do with it.

mod control;
mod restart;
mod steps;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::control_plane::controller::task::{ControlHandle, Task};
use crate::control_plane::controller::SharedSnapshot;

/// Longest a test waits (paused clock, so this is virtual time).
const BOUND: Duration = Duration::from_secs(20 * 60);
/// Generator tick.
const TICK: Duration = Duration::from_millis(10);

pub(super) const CONFIG: &str = r#"
[listen]
http = "127.0.0.1:0"
[[pools]]
name = "blue"
backends = [{ addr = "127.0.0.1:1" }, { addr = "127.0.0.1:2" }]
[[pools]]
name = "green"
backends = [{ addr = "127.0.0.1:3" }, { addr = "127.0.0.1:4" }]
[[routes]]
name = "r"
split = [{ pool = "blue", weight = 100 }, { pool = "green", weight = 0 }]
"#;

/// How the synthetic backends of one pool answer.
#[derive(Default)]
pub(super) struct Behaviour {
    /// Permille of requests answered 500.
    pub errors: AtomicU32,
    pub latency_ms: AtomicU64,
}

/// A controller task, a rollout manager and a traffic generator.
pub(super) struct Rig {
    pub control: ControlHandle,
    pub rollouts: RolloutHandle,
    pub snapshot: SharedSnapshot,
    /// Requests per 10 ms tick.
    pub rate: Arc<AtomicU64>,
    pub pools: Arc<HashMap<&'static str, Behaviour>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Rig {
    pub(super) async fn start(config: &str) -> Rig {
        let spec = crate::control_plane::config::parse(config).unwrap_or_else(|e| panic!("{e}"));
        let (task, control, snapshot) = Task::new(spec, None, crate::metrics::Registrar::off());
        let (manager, rollouts) = Manager::new(control.clone(), Arc::clone(&snapshot));
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(task.run(shutdown.clone()));
        tasks.spawn(manager.run(shutdown.clone()));
        let pools: HashMap<&'static str, Behaviour> = [
            ("blue", Behaviour::default()),
            ("green", Behaviour::default()),
        ]
        .into();
        for b in pools.values() {
            b.latency_ms.store(20, Ordering::Relaxed);
        }
        let rig = Rig {
            control,
            rollouts,
            snapshot,
            rate: Arc::new(AtomicU64::new(10)),
            pools: Arc::new(pools),
            shutdown,
            tasks,
        };
        rig.tasks.spawn(generate(
            Arc::clone(&rig.snapshot),
            Arc::clone(&rig.rate),
            Arc::clone(&rig.pools),
            rig.shutdown.clone(),
        ));
        rig
    }

    /// Stops every task (like a gateway shutdown) and waits for them.
    pub(super) async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    pub(super) fn set(&self, pool: &str, errors_permille: u32, latency_ms: u64) {
        let b = &self.pools[pool];
        b.errors.store(errors_permille, Ordering::Relaxed);
        b.latency_ms.store(latency_ms, Ordering::Relaxed);
    }

    /// The route's split now.
    pub(super) fn split(&self) -> Vec<(String, u32)> {
        let snap = self.snapshot.load();
        snap.routes()[0]
            .split
            .entries()
            .iter()
            .map(|e| (e.pool.name.to_string(), e.weight))
            .collect()
    }

    /// Waits (bounded, virtual time) until rollout `id` satisfies `done`.
    pub(super) async fn until(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&Rollout) -> bool,
    ) -> Rollout {
        let mut changes = self.rollouts.changes();
        let wait = async {
            loop {
                changes.borrow_and_update();
                let r = self.rollouts.get(id).await.expect("rollout");
                if done(&r) {
                    return r;
                }
                changes.changed().await.expect("manager running");
            }
        };
        match tokio::time::timeout(BOUND, wait).await {
            Ok(r) => r,
            Err(_) => panic!(
                "{what}: not reached; now {:#?}",
                self.rollouts.get(id).await
            ),
        }
    }

    /// Waits until the rollout has ended.
    pub(super) async fn finish(&self, id: &str) -> Rollout {
        self.until(id, "the rollout ends", |r| !r.phase.is_active())
            .await
    }
}

/// Sends `rate` synthetic requests per tick over the route's split (smooth
/// weighted round robin, so shares are exact), each pool answering as its
/// behaviour says (errors spread evenly).
async fn generate(
    snapshot: SharedSnapshot,
    rate: Arc<AtomicU64>,
    pools: Arc<HashMap<&'static str, Behaviour>>,
    stop: CancellationToken,
) {
    let mut current: HashMap<String, i64> = HashMap::new();
    let mut sent: HashMap<String, (u64, u64, u64)> = HashMap::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(TICK) => {}
        }
        let snap = snapshot.load();
        let entries = snap.routes()[0].split.entries();
        let total: i64 = entries.iter().map(|e| i64::from(e.weight)).sum();
        for _ in 0..rate.load(Ordering::Relaxed) {
            let mut best: Option<(&str, i64)> = None;
            for e in entries {
                let c = current.entry(e.pool.name.to_string()).or_default();
                *c += i64::from(e.weight);
                if e.weight > 0 && best.is_none_or(|(_, b)| *c > b) {
                    best = Some((e.pool.name.as_str(), *c));
                }
            }
            let Some((name, _)) = best else { continue };
            *current.entry(name.to_owned()).or_default() -= total;
            let b = &pools[name];
            let permille = u64::from(b.errors.load(Ordering::Relaxed));
            let (n, errs, was) = sent.entry(name.to_owned()).or_default();
            if *was != permille {
                // A new behaviour spreads its errors from here on.
                (*n, *errs, *was) = (0, 0, permille);
            }
            *n += 1;
            let fail = *n * permille / 1000 > *errs;
            *errs += u64::from(fail);
            let status = if fail {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            let latency = Duration::from_millis(b.latency_ms.load(Ordering::Relaxed));
            if let Some(pool) = snap.pool(name) {
                pool.health().traffic().record_response(status, latency);
            }
        }
    }
}

/// The canary request most tests start from.
pub(super) fn canary(steps: &[i64]) -> RolloutRequest {
    RolloutRequest {
        route: "r".into(),
        to: "green".into(),
        steps: steps.to_vec(),
        step_interval: "30s".into(),
        max_error_rate: Some(0.01),
        max_p99: Some("500ms".into()),
        min_requests: Some(100),
        ..RolloutRequest::default()
    }
}

pub(super) fn weights(split: &[(String, u32)]) -> Vec<u32> {
    split.iter().map(|(_, w)| *w).collect()
}

/// One line per step, for failing assertions and `--nocapture`.
pub(super) fn table(r: &Rollout) -> String {
    let mut out = format!("{} {}\n", r.id, r.phase.as_str());
    for s in &r.steps {
        out.push_str(&format!(
            "  {:>3}%  {:>6} req  {:>4} err  {:>6.2}%  p99 {:>7}  {:?}  {}\n",
            s.weight,
            s.requests,
            s.errors,
            s.error_rate * 100.0,
            s.p99_ms.map_or("-".into(), |p| format!("{p:.1}ms")),
            s.verdict,
            s.note.as_deref().unwrap_or("")
        ));
    }
    out
}
