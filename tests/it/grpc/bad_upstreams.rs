//! Bad HTTP/2 backends (issue 26, item 6): a backend of the test's own that
//! speaks HTTP/2 frame by frame over a plain `TcpListener`, so it can break the
//! rules (a garbage HPACK block, a reset or a GOAWAY in the middle of an answer,
//! a head over the gateway's header-list limit, CONTINUATION frames without
//! end), and an HTTP/1-only backend in an `h2c` pool. Each call gets a clear
//! error (a gRPC status for a gRPC client, a 502 with `sluicegate-error` for
//! others), and a healthy stream to another backend, started before and still
//! open meanwhile, completes.
//!
//! The backend answers a request by its framing, not by its path (it does not
//! decode HPACK): a bodiless request (END_STREAM on its HEADERS) gets a slow,
//! well-formed answer; a request with a body gets the case's misdeed.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluicegate::testing::data_plane::backend::Backend;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::raw_h2::{Misdeed, RawH2, FLOOD_BOUND};
use super::{grpc_frame, route_to};
use crate::support::{TestGateway, WAIT};

/// What a client got: the head (status 0 when the stream failed before it),
/// the data, the trailers, and the error that ended the body, if one did.
#[derive(Debug)]
struct Outcome {
    status: u16,
    headers: HeaderMap,
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    error: Option<String>,
}

impl Outcome {
    /// A field of the trailers, else of the head.
    fn field(&self, name: &str) -> &str {
        self.trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| self.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// One call over its own HTTP/2 client connection: a gRPC call (a body, gRPC
/// content type), a plain POST with a body, or a bodiless GET (which the
/// backend answers well).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Grpc,
    Plain,
    Get,
}

async fn call(gw: SocketAddr, path: &str, kind: Kind) -> Outcome {
    let (first, rest) = start_call(gw, path, kind).await;
    finish_call(first, rest).await
}

type Started = (
    Result<http::Response<hyper::body::Incoming>, String>,
    tokio::task::JoinHandle<()>,
);

/// Sends the call and waits for its head (or its failure).
async fn start_call(gw: SocketAddr, path: &str, kind: Kind) -> Started {
    tokio::time::timeout(WAIT, async {
        let stream = TcpStream::connect(gw).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("handshake");
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let (method, ctype, body) = match kind {
            Kind::Grpc => (Method::POST, "application/grpc", grpc_frame(b"call")),
            Kind::Plain => (Method::POST, "text/plain", Bytes::from_static(b"plain")),
            Kind::Get => (Method::GET, "text/plain", Bytes::new()),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("http://t.local{path}"))
            .header("content-type", ctype)
            .header("te", "trailers")
            .body(Full::new(body))
            .expect("request");
        let resp = sender.send_request(req).await.map_err(|e| e.to_string());
        (resp, driver)
    })
    .await
    .expect("the head (or its failure) in time")
}

/// Reads the rest of a started call.
async fn finish_call(
    first: Result<http::Response<hyper::body::Incoming>, String>,
    driver: tokio::task::JoinHandle<()>,
) -> Outcome {
    let outcome = tokio::time::timeout(WAIT, async {
        let resp = match first {
            Ok(resp) => resp,
            Err(error) => {
                return Outcome {
                    status: 0,
                    headers: HeaderMap::new(),
                    data: Vec::new(),
                    trailers: None,
                    error: Some(error),
                }
            }
        };
        let (parts, mut body) = resp.into_parts();
        let mut out = Outcome {
            status: parts.status.as_u16(),
            headers: parts.headers,
            data: Vec::new(),
            trailers: None,
            error: None,
        };
        // Bounded by the timeout around it.
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => out.data.extend_from_slice(&data),
                    Err(frame) => out.trailers = frame.into_trailers().ok(),
                },
                Err(err) => {
                    out.error = Some(err.to_string());
                    break;
                }
            }
        }
        out
    })
    .await
    .expect("the call ended in time");
    driver.abort();
    outcome
}

