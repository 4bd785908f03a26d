//! What crosses the gateway: headers, streamed bodies, SSE, WebSocket, HTTP/2.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{agents, backends, get, one_pool_toml, send, TestGateway, WAIT};

async fn one_pool_gateway(n: usize) -> (TestGateway, Vec<sluicegate_echo_agent::EchoHandle>) {
    let a = agents("a", "v1", n).await;
    let gw = TestGateway::start(&one_pool_toml(&backends(&a))).await;
    (gw, a)
}

#[tokio::test]
async fn forwarded_headers_reach_the_agent() {
    let (gw, _a) = one_pool_gateway(1).await;
    let r = get(gw.addr, "/who?x=1", &[("x-forwarded-for", "10.1.2.3")]).await;
    let seen = r.json();
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "test.local");
    assert_eq!(h["host"], "test.local");
    assert_eq!(h["x-request-id"].as_str().unwrap().len(), 32);
    assert_eq!(seen["path"], "/who");
    assert_eq!(seen["query"], "x=1");

    let r = get(gw.addr, "/", &[("x-request-id", "trace-42")]).await;
    assert_eq!(r.json()["headers"]["x-request-id"], "trace-42");
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped() {
    let (gw, _a) = one_pool_gateway(1).await;
    let r = get(
        gw.addr,
        "/",
        &[
            ("connection", "keep-alive, x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-connection", "keep-alive"),
            ("x-public", "ok"),
        ],
    )
    .await;
    let h = &r.json()["headers"];
    for gone in ["x-private", "keep-alive", "te", "proxy-connection"] {
        assert!(h.get(gone).is_none(), "{gone} leaked: {h}");
    }
    assert_eq!(h["x-public"], "ok");
}

#[tokio::test]
async fn request_bodies_stream_to_the_agent() {
    let (gw, _a) = one_pool_gateway(1).await;
    let body = Bytes::from(vec![b'x'; 3 * 1024 * 1024]);
    let req = Request::post("/upload")
        .header("host", "test.local")
        .body(Full::new(body))
        .unwrap();
    let r = send(gw.addr, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_bytes"], 3 * 1024 * 1024);
    assert_eq!(r.json()["method"], "POST");
}

#[tokio::test]
async fn sse_first_event_arrives_long_before_the_last() {
    let (gw, _a) = one_pool_gateway(1).await;
    tokio::time::timeout(WAIT, async {
        let stream = TcpStream::connect(gw.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/sse?events=4&interval_ms=400")
            .header("host", "test.local")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let start = Instant::now();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body();
        let mut arrivals = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            if let Some(data) = frame.data_ref() {
                if data.windows(5).any(|w| w == b"data:") {
                    arrivals.push(start.elapsed());
                }
            }
        }
        assert_eq!(arrivals.len(), 4, "{arrivals:?}");
        assert!(
            arrivals[0] < Duration::from_millis(300),
            "first {arrivals:?}"
        );
        assert!(
            arrivals[3] >= Duration::from_millis(1100),
            "last {arrivals:?}"
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn websocket_is_tunnelled_both_ways() {
    let (gw, _a) = one_pool_gateway(1).await;
    tokio::time::timeout(WAIT, async {
        let stream = TcpStream::connect(gw.addr).await.unwrap();
        let url = format!("ws://{}/ws", gw.addr);
        let (mut ws, resp) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.headers()["x-agent"], "a-1");
        for i in 0..5 {
            ws.send(Message::Text(format!("hello {i}"))).await.unwrap();
            let back = ws.next().await.unwrap().unwrap();
            assert_eq!(back, Message::Text(format!("hello {i}")));
        }
        ws.send(Message::Binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Binary(vec![1, 2, 3])
        );
        ws.close(None).await.unwrap();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let (gw, _a) = one_pool_gateway(1).await;
    tokio::time::timeout(WAIT, async {
        let stream = TcpStream::connect(gw.addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        for _ in 0..3 {
            let req = Request::get(format!("http://h2.local:{}/h2", gw.addr.port()))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
            // The agent speaks HTTP/1.1 and sees the h2 authority as Host.
            assert_eq!(
                seen["headers"]["host"],
                format!("h2.local:{}", gw.addr.port())
            );
            assert_eq!(seen["path"], "/h2");
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn least_conn_counts_an_open_stream_as_load() {
    let a = agents("a", "v1", 2).await;
    let gw = TestGateway::start(&format!(
        r#"
[[pools]]
name = "p"
balance = "least_conn"
backends = {}
[[routes]]
name = "all"
split = [{{ pool = "p", weight = 1 }}]
"#,
        backends(&a)
    ))
    .await;
    // Hold one long SSE stream open; its backend must look busy until it ends.
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/sse?events=3&interval_ms=1000")
        .header("host", "test.local")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let busy = resp.headers()["x-agent"].to_str().unwrap().to_string();
    for _ in 0..20 {
        let other = get(gw.addr, "/", &[]).await;
        assert_ne!(
            other.agent(),
            busy,
            "least_conn sent work to the streaming backend"
        );
    }
    drop(resp);
}

#[tokio::test]
async fn host_is_always_sent_upstream() {
    use crate::hardening::raw::exchange;
    let (gw, _a) = one_pool_gateway(1).await;
    // `Connection: host` nominates Host as hop-by-hop: it must still go upstream.
    let r = exchange(
        gw.addr,
        b"GET /who HTTP/1.1\r\nhost: named.local\r\nconnection: host, close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains(r#""host":"named.local""#), "{}", r.text);
    // HTTP/1.0 absolute-form without Host: the authority becomes the Host.
    let r = exchange(gw.addr, b"GET http://abs.local/who HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains(r#""host":"abs.local""#), "{}", r.text);
}

#[tokio::test]
async fn h2_cookie_crumbs_reach_an_http1_upstream_as_one_line() {
    let (gw, _a) = one_pool_gateway(1).await;
    tokio::time::timeout(WAIT, async {
        let stream = TcpStream::connect(gw.addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("http://h2.local:{}/c", gw.addr.port()))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["headers"]["cookie"], "a=1; b=2", "{seen}");
    })
    .await
    .expect("bounded");
}
