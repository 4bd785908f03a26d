//! Automated rollouts against real echo agents under a bounded load loop: a healthy
//! green goes 5→25→50→100 with zero failed requests; a green answering 5 % 500s is
//! rolled back at the first step, and the failed requests the clients saw are
//! counted (they should be about 5 % of what that step sent to green, no more).
//! Both step tables are printed (`cargo test --test it rollout -- --nocapture`).

mod cli;
mod pinning;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use sluicegate::testing::control_plane::rollout::{Phase, Rollout};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::support::live::{config_text, LiveGateway};
use crate::support::{agents, backends, WAIT};

/// Concurrent request loops.
const WORKERS: usize = 8;
/// Longest a whole rollout may take here.
const ROLLOUT_BOUND: Duration = Duration::from_secs(90);

/// What the clients saw.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    /// 2xx answers by version: [v1 (blue), v2 (green)].
    ok: [AtomicU64; 2],
    /// Other answers (or no answer) by version; index 2: no agent answered.
    failed: [AtomicU64; 3],
    progress: Notify,
}

impl Load {
    fn ok(&self) -> u64 {
        self.ok.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn failed(&self) -> u64 {
        self.failed.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Waits (bounded) until `more` further successful requests were answered.
    async fn wait_more(&self, more: u64) {
        let target = self.ok() + more;
        tokio::time::timeout(WAIT, async {
            loop {
                let notified = self.progress.notified();
                if self.ok() >= target {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("the load loop makes progress");
    }
}

/// One request loop on a keep-alive connection until `stop`.
async fn work(addr: SocketAddr, load: Arc<Load>) {
    let mut sender = None;
    while !load.stop.load(Ordering::Acquire) {
        if sender.is_none() {
            sender = connect(addr).await;
        }
        let Some(s) = sender.as_mut() else {
            load.failed[2].fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let req = Request::get("/")
            .header("host", "test.local")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let answer = tokio::time::timeout(WAIT, async {
            s.ready().await.ok()?;
            let resp = s.send_request(req).await.ok()?;
            let (parts, body) = resp.into_parts();
            body.collect().await.ok()?;
            Some(parts)
        })
        .await
        .ok()
        .flatten();
        let Some(parts) = answer else {
            load.failed[2].fetch_add(1, Ordering::Relaxed);
            sender = None;
            continue;
        };
        let version = match parts.headers.get("x-agent-version").map(|v| v.as_bytes()) {
            Some(b"v1") => 0,
            Some(b"v2") => 1,
            _ => 2,
        };
        if parts.status.is_success() && version < 2 {
            load.ok[version].fetch_add(1, Ordering::Relaxed);
        } else {
            load.failed[version].fetch_add(1, Ordering::Relaxed);
        }
        load.progress.notify_waiters();
    }
}

async fn connect(
    addr: SocketAddr,
) -> Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// Blue (v1) and green (v2) pools of two agents, all traffic on blue.
fn config(blue: &str, green: &str) -> String {
    config_text(
        &format!(
            r#"
[[pools]]
name = "blue"
backends = {blue}
[[pools]]
name = "green"
backends = {green}
[[routes]]
name = "agents"
split = [{{ pool = "blue", weight = 100 }}, {{ pool = "green", weight = 0 }}]
"#
        ),
        "",
        "",
    )
}

/// Starts the rollout `body` and waits (bounded) until it has ended.
async fn run_rollout(gw: &LiveGateway, body: &str) -> Rollout {
    let r = gw.api(Method::POST, "/api/v1/rollouts", Some(body)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let started: Rollout = serde_json::from_slice(&r.body).expect("rollout JSON");
    let mut changes = gw.rollouts.changes();
    tokio::time::timeout(ROLLOUT_BOUND, async {
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
    .expect("the rollout ends in time")
}

fn spawn_load(addr: SocketAddr) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let workers = (0..WORKERS)
        .map(|_| tokio::spawn(work(addr, Arc::clone(&load))))
        .collect();
    (load, workers)
}

async fn stop_load(load: &Load, workers: Vec<tokio::task::JoinHandle<()>>) {
    load.stop.store(true, Ordering::Release);
    for w in workers {
        w.await.expect("worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_green_goes_5_25_50_100_with_zero_failed_requests() {
    let blue = agents("blue", "v1", 2).await;
    let green = agents("green", "v2", 2).await;
    let gw = LiveGateway::start(&config(&backends(&blue), &backends(&green))).await;
    let (load, workers) = spawn_load(gw.addr);
    load.wait_more(200).await;

    let r = run_rollout(
        &gw,
        r#"{"route": "agents", "to": "green", "steps": [5, 25, 50, 100],
            "step_interval": "400ms", "max_error_rate": 0.01, "max_p99": "2s",
            "min_requests": 10, "max_wait": "20s"}"#,
    )
    .await;
    // Some traffic on the final split, then stop.
    load.wait_more(200).await;
    stop_load(&load, workers).await;

    eprintln!(
        "rollout (healthy green), `sluicegate ctl rollout status {}`:\n{}",
        r.id,
        sluicegate::ctl::rollout::render(&r)
    );
    let (v1, v2) = (
        load.ok[0].load(Ordering::Relaxed),
        load.ok[1].load(Ordering::Relaxed),
    );
    eprintln!(
        "clients: {} ok ({v1} blue, {v2} green), {} failed",
        load.ok(),
        load.failed()
    );
    assert_eq!(r.phase, Phase::Succeeded, "{r:#?}");
    assert_eq!(load.failed(), 0, "failed requests during the rollout");
    let weights: Vec<u32> = r.steps.iter().map(|s| s.weight).collect();
    assert_eq!(weights, [5, 25, 50, 100]);
    for step in &r.steps[..3] {
        assert!(step.requests >= 10 && step.errors == 0, "{step:?}");
    }
    let state = gw.state().await;
    let route = state.route("agents").expect("route");
    let split: Vec<(&str, u32)> = route
        .split
        .iter()
        .map(|s| (s.pool.as_str(), s.weight))
        .collect();
    assert_eq!(split, [("blue", 0), ("green", 100)]);
    assert_eq!(route.split_source.as_str(), "rollout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_answering_5_percent_500s_is_rolled_back_at_the_first_step() {
    let blue = agents("blue", "v1", 2).await;
    let green = agents("green", "v2", 2).await;
    for g in &green {
        g.set_failing_ratio(500, 0.05);
    }
    let gw = LiveGateway::start(&config(&backends(&blue), &backends(&green))).await;
    let (load, workers) = spawn_load(gw.addr);
    load.wait_more(200).await;

    let r = run_rollout(
        &gw,
        r#"{"route": "agents", "to": "green", "steps": [5, 25, 50, 100],
            "step_interval": "1s", "max_error_rate": 0.01, "min_requests": 60,
            "max_wait": "30s"}"#,
    )
    .await;
    // Requests already on their way to green when the split changed finish first.
    load.wait_more(200).await;
    let failed_at_rollback = load.failed();
    // The rollback is complete: green gets nothing more, so nothing more fails.
    load.wait_more(500).await;
    stop_load(&load, workers).await;

    eprintln!(
        "rollout (green with 5 % 500s), `sluicegate ctl rollout status {}`:\n{}",
        r.id,
        sluicegate::ctl::rollout::render(&r)
    );
    let to_green = load.ok[1].load(Ordering::Relaxed) + load.failed[1].load(Ordering::Relaxed);
    let failed = load.failed();
    let share = failed as f64 / to_green.max(1) as f64;
    eprintln!(
        "clients: {failed} failed requests of {to_green} sent to green ({:.2} %); {} ok overall; the gateway counted {} requests, {} errors on green in step 1",
        share * 100.0,
        load.ok(),
        r.steps[0].requests,
        r.steps[0].errors
    );
    assert_eq!(r.phase, Phase::RolledBack, "{r:#?}");
    let reason = r.reason.as_ref().expect("a reason");
    assert_eq!(
        (reason.metric.as_str(), reason.bound),
        ("error_rate", Some(0.01))
    );
    assert_eq!(r.steps.len(), 1, "rolled back at the first step");
    assert_eq!(
        r.steps[0].verdict,
        sluicegate::testing::control_plane::rollout::Verdict::Failed
    );
    assert_eq!(
        load.failed(),
        failed_at_rollback,
        "failures after the rollback"
    );
    assert_eq!(
        load.failed[0].load(Ordering::Relaxed) + load.failed[2].load(Ordering::Relaxed),
        0
    );
    assert!(to_green >= 60, "{to_green}");
    assert!((0.025..=0.075).contains(&share), "{failed} of {to_green}");
    let split = gw
        .state()
        .await
        .route("agents")
        .expect("route")
        .split
        .clone();
    assert_eq!((split[0].weight, split[1].weight), (100, 0));
}

#[tokio::test]
async fn rollout_api_errors_are_json_with_a_key_path() {
    let blue = agents("blue", "v1", 1).await;
    let green = agents("green", "v2", 1).await;
    let gw = LiveGateway::start(&config(&backends(&blue), &backends(&green))).await;
    let bad = gw
        .api(
            Method::POST,
            "/api/v1/rollouts",
            Some(r#"{"route": "agents", "to": "green", "steps": [5, 200], "step_interval": "1s"}"#),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["path"], "steps[1]");
    let shape = gw
        .api(
            Method::POST,
            "/api/v1/rollouts",
            Some(r#"{"route": "agents", "step": []}"#),
        )
        .await;
    assert_eq!(
        (shape.status.as_u16(), shape.json()["path"].as_str()),
        (400, Some("step"))
    );
    let body = r#"{"route": "agents", "to": "green", "steps": [5, 100], "step_interval": "1m"}"#;
    let ok = gw.api(Method::POST, "/api/v1/rollouts", Some(body)).await;
    assert_eq!(ok.status, 201);
    assert_eq!(ok.json()["id"], "agents-1");
    let again = gw.api(Method::POST, "/api/v1/rollouts", Some(body)).await;
    assert_eq!(
        (again.status.as_u16(), again.json()["path"].as_str()),
        (409, Some("route"))
    );
    let split = gw
        .api(
            Method::PUT,
            "/api/v1/routes/agents/split",
            Some(r#"{"blue": 1}"#),
        )
        .await;
    assert_eq!(split.status, 409, "{:?}", split.body);
    let missing = gw.api(Method::GET, "/api/v1/rollouts/agents-9", None).await;
    assert_eq!(
        (missing.status.as_u16(), missing.json()["path"].as_str()),
        (404, Some("id"))
    );
    let verb = gw
        .api(Method::POST, "/api/v1/rollouts/agents-1/explode", None)
        .await;
    assert_eq!(verb.status, 404);
    let list = gw.api(Method::GET, "/api/v1/rollouts", None).await;
    assert_eq!(list.json()["rollouts"][0]["phase"], "running");
    let abort = gw
        .api(Method::POST, "/api/v1/rollouts/agents-1/abort", None)
        .await;
    assert_eq!(
        (abort.status.as_u16(), abort.json()["phase"].as_str()),
        (200, Some("aborted"))
    );
    let twice = gw
        .api(Method::POST, "/api/v1/rollouts/agents-1/abort", None)
        .await;
    assert_eq!(twice.status, 409);
}

/// Malformed chunked bodies and uploads cut off mid-way, alternating, until `stop`
/// (at most `max`): client faults a rollout gate must not count against a pool.
async fn misbehave(addr: SocketAddr, stop: Arc<AtomicBool>, max: usize) -> usize {
    use tokio::io::AsyncWriteExt;
    let mut sent = 0;
    while sent < max && !stop.load(Ordering::Acquire) {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            continue;
        };
        let bytes: &[u8] = if sent % 2 == 0 {
            b"POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
        } else {
            b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100000\r\n\r\nten bytes."
        };
        let _ = s.write_all(bytes).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(s);
        sent += 1;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_faults_mixed_into_traffic_do_not_veto_a_healthy_rollout() {
    let blue = agents("blue", "v1", 2).await;
    let green = agents("green", "v2", 2).await;
    let gw = LiveGateway::start(&config(&backends(&blue), &backends(&green))).await;
    let (load, workers) = spawn_load(gw.addr);
    load.wait_more(100).await;
    let stop = Arc::new(AtomicBool::new(false));
    let abuse = tokio::spawn(misbehave(gw.addr, Arc::clone(&stop), 400));

    let r = run_rollout(
        &gw,
        r#"{"route": "agents", "to": "green", "steps": [25, 50, 100],
            "step_interval": "400ms", "max_error_rate": 0.01, "min_requests": 10,
            "max_wait": "20s"}"#,
    )
    .await;
    stop.store(true, Ordering::Release);
    let abused = abuse.await.expect("abuse task");
    stop_load(&load, workers).await;
    eprintln!("{abused} misbehaving requests during the rollout");
    assert!(abused >= 10, "only {abused} misbehaving requests");
    assert_eq!(r.phase, Phase::Succeeded, "{r:#?}");
    for step in &r.steps[..2] {
        assert_eq!(step.errors, 0, "{step:?}");
    }
    assert_eq!(load.failed(), 0);
}