/// The healthy stream's expected body: three messages.
fn slow_body() -> Vec<u8> {
    (0..3u8)
        .flat_map(|i| grpc_frame(&[b'o', b'k', b'0' + i]).to_vec())
        .collect()
}

fn assert_healthy(out: &Outcome, what: &str) {
    assert_eq!(out.status, 200, "{what}: {out:?}");
    assert_eq!(out.error, None, "{what}: {out:?}");
    assert_eq!(out.data, slow_body(), "{what}: {out:?}");
    assert_eq!(out.field("grpc-status"), "0", "{what}: {out:?}");
}

/// `/bad…` to the bad backend, everything else to the good one.
fn config(bad: SocketAddr, good: SocketAddr, bad_protocol: &str) -> String {
    format!(
        r#"[[pools]]
name = "bad"
protocol = "{bad_protocol}"
backends = [{{ addr = "{bad}" }}]
[[pools]]
name = "good"
protocol = "h2c"
backends = [{{ addr = "{good}" }}]
[[routes]]
name = "bad"
match = {{ path_prefix = "/bad" }}
split = [{{ pool = "bad", weight = 1 }}]
timeouts = {{ response_header = "3s", idle = "3s" }}
{}"#,
        route_to("good")
    )
}

fn bad_backend(gw: &TestGateway) -> Backend {
    let snapshot = gw.snapshot.load();
    let pool = snapshot.pool("bad").expect("pool bad");
    let backend = pool.backends().next().expect("one backend").clone();
    backend
}

/// A gateway in front of a backend doing `misdeed` and a good one; the good
/// stream is started (its head in) before the caller's bad calls.
struct Case {
    bad: RawH2,
    good: RawH2,
    gw: TestGateway,
}

impl Case {
    async fn start(misdeed: Misdeed) -> Case {
        let bad = RawH2::start(misdeed).await;
        let good = RawH2::start(Misdeed::None).await;
        let gw = TestGateway::start(&config(bad.addr, good.addr, "h2c")).await;
        Case { bad, good, gw }
    }

    /// One gRPC call and one plain call to the bad backend, beside a healthy
    /// stream to the good one.
    async fn bad_grpc_and_plain(&self) -> (Outcome, Outcome) {
        self.beside_a_healthy_stream(async {
            (
                call(self.gw.addr, "/bad/grpc", Kind::Grpc).await,
                call(self.gw.addr, "/bad/plain", Kind::Plain).await,
            )
        })
        .await
    }

    /// Runs `calls` while a healthy stream to the good backend is open, then
    /// checks that stream.
    async fn beside_a_healthy_stream<F, T>(&self, calls: F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let (first, driver) = start_call(self.gw.addr, "/good/stream", Kind::Get).await;
        let out = calls.await;
        let healthy = finish_call(first, driver).await;
        assert_healthy(&healthy, "the healthy stream beside the bad calls");
        assert!(self.good.connections.load(Ordering::Relaxed) >= 1);
        out
    }
}

fn assert_grpc_unavailable(out: &Outcome, cause: &str) {
    assert_eq!(out.status, 200, "a gRPC answer, not an HTTP error: {out:?}");
    assert_eq!(out.field("grpc-status"), "14", "UNAVAILABLE: {out:?}");
    assert_eq!(out.field("sluicegate-error"), cause, "{out:?}");
    assert!(
        out.field("grpc-message")
            .starts_with(&format!("sluicegate-error={cause}: ")),
        "{out:?}"
    );
}

