//! The gateway's own answers (502/503/504 with `sluicegate-error`) and retries.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::support::{agents, get, send, TestGateway};

/// An address where nothing listens (bound, then released).
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A backend that reads a request head and closes without answering.
async fn closer() -> (SocketAddr, Arc<AtomicUsize>) {
    silent_backend(true).await
}

/// A backend that reads request heads and never answers: the connection stays
/// open (as to a host whose link was cut). Counts the heads it read.
async fn hanger() -> (SocketAddr, Arc<AtomicUsize>) {
    silent_backend(false).await
}

/// A backend that never answers and counts the request heads it reads; with
/// `close_after_head` it closes each connection after its first head.
async fn silent_backend(close_after_head: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut head = Vec::new();
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        count.fetch_add(1, Ordering::SeqCst);
                        if close_after_head {
                            return;
                        }
                        head.drain(..end + 4);
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn config(backends: &str, extra_route: &str) -> String {
    format!(
        r#"
[[pools]]
name = "p"
backends = {backends}
[[routes]]
name = "all"
split = [{{ pool = "p", weight = 1 }}]
{extra_route}
"#
    )
}

#[tokio::test]
async fn refused_connection_is_502_connect_failed() {
    let dead = dead_addr().await;
    let gw = TestGateway::start(&config(&format!("[{{ addr = \"{dead}\" }}]"), "")).await;
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error(), "connect_failed");
    assert!(!r.body.is_empty());
}

#[tokio::test]
async fn empty_pool_is_503_no_healthy_backend() {
    let gw = TestGateway::start(&config("[]", "")).await;
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error(), "no_healthy_backend");
}

