//! A rolling update (`docker service update --image`, start-first, one task at a
//! time) of 4 tasks over both nodes under GET, POST and SSE load: nothing fails, and
//! once the update has converged every answer comes from the new version.

use std::time::Duration;

use tokio::time::Instant;

use super::cluster::{cluster, docker, notice};
use super::gateway::{routes_toml, Engine, Gateway};
use super::traffic::{counts, describe_failures, describe_streams, failures, node_of, Load, Sse};

/// Slack after convergence for the gateway's next poll to see the last old task's
/// desired state change (the poll interval is 1 s).
const POLL_SLACK: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a 2-node swarm: scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1"]
async fn rolling_update_to_the_next_image_fails_nothing_and_converges_on_it() {
    let Some(c) = cluster("rolling") else { return };
    let started = Instant::now();
    let (prefix, svc) = c.agents_service("roll", 4).await;
    let before = svc.wait_running(4, Duration::from_secs(60)).await;
    let nodes: std::collections::BTreeSet<&str> = before.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(nodes.len(), 2, "4 tasks over both nodes: {before:#?}");
    let gw = Gateway::start(
        c,
        "roll-gw",
        &routes_toml(&c.net, &prefix, ""),
        Engine::Manager,
        false,
    )
    .await;
    gw.wait_eligible("agents", Duration::from_secs(10), |e| e.len() == 4)
        .await;

    let load = Load::start(gw.http);
    let sse = Sse::start(gw.http);
    load.wait_answers(Instant::now(), 200, Duration::from_secs(20))
        .await;
    let update = Instant::now();
    docker(&[
        "service",
        "update",
        "-d",
        "--no-resolve-image",
        "--image",
        &c.echo_v2,
        &svc.name,
    ])
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while svc.update_state().await != "completed" {
        assert!(
            Instant::now() < deadline,
            "update not completed in 120 s: {}",
            svc.update_state().await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let converged = Instant::now();
    let after = svc.wait_running(4, Duration::from_secs(30)).await;
    // Answers sent from here on must all be v2.
    let settled = converged + POLL_SLACK;
    tokio::time::sleep_until(settled).await;
    load.wait_answers(settled, 400, Duration::from_secs(20))
        .await;
    let records = load.stop().await;
    let streams = sse.stop().await;

    let (gets, posts) = counts(&records);
    let (failed_gets, failed_posts) = failures(&records);
    let failed_streams = streams.iter().filter(|s| !s.ok).count();
    let first_v2 = records
        .iter()
        .filter(|r| r.ok && r.version == "v2")
        .map(|r| r.done)
        .min();
    let last_v1 = records
        .iter()
        .filter(|r| r.ok && r.version == "v1")
        .map(|r| r.done)
        .max();
    let late_v1 = records
        .iter()
        .filter(|r| r.sent >= settled && r.version != "v2")
        .count();
    let v2_nodes: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r.ok && r.version == "v2")
        .map(|r| node_of(&r.agent))
        .collect();
    notice(&format!(
        "swarm rolling update: {gets} GETs ({failed_gets} failed), {posts} POSTs ({failed_posts} failed), \
         {} SSE streams ({failed_streams} failed); from `docker service update`: first v2 answer {:.2?}, \
         last v1 answer {:.2?}, update completed {:.1?}; v2 answered from nodes {v2_nodes:?}; test {:.1?}",
        streams.len(),
        first_v2.map(|t| t - update),
        last_v1.map(|t| t.saturating_duration_since(update)),
        converged - update,
        started.elapsed()
    ));
    assert_eq!(
        (failed_gets, failed_posts),
        (0, 0),
        "{:?}",
        describe_failures(&records, 10)
    );
    assert_eq!(
        failed_streams,
        0,
        "{:?}",
        describe_streams(&streams, started, 5)
    );
    assert!(first_v2.is_some(), "no v2 answer at all");
    assert_eq!(late_v1, 0, "answers not from v2 after convergence");
    assert!(
        after.iter().all(|t| before.iter().all(|b| b.id != t.id)),
        "every task replaced"
    );
    assert_eq!(v2_nodes.len(), 2, "v2 served from both nodes: {v2_nodes:?}");
}
