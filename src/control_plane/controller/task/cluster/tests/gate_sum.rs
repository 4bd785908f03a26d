//! The rollout gate over every replica's traffic: two replicas share a
//! [`MemoryStore`]; the driver reads the other's pool counters through a
//! [`PeerSource`] that samples that replica's own pools (what its
//! `GET /api/v1/cluster/counters` answers), and traffic is recorded straight
//! into each replica's pool counters, split by the replica's current routing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::StatusCode;
use tokio_util::sync::CancellationToken;

use super::{leasing_replica, split, Replica, LIMIT};
use crate::control_plane::cluster::counters::{PeerRead, PeerSource, ReplicaCounters};
use crate::control_plane::cluster::memory::MemoryStore;
use crate::control_plane::controller::SharedSnapshot;
use crate::control_plane::rollout::{Manager, Phase, Rollout, RolloutHandle, RolloutRequest};

/// A peer read in process; `down` makes its reads fail.
#[derive(Debug)]
struct InProcess {
    id: String,
    shared: SharedSnapshot,
    down: Arc<AtomicBool>,
}

impl PeerSource for InProcess {
    fn read(&self) -> BoxFuture<'_, Vec<PeerRead>> {
        let result = if self.down.load(Ordering::Relaxed) {
            Err("connection refused".to_owned())
        } else {
            Ok(ReplicaCounters::of(self.id.clone(), &self.shared.load()))
        };
        Box::pin(async move {
            vec![PeerRead {
                addr: "10.0.9.2:9901".to_owned(),
                result,
                resolved: true,
            }]
        })
    }
}

