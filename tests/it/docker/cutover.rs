//! (c) blue-green and (d) canary through the gateway, under load, with the split
//! changed through the admin API. Blue and green are pools of the file without
//! probes of their own, so Docker's health check is what keeps a starting green
//! replica out of rotation.

use std::time::Duration;

use http::Request;
use tokio::time::Instant;

use super::front::{gateway, pool, serving, wait_state, SERIAL};
use super::SLOW;
use crate::support::docker::{cmd, Scope};
use crate::support::live::LiveGateway;
use crate::support::load::{describe_failures, failures, Load, Record};
use crate::support::{get, send};

const BODY: &str = r#"
[[pools]]
name = "blue"
[[pools]]
name = "green"
[[routes]]
name = "agents"
split = [{ pool = "blue", weight = 100 }, { pool = "green", weight = 0 }]
retries = 2
[[routes]]
name = "green-only"
match = { headers = { x-pool = "green" } }
split = [{ pool = "green", weight = 1 }]
"#;

/// Starts `n` replicas of `color` (reporting it as their version) that keep
/// serving 1 s after SIGTERM.
async fn replicas(
    scope: &Scope,
    color: &str,
    n: usize,
    docker_args: &[&str],
    agent_args: &[&str],
) -> Vec<String> {
    let label = scope.label("pool", color);
    let version = format!("AGENT_VERSION={color}");
    let mut args = vec!["-e", "AGENT_STOP_DELAY=1s", "-e", &version];
    args.extend(docker_args);
    let mut names = Vec::new();
    for i in 1..=n {
        let short = format!("{color}{i}");
        names.push(
            scope
                .agent(&short, std::slice::from_ref(&label), &args, agent_args)
                .await,
        );
    }
    names
}

/// `docker stop` of every name at once.
async fn stop_all(names: &[String]) {
    let stops = names
        .iter()
        .map(|n| async move { cmd("docker", &["stop", "-t", "10", n]).await });
    futures_util::future::join_all(stops).await;
}

fn green_share(records: &[Record]) -> f64 {
    let green = records.iter().filter(|r| r.version == "green").count();
    green as f64 / records.len().max(1) as f64
}

