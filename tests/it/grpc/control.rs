//! gRPC-aware control (issue 26, item 4) against Python `grpcio` backends: a
//! `grpc-status` in the trailers after a message (under HTTP 200) counts for
//! passive ejection, `grpc_requests_total{grpc_code}` and the rollout gate;
//! `grpc.health.v1.Health/Check` probes; `least_conn` counting open streams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{grpc_frame, grpc_h2, grpcio, h2c_pool, route_to, PyServer};
use crate::metrics::scrape::Scrape;
use crate::support::live::{config_text, LiveGateway};
use crate::support::WAIT;

/// Polls the admin state (bounded by [`WAIT`]) until backend `addr` of `pool`
/// satisfies `done`; returns its `last_probe`.
async fn until_backend(
    gw: &LiveGateway,
    pool: &str,
    addr: SocketAddr,
    what: &str,
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
            "{pool}/{addr}: {what} not reached; healthy {}, last_probe {last:?}",
            b.healthy
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `grpc_requests_total` of route `all`, pool `g`, `backend` (`""`: the
/// gateway's own answers) and `code`.
fn grpc_count(s: &Scrape, backend: &str, code: &str) -> f64 {
    s.value(
        "sluicegate_grpc_requests_total",
        &[
            ("route", "all"),
            ("pool", "g"),
            ("backend", backend),
            ("grpc_code", code),
        ],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_in_trailers_after_a_message_ejects_and_is_counted_by_code() {
    if !grpcio() {
        return;
    }
    let server = PyServer::start_with(
        "py-flaky",
        &["--fail-percent", "100", "--fail-code", "UNAVAILABLE"],
    )
    .await;
    let body = format!(
        "{}[pools.outlier]\nconsecutive_failures = 3\ncount_5xx = true\nmax_ejected_percent = 100\nbase_ejection = \"60s\"\n{}",
        h2c_pool("g", "h2c", &[server.addr]),
        route_to("g")
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let ok = grpc_h2(gw.addr, "/test.Echo/Unary", b"hi", &[]).await;
    assert_eq!(ok.field("grpc-status"), "0");
    let not_found = grpc_h2(gw.addr, "/test.Echo/Fail", b"x", &[]).await;
    assert_eq!(not_found.headers["grpc-status"], "5", "trailers-only");
    for i in 0..3 {
        if i == 2 {
            // Between two failures, a call the client cancels mid-stream: it
            // counts as CANCELLED and neither way for ejection (a success would
            // reset the streak, a failure eject one call early).
            cancel_a_stream(gw.addr).await;
            let deadline = tokio::time::Instant::now() + WAIT;
            while grpc_count(&Scrape::get(&gw).await, &server.addr.to_string(), "1") < 1.0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "CANCELLED not counted"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let reply = grpc_h2(gw.addr, "/test.Echo/Flaky", b"", &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        // A message came first; the status is in the trailers, not the head.
        assert_eq!(
            &reply.body[..],
            &grpc_frame(format!("py-flaky:{i}").as_bytes())[..]
        );
        assert!(!reply.headers.contains_key("grpc-status"));
        let trailers = reply.trailers.as_ref().expect("trailers");
        assert_eq!(trailers["grpc-status"], "14");
    }
    // Three failures in a row, all under HTTP 200: ejected.
    let reply = grpc_h2(gw.addr, "/test.Echo/Unary", b"x", &[]).await;
    assert_eq!(reply.field("grpc-status"), "14");
    assert_eq!(reply.field("sluicegate-error"), "no_healthy_backend");

    let s = Scrape::get(&gw).await;
    let b = server.addr.to_string();
    assert_eq!(grpc_count(&s, &b, "0"), 1.0, "{}", s.text);
    assert_eq!(grpc_count(&s, &b, "5"), 1.0, "{}", s.text);
    assert_eq!(grpc_count(&s, &b, "14"), 3.0, "{}", s.text);
    assert_eq!(grpc_count(&s, &b, "1"), 1.0, "{}", s.text);
    assert_eq!(grpc_count(&s, "", "14"), 1.0, "the gateway's own answer");
    let series = s
        .text
        .lines()
        .filter(|l| l.starts_with("sluicegate_grpc_requests_total{"))
        .count();
    assert_eq!(series, 5, "only the codes seen have series:\n{}", s.text);
    // The HTTP status class stays what the client got: 2xx.
    let ok_2xx = s
        .value(
            "sluicegate_requests_total",
            &[
                ("route", "all"),
                ("pool", "g"),
                ("backend", b.as_str()),
                ("code_class", "2xx"),
            ],
        )
        .unwrap_or(0.0);
    assert_eq!(ok_2xx, 6.0, "{}", s.text);
    let state = gw.state().await;
    let backend = state.backend("g", &b).expect("backend");
    assert!(backend.ejected, "{backend:?}");
}

/// A bidirectional `test.Echo/Bidi` call through `gw` on a connection of its
/// own, its request body left open, once its first message (`ping`) came back
/// echoed: the connection's task, the client, and both halves of the stream.
async fn open_bidi(
    gw: SocketAddr,
) -> (
    tokio::task::JoinHandle<Result<(), h2::Error>>,
    h2::client::SendRequest<Bytes>,
    h2::SendStream<Bytes>,
    h2::RecvStream,
) {
    let tcp = TcpStream::connect(gw).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let req = Request::post("http://test.local/test.Echo/Bidi")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (answer, mut up) = client.send_request(req, false).expect("stream");
    up.send_data(grpc_frame(b"ping"), false).expect("send");
    let resp = tokio::time::timeout(WAIT, answer)
        .await
        .expect("in time")
        .expect("answer");
    let mut down = resp.into_body();
    let first = tokio::time::timeout(WAIT, down.data())
        .await
        .expect("in time")
        .expect("a message")
        .expect("data");
    assert_eq!(&first[..], &grpc_frame(b"echo:ping")[..]);
    (conn, client, up, down)
}

/// Opens a bidirectional call through `gw`, takes its first answer, then
/// cancels it (`RST_STREAM CANCEL`, then the connection goes) with its request
/// body still open.
async fn cancel_a_stream(gw: SocketAddr) {
    let (conn, client, mut up, down) = open_bidi(gw).await;
    up.send_reset(h2::Reason::CANCEL);
    drop((up, down, client));
    conn.abort();
}

/// What the gRPC load saw.
#[derive(Default)]
struct GrpcLoad {
    stop: AtomicBool,
    /// Calls answered, by pool: [blue, green].
    calls: [AtomicU64; 2],
    /// Of those, `grpc-status` other than 0 (in the trailers).
    failed: [AtomicU64; 2],
    /// HTTP statuses other than 200, or calls without an answer.
    broken: AtomicU64,
}

impl GrpcLoad {
    fn calls(&self) -> u64 {
        self.calls.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Calls `/test.Echo/Flaky` in a loop on one HTTP/2 connection until `stop`
/// (or `max` calls); the answer's message names the server.
async fn grpc_worker(addr: SocketAddr, load: Arc<GrpcLoad>, max: u64) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    for _ in 0..max {
        if load.stop.load(Ordering::Acquire) {
            return;
        }
        let req = Request::post("http://test.local/test.Echo/Flaky")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(grpc_frame(b"")))
            .expect("request");
        let answer = tokio::time::timeout(WAIT, async {
            let resp = sender.send_request(req).await.ok()?;
            let status = resp.status();
            let collected = resp.into_body().collect().await.ok()?;
            let code = collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.as_bytes().to_vec());
            Some((status, code, collected.to_bytes()))
        })
        .await
        .ok()
        .flatten();
        let Some((status, code, body)) = answer else {
            load.broken.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let pool = if body.len() > 5 && body[5..].starts_with(b"green") {
            1
        } else {
            0
        };
        if status != StatusCode::OK || code.is_none() {
            load.broken.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        load.calls[pool].fetch_add(1, Ordering::Relaxed);
        if code.as_deref() != Some(b"0") {
            load.failed[pool].fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_gate_fails_on_grpc_status_errors_while_http_is_200() {
    if !grpcio() {
        return;
    }
    let blue = PyServer::start("blue").await;
    let green = PyServer::start_with(
        "green",
        &["--fail-percent", "20", "--fail-code", "INTERNAL"],
    )
    .await;
    let body = format!(
        "{}{}[[routes]]\nname = \"calls\"\nsplit = [{{ pool = \"blue\", weight = 100 }}, {{ pool = \"green\", weight = 0 }}]\n",
        h2c_pool("blue", "h2c", &[blue.addr]),
        h2c_pool("green", "h2c", &[green.addr]),
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let load = Arc::new(GrpcLoad::default());
    // Bounded: at most 4 x 20000 calls, and the rollout's own bound below.
    let workers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(grpc_worker(gw.addr, Arc::clone(&load), 20_000)))
        .collect();
    let r = gw
        .api(
            Method::POST,
            "/api/v1/rollouts",
            Some(
                r#"{"route": "calls", "to": "green", "steps": [50, 100],
                    "step_interval": "1s", "max_error_rate": 0.05, "min_requests": 40,
                    "max_wait": "30s"}"#,
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let started: sluicegate::testing::control_plane::rollout::Rollout =
        serde_json::from_slice(&r.body).expect("rollout JSON");
    let mut changes = gw.rollouts.changes();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            changes.borrow_and_update();
            let now = gw.rollouts.get(&started.id).await.expect("rollout");
            if !now.phase.is_active() {
                return now;
            }
            changes.changed().await.expect("manager running");
        }
    })
    .await
    .expect("the rollout ends in time");
    load.stop.store(true, Ordering::Release);
    for w in workers {
        w.await.expect("worker");
    }
    eprintln!(
        "rollout (green failing 20 % of calls with INTERNAL in the trailers):\n{}",
        sluicegate::ctl::rollout::render(&done)
    );
    let (green_calls, green_failed) = (
        load.calls[1].load(Ordering::Relaxed),
        load.failed[1].load(Ordering::Relaxed),
    );
    eprintln!(
        "clients: {} calls, {green_calls} to green ({green_failed} with grpc-status 13), {} blue failures, {} not HTTP 200",
        load.calls(),
        load.failed[0].load(Ordering::Relaxed),
        load.broken.load(Ordering::Relaxed)
    );
    assert_eq!(
        load.broken.load(Ordering::Relaxed),
        0,
        "every call was HTTP 200 with trailers"
    );
    assert_eq!(load.failed[0].load(Ordering::Relaxed), 0);
    assert!(green_failed > 0, "green failed some calls");
    assert_eq!(
        done.phase,
        sluicegate::testing::control_plane::rollout::Phase::RolledBack,
        "{done:#?}"
    );
    let reason = done.reason.as_ref().expect("a reason");
    assert_eq!(reason.metric, "error_rate", "{reason:?}");
    assert_eq!(done.steps.len(), 1, "rolled back at the first step");
    let step = &done.steps[0];
    assert!(step.errors > 0 && step.error_rate > 0.05, "{step:?}");
    let split = gw
        .state()
        .await
        .route("calls")
        .expect("route")
        .split
        .clone();
    assert_eq!((split[0].weight, split[1].weight), (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_pass_on_serving_only_and_say_why_not() {
    if !grpcio() {
        return;
    }
    let served = PyServer::start("health-a").await;
    let bare = PyServer::start_with("health-b", &["--no-health"]).await;
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        l.local_addr().expect("addr")
    };
    let health = "[pools.health]\ngrpc = true\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n";
    let body = format!(
        "{}{health}{}{health}{}{health}grpc_service = \"nope\"\n{}{health}{}",
        h2c_pool("a", "h2c", &[served.addr]),
        h2c_pool("b", "h2c", &[bare.addr]),
        h2c_pool("c", "h2c", &[served.addr]),
        h2c_pool("d", "h2c", &[closed]),
        route_to("a"),
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let last = until_backend(&gw, "a", served.addr, "healthy", |h, _| h).await;
    assert_eq!(last, "pass: gRPC health SERVING");
    let last = until_backend(&gw, "b", bare.addr, "unhealthy", |h, l| !h && !l.is_empty()).await;
    assert!(last.contains("grpc-status 12 UNIMPLEMENTED"), "{last}");
    let last = until_backend(&gw, "c", served.addr, "unhealthy", |h, l| {
        !h && !l.is_empty()
    })
    .await;
    assert!(last.contains("grpc-status 5 NOT_FOUND"), "{last}");
    let last = until_backend(&gw, "d", closed, "unhealthy", |h, l| !h && !l.is_empty()).await;
    assert_eq!(last, "fail: connect failed");
    let ok = grpc_h2(gw.addr, "/test.Echo/Unary", b"x", &[]).await;
    assert_eq!(ok.field("grpc-status"), "0");

    // The backend says it is not serving: no traffic until it says it is.
    let set = grpc_h2(served.addr, "/test.Echo/SetHealth", b"=NOT_SERVING", &[]).await;
    assert_eq!(set.field("grpc-status"), "0");
    let last = until_backend(&gw, "a", served.addr, "unhealthy", |h, _| !h).await;
    assert_eq!(last, "fail: gRPC health NOT_SERVING");
    let refused = grpc_h2(gw.addr, "/test.Echo/Unary", b"x", &[]).await;
    assert_eq!(refused.field("sluicegate-error"), "no_healthy_backend");
    grpc_h2(served.addr, "/test.Echo/SetHealth", b"=SERVING", &[]).await;
    until_backend(&gw, "a", served.addr, "healthy again", |h, _| h).await;
    let ok = grpc_h2(gw.addr, "/test.Echo/Unary", b"x", &[]).await;
    assert_eq!(ok.field("grpc-status"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_counts_the_open_streams_of_an_h2_pool() {
    if !grpcio() {
        return;
    }
    let x = PyServer::start("py-x").await;
    let y = PyServer::start("py-y").await;
    let body = format!(
        "{}balance = \"least_conn\"\n{}",
        h2c_pool("g", "h2c", &[x.addr, y.addr]),
        route_to("g")
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    // A bidirectional call left open: one stream on one backend, its request
    // body not ended.
    let (_conn, _client, mut up, mut down) = open_bidi(gw.addr).await;
    let state = gw.state().await;
    let inflight = |addr: SocketAddr| {
        state
            .backend("g", &addr.to_string())
            .expect("backend")
            .inflight
    };
    let (busy, free) = match (inflight(x.addr), inflight(y.addr)) {
        (1, 0) => ("py-x", "py-y"),
        (0, 1) => ("py-y", "py-x"),
        other => panic!("one open stream, on one backend: {other:?}"),
    };
    // Every call while the stream stays open goes to the other backend: the
    // stream counts as load for as long as it is open.
    for _ in 0..10 {
        let reply = grpc_h2(gw.addr, "/test.Echo/Unary", b"x", &[]).await;
        assert_eq!(reply.field("grpc-status"), "0");
        let served = reply.headers["x-served-by"].to_str().expect("ascii");
        assert_eq!(
            served, free,
            "least_conn sent a call beside the open stream on {busy}"
        );
    }
    // The stream ends: its load goes.
    up.send_data(Bytes::new(), true).expect("end");
    while let Some(chunk) = tokio::time::timeout(WAIT, down.data())
        .await
        .expect("in time")
    {
        chunk.expect("data");
    }
    let trailers = tokio::time::timeout(WAIT, down.trailers())
        .await
        .expect("in time")
        .expect("trailers")
        .expect("some");
    assert_eq!(trailers["grpc-status"], "0");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = gw.state().await;
        let total: u32 = state.pools[0].backends.iter().map(|b| b.inflight).sum();
        if total == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "inflight stays {total}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
