//! The zero-drop claim under load: 50 split changes through the admin API and 20
//! rewrites of the config file while GETs and POSTs run concurrently and one SSE
//! stream and one WebSocket stay open. Every request must succeed, both streams must
//! survive, and the traffic share must follow each split.
//!
//! Measuring a step: the driver marks the step "in transition", applies the change
//! and waits until it is live (the PUT answered / the reload counter moved), then
//! opens the step. A worker counts a response for a step only if the step was open
//! both when it sent the request and when the answer came, so every counted request
//! was routed by the new snapshot. Steps need enough requests that ±5 points is four
//! standard deviations of the binomial share (never fewer than 400), so the test
//! fails on a real routing error, not on chance.
//!
//! `cargo test --test it cutover -- --nocapture` prints the failed-request count
//! and the share table.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::support::live::{config_text, LiveGateway};
use crate::support::{agents, backends};

/// Concurrent request loops.
const WORKERS: usize = 6;
/// Marks "between steps: do not count".
const CLOSED: u64 = u64::MAX;
/// Longest a single measured step may take.
const STEP_BOUND: Duration = Duration::from_secs(60);

/// One measured step.
struct Step {
    source: &'static str,
    green: u32,
    blue: u32,
}

impl Step {
    fn expected_green(&self) -> f64 {
        f64::from(self.green) / f64::from(self.green + self.blue)
    }

    /// Requests needed so that 5 points are 4 standard deviations (min 400).
    fn needed(&self) -> u64 {
        let p = self.expected_green();
        (6400.0 * p * (1.0 - p)).ceil().max(400.0) as u64
    }
}

/// Counters shared with the workers.
struct Tally {
    step: AtomicU64,
    /// Per step: [blue, green].
    counts: Vec<[AtomicU64; 2]>,
    ok: AtomicU64,
    failed: AtomicU64,
    counted: Notify,
    stop: AtomicBool,
}

fn file_body(blue: &str, green: &str, file_split: (u32, u32), other_route: bool) -> String {
    let mut body = format!(
        r#"
[[pools]]
name = "blue"
backends = {blue}
[[pools]]
name = "green"
backends = {green}
[[routes]]
name = "agents"
split = [{{ pool = "blue", weight = {} }}, {{ pool = "green", weight = {} }}]
"#,
        file_split.0, file_split.1
    );
    if other_route {
        body.push_str(
            "[[routes]]\nname = \"other\"\nmatch = { path_prefix = \"/other\" }\nsplit = [{ pool = \"blue\", weight = 1 }]\n",
        );
    }
    config_text(&body, "", "")
}

