//! (e) Many backends: the probe task count follows the pool, and tasks end with
//! their owner.

use std::net::SocketAddr;
use std::time::Duration;

use sluicegate::testing::control_plane::controller::Controller;
use sluicegate::testing::data_plane::health::{HealthChange, HealthStatus};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::route;
use crate::support::{agents, WAIT};

/// `n` backends in pool `p` with `health` (TOML tables after the backends).
fn many(addrs: &[SocketAddr], health: &str) -> sluicegate::config::Spec {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\n[[pools]]\nname = \"p\"\nbackends = [{}]\n{health}\n{}",
        list.join(", "),
        route("")
    );
    sluicegate::config::parse(&text).unwrap_or_else(|e| panic!("{e}"))
}

async fn probes_become(controller: &Controller, n: usize) {
    tokio::time::timeout(WAIT, async {
        while controller.health().probes() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} probe tasks, expected {n}", controller.health().probes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_tasks_follow_the_pool_size_without_leaking() {
    let a = agents("many", "v1", 100).await;
    let addrs: Vec<SocketAddr> = a.iter().map(|x| x.addr()).collect();
    let health = "[pools.health]\ninterval = \"200ms\"\nrise = 1";
    let mut controller = Controller::new(many(&addrs, health));
    let mut events = controller.subscribe_health();
    probes_become(&controller, 100).await;
    let started = Instant::now();
    let snapshot = controller.shared().load_full();
    let healthy = || {
        snapshot.pools()[0]
            .backends()
            .filter(|b| b.state.health().status() == HealthStatus::Healthy)
            .count()
    };
    // Events wake the wait; the states are the truth (a probe may pass before the
    // subscription above was taken).
    let mut healthy_at = Vec::new();
    while healthy() < 100 {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("all pass in time")
            .expect("event");
        if matches!(
            event.change,
            HealthChange::Status {
                to: HealthStatus::Healthy,
                ..
            }
        ) {
            healthy_at.push(Instant::now() - started);
        }
    }
    let spread = healthy_at.iter().max().copied().unwrap_or_default()
        - healthy_at.iter().min().copied().unwrap_or_default();
    drop(snapshot);

    controller.apply(many(&addrs[..10], health));
    probes_become(&controller, 10).await;
    controller.apply(many(&addrs, health));
    probes_become(&controller, 100).await;
    controller.apply(many(&addrs, ""));
    probes_become(&controller, 0).await;
    let snapshot = controller.shared().load_full();
    let all_healthy = snapshot.pools()[0]
        .backends()
        .all(|b| b.state.is_eligible());
    controller.apply(many(&addrs, health));
    probes_become(&controller, 100).await;
    drop(controller);
    eprintln!(
        "health: (e) 100 probes, first passes spread over {} ms",
        spread.as_millis()
    );
    assert!(all_healthy, "a pool without probe has healthy backends");
    assert!(
        spread >= Duration::from_millis(50),
        "first probes jittered: {spread:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_tasks_end_with_the_controller() {
    let a = agents("owned", "v1", 3).await;
    let addrs: Vec<SocketAddr> = a.iter().map(|x| x.addr()).collect();
    let controller = Controller::new(many(&addrs, "[pools.health]\ninterval = \"100ms\""));
    let tracker_probe = controller.health().probes();
    assert_eq!(tracker_probe, 3);
    let mut events = controller.subscribe_health();
    drop(controller);
    // The supervisor owned the only sender besides the pools' copies, which the
    // dropped snapshot held: the channel closes once every task has ended.
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(broadcast::error::RecvError::Closed) = events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "probe tasks kept the pool alive");
}
