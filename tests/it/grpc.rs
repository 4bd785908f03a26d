//! HTTP/2 and gRPC to the backends (issue 26), against real peers: Python
//! `grpcio` as server and client (tests/grpc/*.py, generic handlers, no
//! generated code), `h2load` as a load generator, and a small `h2` server of the
//! test's own that limits streams and sends GOAWAY.
//!
//! The Python and h2load peers are required when `CI` is set (`.ci/run`
//! installs them); elsewhere a test without them prints a notice and passes.
//! gRPC-aware control (statuses in trailers, health checks, least_conn) is in
//! `control`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::support::{TestGateway, WAIT};

mod bad_upstreams;
mod control;
mod features;
mod long_stream;
mod raw_h2;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc");

/// Whether `what` can run here: true if so; false (with a notice) outside CI;
/// a failure in CI, where `.ci/run` installs it.
fn peer_available(what: &str, probe: &mut std::process::Command) -> bool {
    let ok = probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is needed in CI; .ci/run installs it"
        );
        eprintln!("NOTICE: {what} is not installed; skipping this test");
    }
    ok
}

fn grpcio() -> bool {
    peer_available(
        "python3 with grpcio (pip install grpcio grpcio-tools)",
        std::process::Command::new("python3").args(["-c", "import grpc"]),
    )
}

/// The Python gRPC server, ended (by its PID, through `kill_on_drop`) with the test.
struct PyServer {
    addr: SocketAddr,
    _child: Child,
}

impl PyServer {
    async fn start(name: &str) -> PyServer {
        PyServer::start_with(name, &[]).await
    }

    /// [`start`](Self::start) with more of `server.py`'s flags.
    async fn start_with(name: &str, flags: &[&str]) -> PyServer {
        let mut child = Command::new("python3")
            .arg(format!("{DIR}/server.py"))
            .args(["0", name])
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 tests/grpc/server.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.expect("read") {
                if let Some(port) = line.strip_prefix("PORT ") {
                    return port.trim().parse::<u16>().expect("port");
                }
            }
            panic!("the server ended without a port");
        })
        .await
        .expect("the gRPC server printed its port");
        PyServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: child,
        }
    }
}

fn h2c_pool(name: &str, protocol: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[[pools]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nbackends = [{}]\n",
        list.join(", ")
    )
}

fn route_to(pool: &str) -> String {
    format!("[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"{pool}\", weight = 1 }}]\n")
}

/// One gRPC message frame (uncompressed).
fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A response read whole over HTTP/2, trailers included.
pub(crate) struct H2Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
    trailers: Option<http::HeaderMap>,
    body: Bytes,
}

