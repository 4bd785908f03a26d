//! Driver lost mid-rollout: three gateway replicas sharing `[cluster]` (two on
//! node 1, one on node 2) under GET + POST + SSE load on each; a rollout 5 → 25 → 50 →
//! 100 is started through replica 2 (on node 1), which is killed (SIGKILL)
//! during step 2. Another replica must take its lease over and finish the
//! rollout from the recorded step (steps [5, 25, 50, 100], none twice), with no
//! failed request on the surviving replicas. Every ~100 ms each surviving
//! replica's split is compared with the step the store records: the longest
//! disagreement is reported.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::cluster::{cluster, docker, notice, Cluster, Service};
use super::gateway::{Engine, Gateway};
use super::replicas::{routes_toml, split_of};
use super::traffic::{Clients, Tally};

/// The rollout's step interval; step 2 is killed about 2 s in.
const STEP: &str = "6s";

/// `POST path` with a JSON body on an admin API (a published port).
pub(super) async fn post(g: &Gateway, path: &str, body: &str) -> Result<(u16, String), String> {
    let fut = async {
        let stream = TcpStream::connect(g.admin)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::post(path)
            .header("host", g.admin.to_string())
            .header("authorization", format!("Bearer {}", g.token()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// The shared document the store's service holds, if any.
async fn stored(service: &str) -> Option<serde_json::Value> {
    let text = docker(&[
        "service",
        "inspect",
        "-f",
        "{{index .Spec.Labels \"sluicegate.cluster.state\"}}",
        service,
    ])
    .await;
    serde_json::from_str(text.trim()).ok()
}

/// Rollout `id` in a stored document.
fn record<'d>(doc: &'d serde_json::Value, id: &str) -> Option<&'d serde_json::Value> {
    doc["state"]["rollouts"]
        .as_array()?
        .iter()
        .find(|r| r["id"] == id)
}

/// The green weight a record says the route has: the last step's while it runs
/// or succeeded, the start's after a rollback.
fn recorded_green(r: &serde_json::Value) -> Option<u32> {
    let w = match r["phase"].as_str()? {
        "rolled_back" | "aborted" => 0,
        _ => r["steps"].as_array()?.last()?["weight"].as_u64()?,
    };
    u32::try_from(w).ok()
}

/// The services of a three-replica scenario, named `<tag>-blue`, `<tag>-green`
/// and `<tag>-store`: two agent tasks each in pools `blue` and `green` (labels
/// under `prefix`; `green_extra` goes to green's `service create`), and one
/// unlabelled task whose service label holds the shared state. Returns once all
/// run; dropping one removes its service.
pub(super) async fn blue_green_store(
    c: &Cluster,
    tag: &str,
    prefix: &str,
    green_extra: &[&str],
) -> (Service, Service, Service) {
    let pool = |p: &str| vec![format!("{prefix}.pool={p}"), format!("{prefix}.port=8080")];
    let blue = c
        .agent_service(&format!("{tag}-blue"), 2, &pool("blue"), &[])
        .await;
    let green = c
        .agent_service(&format!("{tag}-green"), 2, &pool("green"), green_extra)
        .await;
    let store = c.agent_service(&format!("{tag}-store"), 1, &[], &[]).await;
    blue.wait_running(2, Duration::from_secs(60)).await;
    green.wait_running(2, Duration::from_secs(60)).await;
    store.wait_running(1, Duration::from_secs(60)).await;
    (blue, green, store)
}

/// Three gateway replicas of one cluster store (two on node 1, one on node 2),
/// named `<tag>-gw1..3` and each other's `[cluster].peers`, each seeing both
/// agent pools (`blue`, `green`, two tasks each) eligible.
pub(super) async fn three_replicas(
    c: &Cluster,
    tag: &str,
    prefix: &str,
    store: &str,
) -> Vec<Gateway> {
    let peers = (1..=3)
        .map(|i| format!("\"http://{}:9901\"", c.name(&format!("{tag}-gw{i}"))))
        .collect::<Vec<_>>()
        .join(", ");
    let config = routes_toml(&c.net, prefix, store, &peers);
    let mut replicas = Vec::new();
    for (i, on_node2) in [(1, false), (2, false), (3, true)] {
        let g = Gateway::start(
            c,
            &format!("{tag}-gw{i}"),
            &config,
            Engine::Manager,
            on_node2,
        )
        .await;
        replicas.push(g);
    }
    for g in &replicas {
        g.wait_eligible("blue", Duration::from_secs(15), |e| e.len() == 2)
            .await;
        g.wait_eligible("green", Duration::from_secs(15), |e| e.len() == 2)
            .await;
    }
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a 2-node swarm: scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1"]
async fn a_rollout_whose_driver_is_killed_is_finished_by_another_replica() {
    let Some(c) = cluster("driver_loss") else {
        return;
    };
    let prefix = format!("sgs{}drv", c.id);
    let (_blue, _green, store) = blue_green_store(c, "drv", &prefix, &[]).await;
    let replicas = three_replicas(c, "drv", &prefix, &store.name).await;
    let driver_id = replicas[1].state_json().await["cluster"]["replica"]
        .as_str()
        .expect("replica id")
        .to_owned();

    let mut clients = Vec::new();
    for g in &replicas {
        clients.push(Some(Clients::start(g.http).await));
    }
    let begun = Instant::now();
    let (status, body) = post(
        &replicas[1],
        "/api/v1/rollouts",
        &format!(
            r#"{{"route": "agents", "to": "green", "steps": [5, 25, 50, 100], "step_interval": "{STEP}", "min_requests": 20}}"#
        ),
    )
    .await
    .expect("rollout answered");
    assert_eq!(status, 201, "{body}");
    let started: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let id = started["id"].as_str().expect("id").to_owned();

    // Watch every replica against the recorded step every ~100 ms until the
    // rollout ends (bounded); kill replica 2 about 2 s into step 2.
    let mut killed: Option<Instant> = None;
    let mut kill_at: Option<Instant> = None;
    let mut tally = Tally::default();
    let mut since: [Option<Instant>; 3] = [None; 3];
    let mut longest = Duration::ZERO;
    let (mut polls, mut taken_over) = (0u32, None);
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        assert!(
            Instant::now() < deadline,
            "the rollout did not end in 120 s"
        );
        let tick = Instant::now();
        let Some(doc) = stored(&store.name).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(r) = record(&doc, &id) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let want = recorded_green(r).expect("a recorded step");
        polls += 1;
        for (i, g) in replicas.iter().enumerate() {
            if i == 1 && killed.is_some() {
                continue;
            }
            let agrees = split_of(g).await.map(|(_, green)| green) == Some(want);
            match (agrees, since[i]) {
                (false, None) => since[i] = Some(tick),
                (true, Some(from)) => {
                    longest = longest.max(tick - from);
                    since[i] = None;
                }
                _ => {}
            }
        }
        let steps = r["steps"].as_array().map_or(0, Vec::len);
        // About 2 s into step 2, replica 2 is killed; the polling goes on meanwhile,
        // so a disagreement is never stretched by a wait of the test's own.
        if killed.is_none() && steps == 2 && kill_at.is_none() {
            kill_at = Some(tick + Duration::from_secs(2));
        }
        if killed.is_none() && kill_at.is_some_and(|at| Instant::now() >= at) {
            // Its clients stop first (a front door would stop sending to it).
            let (records, streams) = clients[1].take().expect("replica 2's clients").stop().await;
            tally.add(2, &records, &streams);
            docker(&["kill", &replicas[1].name]).await;
            killed = Some(Instant::now());
        }
        if let (Some(k), None) = (killed, taken_over) {
            if doc["drivers"][&id].as_str().is_some_and(|d| d != driver_id) {
                taken_over = Some(k.elapsed());
            }
        }
        if !matches!(r["phase"].as_str(), Some("running" | "paused")) {
            break r.clone();
        }
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed())).await;
    };
    let poll_every = begun.elapsed() / polls.max(1);
    assert!(killed.is_some(), "replica 2 was killed");
    tally.stop_all(clients).await;
    let weights: Vec<u64> = finished["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["weight"].as_u64())
        .collect();
    notice(&format!(
        "swarm driver loss: rollout {id} started on replica 2, killed in step 2; lease taken over {:?} after the kill; \
         ended {} with steps {weights:?}, resumed {}; {} requests and {} SSE streams on 3 replicas, failed: {:?}; \
         longest disagreement of a replica's split with the recorded step: {longest:?} (polled every {poll_every:?})",
        taken_over,
        finished["phase"],
        finished["resumed"],
        tally.requests,
        tally.streams,
        tally.failed
    ));
    assert_eq!(finished["phase"], "succeeded", "{finished}");
    assert_eq!(weights, vec![5, 25, 50, 100], "no step twice, none skipped");
    assert_eq!(finished["resumed"], 1);
    assert!(taken_over.is_some(), "another replica took the lease");
    assert!(
        taken_over.is_some_and(|t| t <= Duration::from_secs(5 + 2)),
        "taken over within the lease's term plus 2 s: {taken_over:?}"
    );
    assert!(tally.failed.is_empty(), "failed: {:?}", tally.failed);
}
