//! Rollout actions through any replica: two replicas, each with its own rollout
//! manager, share a [`MemoryStore`]; a rollout started on one is read, paused,
//! resumed and aborted through the other. The receiving replica takes the
//! rollout's lease and applies the action as its driver; the replica that drove
//! it answers from the shared record and is fenced off its next step. The list
//! through either replica shows both replicas' rollouts, each once.

use std::time::Duration;

use super::{driving_replica, split, stored_doc, Replica, LIMIT};
use crate::control_plane::cluster::memory::MemoryStore;
use crate::control_plane::controller::Refusal;
use crate::control_plane::rollout::{Action, Phase, Rollout, RolloutHandle, RolloutRequest};

/// A long lease, so that no takeover here comes from an expiry.
const TERM: Duration = Duration::from_secs(30);

/// Two replicas `a` and `b` with rollout managers over one in-memory store,
/// each having read it once.
async fn two_replicas() -> (
    MemoryStore,
    (Replica, RolloutHandle),
    (Replica, RolloutHandle),
) {
    let store = MemoryStore::new();
    let (a, a_rollouts) = driving_replica(&store, "a", TERM);
    let (b, b_rollouts) = driving_replica(&store, "b", TERM);
    a.wait("a read", |v, _| v.reachable).await;
    b.wait("b read", |v, _| v.reachable).await;
    (store, (a, a_rollouts), (b, b_rollouts))
}

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
    let (store, (a, a_rollouts), (b, b_rollouts)) = two_replicas().await;
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
    let (store, (a, a_rollouts), (b, b_rollouts)) = two_replicas().await;
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
    let (_store, (a, a_rollouts), (b, b_rollouts)) = two_replicas().await;
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

/// A rollout on `route` whose first step outlasts the test: it moves only by
/// the actions sent to it.
fn slow_request(route: &str) -> RolloutRequest {
    serde_json::from_value(serde_json::json!({
        "route": route, "to": "green", "steps": [25, 50, 100],
        "step_interval": "10m", "min_requests": 0,
    }))
    .expect("a request")
}

/// `(id, route, phase)` of each listed rollout, in the list's order.
fn rows(list: &[Rollout]) -> Vec<(String, String, Phase)> {
    list.iter()
        .map(|r| (r.id.clone(), r.spec.route.clone(), r.phase))
        .collect()
}

/// Replicas `a` and `b` both list exactly `want` (bounded wait each).
async fn both_list(a: &RolloutHandle, b: &RolloutHandle, want: &[(&str, &str, Phase)]) {
    list_is(a, "a", want).await;
    list_is(b, "b", want).await;
}

