//! Three gateway replicas sharing one truth through `[cluster] store = "swarm"`:
//! two on node 1, one on node 2, each a container on the overlay publishing its
//! own ports (never an overlay address from here), all reading and writing the
//! label of one Swarm service through a manager's engine. A split written through
//! replica 1 must be routed by every replica within 1 s; 50 writes give the
//! propagation figures. The service whose label holds the state runs tasks: they
//! must not restart for any of those writes. Then replica 2 is replaced by a new
//! process, and after it every replica: a new one routes the last split.
//!
//! The replicas are plain containers, not tasks of the service they write (the
//! harness reaches each through its own published port); the store does not
//! depend on that.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::cluster::{cluster, docker, notice};
use super::gateway::{Engine, Gateway, FAST_PROBE};
use super::traffic::{describe_failures, failures, task_of, Load};

/// Writes timed for the propagation figures.
const WRITES: usize = 50;
/// Every write must reach every replica within this.
const WITHIN: Duration = Duration::from_secs(1);
/// Requests per replica for its measured shares.
const SHARE_REQUESTS: usize = 1000;

/// Waits (bounded) until every replica routes `want`; how long from `from`.
pub(super) async fn all_route(
    replicas: &[Gateway],
    want: (u32, u32),
    from: Instant,
    limit: Duration,
) -> Duration {
    for g in replicas {
        while split_of(g).await != Some(want) {
            assert!(
                from.elapsed() < limit,
                "{}: {want:?} not routed within {limit:?}",
                g.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    from.elapsed()
}

pub(super) fn routes_toml(net: &str, prefix: &str, store: &str, peers: &str) -> String {
    format!(
        r#"[listen]
http = "0.0.0.0:8080"

[admin]
listen = "0.0.0.0:9901"
token_env = "SG_ADMIN_TOKEN"

[cluster]
store = "swarm"
service = "{store}"
poll_interval = "250ms"
peers = [{peers}]

[discovery.swarm]
network = "{net}"
label_prefix = "{prefix}"
poll_interval = "1s"

[[pools]]
name = "blue"
[pools.health]
{FAST_PROBE}

[[pools]]
name = "green"
[pools.health]
{FAST_PROBE}

[[routes]]
name = "agents"
split = [{{ pool = "blue", weight = 100 }}, {{ pool = "green", weight = 0 }}]
retries = 2
timeouts = {{ connect = "300ms", response_header = "3s" }}
"#
    )
}

/// `PUT path` with a JSON body on an admin API (a published port).
pub(super) async fn put(
    addr: SocketAddr,
    path: &str,
    token: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let fut = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::put(path)
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {token}"))
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
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// `agents`' split in force on `g`, as (blue, green).
pub(super) async fn split_of(g: &Gateway) -> Option<(u32, u32)> {
    let (status, body) = g.admin_get("/api/v1/state").await.ok()?;
    if status != 200 {
        return None;
    }
    let state: serde_json::Value = serde_json::from_str(&body).ok()?;
    let route = state["routes"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == "agents")?;
    let weight = |pool: &str| {
        route["split"]
            .as_array()?
            .iter()
            .find(|s| s["pool"] == pool)?["weight"]
            .as_u64()
            .and_then(|w| u32::try_from(w).ok())
    };
    Some((weight("blue")?, weight("green")?))
}

/// How long after `from` `g` routes `want` (polled every 10 ms, at most `limit`).
async fn seen_after(g: &Gateway, want: (u32, u32), from: Instant, limit: Duration) -> Duration {
    loop {
        if split_of(g).await == Some(want) {
            return from.elapsed();
        }
        assert!(
            from.elapsed() < limit,
            "{}: split {want:?} not routed within {limit:?} (now {:?})\n{}",
            g.name,
            split_of(g).await,
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `(task IDs, service version)` of the store's service.
async fn tasks_and_version(service: &str) -> (BTreeSet<String>, u64) {
    let ids = docker(&["service", "ps", "-q", "--no-trunc", service]).await;
    let version = docker(&["service", "inspect", "-f", "{{.Version.Index}}", service]).await;
    (
        ids.split_whitespace().map(str::to_owned).collect(),
        version.trim().parse().expect("version index"),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a 2-node swarm: scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1"]
async fn a_split_through_one_replica_is_routed_by_every_replica_within_a_second() {
    let Some(c) = cluster("replicas") else { return };
    let prefix = format!("sgs{}rep", c.id);
    let pool = |p: &str| vec![format!("{prefix}.pool={p}"), format!("{prefix}.port=8080")];
    let blue = c.agent_service("rep-blue", 2, &pool("blue"), &[]).await;
    let green = c.agent_service("rep-green", 2, &pool("green"), &[]).await;
    // The service whose label holds the shared state (a stand-in for the
    // gateway's own service): one task, no pool label.
    let store = c.agent_service("rep-store", 1, &[], &[]).await;
    let blue_tasks: BTreeSet<String> = blue
        .wait_running(2, Duration::from_secs(60))
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    let green_tasks: BTreeSet<String> = green
        .wait_running(2, Duration::from_secs(60))
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    store.wait_running(1, Duration::from_secs(60)).await;
    let (store_tasks, version_before) = tasks_and_version(&store.name).await;

    // Each replica reads the others' admin APIs by container name (on the
    // overlay, from inside the containers) for its replica table.
    let peers = (1..=3)
        .map(|i| format!("\"http://{}:9901\"", c.name(&format!("rep-gw{i}"))))
        .collect::<Vec<_>>()
        .join(", ");
    let config = routes_toml(&c.net, &prefix, &store.name, &peers);
    let mut replicas = Vec::new();
    for (i, on_node2) in [(1, false), (2, false), (3, true)] {
        // Every replica talks to the manager's engine (node 2's own refuses
        // service calls); on node 2 that is the host's socket mounted in.
        let g = Gateway::start(c, &format!("rep-gw{i}"), &config, Engine::Manager, on_node2).await;
        replicas.push(g);
    }
    for g in &replicas {
        g.wait_eligible("blue", Duration::from_secs(15), |e| e.len() == 2)
            .await;
        g.wait_eligible("green", Duration::from_secs(15), |e| e.len() == 2)
            .await;
    }

    // 50 splits through replica 1; each timed from the moment it was sent until
    // every replica's state shows it (replica 1 answers only once it routes it).
    let mut delays = Vec::new();
    let mut last = (100, 0);
    for i in 0..WRITES {
        let green_w = u32::try_from(5 + (i * 37) % 91).expect("small");
        let want = (100 - green_w, green_w);
        assert_ne!(want, last);
        let body = format!("{{\"blue\": {}, \"green\": {}}}", want.0, want.1);
        let sent = Instant::now();
        let (status, answer) = put(
            replicas[0].admin,
            "/api/v1/routes/agents/split",
            replicas[0].token(),
            &body,
        )
        .await
        .expect("split answered");
        assert_eq!(status, 200, "{answer}");
        let mut worst = Duration::ZERO;
        let seen = futures_util::future::join_all(
            replicas
                .iter()
                .map(|g| seen_after(g, want, sent, Duration::from_secs(5))),
        )
        .await;
        for d in seen {
            worst = worst.max(d);
        }
        delays.push(worst);
        last = want;
    }
    let mut sorted = delays.clone();
    sorted.sort();
    let (p50, p99, max) = (
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted[sorted.len() - 1],
    );

    // Each replica routes the last shares, measured separately.
    let mut shares = Vec::new();
    for g in &replicas {
        let load = Load::start(g.http);
        load.wait_answers(Instant::now(), SHARE_REQUESTS, Duration::from_secs(60))
            .await;
        let records = load.stop().await;
        let (failed_gets, failed_posts) = failures(&records);
        assert_eq!(
            (failed_gets, failed_posts),
            (0, 0),
            "{}: {:?}",
            g.name,
            describe_failures(&records, 10)
        );
        let ok: Vec<_> = records.iter().filter(|r| r.ok).collect();
        let to_green = ok
            .iter()
            .filter(|r| green_tasks.contains(task_of(&r.agent)))
            .count();
        let to_blue = ok
            .iter()
            .filter(|r| blue_tasks.contains(task_of(&r.agent)))
            .count();
        assert_eq!(
            to_green + to_blue,
            ok.len(),
            "{}: answers from unknown agents",
            g.name
        );
        let pct = 100.0 * to_green as f64 / ok.len() as f64;
        shares.push((g.name.clone(), ok.len(), pct));
    }

    let (store_tasks_after, version_after) = tasks_and_version(&store.name).await;
    let status = replicas[1].state_json().await;
    notice(&format!(
        "swarm replicas: {WRITES} splits via replica 1 reached all 3 replicas (2 on node 1, 1 on node 2): \
         p50 {p50:.0?}, p99 {p99:.0?}, max {max:.0?} (from send to the last replica's state); \
         green share per replica (want {}%): {shares:?}; store service version {version_before} -> {version_after}, \
         its tasks {} before and {} after (same: {}); replica 2's cluster view: {}",
        last.1,
        store_tasks.len(),
        store_tasks_after.len(),
        store_tasks == store_tasks_after,
        status["cluster"]
    ));
    assert!(
        max <= WITHIN,
        "a write took {max:?} to reach every replica: {delays:?}"
    );
    for (name, n, pct) in &shares {
        assert!(
            (pct - f64::from(last.1)).abs() <= 5.0,
            "{name}: {pct:.1}% of {n} to green, want {}% ± 5",
            last.1
        );
    }
    assert!(
        version_after >= version_before + WRITES as u64,
        "every write is a service update: {version_before} -> {version_after}"
    );
    assert_eq!(
        store_tasks, store_tasks_after,
        "label writes restarted (or added) tasks of the store's service"
    );
    assert_eq!(status["cluster"]["serving"], WRITES as u64, "{status}");
    assert_eq!(status["cluster"]["reachable"], true);
    let table = status["cluster"]["replicas"].as_array().expect("replicas");
    assert_eq!(table.len(), 3, "every replica known: {table:?}");
    for r in table {
        assert_eq!(
            r["serving"], WRITES as u64,
            "every replica serves the last write: {r}"
        );
    }

    // Restarts: replica 2's process is replaced (removed, and a new container
    // with the same file started), then every replica is; a new process serves
    // the shared state from its first read of the store.
    drop(replicas.remove(1));
    let again = Gateway::start(c, "rep-gw2b", &config, Engine::Manager, false).await;
    let one = seen_after(&again, last, Instant::now(), Duration::from_secs(10)).await;
    drop(replicas);
    drop(again);
    let fresh = Gateway::start(c, "rep-gw4", &config, Engine::Manager, true).await;
    let all = seen_after(&fresh, last, Instant::now(), Duration::from_secs(10)).await;
    notice(&format!(
        "swarm replicas: after replacing replica 2, the new one routed the last split {last:?} {one:?} \
         after it was ready; after removing every replica, a new one (node 2) {all:?} after it was ready"
    ));
}
