//! Health with real echo agents: active probes, passive ejection, backups, slow start,
//! many backends (`many`), hold (`hold`). Timings use 100 ms probe intervals; every
//! wait is bounded.
//! Run with `--nocapture` to see the measured figures (`health:` lines).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use sluicegate::testing::data_plane::backend::BackendState;
use sluicegate::testing::data_plane::health::{HealthChange, HealthEvent, HealthStatus};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::{agents, backends, get, until_agent_has, Reply, TestGateway, WAIT};

mod hold;
mod many;

/// `[pools.health]` with 100 ms interval, 80 ms timeout.
pub(crate) fn probe(rise: u32, fall: u32) -> String {
    format!(
        "[pools.health]\ninterval = \"100ms\"\ntimeout = \"80ms\"\nrise = {rise}\nfall = {fall}\n"
    )
}

pub(crate) const INTERVAL: Duration = Duration::from_millis(100);
pub(crate) const TIMEOUT: Duration = Duration::from_millis(80);
/// Allowance for scheduling on a busy 2-core machine in timing asserts.
pub(crate) const SLACK: Duration = Duration::from_millis(150);

pub(crate) fn route(extra: &str) -> String {
    format!("[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\n{extra}\n")
}

/// Waits for the next event about `addr` that `want` accepts; returns it and when.
pub(crate) async fn wait_for(
    events: &mut broadcast::Receiver<HealthEvent>,
    addr: SocketAddr,
    want: impl Fn(&HealthChange) -> bool,
) -> (HealthChange, Instant) {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) if e.addr == addr && want(&e.change) => return (e.change, Instant::now()),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching health event for {addr} in time"))
}

pub(crate) fn to(status: HealthStatus) -> impl Fn(&HealthChange) -> bool {
    move |c| matches!(c, HealthChange::Status { to, .. } if *to == status)
}

pub(crate) fn state_of(gw: &TestGateway, addr: SocketAddr) -> Arc<BackendState> {
    let snapshot = gw.snapshot.load();
    let pool = snapshot.pool("p").expect("pool p");
    let backend = pool.backends().find(|b| b.addr == addr).expect("backend");
    Arc::clone(&backend.state)
}

/// One answered request of a load loop.
struct Seen {
    at: Instant,
    status: StatusCode,
    agent: String,
}

/// `workers` concurrent GET loops, each bounded to `max` requests, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Seen>>>,
}

impl Load {
    fn start(addr: SocketAddr, workers: usize, max: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|_| {
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) && seen.len() < max {
                        let r: Reply = get(addr, "/", &[]).await;
                        let agent = r.agent().to_owned();
                        seen.push(Seen {
                            at: Instant::now(),
                            status: r.status,
                            agent,
                        });
                    }
                    seen
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            let seen = tokio::time::timeout(WAIT, task)
                .await
                .expect("load loop ends")
                .expect("load task");
            all.extend(seen);
        }
        all.sort_by_key(|s| s.at);
        all
    }
}

fn failed(seen: &[Seen]) -> Vec<(StatusCode, &str)> {
    seen.iter()
        .filter(|s| s.status != StatusCode::OK)
        .map(|s| (s.status, s.agent.as_str()))
        .collect()
}

