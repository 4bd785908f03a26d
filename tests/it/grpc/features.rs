//! HTTP/2 pools and the rest of the gateway (issue 26, items 5 and 6): active
//! HTTP probes speak HTTP/2 on an `h2c` pool's connections (an HTTP/1.1-only
//! backend fails them, saying why), cookie-keyed balancing keeps a session on
//! its backend, and a drain lets an open stream finish while new requests
//! avoid the backend. The backends are hyper HTTP/2 servers of the test's own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{h2c_pool, route_to};
use crate::support::live::{config_text, LiveGateway};
use crate::support::WAIT;

/// A response body fed chunk by chunk by the test.
struct Fed(mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// An HTTP/2-only backend named `name`: `/health` is 200, every other path is
/// 200 with `x-agent: name` and a body starting with `name\n`; on `/slow` the
/// body goes on with what the test sends on the returned channel's receiver
/// (one slow answer at a time) and ends when the test drops its sender.
struct H2Backend {
    addr: SocketAddr,
    slow: mpsc::Receiver<mpsc::Sender<Bytes>>,
    _stop: tokio_util::sync::DropGuard,
}

async fn h2_backend(name: &'static str) -> H2Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let (slow_tx, slow) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = stopped.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => return,
                },
            };
            let slow_tx = slow_tx.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let slow_tx = slow_tx.clone();
                        async move {
                            let (tx, rx) = mpsc::channel(4);
                            let _ = tx.send(Bytes::from(format!("{name}\n"))).await;
                            if req.uri().path() == "/slow" {
                                let _ = slow_tx.send(tx).await;
                            }
                            let resp = Response::builder()
                                .header("x-agent", name)
                                .body(Fed(rx))
                                .expect("response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    H2Backend {
        addr,
        slow,
        _stop: stop.drop_guard(),
    }
}

/// An HTTP/1.1-only backend (hyper's HTTP/1 server): 200 to anything.
async fn http1_only() -> (SocketAddr, tokio_util::sync::DropGuard) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = stopped.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => return,
                },
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                        Bytes::from_static(b"HTTP/1.1 here\n"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, stop.drop_guard())
}

