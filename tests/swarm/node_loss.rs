//! Losing node 2 under load, two ways: its engine killed (SIGKILL: the containers
//! keep running under their shims, the manager marks the node `Down` after its
//! heartbeat timeout) and its link cut (the veth down: node 2's tasks unreachable at
//! once). No GET fails; POSTs already sent to node 2 when the link goes are counted,
//! not retried (they are not idempotent). Each test rebuilds the swarm afterwards.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::cluster::{cluster, docker, node2_status, notice, run, Rebuild};
use super::gateway::{routes_toml, Engine, Gateway};
use super::traffic::{counts, describe_failures, describe_streams, failures, node_of, Load, Sse};

/// "Node 2's tasks out of rotation within 3 s".
const OUT_OF_ROTATION: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Loss {
    /// SIGKILL to node 2's dockerd.
    EngineKilled,
    /// `ip link set sgveth1 down`.
    LinkCut,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a 2-node swarm: scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1"]
async fn node2_engine_killed_fails_no_get_and_its_tasks_leave_rotation() {
    node_loss("kill", Loss::EngineKilled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a 2-node swarm: scripts/swarm/two-node.sh run cargo test --test swarm -- --ignored --test-threads=1"]
async fn node2_link_cut_fails_no_get_and_its_tasks_leave_rotation_within_3s() {
    node_loss("cut", Loss::LinkCut).await;
}

async fn node_loss(short: &str, loss: Loss) {
    let Some(c) = cluster(short) else { return };
    let _rebuild = Rebuild(c);
    let started = Instant::now();
    let (prefix, svc) = c.agents_service(short, 4).await;
    let tasks = svc.wait_running(4, Duration::from_secs(60)).await;
    let on_node2: BTreeSet<String> = tasks
        .iter()
        .filter(|t| t.node == "node2")
        .filter_map(|t| t.backend_addr(&c.net))
        .collect();
    assert_eq!(on_node2.len(), 2, "2 of 4 tasks on node 2: {tasks:#?}");
    let gw = Gateway::start(
        c,
        &format!("{short}-gw"),
        &routes_toml(&c.net, &prefix, ""),
        Engine::Manager,
        false,
    )
    .await;
    // Before the loss: every task reachable (the overlay's cross-node entries can take
    // a while to reach a fresh gateway; what is measured starts at the loss).
    let (_, all_eligible) = gw
        .wait_eligible("agents", Duration::from_secs(30), |e| e.len() == 4)
        .await;
    notice(&format!(
        "swarm node loss ({loss:?}): all 4 tasks eligible {:.1?} into the test",
        all_eligible - started
    ));

    let load = Load::start(gw.http);
    let sse = Sse::start(gw.http);
    load.wait_answers(Instant::now(), 200, Duration::from_secs(20))
        .await;
    let lost = Instant::now();
    match loss {
        Loss::EngineKilled => {
            run("kill", &["-9", &c.node2_pid().to_string()]).await;
        }
        Loss::LinkCut => {
            run("ip", &["link", "set", "sgveth1", "down"]).await;
        }
    }
    // Until node 2's tasks are out of rotation, and (separately) node 2 is Down.
    let mut out_at = None;
    let mut down_at = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while out_at.is_none() || down_at.is_none() {
        assert!(
            Instant::now() < deadline,
            "{loss:?}: out of rotation {out_at:?}, node down {down_at:?} after 60 s\n{}",
            gw.logs()
        );
        if out_at.is_none() {
            let eligible = gw.eligible("agents").await;
            if eligible.iter().all(|a| !on_node2.contains(a)) {
                out_at = Some(Instant::now());
            }
        }
        if down_at.is_none() && node2_status().await == "down" {
            down_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (out_at, down_at) = (out_at.unwrap_or(lost), down_at.unwrap_or(lost));
    // The replacements on node 1 get traffic, then a while more of load.
    let replaced = svc.wait_running(4, Duration::from_secs(60)).await;
    let replaced_at = Instant::now();
    gw.wait_eligible("agents", Duration::from_secs(10), |e| e.len() == 4)
        .await;
    load.wait_answers(Instant::now(), 400, Duration::from_secs(20))
        .await;
    let records = load.stop().await;
    let streams = sse.stop().await;

    let (gets, posts) = counts(&records);
    let (failed_gets, failed_posts) = failures(&records);
    let failed_streams = streams.iter().filter(|s| !s.ok).count();
    let node2_answers_after = records
        .iter()
        .filter(|r| r.ok && r.sent >= out_at && node_of(&r.agent) == "node2")
        .count();
    notice(&format!(
        "swarm node loss ({loss:?}): {gets} GETs ({failed_gets} failed), {posts} POSTs ({failed_posts} failed: \
         already sent to node 2), {} SSE streams ({failed_streams} failed); node 2's tasks out of rotation \
         {:.2?} after the loss, node Down after {:.1?} (out of rotation {:.2?} after Down), tasks replaced \
         after {:.1?}; {node2_answers_after} answers from node 2 after it left rotation; test {:.1?}",
        streams.len(),
        out_at - lost,
        down_at - lost,
        out_at.saturating_duration_since(down_at),
        replaced_at - lost,
        started.elapsed()
    ));
    if failed_streams > 0 {
        notice(&format!(
            "node loss ({loss:?}) streams cut: {:?}",
            describe_streams(&streams, started, 5)
        ));
    }
    assert_eq!(failed_gets, 0, "{:?}", describe_failures(&records, 10));
    assert!(
        replaced.iter().all(|t| t.node != "node2"),
        "replacements on node 1: {replaced:#?}"
    );
    match loss {
        // The link is gone: nothing reaches node 2's tasks from the moment of the cut.
        Loss::LinkCut => assert!(
            out_at - lost <= OUT_OF_ROTATION,
            "node 2's tasks out of rotation {:?} after the cut",
            out_at - lost
        ),
        // The tasks keep serving until the manager says the node is down; from then
        // on the gateway must stop sending at once.
        Loss::EngineKilled => assert!(
            out_at.saturating_duration_since(down_at) <= OUT_OF_ROTATION,
            "node 2's tasks out of rotation {:?} after the node went Down",
            out_at.saturating_duration_since(down_at)
        ),
    }
    drop(gw);
    drop(svc);
    let _ = docker(&["node", "ls"]).await;
}