/// Waits, bounded, until `rollouts`' list is `want` (`(id, route, phase)` in order).
async fn list_is(rollouts: &RolloutHandle, who: &str, want: &[(&str, &str, Phase)]) {
    let want: Vec<(String, String, Phase)> = want
        .iter()
        .map(|(id, route, phase)| ((*id).to_owned(), (*route).to_owned(), *phase))
        .collect();
    let mut changes = rollouts.changes();
    let mut last = Vec::new();
    let listed = tokio::time::timeout(LIMIT, async {
        loop {
            last = rows(&rollouts.list().await.expect("a list").rollouts);
            if last == want {
                return;
            }
            // Another replica's writes reach this one by its poller, which bumps
            // no change here: look again shortly.
            let _ = tokio::time::timeout(Duration::from_millis(20), changes.changed()).await;
        }
    })
    .await;
    assert!(
        listed.is_ok(),
        "{who}'s list not {want:?} within {LIMIT:?}; last {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_through_either_replica_shows_both_replicas_rollouts_once() {
    use crate::control_plane::rollout::unix_ms;

    let (store, (_a, a_rollouts), (b, b_rollouts)) = two_replicas().await;
    let on_a = a_rollouts
        .start(slow_request("agents"))
        .await
        .expect("started on a");
    b.wait("b at step 25", |_, r| r.split("agents") == split(75, 25))
        .await;
    let agents = on_a.id.as_str();

    // b lists a's rollout from the shared record, without driving it.
    list_is(&b_rollouts, "b", &[(agents, "agents", Phase::Running)]).await;
    let seen = b_rollouts.list().await.expect("b lists").rollouts;
    assert_eq!(seen[0].current_weight(), 25);
    assert_eq!(seen[0].started_ms, on_a.started_ms);

    // Start times are in milliseconds: b's rollout starts strictly later, so
    // that the order below is the start order.
    while unix_ms() <= on_a.started_ms {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let on_b = b_rollouts
        .start(slow_request("other"))
        .await
        .expect("started on b");
    let other = on_b.id.as_str();
    // Both running: newest first, each once, on both replicas.
    let running = [
        (other, "other", Phase::Running),
        (agents, "agents", Phase::Running),
    ];
    both_list(&a_rollouts, &b_rollouts, &running).await;

    // b's ends (the newer): the running one comes first.
    let aborted = b_rollouts
        .act(other, Action::Abort)
        .await
        .expect("abort on b");
    assert_eq!(aborted.phase, Phase::Aborted);
    let active_first = [
        (agents, "agents", Phase::Running),
        (other, "other", Phase::Aborted),
    ];
    both_list(&a_rollouts, &b_rollouts, &active_first).await;

    // a's ends too: both still listed with their final phase, newest first.
    let promoted = a_rollouts
        .act(agents, Action::Promote)
        .await
        .expect("promote on a");
    assert_eq!(promoted.phase, Phase::Succeeded);
    let ended = [
        (other, "other", Phase::Aborted),
        (agents, "agents", Phase::Succeeded),
    ];
    both_list(&a_rollouts, &b_rollouts, &ended).await;
    let doc = stored_doc(&store);
    assert_eq!(doc.drivers.get(agents).map(String::as_str), Some("a"));
    assert_eq!(doc.drivers.get(other).map(String::as_str), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_taken_over_is_listed_once_by_its_former_driver_as_the_shared_record() {
    let (_store, (_a, a_rollouts), (b, b_rollouts)) = two_replicas().await;
    let started = a_rollouts
        .start(slow_request("agents"))
        .await
        .expect("started on a");
    b.wait("b at step 25", |_, r| r.split("agents") == split(75, 25))
        .await;

    // Pause through b: b drives it now. a's manager still holds its own view
    // (running: its next step, which would be fenced, is minutes away), but
    // lists the shared record in its place, as its GET answers.
    let paused = b_rollouts
        .act(&started.id, Action::Pause)
        .await
        .expect("pause through b");
    assert_eq!(paused.phase, Phase::Paused);
    let want = [(started.id.as_str(), "agents", Phase::Paused)];
    both_list(&a_rollouts, &b_rollouts, &want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_rollout_of_a_route_starts_through_the_other_replica_under_a_new_id() {
    let (_store, (_a, a_rollouts), (b, b_rollouts)) = two_replicas().await;
    let first = a_rollouts
        .start(slow_request("agents"))
        .await
        .expect("started on a");
    a_rollouts
        .act(&first.id, Action::Abort)
        .await
        .expect("abort on a");
    b.wait("b rolled back", |_, r| r.split("agents") == split(100, 0))
        .await;
    list_is(
        &b_rollouts,
        "b",
        &[(first.id.as_str(), "agents", Phase::Aborted)],
    )
    .await;

    // b never drove the route's first rollout, but knows its ID from the shared
    // record: the second gets the next one (the first's is still a's).
    let second = b_rollouts
        .start(slow_request("agents"))
        .await
        .expect("started on b");
    assert_ne!(second.id, first.id);
    assert_eq!(second.phase, Phase::Running);
    // The document keeps the route's latest record: b lists the second only, a
    // both (its own first as it ended).
    list_is(
        &b_rollouts,
        "b",
        &[(second.id.as_str(), "agents", Phase::Running)],
    )
    .await;
    list_is(
        &a_rollouts,
        "a",
        &[
            (second.id.as_str(), "agents", Phase::Running),
            (first.id.as_str(), "agents", Phase::Aborted),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rollout_per_route_holds_across_replicas_and_a_taken_over_one_blocks_nothing() {
    let (_store, (a, a_rollouts), (b, b_rollouts)) = two_replicas().await;
    let first = a_rollouts
        .start(slow_request("agents"))
        .await
        .expect("started on a");
    b.wait("b at the first step", |_, r| {
        r.split("agents") != split(100, 0)
    })
    .await;
    // b never drove it, yet refuses a second rollout of the route while it runs.
    let err = b_rollouts
        .start(slow_request("agents"))
        .await
        .expect_err("one rollout per route");
    assert!(
        matches!(&err, Refusal::Conflict { message, .. } if message.contains(&first.id)),
        "{err:?}"
    );
    // b takes it over (pause) and ends it (promote); a's own view of it is stale
    // (its driver sleeps until its step ends) and must not refuse the next one.
    b_rollouts
        .act(&first.id, Action::Pause)
        .await
        .expect("pause through b");
    let done = b_rollouts
        .act(&first.id, Action::Promote)
        .await
        .expect("promote through b");
    assert_eq!(done.phase, Phase::Succeeded, "{done:?}");
    a.wait("a at 100 % green", |_, r| {
        r.split("agents") == split(0, 100)
    })
    .await;
    // a answers for it as it ended, not as its stale driver last saw it.
    phase_of(&a_rollouts, &first.id, Phase::Succeeded).await;
    let second = a_rollouts
        .start(
            serde_json::from_str(
                r#"{"route": "agents", "to": "blue", "steps": [50, 100],
                    "step_interval": "60s", "min_requests": 0}"#,
            )
            .expect("a request"),
        )
        .await
        .expect("a starts the route's next rollout");
    assert_ne!(second.id, first.id);
    assert_eq!(second.phase, Phase::Running);
}
