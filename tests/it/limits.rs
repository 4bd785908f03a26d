//! Protection of the agents (`docs/limits.md`): the retry budget, rate limits and
//! concurrency limits, with real
//! gateways and echo agents on 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sluicegate::config::spec::Source;
use sluicegate::testing::data_plane::limits::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::live::{config_text, LiveGateway};
use crate::support::{agents, backends, get, TestGateway, WAIT};

/// Three agents that all answer 503 behind a route with `retries = 2` and
/// `retry_on_status = [503]`, under `pool_extra`; sends `n` requests and returns
/// what the agents saw in total, checking each client got the agents' 503.
async fn agents_seen_for(n: u64, pool_extra: &str) -> u64 {
    let a = agents("sick", "v1", 3).await;
    for agent in &a {
        agent.set_failing(Some(503));
    }
    let toml = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n{pool_extra}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\nretries = 2\nretry_on_status = [503]\n",
        backends(&a)
    );
    let gw = TestGateway::start(&toml).await;
    for _ in 0..n {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.error(), "", "the agent's own 503, not the gateway's");
    }
    let seen = a.iter().map(|agent| agent.requests()).sum();
    eprintln!("{n} client requests, agents saw {seen} ({pool_extra:?})");
    seen
}

#[tokio::test]
async fn without_a_budget_retries_triple_the_load_on_a_sick_pool() {
    let n = 200;
    let seen = agents_seen_for(n, "").await;
    assert_eq!(seen, 3 * n, "each request tried on all three agents");
}

#[tokio::test]
async fn a_retry_budget_keeps_a_sick_pool_near_its_request_rate() {
    let n = 500;
    let seen = agents_seen_for(n, "retry_budget = { percent = 20, min_per_second = 1 }").await;
    // 20 % of the requests, plus the floor: 1 a second over the 10 s window
    // (the test takes well under 10 s, so the floor counts once).
    let floor = 10;
    let bound = n + n * 20 / 100 + floor;
    assert!(
        seen <= bound,
        "agents saw {seen} for {n} requests (bound {bound})"
    );
    assert!(seen > n + n / 10, "the budget still allows retries: {seen}");
}

