//! `ctl deploy` (issue 28) against real echo agents under GET + POST load and an
//! SSE stream: 0 failed requests, the command returns only after the old pool's
//! in-flight count is 0; a pool that never becomes healthy → error, nothing
//! changed, 0 failed.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sluicegate::ctl::deploy::{deploy, DeployArgs};
use sluicegate::ctl::{AdminClient, CtlError};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::live::split_of;
use crate::support::live::{config_text, LiveGateway};
use crate::support::load::{by_agent, describe_failures, failures, Load};
use crate::support::{agents, backends};

fn args(to: &str, wait_healthy: Duration) -> DeployArgs {
    DeployArgs {
        route: "agents".into(),
        to: to.into(),
        wait_healthy,
        settle: Duration::from_millis(300),
        drain_timeout: Duration::from_secs(20),
        poll: Duration::from_millis(50),
    }
}

fn old_pool_inflight(state: &sluicegate::state_view::StateView) -> u32 {
    state
        .pools
        .iter()
        .filter(|p| p.name == "blue")
        .flat_map(|p| &p.backends)
        .map(|b| b.inflight)
        .sum()
}

#[tokio::test]
async fn deploy_under_load_drains_the_old_pool_and_fails_nothing() {
    let blue = agents("blue", "v1", 2).await;
    let green = agents("green", "v2", 2).await;
    // A port nothing listens on: the `dead` pool never passes a probe.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let body = format!(
        "[[pools]]\nname = \"blue\"\nbackends = {}\n[[pools]]\nname = \"green\"\nbackends = {}\n\
         [[pools]]\nname = \"dead\"\nbackends = [{{ addr = \"{dead}\" }}]\n\
         [pools.health]\ninterval = \"100ms\"\ntimeout = \"80ms\"\nrise = 1\nfall = 1\n\
         [[routes]]\nname = \"agents\"\n\
         split = [{{ pool = \"blue\", weight = 100 }}, {{ pool = \"green\", weight = 0 }}]\n",
        backends(&blue),
        backends(&green)
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let client =
        AdminClient::new(&gw.admin.to_string(), None, Duration::from_secs(5)).expect("client");
    let load = Load::start(gw.addr);
    load.wait_answers(Instant::now(), 100, Duration::from_secs(10))
        .await;

    // A pool that never becomes healthy: refused, nothing changed.
    let t = Instant::now();
    let err = deploy(
        &client,
        &args("dead", Duration::from_secs(1)),
        std::future::pending(),
    )
    .await
    .expect_err("dead pool deploy must fail");
    assert!(matches!(err, CtlError::Deploy(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("nothing changed"), "{text}");
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        split_of(&gw.state().await, "agents"),
        [("blue".into(), 100), ("green".into(), 0)]
    );

    // An SSE stream on blue that outlives the switch: 15 events 100 ms apart.
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get("/sse?events=15&interval_ms=100")
        .header("host", "test.local")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("sse head");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["x-agent"]
        .to_str()
        .is_ok_and(|a| a.starts_with("blue")));
    let sse = tokio::spawn(async move {
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("sse body")
            .to_bytes();
        (Instant::now(), body)
    });

    // The real deploy.
    let started = Instant::now();
    let timeline = deploy(
        &client,
        &args("green", Duration::from_secs(10)),
        std::future::pending(),
    )
    .await
    .expect("deploy");
    let returned = Instant::now();
    // The stream began before the deploy and lasts 1.5 s: the drain waited for it.
    assert!(returned - started >= Duration::from_millis(1000));
    let state = gw.state().await;
    assert_eq!(
        old_pool_inflight(&state),
        0,
        "old pool still has work in flight"
    );
    assert!(
        sse.is_finished(),
        "deploy returned while the SSE stream on blue was open"
    );
    let (sse_end, sse_body) = sse.await.expect("sse task");
    assert!(sse_end <= returned);
    let events = sse_body.windows(6).filter(|w| w == b"data: ").count();
    assert_eq!(events, 15, "the SSE stream was cut: {sse_body:?}");
    assert!(timeline.drained_at.is_some());
    assert_eq!(timeline.old_pools, ["blue"]);
    assert_eq!(
        split_of(&state, "agents"),
        [("blue".into(), 0), ("green".into(), 100)]
    );

    let after = Instant::now();
    load.wait_answers(after, 100, Duration::from_secs(10)).await;
    let records = load.stop().await;
    let (failed_get, failed_post) = failures(&records);
    let (failed, total) = (failed_get + failed_post, records.len());
    assert_eq!(
        failed,
        0,
        "{failed} of {total}: {:?}",
        describe_failures(&records, 5)
    );
    let late: Vec<_> = records
        .iter()
        .filter(|r| r.sent >= after)
        .cloned()
        .collect();
    let served = by_agent(&late);
    assert!(served.keys().all(|a| a.starts_with("green")), "{served:?}");
    eprintln!(
        "deploy under load: {total} requests (GET+POST) + 1 SSE stream, {failed} failed; \
         timeline from start: healthy after {:?}, switched at {:?}, drained at {:?}; returned after {:?}",
        timeline.healthy_after,
        timeline.switched_at,
        timeline.drained_at,
        returned - started
    );
}
