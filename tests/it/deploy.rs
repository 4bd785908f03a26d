//! `ctl deploy` (issue 28) against real echo agents under GET + POST load, an SSE
//! stream and a WebSocket: 0 failed requests, the command returns only after the
//! old pool's in-flight count is 0; a pool that never becomes healthy → error,
//! nothing changed, 0 failed. `steps`: the rollout's gates pass, or one fails and
//! the deploy is rolled back (`steps`); Ctrl-C to the real `ctl` process in each
//! phase (`interrupt`).

mod interrupt;
mod steps;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sluicegate::ctl::deploy::{deploy, DeployArgs};
use sluicegate::ctl::{AdminClient, CtlError};
use sluicegate_echo_agent::EchoHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::live::split_of;
use crate::support::live::{config_text, LiveGateway};
use crate::support::load::{by_agent, describe_failures, failures, Load};
use crate::support::{agents, backends};

fn args(to: &str, wait_healthy: Duration) -> DeployArgs {
    DeployArgs {
        settle: Duration::from_millis(300),
        poll: Duration::from_millis(50),
        ..DeployArgs::new("agents", to, wait_healthy, Duration::from_secs(20))
    }
}

/// A WebSocket through the gateway: the agent that took it, and a task that
/// echoes `n` messages 50 ms apart, then closes; it returns (echoes, closed
/// cleanly, when it ended).
async fn websocket(
    gateway: std::net::SocketAddr,
    n: u32,
) -> (String, tokio::task::JoinHandle<(u32, bool, Instant)>) {
    let stream = TcpStream::connect(gateway).await.expect("connect");
    let req = Request::get(format!("ws://{gateway}/ws"))
        .header("host", "test.local")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(())
        .expect("request");
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("websocket handshake");
    let agent = resp
        .headers()
        .get("x-agent")
        .and_then(|a| a.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let task = tokio::spawn(async move {
        let mut echoes = 0;
        for i in 0..n {
            let text = format!("ping {i}");
            let round = async {
                ws.send(Message::Text(text.clone())).await.ok()?;
                match ws.next().await {
                    Some(Ok(Message::Text(back))) if back == text => Some(()),
                    _ => None,
                }
            };
            match tokio::time::timeout(Duration::from_secs(5), round).await {
                Ok(Some(())) => echoes += 1,
                _ => return (echoes, false, Instant::now()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let closed = tokio::time::timeout(Duration::from_secs(5), ws.close(None))
            .await
            .is_ok_and(|r| r.is_ok());
        // Read to the end so the tunnel is torn down before this returns.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
        (echoes, closed, Instant::now())
    });
    (agent, task)
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

/// Pools `blue`, `green` (of these agents) and `dead` (a port nothing listens
/// on, probed every 100 ms: it never passes), and route `agents` at 100/0.
pub(super) async fn blue_green_dead(blue: &[EchoHandle], green: &[EchoHandle]) -> String {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    format!(
        "[[pools]]\nname = \"blue\"\nbackends = {}\n[[pools]]\nname = \"green\"\nbackends = {}\n\
         [[pools]]\nname = \"dead\"\nbackends = [{{ addr = \"{dead}\" }}]\n\
         [pools.health]\ninterval = \"100ms\"\ntimeout = \"80ms\"\nrise = 1\nfall = 1\n\
         [[routes]]\nname = \"agents\"\n\
         split = [{{ pool = \"blue\", weight = 100 }}, {{ pool = \"green\", weight = 0 }}]\n",
        backends(blue),
        backends(green)
    )
}

#[tokio::test]
async fn deploy_under_load_drains_the_old_pool_and_fails_nothing() {
    let blue = agents("blue", "v1", 2).await;
    let green = agents("green", "v2", 2).await;
    let body = blue_green_dead(&blue, &green).await;
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

    // A WebSocket on blue that outlives the switch: 30 echoes 50 ms apart.
    let (ws_agent, ws) = websocket(gw.addr, 30).await;
    assert!(ws_agent.starts_with("blue"), "{ws_agent}");

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
    assert!(
        ws.is_finished(),
        "deploy returned while the WebSocket on blue was open"
    );
    let (echoes, closed, ws_end) = ws.await.expect("websocket task");
    assert_eq!(echoes, 30, "the WebSocket was cut");
    assert!(closed && ws_end <= returned);
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
        "deploy under load: {total} requests (GET+POST) + 1 SSE stream (15 events) + 1 WebSocket ({echoes} echoes), {failed} failed; \
         timeline from start: healthy after {:?}, switched at {:?}, drained at {:?}; returned after {:?}",
        timeline.healthy_after,
        timeline.switched_at,
        timeline.drained_at,
        returned - started
    );
}

/// `POST /api/v1/routes/{route}/deploy` refuses what it cannot do before it
/// starts: every bad value with its key path (400), an unknown route (404) or
/// pool (400 at `to`), a second deploy of a route while one runs (409).
#[tokio::test]
async fn the_deploy_api_refuses_bad_requests_with_key_paths() {
    let blue = agents("blue", "v1", 1).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = closed.local_addr().expect("addr");
    drop(closed);
    let body = format!(
        "[[pools]]\nname = \"blue\"\nbackends = {}\n\
         [[pools]]\nname = \"dead\"\nbackends = [{{ addr = \"{dead}\" }}]\n\
         [pools.health]\ninterval = \"100ms\"\ntimeout = \"80ms\"\nrise = 1\nfall = 1\n\
         [[routes]]\nname = \"agents\"\nsplit = [{{ pool = \"blue\", weight = 100 }}]\n",
        backends(&blue)
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let post = |route: &'static str, body: &'static str| {
        let gw = &gw;
        async move {
            let path = format!("/api/v1/routes/{route}/deploy");
            let r = gw.api(http::Method::POST, &path, Some(body)).await;
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            (r.status, v)
        }
    };
    let (status, v) = post(
        "agents",
        r#"{"to": "blue", "wait_healthy": "soon", "steps": [50, 40], "drain_timeout": "-1s"}"#,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let paths: Vec<&str> = v["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["path"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(paths, ["wait_healthy", "drain_timeout"], "{v}");
    let (status, v) = post("agents", r#"{"to": "blue", "steps": [50, 40]}"#).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["path"], "steps[1]", "{v}");
    let (status, v) = post("nope", r#"{"to": "blue"}"#).await;
    assert_eq!(
        (status.as_u16(), v["path"].as_str()),
        (404, Some("route")),
        "{v}"
    );
    let (status, v) = post("agents", r#"{"to": "purple"}"#).await;
    assert_eq!(
        (status.as_u16(), v["path"].as_str()),
        (400, Some("to")),
        "{v}"
    );
    let (status, v) = post("agents", r#"{"to": "blue", "colour": 1}"#).await;
    assert_eq!(status, 400, "{v}");

    // One deploy per route: the first waits for `dead`, the second is refused.
    let (status, first) = post("agents", r#"{"to": "dead", "wait_healthy": "30s"}"#).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["phase"], "waiting_healthy");
    let (status, v) = post("agents", r#"{"to": "blue"}"#).await;
    assert_eq!(status, 409, "{v}");
    let id = first["id"].as_str().expect("id");
    let r = gw
        .api(
            http::Method::POST,
            &format!("/api/v1/deploys/{id}/cancel"),
            Some("{}"),
        )
        .await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(v["phase"], "cancelled", "{v}");
    assert!(
        v["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("nothing changed")),
        "{v}"
    );
    assert_eq!(
        split_of(&gw.state().await, "agents"),
        [("blue".into(), 100)]
    );
}
