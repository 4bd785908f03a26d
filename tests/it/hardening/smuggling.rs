//! Request smuggling and framing: the exact bytes of each attack on a raw socket.
//!
//! Every ambiguous request is refused (or, where RFC 9112 gives one safe reading,
//! read that way and the connection closed), the backend never sees it, and a
//! bystander client is served throughout. What passes is re-framed: the backend
//! gets one unambiguous length and none of the client's hop-by-hop fields.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::raw::{exchange, Answer, Bystander, FakeBackend};
use crate::support::{agents, backends, TestGateway, WAIT};

fn config(backends: &str) -> String {
    format!(
        r#"
[[pools]]
name = "p"
backends = {backends}
[[routes]]
name = "all"
split = [{{ pool = "p", weight = 1 }}]
"#
    )
}

/// (name, bytes, status) of requests that must be refused and never forwarded.
const REFUSED: &[(&str, &[u8], u16)] = &[
    (
        "differing duplicate Content-Length",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    (
        "Content-Length with a sign",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
        400,
    ),
    (
        "obs-fold continuation line",
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n",
        400,
    ),
    (
        "space before the colon",
        b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "control byte in a field name",
        b"GET / HTTP/1.1\r\nHost: t\r\nX-\x01A: b\r\n\r\n",
        400,
    ),
    (
        "NUL in a field value",
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
        400,
    ),
    (
        "bare CR in a field value",
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n",
        400,
    ),
    (
        "Transfer-Encoding whose last coding is not chunked",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "Transfer-Encoding in HTTP/1.0",
        b"POST / HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "gzip transfer coding the backend would never be told about",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "Transfer-Encoding chunked twice",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "HTTP/1.1 without Host",
        b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
        400,
    ),
    (
        "two Host fields",
        b"GET / HTTP/1.1\r\nHost: t\r\nHost: evil\r\n\r\n",
        400,
    ),
    (
        "invalid Host",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        400,
    ),
    (
        "absolute-form naming another host",
        b"GET http://evil.local/ HTTP/1.1\r\nHost: t\r\n\r\n",
        400,
    ),
    (
        "absolute-form with a foreign scheme",
        b"GET ftp://t/ HTTP/1.1\r\nHost: t\r\n\r\n",
        400,
    ),
    (
        "CONNECT tunnel request",
        b"CONNECT evil.local:443 HTTP/1.1\r\nHost: evil.local:443\r\n\r\n",
        405,
    ),
];

#[tokio::test]
async fn ambiguous_requests_are_refused_and_never_forwarded() {
    let a = agents("a", "v1", 1).await;
    let gw = TestGateway::start(&config(&backends(&a))).await;
    let bystander = Bystander::start(gw.addr);
    let mut wrong = Vec::new();
    for (name, bytes, status) in REFUSED {
        let r = exchange(gw.addr, bytes).await;
        if r.status != *status || !r.closed {
            wrong.push(format!(
                "{name}: {} closed={} {:?}",
                r.status, r.closed, r.text
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    bystander.assert_served().await;
    // The bystander's requests are the only ones the backend saw.
    let seen = a[0].requests();
    let bystander_only = crate::support::get(gw.addr, "/count", &[]).await;
    assert_eq!(bystander_only.status, 200);
    assert_eq!(a[0].requests(), seen + 1, "nothing refused was forwarded");
}

#[tokio::test]
async fn cl_te_conflict_is_read_as_chunked_then_the_connection_closes() {
    // The classic CL.TE smuggle: a front end trusting Content-Length would pass
    // the "GET /smuggled" on as a second request. hyper reads chunked (TE wins,
    // RFC 9112 §6.3), drops the length and closes after answering, so the tail
    // is never parsed as a request, and the backend gets one re-framed request.
    let fake = FakeBackend::start(Answer::Bytes(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    ))
    .await;
    let gw = TestGateway::start(&config(&format!("[{{ addr = \"{}\" }}]", fake.addr))).await;
    let bystander = Bystander::start(gw.addr);
    for attack in [
        &b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 45\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 45\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"[..],
    ] {
        let r = exchange(gw.addr, attack).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.closed, "the gateway must close after a CL+TE request");
        assert_eq!(r.text.matches("HTTP/1.1").count(), 1, "one answer: {}", r.text);
    }
    bystander.assert_served().await;
    let seen = fake.all_received().to_ascii_lowercase();
    assert!(!seen.contains("/smuggled"), "{seen}");
    for request in seen.split("post / http/1.1").skip(1) {
        assert!(!request.contains("content-length: 45"), "{request}");
    }
}

#[tokio::test]
async fn forwarded_requests_are_reframed_by_the_gateway() {
    let fake = FakeBackend::start(Answer::Bytes(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    ))
    .await;
    let gw = TestGateway::start(&config(&format!("[{{ addr = \"{}\" }}]", fake.addr))).await;
    // Identical duplicate lengths are one length (RFC 9110 §8.6); odd chunking,
    // a chunk extension, a trailer and hop-by-hop fields are all the client's.
    let sent = [
        &b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"[..],
        &b"POST /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\r\n1;ext=1\r\na\r\n2\r\nbc\r\n0\r\nX-Trailer: t\r\n\r\n"[..],
    ];
    for bytes in sent {
        let r = exchange(gw.addr, bytes).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let seen = fake.all_received().to_ascii_lowercase();
    let a = seen.split("post /b").next().unwrap_or("");
    assert_eq!(a.matches("content-length: 3").count(), 1, "{a}");
    let b = seen.split("post /b").nth(1).expect("/b forwarded");
    for hop in ["x-hop", "keep-alive", "\r\nte:", ";ext=1"] {
        assert!(!b.contains(hop), "{hop} forwarded: {b}");
    }
    // One framing only, chosen by the gateway.
    let framings =
        b.matches("transfer-encoding: chunked").count() + b.matches("content-length").count();
    assert_eq!(framings, 1, "{b}");
}

#[tokio::test]
async fn h2_host_that_differs_from_authority_is_400() {
    let a = agents("a", "v1", 1).await;
    let gw = TestGateway::start(&config(&backends(&a))).await;
    tokio::time::timeout(WAIT, async {
        let stream = TcpStream::connect(gw.addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let send = |authority: &str, host: Option<&str>| {
            let mut req = Request::get(format!("http://{authority}/h2"));
            if let Some(host) = host {
                req = req.header("host", host);
            }
            req.body(Full::new(Bytes::new())).expect("request")
        };
        let bad = sender
            .send_request(send("t.local", Some("evil.local")))
            .await
            .expect("answer");
        assert_eq!(bad.status(), 400);
        assert_eq!(bad.headers()["sluicegate-error"], "host_mismatch");
        let _ = bad.into_body().collect().await;
        // Userinfo in :authority is refused as it is in Host on HTTP/1.
        let userinfo = sender
            .send_request(send("user@t.local", None))
            .await
            .expect("answer");
        assert_eq!(userinfo.status(), 400);
        assert_eq!(userinfo.headers()["sluicegate-error"], "invalid_host");
        let _ = userinfo.into_body().collect().await;
        for host in [None, Some("t.local")] {
            let ok = sender
                .send_request(send("t.local", host))
                .await
                .expect("answer");
            assert_eq!(ok.status(), 200, "host {host:?}");
        }
    })
    .await
    .expect("bounded");
    assert_eq!(
        a[0].requests(),
        2,
        "only the unambiguous requests were forwarded"
    );
}

/// The body the backend got after the first request head of `received`.
fn body_after_head(received: &str) -> &str {
    received.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[tokio::test]
async fn bodies_of_unknown_length_on_any_method_are_forwarded_chunked() {
    // nginx forwards them; hyper's client would send a GET or HEAD with a body of
    // unknown length as bodiless, and the client's connection was then closed
    // under its still-sending body.
    let fake = FakeBackend::start(Answer::Bytes(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    ))
    .await;
    let gw = TestGateway::start(&config(&format!("[{{ addr = \"{}\" }}]", fake.addr))).await;
    for (n, method) in ["GET", "HEAD", "DELETE", "OPTIONS"].iter().enumerate() {
        // The chunked request, then a second one on the same connection: both answered.
        let bytes = format!(
            "{method} /u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
             GET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        );
        let r = exchange(gw.addr, bytes.as_bytes()).await;
        assert_eq!(r.status, 200, "{method}: {}", r.text);
        assert_eq!(
            r.text.matches("HTTP/1.1 200").count(),
            2,
            "{method}: the connection served the next request: {}",
            r.text
        );
        let received = {
            let all = fake.received.lock().expect("lock");
            String::from_utf8_lossy(&all[2 * n]).to_ascii_lowercase()
        };
        assert!(
            received.starts_with(&format!("{} /u", method.to_ascii_lowercase())),
            "{received}"
        );
        assert!(
            received.contains("transfer-encoding: chunked"),
            "{method}: {received}"
        );
        let body = body_after_head(&received);
        let dechunked: String = body
            .split("\r\n")
            .skip(1)
            .step_by(2)
            .collect::<Vec<_>>()
            .concat();
        assert_eq!(dechunked, "abcde", "{method}: {body:?}");
    }
}

#[tokio::test]
async fn h2_get_with_data_and_no_content_length_is_forwarded_chunked() {
    use futures_util::stream;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let fake = FakeBackend::start(Answer::Bytes(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
    ))
    .await;
    let gw = TestGateway::start(&config(&format!("[{{ addr = \"{}\" }}]", fake.addr))).await;
    tokio::time::timeout(WAIT, async {
        let stream = TcpStream::connect(gw.addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        // A stream body has no exact size: DATA frames and no content-length.
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::data(Bytes::from_static(b"de"))),
        ];
        let req = Request::get("http://t.local/h2")
            .body(StreamBody::new(stream::iter(frames)))
            .expect("request");
        let resp = sender.send_request(req).await.expect("answer");
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
    })
    .await
    .expect("bounded");
    let received = fake.all_received().to_ascii_lowercase();
    assert!(received.starts_with("get /h2"), "{received}");
    assert!(
        received.contains("transfer-encoding: chunked"),
        "{received}"
    );
    assert!(!received.contains("content-length"), "{received}");
    let body = body_after_head(&received);
    assert!(body.contains("abc") && body.contains("de"), "{body:?}");
    assert!(body.ends_with("0\r\n\r\n"), "{body:?}");
}

#[tokio::test]
async fn a_leading_empty_line_before_the_request_line_is_ignored() {
    // RFC 9112 §2.2; hyper already did, the plain fast path answered 400.
    let a = agents("a", "v1", 1).await;
    let gw = TestGateway::start(&config(&backends(&a))).await;
    for lead in ["\r\n", "\n", "\r\n\r\n"] {
        let bytes = format!("{lead}GET /count HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let r = exchange(gw.addr, bytes.as_bytes()).await;
        assert_eq!(r.status, 200, "{lead:?}: {}", r.text);
    }
    assert_eq!(a[0].requests(), 3);
}

#[tokio::test]
async fn no_content_from_a_backend_is_relayed_without_a_length() {
    let fake = FakeBackend::start(Answer::Bytes(
        b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nx-b: 1\r\n\r\n",
    ))
    .await;
    let gw = TestGateway::start(&config(&format!("[{{ addr = \"{}\" }}]", fake.addr))).await;
    let r = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(r.header("x-b"), Some("1"), "{}", r.text);
    assert_eq!(r.header("content-length"), None, "{}", r.text);
}

#[tokio::test]
async fn a_response_with_length_and_chunked_is_read_chunked_on_both_clients() {
    // RFC 9112 §6.3: the coding wins and the connection is not used again. A
    // bodiless GET goes on the gateway's own client (fast path on), a POST on
    // hyper's: both follow `framing::response_framing`.
    let fake = FakeBackend::start(Answer::Bytes(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ))
    .await;
    let gw = TestGateway::start(&config(&format!("[{{ addr = \"{}\" }}]", fake.addr))).await;
    let requests = [
        &b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"[..],
    ];
    for (n, bytes) in requests.iter().enumerate() {
        let r = exchange(gw.addr, bytes).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let body = r.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        assert!(body.contains("hello"), "the whole body: {}", r.text);
        assert_ne!(r.header("content-length"), Some("2"), "{}", r.text);
        // The suspect connection was closed, not pooled.
        fake.wait_closed(n + 1).await;
    }
}
