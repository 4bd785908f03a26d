//! Hold: requests wait for a backend instead of a 503, bounded by time and queue.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use sluicegate::testing::data_plane::health::HealthStatus;
use sluicegate_echo_agent::{self as echo_agent, EchoConfig};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::{healthy_gateway, probe, route, to, wait_for};
use crate::support::{agents, backends, get, TestGateway, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_bridges_a_restart_of_the_only_backend() {
    let a = agents("solo", "v1", 1).await;
    let addr = a[0].addr();
    let config = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\nhold = {{ timeout = \"3s\", max_queued = 100 }}\n{}{}",
        backends(&a),
        probe(1, 1),
        route("retries = 1")
    );
    let mut gw = healthy_gateway(&[addr], &config).await;
    a[0].shutdown();
    a[0].stopped().await;
    let stopped = Instant::now();
    // One request before the probe notices (connect refused, then held), the
    // others while the backend is known to be down.
    let mut requests = vec![tokio::spawn(get(gw.addr, "/", &[]))];
    wait_for(&mut gw.events, addr, to(HealthStatus::Unhealthy)).await;
    for _ in 0..4 {
        requests.push(tokio::spawn(get(gw.addr, "/", &[])));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep_until(stopped + Duration::from_secs(1)).await;
    let listener = TcpListener::bind(addr).await.expect("rebind the same port");
    let _restarted = echo_agent::spawn(
        listener,
        EchoConfig {
            name: "solo-2".into(),
            version: "v1".into(),
        },
    );
    let mut waited = Vec::new();
    for r in requests {
        let reply = r.await.expect("request task");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.error());
        assert_eq!(reply.agent(), "solo-2");
        waited.push(stopped.elapsed().as_millis());
    }
    eprintln!("health: hold: all 5 gap requests answered by the restarted agent ({waited:?} ms after the stop)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_queue_overflow_and_default_fail_fast_are_503_at_once() {
    let a = agents("down", "v1", 1).await;
    a[0].set_healthy(false);
    let config = format!(
        "[[pools]]\nname = \"p\"\nbackends = {b}\nhold = {{ timeout = \"5s\", max_queued = 10 }}\n{probe}\
         [[pools]]\nname = \"q\"\nbackends = {b}\n{probe}\
         [[routes]]\nname = \"held\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\n\
         [[routes]]\nname = \"fast\"\nmatch = {{ path_prefix = \"/fast\" }}\nsplit = [{{ pool = \"q\", weight = 1 }}]\n",
        b = backends(&a),
        probe = probe(1, 1),
    );
    let gw = TestGateway::start(&config).await;
    let held = {
        let snapshot = gw.snapshot.load();
        Arc::clone(snapshot.pool("p").expect("pool p").health())
    };
    let queued: Vec<_> = (0..10)
        .map(|_| tokio::spawn(get(gw.addr, "/", &[])))
        .collect();
    tokio::time::timeout(WAIT, async {
        while held.held() < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("10 requests held");

    let t = Instant::now();
    let eleventh = get(gw.addr, "/", &[]).await;
    let overflow = t.elapsed();
    let t = Instant::now();
    let fast = get(gw.addr, "/fast", &[]).await;
    let fail_fast = t.elapsed();
    eprintln!(
        "health: hold queue full -> 503 in {} ms; no hold -> 503 in {} ms",
        overflow.as_millis(),
        fail_fast.as_millis()
    );
    for reply in [&eleventh, &fast] {
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.error(), "no_healthy_backend");
    }
    assert!(overflow < Duration::from_millis(300), "{overflow:?}");
    assert!(fail_fast < Duration::from_millis(300), "{fail_fast:?}");

    // The held ten are served as soon as the backend passes a probe.
    a[0].set_healthy(true);
    for r in queued {
        let reply = r.await.expect("request task");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.error());
    }
    assert_eq!(held.held(), 0);
}