/// Starts a gateway over `agents` in pool `p` with `pool_extra` and waits until all
/// of them passed their first probe.
pub(crate) async fn healthy_gateway(addrs: &[SocketAddr], config: &str) -> TestGateway {
    let mut gw = TestGateway::start(config).await;
    for &addr in addrs {
        if state_of(&gw, addr).health().status() != HealthStatus::Healthy {
            wait_for(&mut gw.events, addr, to(HealthStatus::Healthy)).await;
        }
    }
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_stops_getting_traffic_without_failed_requests() {
    let a = agents("kill", "v1", 3).await;
    let addrs: Vec<SocketAddr> = a.iter().map(|x| x.addr()).collect();
    let fall = 2;
    let config = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n{}{}",
        backends(&a),
        probe(1, fall),
        route("retries = 2")
    );
    let mut gw = healthy_gateway(&addrs, &config).await;
    let dead = state_of(&gw, addrs[1]);
    let load = Load::start(gw.addr, 4, 5_000);
    until_agent_has(&a[1], 20, "traffic reaches the agent").await;

    let killed = Instant::now();
    a[1].shutdown();
    let attempts_at_kill = dead.requests();
    let (_, unhealthy) = wait_for(&mut gw.events, addrs[1], to(HealthStatus::Unhealthy)).await;
    let detection = unhealthy - killed;
    // From `fall × interval + one interval` after the kill, no attempt goes there.
    tokio::time::sleep_until(killed + INTERVAL * (fall + 1)).await;
    let attempts_then = dead.requests();
    // At least 60 more requests reach the live agents before the load stops, however
    // slow a loaded machine makes them (the agents' counts have no signal to await).
    let live = || a[0].requests() + a[2].requests();
    let live_then = live();
    let _ = tokio::time::timeout(WAIT, async {
        while live() < live_then + 60 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let attempts_later = dead.requests();
    let seen = load.finish().await;

    eprintln!(
        "health: (a) kill -> unhealthy {} ms; {} attempts on the dead agent after the kill (retried), {} requests, {} failed",
        detection.as_millis(),
        attempts_then - attempts_at_kill,
        seen.len(),
        failed(&seen).len()
    );
    assert_eq!(failed(&seen), [], "every request answered by a live agent");
    assert!(
        detection <= INTERVAL * fall + TIMEOUT + SLACK,
        "{detection:?}"
    );
    assert_eq!(
        attempts_later, attempts_then,
        "no traffic after fall × interval + interval"
    );
    let after = seen
        .iter()
        .filter(|s| s.at > killed + INTERVAL * (fall + 1));
    assert!(after.clone().count() > 50, "the loop kept going");
    assert!(after.clone().all(|s| s.agent != a[1].name()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_alone_takes_a_killed_agent_out() {
    let a = agents("passive", "v1", 3).await;
    let addrs: Vec<SocketAddr> = a.iter().map(|x| x.addr()).collect();
    let config = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n[pools.outlier]\nconsecutive_failures = 3\nbase_ejection = \"30s\"\n{}",
        backends(&a),
        route("retries = 2")
    );
    let mut gw = TestGateway::start(&config).await;
    let dead = state_of(&gw, addrs[1]);
    let load = Load::start(gw.addr, 4, 5_000);
    until_agent_has(&a[1], 20, "traffic reaches the agent").await;
    let killed = Instant::now();
    let attempts_at_kill = dead.requests();
    a[1].shutdown();
    let (_, ejected) = wait_for(&mut gw.events, addrs[1], |c| {
        matches!(c, HealthChange::Ejected { .. })
    })
    .await;
    let attempts_at_ejection = dead.requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = load.finish().await;
    eprintln!(
        "health: (a, passive only) kill -> ejected {} ms after {} attempts; {} requests, {} failed",
        (ejected - killed).as_millis(),
        attempts_at_ejection - attempts_at_kill,
        seen.len(),
        failed(&seen).len()
    );
    assert_eq!(failed(&seen), []);
    assert!(dead.is_ejected());
    // In-flight attempts picked just before the ejection may still land; none after.
    assert!(dead.requests() - attempts_at_ejection <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_ejects_and_recovery_ramps_traffic_back() {
    let a = agents("flap", "v1", 3).await;
    let addrs: Vec<SocketAddr> = a.iter().map(|x| x.addr()).collect();
    let (rise, fall) = (2, 2);
    let config = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\nslow_start = \"1s\"\n{}{}",
        backends(&a),
        probe(rise, fall),
        route("retries = 2")
    );
    let mut gw = healthy_gateway(&addrs, &config).await;
    let load = Load::start(gw.addr, 2, 20_000);

    // (b) /health fails while the agent still serves.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let flipped = Instant::now();
    a[1].set_healthy(false);
    let (_, unhealthy) = wait_for(&mut gw.events, addrs[1], to(HealthStatus::Unhealthy)).await;
    let detection = unhealthy - flipped;
    // Requests picked just before the flip may still be on their way.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let served_then = a[1].requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served_later = a[1].requests();

    // (c) it comes back: traffic returns after `rise` passes, ramped over 1 s.
    let restored = Instant::now();
    a[1].set_healthy(true);
    let (_, healthy) = wait_for(&mut gw.events, addrs[1], to(HealthStatus::Healthy)).await;
    let recovery = healthy - restored;
    tokio::time::sleep_until(healthy + Duration::from_millis(1_600)).await;
    let seen = load.finish().await;

    let share = |from: Duration, until: Duration| {
        let window: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.at >= healthy + from && s.at < healthy + until)
            .collect();
        let hits = window.iter().filter(|s| s.agent == a[1].name()).count();
        (hits as f64 / window.len().max(1) as f64, window.len())
    };
    let (early, early_n) = share(Duration::ZERO, Duration::from_millis(250));
    let (late, late_n) = share(Duration::from_millis(1_100), Duration::from_millis(1_600));
    eprintln!(
        "health: (b) /health failing -> unhealthy {} ms; {} failed of {} requests; (c) back after {} ms, share {:.0}% in the first 250 ms ({early_n} requests), {:.0}% after the 1 s ramp ({late_n} requests)",
        detection.as_millis(),
        failed(&seen).len(),
        seen.len(),
        recovery.as_millis(),
        early * 100.0,
        late * 100.0
    );
    assert_eq!(failed(&seen), []);
    assert!(
        detection <= INTERVAL * fall + TIMEOUT + SLACK,
        "{detection:?}"
    );
    assert_eq!(served_later, served_then, "no traffic while unhealthy");
    assert!(
        recovery <= INTERVAL * rise + TIMEOUT + SLACK,
        "{recovery:?}"
    );
    assert!(
        early_n >= 20 && late_n >= 20,
        "{early_n} / {late_n} samples"
    );
    assert!(early < 0.2, "ramping share {early}");
    assert!(late > 0.25, "ramped share {late}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_takes_over_only_when_every_primary_is_down_and_gives_back() {
    let a = agents("bk", "v1", 3).await;
    let addrs: Vec<SocketAddr> = a.iter().map(|x| x.addr()).collect();
    let config = format!(
        "[[pools]]\nname = \"p\"\nbackends = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}, {{ addr = \"{}\", backup = true }}]\n{}{}",
        addrs[0],
        addrs[1],
        addrs[2],
        probe(1, 1),
        route("")
    );
    let mut gw = healthy_gateway(&addrs, &config).await;
    let agents_of = |seen: &[Reply]| -> Vec<String> {
        let mut names: Vec<String> = seen.iter().map(|r| r.agent().to_owned()).collect();
        names.sort();
        names.dedup();
        names
    };
    let burst = |n: usize| async move {
        let mut out = Vec::new();
        for _ in 0..n {
            let r = get(gw.addr, "/", &[]).await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.error());
            out.push(r);
        }
        out
    };
    assert_eq!(agents_of(&burst(20).await), ["bk-1", "bk-2"]);

    a[0].set_healthy(false);
    wait_for(&mut gw.events, addrs[0], to(HealthStatus::Unhealthy)).await;
    assert_eq!(
        agents_of(&burst(20).await),
        ["bk-2"],
        "one primary left: no backup"
    );
    a[1].set_healthy(false);
    wait_for(&mut gw.events, addrs[1], to(HealthStatus::Unhealthy)).await;
    assert_eq!(agents_of(&burst(20).await), ["bk-3"], "backup takes over");

    let backup_before = a[2].requests();
    a[0].set_healthy(true);
    wait_for(&mut gw.events, addrs[0], to(HealthStatus::Healthy)).await;
    assert_eq!(agents_of(&burst(20).await), ["bk-1"], "and gives back");
    assert_eq!(a[2].requests(), backup_before);
}

/// `[pools.health]` whose periodic probes are far apart: only the first probe (at a
/// random delay under a second) happens during a test.
fn slow_probe(timeout: &str) -> String {
    format!("[pools.health]\ninterval = \"30s\"\ntimeout = \"{timeout}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_just_started_answers_from_a_probed_pool_at_once() {
    // Before the gateway waited for the first probes, a request in the first
    // moments found its backend not yet probed (no traffic) and got 503.
    let a = agents("fresh", "v1", 2).await;
    let config = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n{}{}",
        backends(&a),
        slow_probe("1s"),
        route("")
    );
    let gw = TestGateway::start(&config).await;
    let reply = tokio::time::timeout(WAIT, get(gw.addr, "/", &[]))
        .await
        .expect("answered in time");
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "first request after start: {:?}",
        reply.headers.get("sluicegate-error")
    );
    assert!(reply.agent().starts_with("fresh-"), "{}", reply.agent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_probed_backend_is_down_still_starts_serving_within_its_bound() {
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let config = format!(
        "[[pools]]\nname = \"p\"\nbackends = [{{ addr = \"{down}\" }}]\n{}fall = 3\n{}",
        slow_probe("200ms"),
        route("")
    );
    let started = Instant::now();
    let gw = TestGateway::start(&config).await;
    let reply = tokio::time::timeout(WAIT, get(gw.addr, "/", &[]))
        .await
        .expect("answered in time");
    let waited = started.elapsed();
    // One failed probe does not change the status with `fall = 3`: the wait ends on
    // the probe's result, not on a health event.
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    // The refused probe ends the wait: under the first delay (< 1 s) and some
    // scheduling. Waiting for a status change instead would last the whole bound,
    // first delay + timeout + slack = 1.7 s.
    assert!(
        waited < Duration::from_millis(1500),
        "served after {waited:?}"
    );
}
