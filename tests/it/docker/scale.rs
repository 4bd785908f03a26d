//! (a) `docker-compose up --scale` through the gateway under load: 3 replicas
//! get traffic within 2 s, scaling to 5 adds the new two within 2 s, scaling to
//! 2 drops no request. The pool exists only because the route names it, so it
//! gets the label default: a `/health` probe (no traffic before the first pass).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::compose::{compose_available, compose_file, ComposeDown};
use super::front::{gateway, pool, wait_state, SERIAL};
use super::{APPEAR, SLOW};
use crate::support::docker::{cmd, started_at};
use crate::support::load::{by_agent, describe_failures, failures, first_answer, Load, Record};

const BODY: &str = r#"
[[routes]]
name = "agents"
split = [{ pool = "agent", weight = 1 }]
retries = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compose_scale_3_5_2_through_the_gateway_under_load() {
    let scope = scope!("gwscale");
    let Some(compose) = compose_available("gwscale") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let project = scope.name.replace('-', "");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(&file, compose_file(&scope)).expect("write compose file");
    let file = file.to_string_lossy().into_owned();
    let _down = ComposeDown::new(&compose, &project, &[&file]);
    let gw = gateway(&scope, &format!("[\"{project}\"]"), BODY, None).await;
    let up = |n: usize| {
        let (compose, project, file) = (compose.clone(), project.clone(), file.clone());
        async move {
            let scale = format!("agent={n}");
            let args = ["-p", &project, "-f", &file, "up", "-d", "--no-recreate"];
            let mut args = args.to_vec();
            args.extend(["--scale", &scale]);
            let started = Instant::now();
            cmd(&compose, &args).await;
            (started, Instant::now())
        }
    };

    let load = Load::start(gw.addr);
    let mut seen = BTreeSet::new();
    let mut first_ok = None;
    for n in [3, 5] {
        let (started, returned) = up(n).await;
        let deadline = returned + SLOW;
        let new = loop {
            let agents = by_agent(&load.since(started));
            let new: BTreeSet<String> = agents
                .keys()
                .filter(|a| !seen.contains(*a))
                .cloned()
                .collect();
            if seen.len() + new.len() >= n {
                break new;
            }
            assert!(
                Instant::now() < deadline,
                "scale {n}: only {agents:?} answered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let firsts = first_answer(&load.since(started));
        first_ok.get_or_insert_with(|| firsts.values().copied().min().expect("an answer"));
        let starts = started_at(&scope.scope_label()).await;
        let mut slowest = Duration::ZERO;
        for agent in &new {
            let first = load.wall(firsts[agent]);
            let began = starts
                .get(agent)
                .unwrap_or_else(|| panic!("no start time of {agent}: {starts:?}"));
            let took = first.duration_since(*began).unwrap_or_default();
            eprintln!(
                "scale {n}: {agent} answered {took:.0?} after its container started ({:.1?} after `up --scale` began, {:.0?} after it returned)",
                firsts[agent] - started,
                firsts[agent].saturating_duration_since(returned),
            );
            slowest = slowest.max(took);
        }
        eprintln!(
            "FIGURE (a) scale to {n}: compose took {:.1?}; each new replica answered within {slowest:.0?} of its container starting",
            returned - started,
        );
        assert!(
            slowest <= APPEAR,
            "scale {n}: slowest first answer {slowest:?}"
        );
        seen.extend(new);
    }

    let (started, returned) = up(2).await;
    wait_state(&gw, SLOW, "2 backends left", |s| {
        pool(s, "agent").len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let down = load.since(started);
    let records = load.stop().await;
    let after_first: Vec<Record> = records
        .into_iter()
        .filter(|r| first_ok.is_some_and(|t| r.sent >= t))
        .collect();
    let (get_failed, post_failed) = failures(&down);
    let (all_get, all_post) = failures(&after_first);
    eprintln!(
        "FIGURE (a) scale 5 -> 2 (compose took {:.1?}): {} requests, failed GET {get_failed} POST {post_failed}; whole run after the first answer: {} requests, failed GET {all_get} POST {all_post}",
        returned - started,
        down.len(),
        after_first.len()
    );
    assert_eq!(
        (get_failed, post_failed),
        (0, 0),
        "{:?}",
        describe_failures(&down, 5)
    );
    assert_eq!(
        (all_get, all_post),
        (0, 0),
        "{:?}",
        describe_failures(&after_first, 5)
    );
    gw.stop().await;
}
