//! Blame the right party (issue 23, item 1 and 2): a malformed request body, a
//! client that hangs up mid-upload and a stalled upload are the client's doing.
//! They are answered 400 / 499 / 408 with their own `sluicegate-error` token, and
//! never count against the backend: no passive ejection (one failure would eject
//! here), the backend keeps serving a bystander.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::raw::{exchange_for, first_answer, Bystander};
use crate::support::{agents, backends, TestGateway, WAIT};

/// One echo agent that a single failed attempt would eject.
async fn gateway(extra: &str) -> (TestGateway, Vec<sluicegate_echo_agent::EchoHandle>) {
    let a = agents("blame", "v1", 1).await;
    let gw = TestGateway::start(&format!(
        r#"
[[pools]]
name = "p"
backends = {}
[pools.outlier]
consecutive_failures = 1
max_ejected_percent = 100
[[routes]]
name = "all"
split = [{{ pool = "p", weight = 1 }}]
{extra}
"#,
        backends(&a)
    ))
    .await;
    (gw, a)
}

fn not_ejected(gw: &TestGateway) {
    let snapshot = gw.snapshot.load();
    let pool = snapshot.pool("p").expect("pool p");
    for b in pool.backends() {
        assert!(!b.state.is_ejected(), "{} was ejected", b.addr);
    }
}

/// Chunked bodies hyper's decoder refuses, each after a valid head.
const MALFORMED_BODIES: &[(&str, &[u8])] = &[
    (
        "chunk-size overflow",
        b"fffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    ),
    ("bare LF in an extension", b"5;ext\nhello\r\n0\r\n\r\n"),
    ("bad chunk terminator", b"5\r\nhelloXX0\r\n\r\n"),
    ("non-hex size", b"zz\r\nhello\r\n0\r\n\r\n"),
];

#[tokio::test]
async fn malformed_chunked_bodies_are_400_and_not_the_backends_fault() {
    let (gw, _a) = gateway("").await;
    let bystander = Bystander::start(gw.addr);
    for (name, body) in MALFORMED_BODIES {
        let mut bytes =
            b"POST /upload HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        bytes.extend_from_slice(body);
        let r = exchange_for(gw.addr, &bytes, Duration::from_secs(1)).await;
        assert_eq!(r.status, 400, "{name}: {}", r.text);
        assert_eq!(
            r.header("sluicegate-error"),
            Some("malformed_body"),
            "{name}"
        );
        assert!(
            r.closed,
            "{name}: the connection must close after a broken body"
        );
    }
    not_ejected(&gw);
    bystander.assert_served().await;
}

#[tokio::test]
async fn a_client_hanging_up_mid_upload_is_no_backend_failure() {
    let (gw, _a) = gateway("").await;
    let bystander = Bystander::start(gw.addr);
    for _ in 0..5 {
        let mut s = TcpStream::connect(gw.addr).await.expect("connect");
        s.write_all(
            b"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 100000\r\n\r\nten bytes.",
        )
        .await
        .expect("write");
        // Give the gateway time to pick a backend and start the upload.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    not_ejected(&gw);
    bystander.assert_served().await;
}

#[tokio::test]
async fn a_stalled_upload_is_408_after_the_client_body_timeout() {
    let (gw, _a) = gateway(r#"timeouts = { client_body = "300ms", response_header = "5s" }"#).await;
    let bystander = Bystander::start(gw.addr);
    let started = tokio::time::Instant::now();
    let head = b"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nten bytes.";
    let r = first_answer(gw.addr, head, WAIT).await;
    let waited = started.elapsed();
    assert_eq!(r.status, 408, "{}", r.text);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(
        waited < Duration::from_secs(5),
        "{waited:?}: the response timer fired"
    );
    not_ejected(&gw);
    bystander.assert_served().await;
}

#[tokio::test]
async fn a_slow_healthy_upload_longer_than_response_header_is_served() {
    // The response-header timer starts once the body is up, not with the head.
    let (gw, _a) = gateway(r#"timeouts = { client_body = "2s", response_header = "300ms" }"#).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(
        b"POST /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 8\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"x").await.expect("write");
    }
    let mut buf = Vec::new();
    super::raw::read_until_close(&mut s, &mut buf, WAIT).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}