/// An HTTP/2 (prior knowledge) connection to the gateway.
async fn h2_client(gw: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(gw).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// `GET path` on `sender`; the status, `x-agent` and the whole body.
async fn fetch(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    path: &str,
    cookie: Option<&str>,
) -> (u16, String, String) {
    let mut req = Request::get(format!("http://test.local{path}"));
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let resp = tokio::time::timeout(WAIT, async {
        let resp = sender
            .send_request(req.body(Empty::new()).expect("request"))
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let agent = resp
            .headers()
            .get("x-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, agent, String::from_utf8_lossy(&body).into_owned())
    })
    .await;
    resp.expect("answered in time")
}

/// Opens `/slow` streams through the gateway until one lands on `backend`
/// (named `name`; round robin over two backends: the first or second call);
/// its response head and the feed of the rest of its body.
async fn open_slow(
    client: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    backend: &mut H2Backend,
    name: &str,
) -> (Response<hyper::body::Incoming>, mpsc::Sender<Bytes>) {
    for _ in 0..4 {
        let req = Request::get("http://test.local/slow")
            .body(Empty::new())
            .expect("request");
        let resp = tokio::time::timeout(WAIT, client.send_request(req))
            .await
            .expect("head in time")
            .expect("response");
        if resp.headers()["x-agent"] == name {
            let feed = tokio::time::timeout(WAIT, backend.slow.recv())
                .await
                .expect("in time")
                .expect("the slow answer's feed");
            return (resp, feed);
        }
        // Another backend's slow answer: dropping it resets its stream.
    }
    panic!("no stream landed on {name}");
}

/// Polls the admin state (bounded by [`WAIT`]) until backend `addr` of `pool`
/// satisfies `done`; returns its `last_probe`.
async fn until_backend(
    gw: &LiveGateway,
    pool: &str,
    addr: SocketAddr,
    done: impl Fn(bool, &str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = gw.state().await;
        let b = state
            .backend(pool, &addr.to_string())
            .expect("backend in the state");
        let last = b.last_probe.clone().unwrap_or_default();
        if done(b.healthy, &last) {
            return last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pool}/{addr}: not reached; healthy {}, last_probe {last:?}",
            b.healthy
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

const PROBE: &str = "[pools.health]\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_probes_of_an_h2c_pool_speak_http2_and_name_an_http1_backend() {
    let good = h2_backend("h2-a").await;
    let (h1, _h1_stop) = http1_only().await;
    let grpc_probe = "[pools.health]\ngrpc = true\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n";
    let body = format!(
        "{}{PROBE}{}{PROBE}{}{grpc_probe}{}",
        h2c_pool("a", "h2c", &[good.addr]),
        h2c_pool("b", "h2c", &[h1]),
        h2c_pool("c", "h2c", &[h1]),
        route_to("a"),
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    // The h2 backend speaks nothing but HTTP/2: its pass proves the probe did.
    let last = until_backend(&gw, "a", good.addr, |h, l| h && !l.is_empty()).await;
    assert_eq!(last, "pass: HTTP 200");
    let last = until_backend(&gw, "b", h1, |h, l| !h && !l.is_empty()).await;
    assert!(last.contains("does not speak HTTP/2"), "{last}");
    // The gRPC health check of such a backend says the same.
    let last = until_backend(&gw, "c", h1, |h, l| !h && !l.is_empty()).await;
    assert!(last.contains("does not speak HTTP/2"), "{last}");
    let mut client = h2_client(gw.addr).await;
    let (status, agent, _) = fetch(&mut client, "/x", None).await;
    assert_eq!((status, agent.as_str()), (200, "h2-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_keyed_session_stays_on_its_h2_backend() {
    let a = h2_backend("h2-a").await;
    let b = h2_backend("h2-b").await;
    let body = format!(
        "{}balance = \"hash\"\nhash_key = \"cookie:session\"\n{}",
        h2c_pool("p", "h2c", &[a.addr, b.addr]),
        route_to("p"),
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let mut client = h2_client(gw.addr).await;
    let mut seen = std::collections::HashSet::new();
    for session in 0..16 {
        let cookie = format!("session=s{session}");
        let (_, first, _) = fetch(&mut client, "/x", Some(&cookie)).await;
        assert!(first.starts_with("h2-"), "{first:?}");
        for _ in 0..5 {
            let (status, agent, _) = fetch(&mut client, "/x", Some(&cookie)).await;
            assert_eq!((status, agent.as_str()), (200, first.as_str()), "{cookie}");
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2, "16 sessions over both backends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_cookie_keeps_a_client_on_its_h2_pool() {
    let a = h2_backend("h2-a").await;
    let b = h2_backend("h2-b").await;
    let body = format!(
        "{}{}[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"a\", weight = 50 }}, {{ pool = \"b\", weight = 50 }}]\nsticky = {{ cookie = \"sg_pool\" }}\n",
        h2c_pool("a", "h2c", &[a.addr]),
        h2c_pool("b", "h2c", &[b.addr]),
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..8 {
        // A new client each time: the split picks its pool, the cookie keeps it.
        let first = crate::support::get(gw.addr, "/x", &[]).await;
        let cookie = first.headers["set-cookie"].to_str().expect("ASCII");
        let pair = cookie.split(';').next().expect("a pair").to_owned();
        let agent = first.agent().to_owned();
        assert!(agent.starts_with("h2-"), "{first:?}");
        let mut client = h2_client(gw.addr).await;
        for _ in 0..5 {
            let (status, again, _) = fetch(&mut client, "/x", Some(&pair)).await;
            assert_eq!((status, again.as_str()), (200, agent.as_str()), "{pair}");
        }
        seen.insert(agent);
    }
    assert!(!seen.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_h2_backend_finishes_its_stream_and_gets_no_new_ones() {
    let mut a = h2_backend("h2-a").await;
    let b = h2_backend("h2-b").await;
    let body = format!(
        "{}{}",
        h2c_pool("p", "h2c", &[a.addr, b.addr]),
        route_to("p")
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let mut client = h2_client(gw.addr).await;
    let (resp, feed) = open_slow(&mut client, &mut a, "h2-a").await;
    let drained = gw
        .api(
            Method::POST,
            &format!("/api/v1/pools/p/backends/{}/drain", a.addr),
            None,
        )
        .await;
    assert!(drained.status.is_success(), "{drained:?}");
    for _ in 0..10 {
        let (status, agent, _) = fetch(&mut client, "/x", None).await;
        assert_eq!((status, agent.as_str()), (200, "h2-b"));
    }
    let view = gw.state().await;
    let backend = view.backend("p", &a.addr.to_string()).expect("backend");
    assert!(backend.draining);
    assert_eq!(backend.inflight, 1, "the open stream");
    feed.send(Bytes::from_static(b"rest\n"))
        .await
        .expect("feed");
    drop(feed);
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("in time")
        .expect("the whole body")
        .to_bytes();
    assert_eq!(&body[..], b"h2-a\nrest\n");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_a_removed_h2_backend_runs_until_stream_close_delay() {
    let mut a = h2_backend("h2-a").await;
    let b = h2_backend("h2-b").await;
    let text = |backends: &[SocketAddr]| {
        let body = format!("{}{}", h2c_pool("p", "h2c", backends), route_to("p"));
        config_text(&body, "stream_close_delay = \"400ms\"", "")
    };
    let gw = LiveGateway::start(&text(&[a.addr, b.addr])).await;
    let mut client = h2_client(gw.addr).await;
    let (resp, feed) = open_slow(&mut client, &mut a, "h2-a").await;
    let mut body = resp.into_body();
    let first = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("in time");
    assert!(matches!(first, Some(Ok(_))), "{first:?}");

    // `a` leaves the file: nothing is cut at the reload...
    gw.reload(&text(&[b.addr])).await;
    let removed_at = tokio::time::Instant::now();
    feed.send(Bytes::from_static(b"after the reload\n"))
        .await
        .expect("the stream is still open upstream");
    let frame = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("in time")
        .expect("a frame")
        .expect("not an error");
    assert_eq!(
        frame.into_data().expect("data").as_ref(),
        b"after the reload\n"
    );
    // ...new requests go to `b`...
    for _ in 0..4 {
        let (status, agent, _) = fetch(&mut client, "/x", None).await;
        assert_eq!((status, agent.as_str()), (200, "h2-b"));
    }
    assert_eq!(gw.counters().streams_closed, 0);
    // ...and after the delay the stream is closed, counted, and `a`'s side of
    // it is gone (its connection closed).
    let c = gw.wait_counters(|c| c.streams_closed == 1).await;
    assert_eq!(c.streams_closed, 1);
    assert!(
        removed_at.elapsed() >= std::time::Duration::from_millis(350),
        "closed too early"
    );
    tokio::time::timeout(WAIT, feed.closed())
        .await
        .expect("the backend's stream ended after the delay");
    let rest = tokio::time::timeout(WAIT, async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the client's stream ended after the delay");
    assert!(
        matches!(rest, Some(Err(_))),
        "a cut stream, not a clean end: {rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_a_line_for_an_h2_upstream_request() {
    let a = h2_backend("h2-a").await;
    let to: &[(&str, &str)] = &[("x-to", "al")];
    let (lines, replies) = crate::access_log::run_with_log_in_pool(
        "access = \"stdout\"",
        "protocol = \"h2c\"",
        a.addr,
        &[("/over-h2", to)],
    )
    .await;
    assert_eq!(replies[0].status, 200);
    assert_eq!(replies[0].agent(), "h2-a", "answered by the h2 backend");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
    assert_eq!(line["path"], "/over-h2");
    assert_eq!(line["status"], 200);
    assert_eq!(line["pool"], "al");
    assert_eq!(line["backend"], a.addr.to_string());
    assert_eq!(line["error"], "");
    assert_eq!(line["complete"], true);
    assert_eq!(line["bytes"], replies[0].body.len());
    assert!(
        line["upstream_ms"].as_f64().is_some_and(|u| u > 0.0),
        "{line}"
    );
}