/// The API splits cycle through these (blue, green) weights.
const CYCLE: [(u32, u32); 6] = [(0, 100), (100, 0), (10, 90), (90, 10), (5, 95), (95, 5)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_survives_50_api_splits_and_20_file_rewrites() {
    let blue = agents("blue", "v1", 2).await;
    let green = agents("green", "v2", 2).await;
    let (b, g) = (backends(&blue), backends(&green));
    let gw = LiveGateway::start(&file_body(&b, &g, (100, 0), false)).await;

    // The plan: 10 file rewrites, then 50 API splits with a file rewrite (that the
    // override must outlive) after every 5th.
    let mut plan: Vec<(Step, Option<String>)> = Vec::new();
    for i in 0..10 {
        let (bw, gw_) = CYCLE[(i + 3) % CYCLE.len()];
        let text = file_body(&b, &g, (bw, gw_), i % 2 == 0);
        plan.push((
            Step {
                source: "file",
                blue: bw,
                green: gw_,
            },
            Some(text),
        ));
    }
    let mut file_rewrites = 10;
    for i in 0..50 {
        let (bw, gw_) = CYCLE[i % CYCLE.len()];
        plan.push((
            Step {
                source: "api",
                blue: bw,
                green: gw_,
            },
            None,
        ));
        if i % 5 == 4 {
            let hidden = CYCLE[(i + 1) % CYCLE.len()];
            let text = file_body(&b, &g, hidden, i % 2 == 1);
            plan.push((
                Step {
                    source: "file*",
                    blue: bw,
                    green: gw_,
                },
                Some(text),
            ));
            file_rewrites += 1;
        }
    }
    assert_eq!(file_rewrites, 20);

    let tally = Arc::new(Tally {
        step: AtomicU64::new(CLOSED),
        counts: (0..plan.len())
            .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
            .collect(),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        counted: Notify::new(),
        stop: AtomicBool::new(false),
    });

    let sse = tokio::spawn(hold_sse(gw.addr, Arc::clone(&tally)));
    let ws = tokio::spawn(hold_websocket(gw.addr, Arc::clone(&tally)));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(work(gw.addr, w, Arc::clone(&tally))))
        .collect();

    let started = Instant::now();
    let mut table = Vec::new();
    for (k, (step, rewrite)) in plan.iter().enumerate() {
        tally.step.store(CLOSED, Ordering::Release);
        match rewrite {
            Some(text) => gw.reload(text).await,
            None => {
                let json = format!(r#"{{"blue": {}, "green": {}}}"#, step.blue, step.green);
                gw.split("agents", &json).await;
            }
        }
        tally.step.store(k as u64, Ordering::Release);
        let need = step.needed();
        let total = |t: &Tally| {
            t.counts[k]
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        tokio::time::timeout(STEP_BOUND, async {
            loop {
                let notified = tally.counted.notified();
                if total(&tally) >= need {
                    break;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("step {k}: fewer than {need} requests in {STEP_BOUND:?}"));
        tally.step.store(CLOSED, Ordering::Release);
        let n = total(&tally);
        let measured = tally.counts[k][1].load(Ordering::Relaxed) as f64 / n as f64;
        table.push((k, step.source, step.expected_green(), measured, n));
    }
    tally.stop.store(true, Ordering::Release);
    for w in workers {
        w.await.expect("worker");
    }
    let (sse_events, sse_ok) = sse.await.expect("sse task");
    let (ws_echoes, ws_ok) = ws.await.expect("ws task");

    let failed = tally.failed.load(Ordering::Relaxed);
    let ok = tally.ok.load(Ordering::Relaxed);
    eprintln!(
        "cutover: {} steps ({} api splits, {file_rewrites} file rewrites) in {:.1?}: {ok} requests ok, {failed} failed; SSE {sse_events} events (alive: {sse_ok}), WebSocket {ws_echoes} echoes (alive: {ws_ok})",
        table.len(),
        50,
        started.elapsed()
    );
    eprintln!("step  source  expected-green  measured-green  requests");
    for (k, source, expected, measured, n) in &table {
        eprintln!(
            "{k:>4}  {source:<6}  {:>13.1}%  {:>13.1}%  {n:>8}",
            expected * 100.0,
            measured * 100.0
        );
    }
    assert_eq!(failed, 0, "failed requests during cutover");
    assert!(sse_ok && sse_events > 0, "the SSE stream did not survive");
    assert!(ws_ok && ws_echoes > 0, "the WebSocket did not survive");
    for (k, source, expected, measured, n) in &table {
        assert!(
            (expected - measured).abs() <= 0.05,
            "step {k} ({source}): expected {:.1}% green, measured {:.1}% over {n}",
            expected * 100.0,
            measured * 100.0
        );
    }
    let counters = gw.counters();
    assert_eq!(counters.reloads_ok, 20);
    assert_eq!(counters.reloads_failed, 0);
    assert_eq!(counters.streams_closed, 0);
}

/// One request loop on a keep-alive connection: GET and POST alternate.
async fn work(addr: std::net::SocketAddr, id: usize, tally: Arc<Tally>) {
    let mut sender = None;
    let mut i = 0u64;
    while !tally.stop.load(Ordering::Acquire) {
        i += 1;
        if sender.is_none() {
            sender = connect(addr).await;
        }
        let Some(s) = sender.as_mut() else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let req = if (i + id as u64).is_multiple_of(2) {
            Request::get("/hello")
                .header("host", "agents.test")
                .body(Full::new(Bytes::new()))
        } else {
            Request::post("/echo")
                .header("host", "agents.test")
                .body(Full::new(Bytes::from_static(b"payload")))
        }
        .expect("request");
        let step = tally.step.load(Ordering::Acquire);
        let outcome = async {
            s.ready().await.ok()?;
            let resp = s.send_request(req).await.ok()?;
            let version = resp.headers().get("x-agent-version").cloned();
            let ok = resp.status() == 200;
            resp.into_body().collect().await.ok()?;
            ok.then_some(version).flatten()
        };
        match tokio::time::timeout(Duration::from_secs(10), outcome).await {
            Ok(Some(version)) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if step != CLOSED && tally.step.load(Ordering::Acquire) == step {
                    let slot = usize::from(version == "v2");
                    tally.counts[step as usize][slot].fetch_add(1, Ordering::Relaxed);
                    tally.counted.notify_one();
                }
            }
            _ => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                sender = None;
            }
        }
    }
}

async fn connect(
    addr: std::net::SocketAddr,
) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// Holds one SSE stream for the whole test; returns (events, still alive at the end).
async fn hold_sse(addr: std::net::SocketAddr, tally: Arc<Tally>) -> (u64, bool) {
    let Some(mut sender) = connect(addr).await else {
        return (0, false);
    };
    let req = Request::get("/sse?events=10000&interval_ms=20")
        .header("host", "agents.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let Ok(resp) = sender.send_request(req).await else {
        return (0, false);
    };
    let mut body = resp.into_body();
    let mut events = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if frame
                    .data_ref()
                    .is_some_and(|d| d.windows(5).any(|w| w == b"data:"))
                {
                    events += 1;
                }
                // Alive at the end: an event arrived after the load stopped.
                if tally.stop.load(Ordering::Acquire) {
                    return (events, true);
                }
            }
            _ => return (events, false),
        }
    }
}

/// Holds one WebSocket open, echoing a message every 20 ms; returns (echoes, alive).
async fn hold_websocket(addr: std::net::SocketAddr, tally: Arc<Tally>) -> (u64, bool) {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return (0, false);
    };
    let url = format!("ws://{addr}/ws");
    let Ok((mut ws, _)) = tokio_tungstenite::client_async(url, stream).await else {
        return (0, false);
    };
    let mut echoes = 0;
    loop {
        let done = tally.stop.load(Ordering::Acquire);
        let text = format!("ping {echoes}");
        let round = async {
            ws.send(Message::Text(text.clone())).await.ok()?;
            match ws.next().await {
                Some(Ok(Message::Text(back))) if back == text => Some(()),
                _ => None,
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), round).await {
            Ok(Some(())) => echoes += 1,
            _ => return (echoes, false),
        }
        if done {
            // This echo was sent after every change: the tunnel survived them all.
            return (echoes, true);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
