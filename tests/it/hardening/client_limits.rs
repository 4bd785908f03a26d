//! Client-side limits of `[listen]` and `max_request_body`: each abusive client is
//! refused or cut off, and a bystander keeps being served while it happens.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::raw::{exchange, exchange_for, read_until_close, Bystander};
use crate::support::{agents, backends, get, TestGateway, WAIT};

fn config(listen: &str, backends: &str, route: &str) -> String {
    format!(
        r#"{listen}
[[pools]]
name = "p"
backends = {backends}
[[routes]]
name = "all"
split = [{{ pool = "p", weight = 1 }}]
{route}
"#
    )
}

#[tokio::test]
async fn oversized_heads_and_too_many_fields_are_431() {
    let a = agents("a", "v1", 1).await;
    let listen = "max_header_bytes = \"8KiB\"\nmax_headers = 20";
    let gw = TestGateway::start(&config(listen, &backends(&a), "")).await;
    let bystander = Bystander::start(gw.addr);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let many: String = (0..30).map(|i| format!("X-F{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    for attack in [big, many] {
        let r = exchange(gw.addr, attack.as_bytes()).await;
        assert_eq!(r.status, 431, "{}", r.text);
        assert!(r.closed);
    }
    bystander.assert_served().await;
    let before = a[0].requests();
    // Just under both bounds is fine.
    let fields: Vec<(String, String)> = (0..15)
        .map(|i| (format!("x-f{i}"), "v".repeat(300)))
        .collect();
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(get(gw.addr, "/", &fields).await.status, 200);
    assert_eq!(
        a[0].requests(),
        before + 1,
        "the refused heads were never forwarded"
    );
}

#[tokio::test]
async fn slowloris_head_is_cut_after_header_read_timeout() {
    let a = agents("a", "v1", 1).await;
    let listen = "header_read_timeout = \"300ms\"";
    let gw = TestGateway::start(&config(listen, &backends(&a), "")).await;
    let bystander = Bystander::start(gw.addr);
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    // One header byte every 50 ms: never a complete head.
    let dribble = async {
        for _ in 0..200 {
            if s.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, dribble).await.expect("cut off");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "cut after {took:?}");
    let mut rest = Vec::new();
    assert!(read_until_close(&mut s, &mut rest, WAIT).await, "closed");
    // hyper closes without an answer (no 408): the head never completed.
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{rest:?}"
    );
    bystander.assert_served().await;
}