/// Records, every 5 ms until `stop`, ten requests on `replica` split by its
/// current weights; green answers 500 to one in `green_fail_every` (0: never).
fn traffic(replica: &Replica, green_fail_every: u64, stop: CancellationToken) {
    let shared = replica.shared.clone();
    tokio::spawn(async move {
        let mut n = 0u64;
        // Bounded: the test's own bound ends it at the latest.
        for _ in 0..20_000 {
            if stop.is_cancelled() {
                return;
            }
            let snap = shared.load_full();
            let green_share = snap
                .spec()
                .routes
                .iter()
                .find(|r| r.name.as_str() == "agents")
                .and_then(|r| r.split.iter().find(|s| s.pool.as_str() == "green"))
                .map_or(0, |s| s.weight);
            for i in 0..10u32 {
                let pool = if i * 10 < green_share {
                    "green"
                } else {
                    "blue"
                };
                let Some(p) = snap.pool(pool) else { continue };
                let bad = pool == "green" && {
                    n += 1;
                    green_fail_every > 0 && n.is_multiple_of(green_fail_every)
                };
                let status = if bad {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                p.health()
                    .traffic()
                    .record_response(status, Duration::from_millis(3));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

/// `a` drives (summing `b` when `sum`); `b` only routes.
async fn pair(sum: bool) -> (Replica, Replica, RolloutHandle, Arc<AtomicBool>) {
    let store = MemoryStore::new();
    let term = Duration::from_secs(5);
    let a = leasing_replica(&store, "a", term);
    let b = leasing_replica(&store, "b", term);
    let down = Arc::new(AtomicBool::new(false));
    let (mut manager, rollouts) = Manager::with_poll(
        a.handle.clone(),
        a.shared.clone(),
        Duration::from_millis(20),
    );
    if sum {
        manager.sum_peers(Arc::new(InProcess {
            id: "b".to_owned(),
            shared: b.shared.clone(),
            down: Arc::clone(&down),
        }));
    }
    tokio::spawn(manager.run(a.cancel.clone()));
    a.wait("a read", |v, _| v.reachable).await;
    b.wait("b read", |v, _| v.reachable).await;
    (a, b, rollouts, down)
}

async fn finished(rollouts: &RolloutHandle, id: &str, bound: Duration) -> Rollout {
    let mut changes = rollouts.changes();
    tokio::time::timeout(bound, async {
        loop {
            if let Ok(r) = rollouts.get(id).await {
                if !r.phase.is_active() {
                    return r;
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
        }
    })
    .await
    .expect("the rollout ended within the bound")
}

const REQUEST: &str = r#"{"route": "agents", "to": "green", "steps": [50, 100],
    "step_interval": "600ms", "min_requests": 50, "max_error_rate": 0.01}"#;

/// The bad canary: green fails one in ten on `b` only; `a`'s green is clean.
async fn bad_canary_on_the_peer(sum: bool) -> (Rollout, Replica, Replica) {
    let (a, b, rollouts, _down) = pair(sum).await;
    let stop = CancellationToken::new();
    traffic(&a, 0, stop.clone());
    traffic(&b, 10, stop.clone());
    let req: RolloutRequest = serde_json::from_str(REQUEST).expect("a request");
    let started = rollouts.start(req).await.expect("started on a");
    let done = finished(&rollouts, &started.id, LIMIT).await;
    stop.cancel();
    (done, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_fails_a_canary_whose_errors_reach_only_a_peer() {
    let (done, a, b) = bad_canary_on_the_peer(true).await;
    assert_eq!(done.phase, Phase::RolledBack, "{done:?}");
    assert_eq!(done.steps.len(), 1, "rolled back at step 1: {done:?}");
    let step = &done.steps[0];
    assert_eq!(step.replicas, 2, "both replicas summed: {step:?}");
    assert!(step.errors > 0, "b's errors are in the figures: {step:?}");
    assert!(step.peers.is_empty(), "every peer was read: {step:?}");
    let reason = done.reason.as_ref().expect("a reason");
    assert_eq!(reason.metric, "error_rate", "{reason:?}");
    // Both replicas route the starting split again.
    b.wait("b rolled back", |_, r| r.split("agents") == split(100, 0))
        .await;
    assert_eq!(a.split("agents"), split(100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_peers_sum_the_same_canary_passes() {
    // The control: the driver alone sees only its clean share.
    let (done, _a, _b) = bad_canary_on_the_peer(false).await;
    assert_eq!(done.phase, Phase::Succeeded, "{done:?}");
    assert_eq!(done.steps[0].errors, 0, "{done:?}");
    assert_eq!(done.steps[0].replicas, 0, "no peers summed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_peer_is_named_and_the_step_waits_up_to_max_wait() {
    let (a, _b, rollouts, down) = pair(true).await;
    down.store(true, Ordering::Relaxed);
    let stop = CancellationToken::new();
    traffic(&a, 0, stop.clone());
    let req: RolloutRequest = serde_json::from_str(
        r#"{"route": "agents", "to": "green", "steps": [50, 100],
            "step_interval": "300ms", "max_wait": "1200ms", "min_requests": 10}"#,
    )
    .expect("a request");
    let started = rollouts.start(req).await.expect("started");
    // After the step's interval it waits, naming the peer.
    let mut changes = rollouts.changes();
    let waiting = tokio::time::timeout(LIMIT, async {
        loop {
            let r = rollouts.get(&started.id).await.expect("known");
            let step = r.steps[0].clone();
            if step
                .note
                .as_deref()
                .is_some_and(|n| n.contains("waiting up to max_wait for peers"))
            {
                return (r.phase, step);
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
        }
    })
    .await
    .expect("the step waits for the peer");
    assert_eq!(waiting.0, Phase::Running);
    assert!(
        waiting.1.peers.iter().any(|p| p.contains("10.0.9.2:9901")),
        "{:?}",
        waiting.1
    );
    // At max_wait the policy decides on the driver's own traffic, and the record
    // still names the peer it could not count.
    let done = finished(&rollouts, &started.id, LIMIT).await;
    stop.cancel();
    assert_eq!(done.phase, Phase::Succeeded, "{done:?}");
    let step = &done.steps[0];
    assert!(step.elapsed_ms >= 1200, "{step:?}");
    assert_eq!(step.replicas, 1, "only the driver counted: {step:?}");
    assert!(
        step.peers.iter().any(|p| p.contains("connection refused")),
        "{step:?}"
    );
}
