//! A gateway replica on the worker (node 2), whose engine refuses cluster reads,
//! reads the discovered set from the replica on the manager through its admin API
//! (`[discovery.swarm].managers`) and routes to tasks on both nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::cluster::{cluster, notice, run};
use super::gateway::{get, routes_toml, Engine, Gateway};
use super::traffic::{counts, describe_failures, failures, node_of, Load};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a 2-node swarm: scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1"]
async fn a_gateway_on_the_worker_routes_to_tasks_on_both_nodes() {
    let Some(c) = cluster("worker") else { return };
    let started = Instant::now();
    let (prefix, svc) = c.agents_service("worker", 4).await;
    let tasks = svc.wait_running(4, Duration::from_secs(60)).await;
    let manager = Gateway::start(
        c,
        "worker-gw1",
        &routes_toml(&c.net, &prefix, ""),
        Engine::Manager,
        false,
    )
    .await;
    manager
        .wait_eligible("agents", Duration::from_secs(10), |e| e.len() == 4)
        .await;
    // The worker's own engine answers 503 to /services, /tasks and /nodes.
    let refused = run(
        "sh",
        &[
            "-c",
            &format!("docker -H {} service ls 2>&1 || true", c.node2),
        ],
    )
    .await;
    assert!(
        refused.contains("not a swarm manager") || refused.contains("503"),
        "{refused}"
    );

    let managers = format!("managers = [\"http://{}:9901\"]", manager.name);
    let worker = Gateway::start(
        c,
        "worker-gw2",
        &routes_toml(&c.net, &prefix, &managers),
        Engine::Worker,
        true,
    )
    .await;
    let ready = started.elapsed();
    let (eligible, _) = worker
        .wait_eligible("agents", Duration::from_secs(10), |e| e.len() == 4)
        .await;
    let mut want: Vec<String> = tasks
        .iter()
        .filter_map(|t| t.backend_addr(&c.net))
        .collect();
    want.sort();
    assert_eq!(eligible, want, "the worker's gateway has the manager's set");

    let load = Load::start(worker.http);
    load.wait_answers(Instant::now(), 400, Duration::from_secs(20))
        .await;
    let records = load.stop().await;
    let (gets, posts) = counts(&records);
    let (failed_gets, failed_posts) = failures(&records);
    let nodes: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.ok)
        .map(|r| node_of(&r.agent))
        .collect();
    let (status, readyz) = get(worker.admin, "/readyz", None).await.expect("readyz");
    notice(&format!(
        "swarm gateway on the worker: ready {ready:.1?} into the test; {gets} GETs ({failed_gets} failed), \
         {posts} POSTs ({failed_posts} failed) answered from nodes {nodes:?}; /readyz {status} {readyz:?}"
    ));
    assert_eq!(
        (failed_gets, failed_posts),
        (0, 0),
        "{:?}",
        describe_failures(&records, 10)
    );
    assert!(
        nodes.len() == 2 && nodes.contains("node2"),
        "answers from both nodes: {nodes:?}"
    );
}
