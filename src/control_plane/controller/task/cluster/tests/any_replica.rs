//! Rollout actions through any replica: two replicas, each with its own rollout
//! manager, share a [`MemoryStore`]; a rollout started on one is read, paused,
//! resumed and aborted through the other. The receiving replica takes the
//! rollout's lease and applies the action as its driver; the replica that drove
//! it answers from the shared record and is fenced off its next step.

use std::time::Duration;

use super::{driving_replica, split, stored_doc, LIMIT};
use crate::control_plane::cluster::memory::MemoryStore;
use crate::control_plane::controller::Refusal;
use crate::control_plane::rollout::{Action, Phase, Rollout, RolloutHandle, RolloutRequest};

/// A long lease, so that no takeover here comes from an expiry.
const TERM: Duration = Duration::from_secs(30);

fn request() -> RolloutRequest {
    serde_json::from_str(
        r#"{"route": "agents", "to": "green", "steps": [25, 50, 100],
            "step_interval": "1s", "min_requests": 0}"#,
    )
    .expect("a request")
}

/// Waits, bounded, until `rollouts` answers `id` in `phase`.
async fn phase_of(rollouts: &RolloutHandle, id: &str, phase: Phase) -> Rollout {
    let mut changes = rollouts.changes();
    tokio::time::timeout(LIMIT, async {
        loop {
            if let Ok(r) = rollouts.get(id).await {
                if r.phase == phase {
                    return r;
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), changes.changed()).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("rollout {id} not {phase:?} within {LIMIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_sent_to_the_replica_not_driving_rolls_back_on_both() {
    let store = MemoryStore::new();
    let (a, a_rollouts) = driving_replica(&store, "a", TERM);
    let (b, b_rollouts) = driving_replica(&store, "b", TERM);
    a.wait("a read", |v, _| v.reachable).await;
    b.wait("b read", |v, _| v.reachable).await;
    let started = a_rollouts.start(request()).await.expect("started on a");
    b.wait("b at step 25", |_, r| r.split("agents") == split(75, 25))
        .await;

    // b answers GET from the shared record, without driving it.
    let seen = b_rollouts.get(&started.id).await.expect("b knows it");
    assert_eq!(seen.phase, Phase::Running);
    assert_eq!(seen.current_weight(), 25);
    assert_eq!(
        stored_doc(&store)
            .drivers
            .get(&started.id)
            .map(String::as_str),
        Some("a")
    );

    let aborted = b_rollouts
        .act(&started.id, Action::Abort)
        .await
        .expect("abort through b");
    assert_eq!(aborted.phase, Phase::Aborted, "{aborted:?}");
    assert_eq!(b.split("agents"), split(100, 0));
    a.wait("a rolled back", |_, r| r.split("agents") == split(100, 0))
        .await;
    // a answers from the shared record: aborted.
    let on_a = phase_of(&a_rollouts, &started.id, Phase::Aborted).await;
    assert_eq!(on_a.id, started.id);
    // An action on the ended rollout, through either replica, is a 409.
    for r in [&a_rollouts, &b_rollouts] {
        let err = r.act(&started.id, Action::Resume).await.expect_err("ended");
        assert!(matches!(err, Refusal::Conflict { .. }), "{err:?}");
    }
    // a's old driver stays fenced off: the route stays rolled back past a's
    // step end (1 s).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(a.split("agents"), split(100, 0));
    assert_eq!(b.split("agents"), split(100, 0));
    let doc = stored_doc(&store);
    assert!(doc.leases.is_empty(), "an ended rollout holds no lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_and_a_resume_sent_to_the_replica_not_driving_take_effect() {
    let store = MemoryStore::new();
    let (a, a_rollouts) = driving_replica(&store, "a", TERM);
    let (b, b_rollouts) = driving_replica(&store, "b", TERM);
    a.wait("a read", |v, _| v.reachable).await;
    b.wait("b read", |v, _| v.reachable).await;
    let started = a_rollouts.start(request()).await.expect("started on a");
    b.wait("b at step 25", |_, r| r.split("agents") == split(75, 25))
        .await;

    // Pause through b: b drives it now, paused at 25 on both.
    let paused = b_rollouts
        .act(&started.id, Action::Pause)
        .await
        .expect("pause through b");
    assert_eq!(paused.phase, Phase::Paused, "{paused:?}");
    assert_eq!(
        stored_doc(&store)
            .drivers
            .get(&started.id)
            .map(String::as_str),
        Some("b")
    );
    phase_of(&a_rollouts, &started.id, Phase::Paused).await;
    // Paused holds: past a's step end (1 s) nothing moved on either replica.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(a.split("agents"), split(75, 25));
    assert_eq!(b.split("agents"), split(75, 25));
    assert_eq!(
        b_rollouts.get(&started.id).await.expect("b").phase,
        Phase::Paused
    );

    // Resume through a, which no longer drives it: a takes it back and the
    // rollout goes on to its end on both replicas.
    let resumed = a_rollouts
        .act(&started.id, Action::Resume)
        .await
        .expect("resume through a");
    assert_eq!(resumed.phase, Phase::Running, "{resumed:?}");
    let done = tokio::time::timeout(LIMIT, phase_of(&b_rollouts, &started.id, Phase::Succeeded))
        .await
        .expect("finished");
    let weights: Vec<u32> = done.steps.iter().map(|s| s.weight).collect();
    assert_eq!(weights, vec![25, 50, 100], "no step skipped, none twice");
    b.wait("b at 100", |_, r| r.split("agents") == split(0, 100))
        .await;
    assert_eq!(a.split("agents"), split(0, 100));
    assert_eq!(
        stored_doc(&store)
            .drivers
            .get(&started.id)
            .map(String::as_str),
        Some("a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_sent_to_the_replica_not_driving_finishes_the_rollout_on_both() {
    let store = MemoryStore::new();
    let (a, a_rollouts) = driving_replica(&store, "a", TERM);
    let (b, b_rollouts) = driving_replica(&store, "b", TERM);
    a.wait("a read", |v, _| v.reachable).await;
    b.wait("b read", |v, _| v.reachable).await;
    let started = a_rollouts.start(request()).await.expect("started on a");
    b.wait("b at step 25", |_, r| r.split("agents") == split(75, 25))
        .await;
    let promoted = b_rollouts
        .act(&started.id, Action::Promote)
        .await
        .expect("promote through b");
    assert_eq!(promoted.phase, Phase::Succeeded, "{promoted:?}");
    assert_eq!(b.split("agents"), split(0, 100));
    a.wait("a at 100", |_, r| r.split("agents") == split(0, 100))
        .await;
    phase_of(&a_rollouts, &started.id, Phase::Succeeded).await;
}