fn assert_502(out: &Outcome, cause: &str) {
    assert_eq!(out.status, 502, "{out:?}");
    assert_eq!(out.field("sluicegate-error"), cause, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_frames_fail_the_call_and_not_the_other_backends_stream() {
    let case = Case::start(Misdeed::BadHpack).await;
    let (grpc, plain) = case.bad_grpc_and_plain().await;
    assert_grpc_unavailable(&grpc, "backend_failed");
    assert_502(&plain, "backend_failed");
    // Each call broke its connection: one per call, none sent twice.
    assert_eq!(case.bad.misdeeds.load(Ordering::Relaxed), 2);
    assert_eq!(case.bad.connections.load(Ordering::Relaxed), 2);
    // The backend still serves what it serves well, on a new connection.
    assert_healthy(&call(case.gw.addr, "/bad/get", Kind::Get).await, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_before_the_head_is_a_clear_error_and_not_sent_again() {
    let case = Case::start(Misdeed::ResetBeforeHead).await;
    let (grpc, plain) = case.bad_grpc_and_plain().await;
    assert_grpc_unavailable(&grpc, "backend_failed");
    assert_502(&plain, "backend_failed");
    assert_eq!(
        case.bad.misdeeds.load(Ordering::Relaxed),
        2,
        "never sent twice"
    );
    // A stream's reset leaves its connection in use.
    assert_eq!(case.bad.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_response_ends_the_grpc_call_with_a_status_and_spares_its_connection() {
    let case = Case::start(Misdeed::ResetMidResponse).await;
    let (grpc, plain, same_conn) = case
        .beside_a_healthy_stream(async {
            // A healthy stream on the bad backend's own connection, open while
            // the other streams on it are reset.
            let (first, driver) = start_call(case.gw.addr, "/bad/get", Kind::Get).await;
            let grpc = call(case.gw.addr, "/bad/grpc", Kind::Grpc).await;
            let plain = call(case.gw.addr, "/bad/plain", Kind::Plain).await;
            (grpc, plain, finish_call(first, driver).await)
        })
        .await;
    assert_healthy(
        &same_conn,
        "the stream sharing the reset streams' connection",
    );
    assert_eq!(case.bad.connections.load(Ordering::Relaxed), 1);
    // The head had gone out: the gRPC client gets the message that came and
    // then a status in trailers that names the cause.
    assert_eq!(grpc.data, grpc_frame(b"first").to_vec(), "{grpc:?}");
    assert_grpc_unavailable(&grpc, "backend_failed");
    assert!(grpc.field("grpc-message").contains("cut short"), "{grpc:?}");
    // Others see the body end in an error, never a clean end.
    assert_eq!(plain.status, 200, "{plain:?}");
    assert!(plain.error.is_some(), "{plain:?}");
    assert_eq!(bad_backend(&case.gw).state.broken_streams(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_header_list_limit_is_refused_once_not_retried() {
    let case = Case::start(Misdeed::HugeHead).await;
    let (grpc, plain, same_conn) = case
        .beside_a_healthy_stream(async {
            let (first, driver) = start_call(case.gw.addr, "/bad/get", Kind::Get).await;
            let grpc = call(case.gw.addr, "/bad/grpc", Kind::Grpc).await;
            let plain = call(case.gw.addr, "/bad/plain", Kind::Plain).await;
            (grpc, plain, finish_call(first, driver).await)
        })
        .await;
    assert_grpc_unavailable(&grpc, "backend_failed");
    assert_502(&plain, "backend_failed");
    // The backend did answer: what the gateway refused to take must not be
    // taken as a stream the backend never processed (and sent again).
    assert_eq!(
        case.bad.misdeeds.load(Ordering::Relaxed),
        2,
        "never sent twice"
    );
    assert_healthy(&same_conn, "the stream sharing the connection");
    assert_eq!(case.bad.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_limit_is_not_taken_for_a_stream_the_backend_refused() {
    // A bodiless request could go again if the gateway's own refusal of the
    // head (REFUSED_STREAM, sent by h2) read as the backend's.
    let bad = RawH2::start_with(Misdeed::HugeHead, true).await;
    let good = RawH2::start(Misdeed::None).await;
    let gw = TestGateway::start(&config(bad.addr, good.addr, "h2c")).await;
    let get = call(gw.addr, "/bad/get", Kind::Get).await;
    assert_502(&get, "backend_failed");
    assert_eq!(bad.misdeeds.load(Ordering::Relaxed), 1, "sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off_and_memory_stays_bounded() {
    let case = Case::start(Misdeed::ContinuationFlood).await;
    let grpc = case
        .beside_a_healthy_stream(call(case.gw.addr, "/bad/grpc", Kind::Grpc))
        .await;
    assert_grpc_unavailable(&grpc, "backend_failed");
    // Wait (bounded) for the writer to record how far it got.
    let written = tokio::time::timeout(WAIT, async {
        loop {
            let n = case.bad.flood_written.load(Ordering::Relaxed);
            if n > 0 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the flood ended");
    assert!(
        case.bad.flood_cut.load(Ordering::Relaxed),
        "the gateway kept the connection open under the flood ({written} bytes)"
    );
    assert!(
        written < FLOOD_BOUND,
        "the gateway took {written} bytes of one header block"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_goaway_mid_stream_lets_the_stream_finish() {
    let case = Case::start(Misdeed::GoawayGraceful).await;
    let grpc = case
        .beside_a_healthy_stream(call(case.gw.addr, "/bad/grpc", Kind::Grpc))
        .await;
    assert_eq!(grpc.status, 200, "{grpc:?}");
    assert_eq!(grpc.error, None, "{grpc:?}");
    let mut want = grpc_frame(b"first").to_vec();
    want.extend_from_slice(&grpc_frame(b"second"));
    assert_eq!(grpc.data, want, "{grpc:?}");
    assert_eq!(grpc.field("grpc-status"), "0", "{grpc:?}");
    // The next call goes on a new connection: the first went away.
    let next = call(case.gw.addr, "/bad/grpc", Kind::Grpc).await;
    assert_eq!(next.field("grpc-status"), "0", "{next:?}");
    assert_eq!(case.bad.connections.load(Ordering::Relaxed), 2);
    assert_eq!(case.bad.misdeeds.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_goaway_mid_stream_ends_the_call_with_a_status() {
    let case = Case::start(Misdeed::GoawayAbrupt).await;
    let (grpc, plain) = case.bad_grpc_and_plain().await;
    assert_eq!(grpc.data, grpc_frame(b"first").to_vec(), "{grpc:?}");
    assert_grpc_unavailable(&grpc, "backend_failed");
    assert_eq!(plain.status, 200, "{plain:?}");
    assert!(plain.error.is_some(), "{plain:?}");
    assert_eq!(bad_backend(&case.gw).state.broken_streams(), 2);
    assert_eq!(case.bad.connections.load(Ordering::Relaxed), 2);
}

/// A backend that speaks HTTP/1.1 only (hyper's HTTP/1 server): 200 to anything.
async fn http1_only() -> (SocketAddr, CancellationToken) {
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
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"hello from HTTP/1.1\n"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_only_backend_in_an_h2c_pool_is_named_as_such() {
    let (h1, _stop) = http1_only().await;
    let good = RawH2::start(Misdeed::None).await;
    // Passive ejection after two failures in a row: the backend's state shows it.
    let text = config(h1, good.addr, "h2c").replacen(
        "[[pools]]\nname = \"good\"",
        "[pools.outlier]\nconsecutive_failures = 2\nmax_ejected_percent = 100\nbase_ejection = \"60s\"\n[[pools]]\nname = \"good\"",
        1,
    );
    let gw = TestGateway::start(&text).await;
    let (first, driver) = start_call(gw.addr, "/good/stream", Kind::Get).await;
    let grpc = call(gw.addr, "/bad/grpc", Kind::Grpc).await;
    let plain = call(gw.addr, "/bad/plain", Kind::Get).await;
    assert_healthy(&finish_call(first, driver).await, "the healthy stream");
    assert_grpc_unavailable(&grpc, "upstream_not_h2");
    assert!(grpc.field("grpc-message").contains("HTTP/2"), "{grpc:?}");
    assert_502(&plain, "upstream_not_h2");
    assert!(
        bad_backend(&gw).state.is_ejected(),
        "a failure of the backend's"
    );
    let after = call(gw.addr, "/bad/grpc", Kind::Grpc).await;
    assert_grpc_unavailable(&after, "no_healthy_backend");
}