#[tokio::test]
async fn slow_backend_is_504_response_timeout() {
    let a = agents("slow", "v1", 1).await;
    let gw = TestGateway::start(&config(
        &format!("[{{ addr = \"{}\" }}]", a[0].addr()),
        "timeouts = { response_header = \"200ms\" }",
    ))
    .await;
    let started = tokio::time::Instant::now();
    let r = get(gw.addr, "/slow?ms=3000", &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.error(), "response_timeout");
    assert!(started.elapsed() < std::time::Duration::from_millis(2000));
    // The next request is served normally.
    assert_eq!(get(gw.addr, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn backend_closing_without_answer_is_502_backend_failed() {
    let (addr, _) = closer().await;
    let gw = TestGateway::start(&config(&format!("[{{ addr = \"{addr}\" }}]"), "")).await;
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error(), "backend_failed");
}

#[tokio::test]
async fn retries_hide_a_dead_backend_for_gets_and_unsent_posts() {
    let live = agents("live", "v1", 2).await;
    let dead = dead_addr().await;
    let gw = TestGateway::start(&config(
        &format!(
            "[{{ addr = \"{dead}\" }}, {{ addr = \"{}\" }}, {{ addr = \"{}\" }}]",
            live[0].addr(),
            live[1].addr()
        ),
        "retries = 1",
    ))
    .await;
    for i in 0..60 {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status, 200, "GET {i}: {:?}", r.error());
        // A refused connect means the POST never left: it is retried too.
        let post = Request::post("/submit")
            .header("host", "test.local")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let r = send(gw.addr, post).await;
        assert_eq!(r.status, 200, "POST {i}: {:?}", r.error());
        assert_eq!(r.json()["body_bytes"], 7);
    }
    assert_eq!(live[0].requests() + live[1].requests(), 120);
}

#[tokio::test]
async fn sent_gets_are_retried_but_sent_posts_are_not() {
    let live = agents("live", "v1", 1).await;
    let (bad, bad_seen) = closer().await;
    let gw = TestGateway::start(&config(
        &format!(
            "[{{ addr = \"{bad}\" }}, {{ addr = \"{}\" }}]",
            live[0].addr()
        ),
        "retries = 1",
    ))
    .await;
    for _ in 0..10 {
        assert_eq!(get(gw.addr, "/", &[]).await.status, 200);
    }
    let gets_at_bad = bad_seen.load(Ordering::SeqCst);
    assert!(
        gets_at_bad >= 3,
        "round robin should have tried the bad backend"
    );

    let mut failed = 0;
    for _ in 0..10 {
        let post = Request::post("/submit")
            .header("host", "test.local")
            .body(Full::new(Bytes::from_static(b"once")))
            .unwrap();
        let r = send(gw.addr, post).await;
        if r.status == 502 {
            assert_eq!(r.error(), "backend_failed");
            failed += 1;
        }
    }
    // Every POST that reached the bad backend failed; none was sent twice.
    assert_eq!(bad_seen.load(Ordering::SeqCst) - gets_at_bad, failed);
    assert!(
        failed >= 3,
        "round robin should have sent POSTs to the bad backend"
    );
}

#[tokio::test]
async fn idle_backend_stream_is_cut_after_the_idle_timeout() {
    let a = agents("a", "v1", 1).await;
    let gw = TestGateway::start(&config(
        &format!("[{{ addr = \"{}\" }}]", a[0].addr()),
        "timeouts = { idle = \"300ms\" }",
    ))
    .await;
    tokio::time::timeout(crate::support::WAIT, async {
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/sse?events=3&interval_ms=2000")
            .header("host", "test.local")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let started = tokio::time::Instant::now();
        let result = http_body_util::BodyExt::collect(resp.into_body()).await;
        assert!(
            result.is_err(),
            "the stream should end with an error, not complete"
        );
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_millis(1500),
            "cut after {took:?}"
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_gateway_keeps_serving() {
    use tokio::io::AsyncWriteExt;
    let a = agents("a", "v1", 1).await;
    let gw = TestGateway::start(&config(&format!("[{{ addr = \"{}\" }}]", a[0].addr()), "")).await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"[..],
        &b"\x16\x03\x01\x00garbage\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"[..],
    ] {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(crate::support::WAIT, s.read_to_end(&mut buf))
            .await
            .expect("answered and closed")
            .ok();
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 400"), "{garbage:?} → {text:?}");
    }
    assert_eq!(a[0].requests(), 0, "nothing malformed was forwarded");
    assert_eq!(get(gw.addr, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn timed_out_gets_are_retried_elsewhere_and_count_toward_ejection() {
    let live = agents("live", "v1", 1).await;
    let (hung, hung_seen) = hanger().await;
    let text = config(
        &format!(
            "[{{ addr = \"{hung}\" }}, {{ addr = \"{}\" }}]",
            live[0].addr()
        ),
        "retries = 1\ntimeouts = { response_header = \"300ms\" }",
    )
    .replace(
        "[[routes]]",
        "[pools.outlier]\nconsecutive_failures = 2\nbase_ejection = \"60s\"\n[[routes]]",
    );
    let gw = TestGateway::start(&text).await;
    for i in 0..8 {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status, 200, "GET {i}: {:?}", r.error());
    }
    // Two timeouts in a row eject the hanging backend: it saw two GETs, each then
    // answered by the live one.
    assert_eq!(hung_seen.load(Ordering::SeqCst), 2);
    assert_eq!(live[0].requests(), 8);
}

#[tokio::test]
async fn timed_out_posts_are_504_and_never_sent_twice() {
    let live = agents("live", "v1", 1).await;
    let (hung, hung_seen) = hanger().await;
    let gw = TestGateway::start(&config(
        &format!(
            "[{{ addr = \"{hung}\" }}, {{ addr = \"{}\" }}]",
            live[0].addr()
        ),
        "retries = 1\ntimeouts = { response_header = \"300ms\" }",
    ))
    .await;
    let mut timed_out = 0usize;
    for i in 0..6 {
        let post = Request::post("/submit")
            .header("host", "test.local")
            .body(Full::new(Bytes::from_static(b"once")))
            .unwrap();
        let r = send(gw.addr, post).await;
        if r.status == 504 {
            assert_eq!(r.error(), "response_timeout", "POST {i}");
            timed_out += 1;
        } else {
            assert_eq!(r.status, 200, "POST {i}: {:?}", r.error());
        }
    }
    assert!(
        timed_out >= 1,
        "round robin should have sent a POST to the hanging backend"
    );
    // Each POST that reached the hanging backend was answered 504 and not retried.
    assert_eq!(hung_seen.load(Ordering::SeqCst), timed_out);
    assert_eq!(live[0].requests(), 6 - timed_out as u64);
}