#[tokio::test]
async fn silent_connections_are_dropped_after_header_read_timeout() {
    // Regression (property run): with no byte, or too few to tell HTTP/1 from
    // HTTP/2, hyper's head timer never started and the connection stayed open.
    let a = agents("a", "v1", 1).await;
    let listen = "header_read_timeout = \"300ms\"";
    let gw = TestGateway::start(&config(listen, &backends(&a), "")).await;
    for sent in [&b""[..], b"GE", b"PRI * HTTP/2.0\r\n"] {
        let started = tokio::time::Instant::now();
        let r = exchange_for(gw.addr, sent, Duration::from_secs(5)).await;
        assert!(r.closed, "{sent:?} kept open");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{sent:?}: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(get(gw.addr, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn max_connections_refuses_the_extra_one_and_keeps_serving_the_others() {
    let a = agents("a", "v1", 1).await;
    let gw = TestGateway::start(&config("max_connections = 2", &backends(&a), "")).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let stream = TcpStream::connect(gw.addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        held.push(sender);
    }
    let send = |sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>| {
        let req = Request::get("/")
            .header("host", "t")
            .body(Full::new(Bytes::new()));
        sender.send_request(req.expect("request"))
    };
    for sender in &mut held {
        let resp = tokio::time::timeout(WAIT, send(sender))
            .await
            .expect("bounded")
            .expect("ok");
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
    }
    let refused = exchange(gw.addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(
        refused.header("sluicegate-error"),
        Some("too_many_connections")
    );
    assert!(refused.closed);
    // The two admitted clients are still served on their connections.
    for sender in &mut held {
        let resp = tokio::time::timeout(WAIT, send(sender))
            .await
            .expect("bounded")
            .expect("ok");
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
    }
    // A slot freed is a slot for the next client.
    drop(held.pop());
    let served = tokio::time::timeout(WAIT, async {
        loop {
            let r = exchange(
                gw.addr,
                b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            )
            .await;
            if r.status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    served.await.expect("served once a connection closed");
}

#[tokio::test]
async fn idle_connections_are_closed_but_long_responses_are_not_idle() {
    let a = agents("a", "v1", 1).await;
    let listen = "idle_timeout = \"300ms\"\nheader_read_timeout = \"10s\"";
    let gw = TestGateway::start(&config(listen, &backends(&a), "")).await;
    // HTTP/1.1: one request, then silence.
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let mut got = Vec::new();
    assert!(
        read_until_close(&mut s, &mut got, WAIT).await,
        "idle h1 closed"
    );
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // HTTP/2: a stream that lasts past the idle timeout is not cut, then the
    // connection with no stream open is closed.
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let req = Request::get("http://t/sse?events=4&interval_ms=200")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("bounded");
    let body = resp.expect("answer").into_body().collect().await;
    let body = body
        .expect("an 800 ms stream outlives a 300 ms idle timeout")
        .to_bytes();
    assert_eq!(body.windows(5).filter(|w| w == b"data:").count(), 4);
    let ended = tokio::time::timeout(WAIT, conn).await;
    assert!(
        ended.is_ok(),
        "the idle h2 connection was closed by the gateway"
    );
}

#[tokio::test]
async fn bodies_over_max_request_body_are_413() {
    let a = agents("a", "v1", 1).await;
    let up = agents("upload", "v1", 1).await;
    let route = format!(
        "[[pools]]\nname = \"up\"\nbackends = {}\n[[routes]]\nname = \"upload\"\nmatch = {{ path_prefix = \"/upload\" }}\nsplit = [{{ pool = \"up\", weight = 1 }}]\nmax_request_body = 16",
        backends(&up)
    );
    let gw = TestGateway::start(&config("", &backends(&a), &route)).await;
    let bystander = Bystander::start(gw.addr);
    let declared =
        b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n01234567890123456";
    let r = exchange(gw.addr, declared).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.header("sluicegate-error"), Some("body_too_large"));
    assert!(r.closed);
    assert_eq!(
        up[0].requests(),
        0,
        "a declared-too-large body is never forwarded"
    );
    // Streamed past the limit: the upstream request is aborted at the limit.
    let streamed = b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n4\r\nmore\r\n0\r\n\r\n";
    let r = exchange(gw.addr, streamed).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(r.closed);
    let exact = b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
    let r = exchange(gw.addr, exact).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("\"body_bytes\":16"), "{}", r.text);
    // Other routes have the default limit, 100 MiB.
    let big = format!(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{}",
        "x".repeat(1000)
    );
    assert_eq!(exchange(gw.addr, big.as_bytes()).await.status, 200);
    let over_default = format!(
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        (100u64 << 20) + 1
    );
    let r = exchange(gw.addr, over_default.as_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.header("sluicegate-error"), Some("body_too_large"));
    bystander.assert_served().await;
}

/// One HTTP/2 (h2c, prior knowledge) request with `declared` as its
/// `content-length` (if any) and `chunks` as its DATA frames; the status and the
/// `sluicegate-error` field of the answer, or the stream's reset reason.
async fn h2_upload(
    addr: std::net::SocketAddr,
    declared: Option<usize>,
    chunks: &[&[u8]],
) -> Result<(u16, Option<String>, Bytes), h2::Error> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await?;
    let mut req = Request::post("http://t/upload");
    if let Some(len) = declared {
        req = req.header("content-length", len);
    }
    let req = req.body(()).expect("request");
    let (resp, mut stream) = client.send_request(req, chunks.is_empty())?;
    for (i, chunk) in chunks.iter().enumerate() {
        stream.reserve_capacity(chunk.len());
        // A refused stream may stop taking data: what matters is the answer.
        if stream
            .send_data(Bytes::copy_from_slice(chunk), i + 1 == chunks.len())
            .is_err()
        {
            break;
        }
    }
    let resp = tokio::time::timeout(WAIT, resp).await.expect("bounded")?;
    let status = resp.status().as_u16();
    let cause = resp
        .headers()
        .get("sluicegate-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, body.data())
        .await
        .expect("bounded")
    {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    drop(client);
    conn.abort();
    Ok((status, cause, Bytes::from(got)))
}

#[tokio::test]
async fn bodies_over_max_request_body_are_413_over_http2() {
    let a = agents("a", "v1", 1).await;
    let up = agents("upload", "v1", 1).await;
    let route = format!(
        "[[pools]]\nname = \"up\"\nbackends = {}\n[[routes]]\nname = \"upload\"\nmatch = {{ path_prefix = \"/upload\" }}\nsplit = [{{ pool = \"up\", weight = 1 }}]\nmax_request_body = 16",
        backends(&up)
    );
    let gw = TestGateway::start(&config("", &backends(&a), &route)).await;
    // Declared too large: refused before the backend is contacted.
    let (status, cause, _) = h2_upload(gw.addr, Some(17), &[b"01234567890123456"])
        .await
        .expect("answered");
    assert_eq!((status, cause.as_deref()), (413, Some("body_too_large")));
    assert_eq!(
        up[0].requests(),
        0,
        "a declared-too-large body is never forwarded"
    );
    // No content-length, DATA frames past the limit: cut at the limit, 413.
    let (status, cause, _) = h2_upload(gw.addr, None, &[b"0123456789abcdef", b"more"])
        .await
        .expect("answered");
    assert_eq!((status, cause.as_deref()), (413, Some("body_too_large")));
    // Exactly the limit, in two frames and without a length: forwarded whole.
    let (status, _, body) = h2_upload(gw.addr, None, &[b"01234567", b"89abcdef"])
        .await
        .expect("answered");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"body_bytes\":16"), "{text}");
    // With a length that fits: forwarded whole too.
    let (status, _, body) = h2_upload(gw.addr, Some(16), &[b"0123456789abcdef"])
        .await
        .expect("answered");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}
