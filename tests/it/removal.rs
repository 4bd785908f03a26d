//! Backends that leave: removed pools close their streams only after
//! `stream_close_delay`; registered backends live while their heartbeat does.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::support::live::{config_text, LiveGateway};
use crate::support::{agents, backends, get, WAIT};

fn with_streams(a: &str, b: Option<&str>) -> String {
    let mut body = format!(
        "[[pools]]\nname = \"a\"\nbackends = {a}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"a\", weight = 1 }}]\n"
    );
    if let Some(b) = b {
        body.push_str(&format!(
            "[[pools]]\nname = \"b\"\nbackends = {b}\n\
             [[routes]]\nname = \"sse\"\nmatch = {{ path_prefix = \"/sse\" }}\nsplit = [{{ pool = \"b\", weight = 1 }}]\n\
             [[routes]]\nname = \"ws\"\nmatch = {{ path_prefix = \"/ws\" }}\nsplit = [{{ pool = \"b\", weight = 1 }}]\n"
        ));
    }
    config_text(&body, "stream_close_delay = \"400ms\"", "")
}

#[tokio::test]
async fn removed_pool_closes_its_streams_after_the_delay_and_counts_them() {
    let (a, b) = (agents("a", "v1", 1).await, agents("b", "v2", 1).await);
    let gw = LiveGateway::start(&with_streams(&backends(&a), Some(&backends(&b)))).await;

    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::get("/sse?events=10000&interval_ms=20")
        .header("host", "t")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("sse response");
    assert_eq!(resp.headers()["x-agent"], "b-1");
    let mut sse = resp.into_body();
    let ws_stream = TcpStream::connect(gw.addr).await.expect("connect");
    let url = format!("ws://{}/ws", gw.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, ws_stream)
        .await
        .expect("ws");

    // Pool b and its routes leave the file. Nothing is cut at the reload...
    gw.reload(&with_streams(&backends(&a), None)).await;
    let removed_at = Instant::now();
    let frame = tokio::time::timeout(WAIT, sse.frame())
        .await
        .expect("bounded");
    assert!(matches!(frame, Some(Ok(_))), "SSE cut at reload: {frame:?}");
    ws.send(Message::Text("still here".into()))
        .await
        .expect("ws send");
    let echo = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("bounded");
    assert_eq!(
        echo.expect("open").expect("echo"),
        Message::Text("still here".into())
    );
    assert_eq!(gw.counters().streams_closed, 0);
    // ...and new requests go to a.
    assert_eq!(get(gw.addr, "/sse?events=1", &[]).await.agent(), "a-1");

    // After the delay both streams end and are counted.
    let c = gw.wait_counters(|c| c.streams_closed == 2).await;
    assert_eq!(c.streams_closed, 2);
    assert!(
        removed_at.elapsed() >= Duration::from_millis(350),
        "closed too early"
    );
    tokio::time::timeout(WAIT, async {
        loop {
            match sse.frame().await {
                Some(Ok(_)) => continue,
                _ => return,
            }
        }
    })
    .await
    .expect("SSE stream ended after the delay");
    let after = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_))) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("WebSocket ended after the delay");
    assert!(!matches!(after, Some(Ok(Message::Text(_)))), "{after:?}");
}

#[tokio::test]
async fn registered_backend_serves_until_its_ttl_lapses() {
    let a = agents("a", "v1", 2).await;
    let body = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\n",
        backends(&a[..1])
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let register = format!(r#"{{"addr": "{}", "ttl": "1500ms"}}"#, a[1].addr());
    let r = gw
        .api(Method::POST, "/api/v1/pools/p/backends", Some(&register))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let generation = gw.counters().generation;
    let mut names = Vec::new();
    for _ in 0..6 {
        names.push(get(gw.addr, "/", &[]).await.agent().to_owned());
    }
    assert!(names.iter().any(|n| n == "a-2"), "{names:?}");
    // A heartbeat renews without rebuilding anything.
    let r = gw
        .api(Method::POST, "/api/v1/pools/p/backends", Some(&register))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.counters().generation, generation);
    let state = gw.state().await;
    let reg = state
        .backend("p", &a[1].addr().to_string())
        .expect("registered");
    assert!(reg.ttl_remaining_ms.is_some_and(|ms| ms > 1000), "{reg:?}");

    // No more heartbeats: it lapses and gets no traffic.
    gw.wait_counters(|c| c.generation > generation).await;
    assert!(gw
        .state()
        .await
        .backend("p", &a[1].addr().to_string())
        .is_none());
    let before = a[1].requests();
    for _ in 0..6 {
        assert_eq!(get(gw.addr, "/", &[]).await.agent(), "a-1");
    }
    assert_eq!(a[1].requests(), before);

    // Register again without TTL, then deregister explicitly.
    let forever = format!(r#"{{"addr": "{}"}}"#, a[1].addr());
    assert_eq!(
        gw.api(Method::POST, "/api/v1/pools/p/backends", Some(&forever))
            .await
            .status,
        200
    );
    let r = gw
        .api(Method::DELETE, "/api/v1/pools/p/backends", Some(&forever))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(gw
        .state()
        .await
        .backend("p", &a[1].addr().to_string())
        .is_none());
}
