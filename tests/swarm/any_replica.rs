//! Rollout actions through any replica: three gateway replicas sharing
//! `[cluster]` (two on node 1, one on node 2) under GET + POST + SSE load on each. A
//! rollout started through replica 1 is paused through replica 3 (node 2),
//! resumed through replica 2 and promoted through replica 3; a second one,
//! started through replica 2, is aborted through replica 1. Each action is
//! answered by the replica that got it (which takes the rollout's lease), every
//! replica routes its outcome within 1 s, every replica's `GET /api/v1/rollouts`
//! lists the rollout once with the phase the action left, and no request or
//! SSE stream fails.

use std::time::Duration;

use tokio::time::Instant;

use super::cluster::{cluster, notice};
use super::driver_loss::{blue_green_store, post, three_replicas};
use super::gateway::Gateway;
use super::replicas::all_route;
use super::traffic::{Clients, Tally};

/// Long enough that no step ends by itself while the test acts.
const STEP: &str = "60s";

/// `POST /api/v1/rollouts/{id}/{action}` through `g`: the phase it answers.
async fn act(g: &Gateway, id: &str, action: &str) -> String {
    let (status, body) = post(g, &format!("/api/v1/rollouts/{id}/{action}"), "")
        .await
        .unwrap_or_else(|e| panic!("{}: {action}: {e}", g.name));
    assert_eq!(status, 200, "{}: {action}: {body}", g.name);
    let r: serde_json::Value = serde_json::from_str(&body).expect("rollout JSON");
    r["phase"].as_str().expect("phase").to_owned()
}

/// How long until every replica routes `want` (blue, green), from now; bounded.
async fn all_route_now(replicas: &[Gateway], want: (u32, u32)) -> Duration {
    all_route(replicas, want, Instant::now(), Duration::from_secs(5)).await
}

/// Starts a rollout of route `agents` to `to` through `g`: its ID.
async fn start(g: &Gateway, to: &str) -> String {
    let (status, body) = post(
        g,
        "/api/v1/rollouts",
        &format!(
            r#"{{"route": "agents", "to": "{to}", "steps": [10, 50, 100], "step_interval": "{STEP}", "min_requests": 0}}"#
        ),
    )
    .await
    .expect("rollout answered");
    assert_eq!(status, 201, "{}: {body}", g.name);
    let started: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    started["id"].as_str().expect("id").to_owned()
}

/// The phases rollout `id` has in `g`'s list (one entry expected).
async fn listed(g: &Gateway, id: &str) -> Vec<String> {
    let (status, body) = g.admin_get("/api/v1/rollouts").await.expect("list");
    assert_eq!(status, 200, "{}: {body}", g.name);
    let list: serde_json::Value = serde_json::from_str(&body).expect("list JSON");
    list["rollouts"]
        .as_array()
        .expect("rollouts")
        .iter()
        .filter(|r| r["id"] == id)
        .filter_map(|r| r["phase"].as_str().map(str::to_owned))
        .collect()
}

/// Every replica lists rollout `id` once, as `phase`, within 2 s (a replica
/// reads the shared records at its poll interval); never twice.
async fn all_list(replicas: &[Gateway], id: &str, phase: &str) {
    let from = Instant::now();
    for g in replicas {
        loop {
            let phases = listed(g, id).await;
            assert_eq!(phases.len(), 1, "{}: {id} listed {phases:?}", g.name);
            if phases[0] == phase {
                break;
            }
            assert!(
                from.elapsed() < Duration::from_secs(2),
                "{}: {id} still listed as {phases:?}, not {phase}",
                g.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a 2-node swarm: scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1"]
async fn rollout_actions_through_any_replica_reach_every_replica() {
    let Some(c) = cluster("any_replica") else {
        return;
    };
    let prefix = format!("sgs{}any", c.id);
    let (_blue, _green, store) = blue_green_store(c, "any", &prefix, &[]).await;
    let r = three_replicas(c, "any", &prefix, &store.name).await;

    let mut clients = Vec::new();
    for g in &r {
        clients.push(Some(Clients::start(g.http).await));
    }
    let mut seen = Vec::new();

    // A rollout to green through replica 1.
    let id = start(&r[0], "green").await;
    seen.push(("start via 1", all_route_now(&r, (90, 10)).await));
    all_list(&r, &id, "running").await;

    assert_eq!(act(&r[2], &id, "pause").await, "paused");
    all_list(&r, &id, "paused").await;
    assert_eq!(act(&r[1], &id, "resume").await, "running");
    all_list(&r, &id, "running").await;
    assert_eq!(act(&r[2], &id, "promote").await, "succeeded");
    seen.push(("promote via 3", all_route_now(&r, (0, 100)).await));
    all_list(&r, &id, "succeeded").await;

    // Back to blue through replica 2, aborted through replica 1.
    let id2 = start(&r[1], "blue").await;
    assert_ne!(id2, id, "a new rollout of the route gets a new ID");
    seen.push(("start via 2", all_route_now(&r, (10, 90)).await));
    assert_eq!(act(&r[0], &id2, "abort").await, "aborted");
    seen.push(("abort via 1", all_route_now(&r, (0, 100)).await));
    all_list(&r, &id2, "aborted").await;

    let mut tally = Tally::default();
    tally.stop_all(clients).await;
    notice(&format!(
        "swarm rollout actions through any replica: pause via 3, resume via 2, promote via 3, \
         a second rollout started via 2 aborted via 1; every replica routing the outcome after: {seen:?}; \
         {} requests and {} SSE streams on 3 replicas, failed: {:?}",
        tally.requests, tally.streams, tally.failed
    ));
    for (what, took) in &seen {
        assert!(*took <= Duration::from_secs(1), "{what}: {took:?}");
    }
    assert!(tally.failed.is_empty(), "failed: {:?}", tally.failed);
}
