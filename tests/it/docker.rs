//! Docker discovery against the real engine: labelled echo agents in containers
//! on a per-test network, found by `sluicegate::discovery` within the bounds the
//! design promises. Without an engine these tests print a skip notice (and fail
//! when `CI=true`). Every container, network and image is removed afterwards.

use std::time::{Duration, Instant};

use sluicegate::config::spec::ProjectFilter;
use tokio_util::sync::CancellationToken;

use crate::support::docker::{cmd, names, wait_set, wait_status};
use crate::support::get;
use compose::{compose_available, compose_file, ComposeDown};

/// "Shows up within 2 s" (DESIGN: within a second; 2 s leaves room for a busy CI).
const APPEAR: Duration = Duration::from_secs(2);
/// Bound for slower steps (Docker health checks, compose, reconnects).
const SLOW: Duration = Duration::from_secs(20);

macro_rules! scope {
    ($test:literal) => {{
        let Some(run) = $crate::support::docker::run($test) else {
            return;
        };
        $crate::support::docker::Scope::new(run, $test).await
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_labelled_agents_appear_within_2s_and_answer_on_their_address() {
    let scope = scope!("three");
    let shutdown = CancellationToken::new();
    let mut d = scope.discover(None, ProjectFilter::Any, &shutdown);
    wait_status(&mut d.status, SLOW, |s| s.lists > 0).await;
    let pool = scope.label("pool", "agents");
    let started = Instant::now();
    let mut expected = Vec::new();
    for short in ["a", "b", "c"] {
        expected.push(
            scope
                .agent(
                    short,
                    std::slice::from_ref(&pool),
                    &["--no-healthcheck"],
                    &[],
                )
                .await,
        );
    }
    let launched = started.elapsed();
    let last_run = Instant::now();
    let set = wait_set(&mut d.sets, APPEAR, |s| s.pool("agents").len() == 3)
        .await
        .unwrap_or_else(|last| panic!("3 agents not discovered within {APPEAR:?}: {last:#?}"));
    eprintln!(
        "three agents: docker run x3 took {launched:.1?}; all 3 in the set {:.0?} after the last run returned",
        last_run.elapsed()
    );
    assert_eq!(names(&set, "agents"), expected);
    for b in set.pool("agents") {
        assert!(
            b.is_eligible() && b.weight == 1 && &*b.network == scope.name.as_str(),
            "{b:?}"
        );
        let reply = get(b.addr, "/health", &[]).await;
        assert_eq!(reply.status, 200, "{b:?}");
        assert!(
            b.container_name.ends_with(&format!("-{}", reply.agent())),
            "{b:?} answered as {}",
            reply.agent()
        );
    }
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_scale_up_and_down_is_followed_within_2s() {
    let scope = scope!("scale");
    let Some(compose) = compose_available("scale") else {
        return;
    };
    let project = scope.name.replace('-', "");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(&file, compose_file(&scope)).expect("write compose file");
    let file = file.to_string_lossy().into_owned();
    let _down = ComposeDown::new(&compose, &project, &[&file]);
    let shutdown = CancellationToken::new();
    let only = ProjectFilter::Only(vec![project.clone()]);
    let mut d = scope.discover(None, only, &shutdown);
    wait_status(&mut d.status, SLOW, |s| s.lists > 0).await;
    let up = |n: &'static str| {
        let (compose, project, file) = (compose.clone(), project.clone(), file.clone());
        async move {
            let started = Instant::now();
            let scale = format!("agent={n}");
            cmd(
                &compose,
                &[
                    "-p",
                    &project,
                    "-f",
                    &file,
                    "up",
                    "-d",
                    "--no-recreate",
                    "--scale",
                    &scale,
                ],
            )
            .await;
            (started, started.elapsed())
        }
    };
    for n in ["3", "5", "2"] {
        let want: usize = n.parse().expect("number");
        let (started, took) = up(n).await;
        let returned = Instant::now();
        let set = wait_set(&mut d.sets, APPEAR, |s| s.pool("agent").len() == want)
            .await
            .unwrap_or_else(|last| {
                panic!("scale {n} not followed within {APPEAR:?} of compose returning: {last:#?}")
            });
        eprintln!(
            "compose --scale agent={n}: compose took {took:.1?}; set had {want} backends {:.0?} after it returned ({:.1?} after it started)",
            returned.elapsed(),
            started.elapsed()
        );
        assert!(
            set.pool("agent").iter().all(|b| b.is_eligible()),
            "{set:#?}"
        );
    }
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_kill_send_a_drain_hint_before_the_backend_leaves_the_set() {
    let scope = scope!("stop");
    let shutdown = CancellationToken::new();
    let mut d = scope.discover(None, ProjectFilter::Any, &shutdown);
    let pool = scope.label("pool", "p");
    let mut names_started = Vec::new();
    for short in ["a", "b", "c"] {
        names_started.push(
            scope
                .agent(
                    short,
                    std::slice::from_ref(&pool),
                    &["--no-healthcheck"],
                    &[],
                )
                .await,
        );
    }
    wait_set(&mut d.sets, APPEAR, |s| s.pool("p").len() == 3)
        .await
        .expect("3 agents");
    for (victim, how) in [
        (&names_started[0], vec!["stop", "-t", "5"]),
        (&names_started[1], vec!["kill", "-s", "KILL"]),
    ] {
        let started = Instant::now();
        let mut args = how.clone();
        args.push(victim);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let docker = tokio::spawn(async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            cmd("docker", &refs).await
        });
        let hint = tokio::time::timeout(APPEAR, d.drains.recv())
            .await
            .unwrap_or_else(|_| panic!("no drain hint within {APPEAR:?} of docker {}", how[0]))
            .expect("hint channel open");
        // The hint comes first: at this moment the backend is still in the set, marked draining.
        let still = d.sets.borrow().clone();
        let in_set = still
            .pool("p")
            .iter()
            .find(|b| &*b.container_name == victim.as_str())
            .cloned();
        eprintln!(
            "docker {}: drain hint ({}) after {:.0?}",
            how[0],
            hint.action,
            started.elapsed()
        );
        assert_eq!(&*hint.container_name, victim.as_str());
        let in_set = in_set
            .unwrap_or_else(|| panic!("{victim} left the set before its drain hint: {still:#?}"));
        assert!(
            in_set.draining && !in_set.is_eligible() && in_set.addr == hint.addr,
            "{in_set:?}"
        );
        wait_set(&mut d.sets, SLOW, |s| !names(s, "p").contains(victim))
            .await
            .expect("stopped container leaves the set");
        eprintln!(
            "docker {}: gone from the set after {:.0?}",
            how[0],
            started.elapsed()
        );
        docker.await.expect("docker command");
    }
    let left = wait_set(&mut d.sets, APPEAR, |s| s.pool("p").len() == 1)
        .await
        .expect("one left");
    assert!(left.pool("p")[0].is_eligible(), "{left:#?}");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_label_skips_that_container_with_its_reason_and_others_stay() {
    let scope = scope!("broken");
    let shutdown = CancellationToken::new();
    let mut d = scope.discover(None, ProjectFilter::Any, &shutdown);
    let pool = scope.label("pool", "p");
    let good = scope
        .agent(
            "good",
            std::slice::from_ref(&pool),
            &["--no-healthcheck"],
            &[],
        )
        .await;
    let bad = scope
        .agent(
            "bad",
            &[pool.clone(), scope.label("weight", "heavy")],
            &["--no-healthcheck"],
            &[],
        )
        .await;
    let port = scope
        .agent(
            "port",
            &[pool, scope.label("port", "http")],
            &["--no-healthcheck"],
            &[],
        )
        .await;
    let set = wait_set(&mut d.sets, APPEAR, |s| {
        s.skipped.len() == 2 && s.pool("p").len() == 1
    })
    .await
    .unwrap_or_else(|last| panic!("expected 1 backend and 2 skipped: {last:#?}"));
    assert_eq!(names(&set, "p"), vec![good]);
    let reasons: Vec<(String, String)> = set
        .skipped
        .iter()
        .map(|s| (s.container_name.to_string(), s.reason.to_string()))
        .collect();
    assert_eq!(reasons[0].0, bad);
    assert!(
        reasons[0].1.contains(".weight") && reasons[0].1.contains("\"heavy\""),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0, port);
    assert!(
        reasons[1]
            .1
            .contains(".port = \"http\" is not a port number"),
        "{reasons:?}"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_health_starting_is_present_but_not_eligible_until_healthy() {
    let scope = scope!("health");
    let shutdown = CancellationToken::new();
    let mut d = scope.discover(None, ProjectFilter::Any, &shutdown);
    let health = [
        "--health-interval",
        "500ms",
        "--health-start-period",
        "60s",
        "--health-retries",
        "1",
    ];
    let name = scope
        .agent(
            "a",
            &[scope.label("pool", "p")],
            &health,
            &["--start-unhealthy"],
        )
        .await;
    let set = wait_set(&mut d.sets, APPEAR, |s| s.pool("p").len() == 1)
        .await
        .expect("present");
    let b = set.pool("p")[0].clone();
    assert!(!b.docker_healthy && !b.is_eligible(), "{b:?}");
    let state = cmd(
        "docker",
        &["inspect", "-f", "{{.State.Health.Status}}", &name],
    )
    .await;
    assert_eq!(state.trim(), "starting");
    // The agent's own switch; Docker's next probe sees it and the set flips.
    let post = http::Request::post("/control/health?ok=true")
        .header("host", "agent")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    assert_eq!(crate::support::send(b.addr, post).await.status, 200);
    let started = Instant::now();
    let set = wait_set(&mut d.sets, SLOW, |s| {
        s.pool("p").first().is_some_and(|b| b.docker_healthy)
    })
    .await
    .expect("becomes healthy");
    eprintln!(
        "docker health: eligible {:.1?} after the agent turned healthy",
        started.elapsed()
    );
    assert!(set.pool("p")[0].is_eligible());
    shutdown.cancel();
}

mod compose;
mod cutover;
mod deploy;
mod example;
mod front;
mod h2c;
mod network;
mod reconnect;
mod scale;
mod stop;