impl H2Reply {
    /// A field of the trailers, else of the head (trailers-only responses).
    pub(crate) fn field(&self, name: &str) -> &str {
        self.trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| self.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends a gRPC request over HTTP/2 (prior knowledge) to `addr`.
pub(crate) async fn grpc_h2(
    addr: SocketAddr,
    path: &str,
    payload: &[u8],
    extra: &[(&str, &str)],
) -> H2Reply {
    tokio::time::timeout(WAIT, async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let mut req = Request::post(format!("http://test.local{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(grpc_frame(payload))).expect("request");
        let resp = sender.send_request(req).await.expect("response");
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.expect("body");
        let trailers = collected.trailers().cloned();
        H2Reply {
            status: parts.status,
            headers: parts.headers,
            trailers,
            body: collected.to_bytes(),
        }
    })
    .await
    .expect("answered in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_of_every_kind_pass_through_an_h2c_pool() {
    if !grpcio() {
        return;
    }
    let server = PyServer::start("py-grpc-1").await;
    let gw = TestGateway::start(&format!(
        "{}{}",
        h2c_pool("g", "h2c", &[server.addr]),
        route_to("g")
    ))
    .await;
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("python3")
            .arg(format!("{DIR}/client.py"))
            .arg(gw.addr.to_string())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("client finished in time")
    .expect("python3 tests/grpc/client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for case in [
        "unary",
        "initial-metadata",
        "trailing-metadata",
        "binary-metadata",
        "server-streaming",
        "client-streaming",
        "bidi-streaming",
        "large-message",
        "trailers-only-error",
        "error-binary-metadata",
        "deadline",
        "within-deadline",
    ] {
        assert!(
            stdout.lines().any(|l| l == format!("ok {case}")),
            "{case} missing:\n{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailers_only_grpc_error_keeps_its_status_in_the_head() {
    if !grpcio() {
        return;
    }
    let server = PyServer::start("py-grpc-2").await;
    let gw = TestGateway::start(&format!(
        "{}{}",
        h2c_pool("g", "h2c", &[server.addr]),
        route_to("g")
    ))
    .await;
    let reply = grpc_h2(gw.addr, "/test.Echo/Fail", b"x", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Trailers-only: grpc-status is in the head and no DATA came.
    assert_eq!(reply.headers["grpc-status"], "5", "{:?}", reply.headers);
    assert!(reply.body.is_empty());
    assert!(reply.trailers.is_none(), "{:?}", reply.trailers);
    assert!(reply.headers.contains_key("detail-bin"));

    let ok = grpc_h2(gw.addr, "/test.Echo/Unary", b"hi", &[("x-trace", "7")]).await;
    assert_eq!(ok.field("grpc-status"), "0");
    assert_eq!(ok.field("x-trace"), "7");
    assert_eq!(&ok.body[..], &grpc_frame(b"hi")[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_bounds_the_attempt_with_deadline_exceeded() {
    // A backend that answers after 5 s and ignores grpc-timeout itself: the
    // gateway's own bound is what ends the call.
    let upstream = limited_h2_slow(usize::MAX, Duration::from_secs(5)).await;
    let gw = TestGateway::start(&format!(
        "{}{}",
        h2c_pool("g", "h2c", &[upstream.addr]),
        route_to("g")
    ))
    .await;
    let started = Instant::now();
    let reply = grpc_h2(
        gw.addr,
        "/test.Echo/Slow",
        b"x",
        &[("grpc-timeout", "300m")],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.field("grpc-status"), "4", "{:?}", reply.headers);
    assert_eq!(reply.field("sluicegate-error"), "response_timeout");
    assert!(
        reply
            .field("grpc-message")
            .starts_with("sluicegate-error=response_timeout"),
        "{}",
        reply.field("grpc-message")
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_reach_grpc_clients_as_grpc_statuses() {
    // A backend that refuses connections: the port of a listener just closed.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let gw = TestGateway::start(&format!(
        "{}{}[[pools]]\nname = \"h1\"\nbackends = [{{ addr = \"{closed}\" }}]\n[[routes]]\nname = \"h1\"\nmatch = {{ path_prefix = \"/h1\" }}\nsplit = [{{ pool = \"h1\", weight = 1 }}]\n",
        h2c_pool("g", "h2c", &[closed]),
        route_to("g"),
    ))
    .await;
    let reply = grpc_h2(gw.addr, "/test.Echo/Unary", b"x", &[]).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a gRPC error, not an HTTP 502"
    );
    assert_eq!(reply.headers["content-type"], "application/grpc");
    assert_eq!(reply.field("grpc-status"), "14", "UNAVAILABLE");
    assert_eq!(reply.field("sluicegate-error"), "connect_failed");
    assert!(reply
        .field("grpc-message")
        .starts_with("sluicegate-error=connect_failed: "));
    assert!(reply.body.is_empty());

    // gRPC to a pool that speaks HTTP/1.1 cannot carry trailers: said so.
    let reply = grpc_h2(gw.addr, "/h1/test.Echo/Unary", b"x", &[]).await;
    assert_eq!(reply.field("sluicegate-error"), "grpc_needs_h2_pool");
    assert_eq!(reply.field("grpc-status"), "13");

    // gRPC over HTTP/1.1: a clear refusal, whatever the pool.
    let req = Request::post("/test.Echo/Unary")
        .header("host", "test.local")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_frame(b"x")))
        .expect("request");
    let reply = crate::support::send(gw.addr, req).await;
    assert_eq!(reply.status, StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    assert_eq!(reply.error(), "grpc_needs_http2");

    // Plain HTTP/2 requests to the h2c pool get plain HTTP errors.
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let resp = tokio::time::timeout(
        WAIT,
        sender.send_request(
            Request::get("http://test.local/x")
                .body(Full::new(Bytes::new()))
                .expect("request"),
        ),
    )
    .await
    .expect("in time")
    .expect("response");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
}

/// An HTTP/2 server of the test's own: `SETTINGS_MAX_CONCURRENT_STREAMS = 10`,
/// a graceful GOAWAY after every `goaway_every` streams of a connection, each
/// answer after a short pause (so streams overlap). Counts connections and the
/// most streams open at once on one connection.
pub(crate) struct LimitedH2 {
    pub(crate) addr: SocketAddr,
    pub(crate) connections: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

pub(crate) async fn limited_h2(goaway_every: usize) -> LimitedH2 {
    limited_h2_slow(goaway_every, Duration::from_millis(2)).await
}

/// [`limited_h2`] answering after `delay`.
async fn limited_h2_slow(goaway_every: usize, delay: Duration) -> LimitedH2 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let (c, m, a) = (
        Arc::clone(&connections),
        Arc::clone(&max_open),
        Arc::clone(&answered),
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::Relaxed);
            let (m, a) = (Arc::clone(&m), Arc::clone(&a));
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::Builder::new()
                    .max_concurrent_streams(10)
                    .handshake::<_, Bytes>(tcp)
                    .await
                else {
                    return;
                };
                let open = Arc::new(AtomicUsize::new(0));
                let mut streams = 0usize;
                while let Some(accepted) = conn.accept().await {
                    let Ok((req, mut respond)) = accepted else {
                        break;
                    };
                    streams += 1;
                    if streams == goaway_every {
                        conn.graceful_shutdown();
                    }
                    let now = open.fetch_add(1, Ordering::AcqRel) + 1;
                    m.fetch_max(now, Ordering::AcqRel);
                    let (open, a) = (Arc::clone(&open), Arc::clone(&a));
                    tokio::spawn(async move {
                        drop(req);
                        tokio::time::sleep(delay).await;
                        let resp = http::Response::builder()
                            .status(200)
                            .header("content-type", "text/plain")
                            .body(())
                            .expect("response");
                        if let Ok(mut body) = respond.send_response(resp, false) {
                            let _ = body.send_data(Bytes::from_static(b"ok\n"), true);
                            a.fetch_add(1, Ordering::Relaxed);
                        }
                        open.fetch_sub(1, Ordering::AcqRel);
                    });
                }
            });
        }
    });
    LimitedH2 {
        addr,
        connections,
        max_open,
        answered,
    }
}

fn h2load() -> bool {
    peer_available(
        "h2load (Debian package nghttp2-client)",
        std::process::Command::new("h2load").arg("--version"),
    )
}

/// Runs h2load through the gateway; returns its output after checking that
/// every request succeeded.
async fn run_h2load(gw: SocketAddr, requests: usize, clients: usize, streams: usize) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("h2load")
            .args([
                "-n",
                &requests.to_string(),
                "-c",
                &clients.to_string(),
                "-m",
                &streams.to_string(),
                &format!("http://{gw}/load"),
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("h2load finished in time")
    .expect("h2load ran");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "h2load failed:\n{text}");
    let summary = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    assert!(
        summary.contains(&format!("{requests} succeeded, 0 failed, 0 errored")),
        "{summary}\n{text}"
    );
    let codes = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or("");
    assert!(
        codes.starts_with(&format!("status codes: {requests} 2xx")),
        "{codes}\n{text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_through_the_gateway_to_a_stream_limited_upstream_that_sends_goaway() {
    if !h2load() {
        return;
    }
    let upstream = limited_h2(1000).await;
    let gw = TestGateway::start(&format!(
        "{}{}",
        h2c_pool("g", "h2c", &[upstream.addr]),
        route_to("g")
    ))
    .await;
    // 4 client connections x 25 streams: 100 concurrent streams through the
    // gateway, to a backend that allows 10 per connection and sends GOAWAY
    // every 1000.
    let requests = 5000;
    let text = run_h2load(gw.addr, requests, 4, 25).await;
    eprintln!("{text}");
    let max_open = upstream.max_open.load(Ordering::Relaxed);
    let conns = upstream.connections.load(Ordering::Relaxed);
    assert!(
        max_open <= 10,
        "the backend's stream limit was exceeded: {max_open}"
    );
    assert!(
        conns >= 5,
        "GOAWAY every 1000 streams means new connections: {conns}"
    );
    assert_eq!(upstream.answered.load(Ordering::Relaxed), requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_opens_only_when_the_first_is_at_the_stream_limit() {
    let upstream = limited_h2(usize::MAX).await;
    let gw = TestGateway::start(&format!(
        "{}{}",
        h2c_pool("g", "h2c", &[upstream.addr]),
        route_to("g")
    ))
    .await;
    // One request at a time: one connection carries them all.
    for _ in 0..20 {
        let r = crate::support::get(gw.addr, "/one", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(upstream.connections.load(Ordering::Relaxed), 1);

    // 35 at once over HTTP/1.1 clients: 10 streams per connection, so more
    // connections (at most `h2.max_connections`, 4 by default).
    let tasks: Vec<_> = (0..35)
        .map(|_| tokio::spawn(crate::support::get(gw.addr, "/many", &[])))
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task").status, StatusCode::OK);
    }
    let conns = upstream.connections.load(Ordering::Relaxed);
    assert!((2..=4).contains(&conns), "connections: {conns}");
    assert!(upstream.max_open.load(Ordering::Relaxed) <= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_only_unavailable_answers_eject_the_backend() {
    if !grpcio() {
        return;
    }
    let server = PyServer::start("py-grpc-4").await;
    let gw = TestGateway::start(&format!(
        "{}[pools.outlier]\nconsecutive_failures = 3\ncount_5xx = true\nmax_ejected_percent = 100\nbase_ejection = \"60s\"\n{}",
        h2c_pool("g", "h2c", &[server.addr]),
        route_to("g")
    ))
    .await;
    // HTTP 200 each time, but grpc-status 14 from the backend itself.
    for _ in 0..3 {
        let reply = grpc_h2(gw.addr, "/test.Echo/Unavailable", b"x", &[]).await;
        assert_eq!(reply.field("grpc-status"), "14");
        assert_eq!(reply.field("sluicegate-error"), "", "the backend's answer");
    }
    // Ejected: the gateway answers now, in gRPC terms.
    let reply = grpc_h2(gw.addr, "/test.Echo/Unary", b"x", &[]).await;
    assert_eq!(reply.field("grpc-status"), "14");
    assert_eq!(reply.field("sluicegate-error"), "no_healthy_backend");
}
