//! Bad canary across replicas: three gateway replicas sharing `[cluster]` (two
//! on node 1, one on node 2), each with its own GET + POST load; green answers
//! 5 % of its requests with 500. A rollout 5 → 25 → 50 → 100 started through
//! replica 2 must be rolled back at step 1, judged on the traffic of all three
//! replicas (the step's record says `replicas: 3` and names no peer it could
//! not read), and every replica must route the starting split again. Green's
//! errors seen by the clients are reported.

use std::time::Duration;

use tokio::time::Instant;

use super::cluster::{cluster, notice};
use super::driver_loss::{blue_green_store, post, three_replicas};
use super::replicas::split_of;
use super::traffic::Load;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a 2-node swarm: scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1"]
async fn a_bad_canary_is_rolled_back_at_step_1_on_every_replicas_traffic() {
    let Some(c) = cluster("bad_canary") else {
        return;
    };
    let prefix = format!("sgs{}bc", c.id);
    let green_fails = [
        "--env",
        "AGENT_FAIL_RATIO=0.05",
        "--env",
        "AGENT_VERSION=v2",
    ];
    let (_blue, _green, store) = blue_green_store(c, "bc", &prefix, &green_fails).await;
    let replicas = three_replicas(c, "bc", &prefix, &store.name).await;
    let loads: Vec<Load> = replicas.iter().map(|g| Load::start(g.http)).collect();
    let begun = Instant::now();
    for l in &loads {
        l.wait_answers(begun, 50, Duration::from_secs(30)).await;
    }
    let (status, body) = post(
        &replicas[1],
        "/api/v1/rollouts",
        r#"{"route": "agents", "to": "green", "steps": [5, 25, 50, 100], "step_interval": "8s", "min_requests": 40, "max_error_rate": 0.01}"#,
    )
    .await
    .expect("rollout answered");
    assert_eq!(status, 201, "{body}");
    let started: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let id = started["id"].as_str().expect("id").to_owned();

    // Until it ends (bounded), from the driver's admin API.
    let deadline = Instant::now() + Duration::from_secs(90);
    let done = loop {
        assert!(Instant::now() < deadline, "the rollout did not end in 90 s");
        let (status, body) = replicas[1]
            .admin_get(&format!("/api/v1/rollouts/{id}"))
            .await
            .expect("rollout read");
        assert_eq!(status, 200, "{body}");
        let r: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if !matches!(r["phase"].as_str(), Some("running" | "paused")) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ended = Instant::now();
    // Every replica routes the starting split again (bounded).
    let mut back = Vec::new();
    for g in &replicas {
        let limit = Instant::now() + Duration::from_secs(5);
        loop {
            let split = split_of(g).await;
            if split.is_some_and(|(_, green)| green == 0) || Instant::now() >= limit {
                back.push(split);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut seen = Vec::new();
    let (mut requests, mut green_ok, mut green_500, mut other_failed) = (0, 0, 0, 0);
    for l in loads {
        let records = l.stop().await;
        requests += records.len();
        let ok = records.iter().filter(|r| r.ok && r.version == "v2").count();
        let is_green_500 =
            |r: &&super::traffic::Record| !r.ok && r.version == "v2" && r.error.contains("500");
        let bad = records.iter().filter(is_green_500).count();
        let other = records.iter().filter(|r| !r.ok && !is_green_500(r)).count();
        seen.push((ok, bad));
        green_ok += ok;
        green_500 += bad;
        other_failed += other;
    }
    let step = &done["steps"][0];
    notice(&format!(
        "swarm bad canary: rollout {id} (driver replica 2) ended {} after {} step(s): step 1 {} requests, {} errors ({}), \
         summed over {} replicas, peers not counted {}; reason {}; splits after: {back:?}; \
         clients: {requests} requests, green answered {green_ok} ok + {green_500} 500s (per replica (ok, 500): {seen:?}), \
         {other_failed} other failures; {:?} from start to the end of the check",
        done["phase"],
        done["steps"].as_array().map_or(0, Vec::len),
        step["requests"],
        step["errors"],
        step["error_rate"],
        step["replicas"],
        step["peers"],
        done["reason"]["message"],
        ended - begun,
    ));
    assert_eq!(done["phase"], "rolled_back", "{done}");
    assert_eq!(done["steps"].as_array().map(Vec::len), Some(1), "{done}");
    assert_eq!(done["reason"]["metric"], "error_rate", "{done}");
    assert_eq!(
        step["replicas"], 3,
        "judged on all replicas' traffic: {done}"
    );
    assert!(step["peers"].is_null(), "every peer read: {done}");
    // More green requests than the driver's own clients sent in the whole run:
    // the other replicas' are in the figures.
    let driver_green = seen[1].0 + seen[1].1;
    assert!(
        step["requests"]
            .as_u64()
            .is_some_and(|n| n > driver_green as u64),
        "{} requests judged, the driver's clients saw {driver_green} green answers",
        step["requests"]
    );
    assert!(
        back.iter().all(|s| s.is_some_and(|(_, green)| green == 0)),
        "every replica rolled back: {back:?}"
    );
    assert_eq!(other_failed, 0, "only green's own 500s failed");
}