/// Sets the route's split through the admin API; returns once it is live.
async fn split(gw: &LiveGateway, blue: u32, green: u32) -> Instant {
    gw.split(
        "agents",
        &format!("{{\"blue\": {blue}, \"green\": {green}}}"),
    )
    .await;
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_blue_green_flip_then_stop_blue_drops_nothing() {
    let scope = scope!("gwbluegreen");
    let _serial = SERIAL.lock().await;
    let gw = gateway(&scope, "[\"*\"]", BODY, None).await;
    let blue = replicas(&scope, "blue", 3, &["--no-healthcheck"], &[]).await;
    wait_state(&gw, SLOW, "blue serving", |s| serving(s, "blue", 3)).await;
    let load = Load::start(gw.addr);
    let began = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Green starts "starting" and stays so until its /health is switched on.
    let health = [
        "--health-interval",
        "500ms",
        "--health-retries",
        "1",
        "--health-start-period",
        "60s",
    ];
    replicas(&scope, "green", 3, &health, &["--start-unhealthy"]).await;
    let state = wait_state(&gw, SLOW, "green present, Docker health starting", |s| {
        let g = pool(s, "green");
        g.len() == 3 && g.iter().all(|b| b.docker_healthy == Some(false))
    })
    .await;
    let probe = get(gw.addr, "/", &[("x-pool", "green")]).await;
    assert_eq!(
        (probe.status.as_u16(), probe.error()),
        (503, "no_healthy_backend"),
        "a starting green replica got a request"
    );
    for b in pool(&state, "green") {
        let ok = Request::post("/control/health?ok=true")
            .header("host", "agent")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let addr = b.addr.parse().expect("backend address");
        // Docker lists the container as soon as it runs; its port may not be open yet.
        let deadline = Instant::now() + SLOW;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "{addr} never accepted a connection"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(send(addr, ok).await.status, 200);
    }
    let healthy_from = Instant::now();
    wait_state(&gw, SLOW, "green Docker-healthy", |s| {
        serving(s, "green", 3)
    })
    .await;
    let took = healthy_from.elapsed();
    let probe = get(gw.addr, "/", &[("x-pool", "green")]).await;
    assert_eq!(
        (
            probe.status.as_u16(),
            probe.headers["x-agent-version"].to_str().ok()
        ),
        (200, Some("green"))
    );

    let flipping = Instant::now();
    let flipped = split(&gw, 0, 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = Instant::now();
    stop_all(&blue).await;
    wait_state(&gw, SLOW, "blue gone", |s| pool(s, "blue").is_empty()).await;
    let stopped = stopping.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let records = load.stop().await;

    let (get_failed, post_failed) = failures(&records);
    let before: Vec<Record> = records
        .iter()
        .filter(|r| r.done < flipping)
        .cloned()
        .collect();
    let after: Vec<Record> = records
        .iter()
        .filter(|r| r.sent >= flipped)
        .cloned()
        .collect();
    let not_green = after.iter().filter(|r| r.version != "green").count();
    eprintln!(
        "FIGURE (c) blue-green: {} requests in {:.1?}, failed GET {get_failed} POST {post_failed}; green Docker-healthy {took:.1?} after its /health was switched on; before the flip {} answers, {:.1}% green; after the flip {} answers, {not_green} not from green; stopping blue x3 took {stopped:.1?}",
        records.len(),
        records.last().map_or(Duration::ZERO, |r| r.done - began),
        before.len(),
        100.0 * green_share(&before),
        after.len(),
    );
    assert_eq!(
        (get_failed, post_failed),
        (0, 0),
        "{:?}",
        describe_failures(&records, 5)
    );
    assert_eq!(green_share(&before), 0.0);
    assert_eq!(not_green, 0);
    assert!(!after.is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_canary_95_5_then_50_50_then_100_keeps_shares_within_5_points() {
    let scope = scope!("gwcanary");
    let _serial = SERIAL.lock().await;
    let gw = gateway(&scope, "[\"*\"]", BODY, None).await;
    replicas(&scope, "blue", 2, &["--no-healthcheck"], &[]).await;
    replicas(&scope, "green", 2, &["--no-healthcheck"], &[]).await;
    wait_state(&gw, SLOW, "blue and green serving", |s| {
        serving(s, "blue", 2) && serving(s, "green", 2)
    })
    .await;
    let load = Load::start(gw.addr);
    let mut lines = Vec::new();
    for (blue, green) in [(95u32, 5u32), (50, 50), (0, 100)] {
        let open = split(&gw, blue, green).await;
        let p = f64::from(green) / f64::from(blue + green);
        // Enough answers that 5 points are four standard deviations (min 400).
        let needed = (6400.0 * p * (1.0 - p)).ceil().max(400.0) as usize;
        load.wait_answers(open, needed, Duration::from_secs(60))
            .await;
        let close = Instant::now();
        let step: Vec<Record> = load
            .since(open)
            .into_iter()
            .filter(|r| r.done <= close)
            .collect();
        let share = green_share(&step);
        let (get_failed, post_failed) = failures(&step);
        lines.push(format!(
            "{blue}/{green}: {} answers, green {:.1}% (want {:.0}%), failed GET {get_failed} POST {post_failed}",
            step.len(),
            100.0 * share,
            100.0 * p
        ));
        assert!((share - p).abs() <= 0.05, "{}", lines.join("; "));
        assert_eq!(
            (get_failed, post_failed),
            (0, 0),
            "{:?}",
            describe_failures(&step, 5)
        );
    }
    let records = load.stop().await;
    let (get_failed, post_failed) = failures(&records);
    eprintln!(
        "FIGURE (d) canary: {}; whole run {} requests, failed GET {get_failed} POST {post_failed}",
        lines.join("; "),
        records.len()
    );
    assert_eq!(
        (get_failed, post_failed),
        (0, 0),
        "{:?}",
        describe_failures(&records, 5)
    );
    gw.stop().await;
}