/// One client floods a route limited to 50 requests a second (burst 5) for 10 s;
/// another, behind the same trusted proxy, sends 10 a second. The first gets
/// 200s at the configured rate (±10 %) and 429s with `Retry-After`; the second
/// is never refused.
#[tokio::test]
async fn a_client_over_its_rate_gets_429_at_the_rate_and_others_are_unaffected() {
    let a = agents("rated", "v1", 1).await;
    let toml = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\nrate_limit = {{ rate = 50, burst = 5, key = \"client_ip\", trusted_proxies = [\"127.0.0.0/8\"] }}\n",
        backends(&a)
    );
    let gw = TestGateway::start(&toml).await;
    let addr = gw.addr;
    let run = Duration::from_secs(10);
    let started = Instant::now();
    let calm = tokio::spawn(async move {
        let mut refused = 0;
        let mut sent = 0;
        while started.elapsed() < run {
            let r = get(addr, "/", &[("x-forwarded-for", "2.2.2.2")]).await;
            sent += 1;
            if r.status != 200 {
                refused += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (sent, refused)
    });
    let (mut ok, mut limited) = (0u64, 0u64);
    while started.elapsed() < run {
        let r = get(addr, "/", &[("x-forwarded-for", "9.9.9.9, 1.1.1.1")]).await;
        match r.status.as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert_eq!(r.error(), "rate_limited");
                assert_eq!(
                    r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
                    Some("1")
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (calm_sent, calm_refused) = calm.await.expect("calm client");
    let expected = 5.0 + 50.0 * elapsed;
    eprintln!(
        "flooding client: {ok} answered, {limited} refused in {elapsed:.2}s (expected {expected:.0}); calm client: {calm_sent} sent, {calm_refused} refused"
    );
    assert!(
        limited > ok,
        "the flood was mostly refused: {ok} ok, {limited} limited"
    );
    let ratio = ok as f64 / expected;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{ok} answered, {expected:.0} expected"
    );
    assert_eq!(calm_refused, 0, "the other client is unaffected");
    assert!(calm_sent >= 50);
}

/// An upstream that answers every request after `delay` and records how many
/// requests it was serving at once (the peak), sampled at each arrival.
struct CountingUpstream {
    addr: std::net::SocketAddr,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
}

impl CountingUpstream {
    async fn start(delay: Duration) -> CountingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let (n, p, s) = (Arc::clone(&now), Arc::clone(&peak), Arc::clone(&served));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (n, p, s) = (Arc::clone(&n), Arc::clone(&p), Arc::clone(&s));
                tokio::spawn(async move {
                    let mut buf = Vec::with_capacity(4096);
                    loop {
                        // One bodiless request head, then the answer (keep-alive).
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        }
                        let end = buf
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map_or(buf.len(), |i| i + 4);
                        buf.drain(..end);
                        let at_once = n.fetch_add(1, Ordering::SeqCst) + 1;
                        p.fetch_max(at_once, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        n.fetch_sub(1, Ordering::SeqCst);
                        s.fetch_add(1, Ordering::SeqCst);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if conn.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        CountingUpstream {
            addr,
            now,
            peak,
            served,
        }
    }
}

/// Sends `n` requests at once and counts the answers by status and
/// `sluicegate-error` token.
async fn burst(addr: std::net::SocketAddr, n: usize) -> BTreeMap<(u16, String), usize> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(async move {
            let r = get(addr, "/", &[]).await;
            (r.status.as_u16(), r.error().to_owned())
        });
    }
    let mut seen = BTreeMap::new();
    while let Some(answer) = set.join_next().await {
        *seen.entry(answer.expect("client task")).or_insert(0) += 1;
    }
    seen
}

fn one_route(upstream: std::net::SocketAddr, route_extra: &str, pool_extra: &str) -> String {
    format!(
        "[[pools]]\nname = \"p\"\nbackends = [{{ addr = \"{upstream}\" }}]\n{pool_extra}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\n{route_extra}\n"
    )
}

/// 200 slow requests at once against `max_in_flight = 20` without a queue: the
/// upstream never serves more than 20 at once, and the rest get
/// `503 in_flight_limit` at once.
#[tokio::test]
async fn max_in_flight_without_a_queue_refuses_the_rest_with_503() {
    let up = CountingUpstream::start(Duration::from_millis(500)).await;
    let toml = one_route(up.addr, "concurrency = { max_in_flight = 20 }", "");
    let gw = TestGateway::start(&toml).await;
    let seen = burst(gw.addr, 200).await;
    eprintln!(
        "answers {seen:?}, peak at the upstream {}",
        up.peak.load(Ordering::SeqCst)
    );
    let peak = up.peak.load(Ordering::SeqCst);
    assert!(peak <= 20, "the upstream served {peak} at once");
    let ok = seen.get(&(200, String::new())).copied().unwrap_or(0);
    let refused = seen
        .get(&(503, "in_flight_limit".into()))
        .copied()
        .unwrap_or(0);
    assert_eq!(ok + refused, 200, "{seen:?}");
    assert!(ok >= 20, "the limit's worth got through: {seen:?}");
    assert!(refused > 0, "{seen:?}");
    assert_eq!(up.now.load(Ordering::SeqCst), 0);
}

/// The same burst with a queue as long as the burst: every request is served,
/// never more than 20 at once.
#[tokio::test]
async fn max_in_flight_with_a_queue_serves_everyone_within_the_limit() {
    let up = CountingUpstream::start(Duration::from_millis(100)).await;
    let toml = one_route(
        up.addr,
        "concurrency = { max_in_flight = 20, queue = 200, queue_timeout = \"9s\" }",
        "",
    );
    let gw = TestGateway::start(&toml).await;
    let seen = burst(gw.addr, 200).await;
    let peak = up.peak.load(Ordering::SeqCst);
    eprintln!("answers {seen:?}, peak at the upstream {peak}");
    assert_eq!(seen.get(&(200, String::new())), Some(&200), "{seen:?}");
    assert!(peak <= 20, "the upstream served {peak} at once");
    assert_eq!(up.served.load(Ordering::SeqCst), 200);
}

/// A pool's limit with a short queue: the queue's worth waits, the rest is
/// refused as `in_flight_queue_full`, and the queue's wait ends at its
/// timeout (`in_flight_queue_timeout`) when nothing frees in time.
#[tokio::test]
async fn a_pools_queue_is_bounded_in_length_and_time() {
    let up = CountingUpstream::start(Duration::from_millis(3000)).await;
    let toml = one_route(
        up.addr,
        "",
        "concurrency = { max_in_flight = 10, queue = 30, queue_timeout = \"300ms\" }",
    );
    let gw = TestGateway::start(&toml).await;
    let seen = burst(gw.addr, 200).await;
    let peak = up.peak.load(Ordering::SeqCst);
    eprintln!("answers {seen:?}, peak at the upstream {peak}");
    assert!(peak <= 10, "the upstream served {peak} at once");
    let count =
        |status: u16, cause: &str| seen.get(&(status, cause.to_owned())).copied().unwrap_or(0);
    let ok = count(200, "");
    assert!(ok >= 10, "{seen:?}");
    // Nothing frees within 300 ms (the upstream takes 3 s): waiters time out,
    // and while 30 wait the rest is refused at once.
    let timed_out = count(503, "in_flight_queue_timeout");
    let full = count(503, "in_flight_queue_full");
    assert!(timed_out >= 1 && full >= 1, "{seen:?}");
    assert_eq!(ok + timed_out + full, 200, "{seen:?}");
    let limited = gw.snapshot.load().routes()[0]
        .refusals
        .get(Kind::PoolInFlight);
    assert_eq!(limited as usize, timed_out + full);
}

/// A streamed answer holds its place until its body ends: with
/// `max_in_flight = 1`, a second request is refused while an SSE stream is
/// open and admitted once it is closed.
#[tokio::test]
async fn an_open_stream_counts_until_its_body_ends() {
    let a = agents("streamer", "v1", 1).await;
    let toml = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\nconcurrency = {{ max_in_flight = 1 }}\n",
        backends(&a)
    );
    let gw = TestGateway::start(&toml).await;
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get("/sse?events=1000&interval_ms=50")
        .header("host", "test.local")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("head in time")
        .expect("head");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("event in time");
    assert!(first.is_some());
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!((r.status.as_u16(), r.error()), (503, "in_flight_limit"));
    drop(body);
    drop(sender);
    // The place frees when the gateway sees the client gone: bounded retries.
    let deadline = Instant::now() + WAIT;
    loop {
        let r = get(gw.addr, "/", &[]).await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream's place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A rate limit set through the admin API takes over from the file's at once,
/// shows as `source: api` in the state (and `ctl status`), survives a restart
/// through the state file, and `DELETE` returns the route to the file's limit.
/// A bad body is refused with the key path of each bad field.
#[tokio::test]
async fn a_rate_limit_set_through_the_admin_api_applies_persists_and_clears() {
    use http::Method;
    let a = agents("live-rate", "v1", 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state_file = dir.path().join("state.json");
    let admin = format!("state_file = {:?}", state_file.display().to_string());
    let body = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\nrate_limit = {{ rate = 1000, burst = 1000, key = \"route\" }}\n",
        backends(&a)
    );
    let text = config_text(&body, "", &admin);
    let gw = LiveGateway::start_in(dir, &text).await;
    let path = "/api/v1/routes/all/rate_limit";
    let bad = gw
        .api(
            Method::PUT,
            path,
            Some(r#"{"rate": 0, "burst": -1, "keys": "x"}"#),
        )
        .await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    let bad = gw
        .api(Method::PUT, path, Some(r#"{"rate": 0, "burst": -1}"#))
        .await;
    assert_eq!(bad.status, 400);
    let text_of = |r: &crate::support::Reply| String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        text_of(&bad).contains("rate_limit.rate"),
        "{}",
        text_of(&bad)
    );
    assert!(
        text_of(&bad).contains("rate_limit.burst"),
        "{}",
        text_of(&bad)
    );
    let unknown = gw
        .api(
            Method::PUT,
            "/api/v1/routes/nope/rate_limit",
            Some(r#"{"rate": 1}"#),
        )
        .await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);

    let set = gw
        .api(
            Method::PUT,
            path,
            Some(r#"{"rate": 0.01, "burst": 1, "key": "route"}"#),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(get(gw.addr, "/", &[]).await.status, 200);
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!((r.status.as_u16(), r.error()), (429, "rate_limited"));
    let state = gw.state().await;
    let limits = state
        .route("all")
        .and_then(|r| r.limits.clone())
        .expect("limits shown");
    let rate = limits.rate.expect("rate shown");
    assert_eq!((rate.rate, rate.burst, rate.source), (0.01, 1, Source::Api));
    assert_eq!(limits.refused.get("rate"), Some(&1));
    let status = sluicegate::ctl::render_status(&state);
    assert!(
        status.contains("rate 0.01/s burst 1 by route (api)"),
        "{status}"
    );
    assert!(status.contains("rate 1"), "{status}");

    // A restart reads the override back from the state file.
    let (_, dir) = gw.stop().await;
    let saved = std::fs::read_to_string(&state_file).expect("state file");
    assert!(saved.contains("rate_limits"), "{saved}");
    let gw = LiveGateway::start_in(dir, &text).await;
    let state = gw.state().await;
    let rate = state
        .route("all")
        .and_then(|r| r.limits.clone())
        .and_then(|l| l.rate)
        .expect("rate");
    assert_eq!((rate.rate, rate.source), (0.01, Source::Api));

    let cleared = gw.api(Method::DELETE, path, None).await;
    assert_eq!(cleared.status, 200, "{:?}", cleared.body);
    for _ in 0..5 {
        assert_eq!(
            get(gw.addr, "/", &[]).await.status,
            200,
            "the file's limit again"
        );
    }
    let state = gw.state().await;
    let rate = state
        .route("all")
        .and_then(|r| r.limits.clone())
        .and_then(|l| l.rate)
        .expect("rate");
    assert_eq!((rate.rate, rate.source), (1000.0, Source::File));
}

/// A pool's circuit breaker: two backends capped at 5 connections each. Without
/// pending, 100 requests at once see at most 5 at each backend and the rest
/// `503 backend_connections_full`; with `max_pending = 100`, every request is
/// served, still never more than 5 at once at either backend.
#[tokio::test]
async fn a_circuit_breaker_caps_connections_per_backend_and_bounds_pending() {
    for (pending, delay_ms) in [(0u32, 500u64), (100, 100)] {
        let ups = [
            CountingUpstream::start(Duration::from_millis(delay_ms)).await,
            CountingUpstream::start(Duration::from_millis(delay_ms)).await,
        ];
        let toml = format!(
            "[[pools]]\nname = \"p\"\nbackends = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\ncircuit_breaker = {{ max_connections = 5, max_pending = {pending} }}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\ntimeouts = {{ connect = \"9s\" }}\n",
            ups[0].addr, ups[1].addr
        );
        let gw = TestGateway::start(&toml).await;
        let seen = burst(gw.addr, 100).await;
        let peaks = [
            ups[0].peak.load(Ordering::SeqCst),
            ups[1].peak.load(Ordering::SeqCst),
        ];
        eprintln!("max_pending {pending}: answers {seen:?}, peaks at the upstreams {peaks:?}");
        assert!(peaks.iter().all(|&p| p <= 5), "{peaks:?}");
        let ok = seen.get(&(200, String::new())).copied().unwrap_or(0);
        let refusals = gw.snapshot.load().routes()[0]
            .refusals
            .get(Kind::Connections);
        if pending == 0 {
            let full = seen
                .get(&(503, "backend_connections_full".into()))
                .copied()
                .unwrap_or(0);
            assert_eq!(ok + full, 100, "{seen:?}");
            assert!(ok >= 10 && full > 0, "{seen:?}");
            assert_eq!(refusals as usize, full);
        } else {
            assert_eq!(ok, 100, "{seen:?}");
            assert_eq!(refusals, 0);
        }
    }
}

/// An open WebSocket tunnel holds its place under `max_in_flight = 1`: a plain
/// request is refused while it is open and admitted once it is closed.
#[tokio::test]
async fn an_open_tunnel_counts_until_it_closes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let a = agents("tunnel", "v1", 1).await;
    let toml = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\nconcurrency = {{ max_in_flight = 1 }}\n",
        backends(&a)
    );
    let gw = TestGateway::start(&toml).await;
    let stream = TcpStream::connect(gw.addr).await.expect("connect");
    let url = format!("ws://{}/ws", gw.addr);
    let (mut ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws.send(Message::Text("ping".into())).await.expect("send");
    let back = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("echo in time");
    assert!(matches!(back, Some(Ok(Message::Text(_)))), "{back:?}");
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!((r.status.as_u16(), r.error()), (503, "in_flight_limit"));
    ws.close(None).await.expect("close");
    drop(ws);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = get(gw.addr, "/", &[]).await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tunnel's place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
