//! (b) `docker stop` and `docker kill -s KILL` of replicas mid-load, and (e) a
//! broken label, through the gateway.
//!
//! The agents keep serving 1 s after SIGTERM (`AGENT_STOP_DELAY`), like any
//! replica that expects its load balancer to drain it: the gateway drains on the
//! `kill` event, so a `docker stop` loses nothing, POSTs included. `KILL` gives
//! no such chance: requests in flight on that replica die with it; GETs are
//! retried on another replica, POSTs that were already sent are not (they are
//! counted and printed, not asserted).

use std::time::Duration;

use tokio::time::Instant;

use super::front::{container, gateway, pool, serving, wait_state, SERIAL};
use super::SLOW;
use crate::support::docker::cmd;
use crate::support::load::{by_agent, describe_failures, failures, Load, Record};

const BODY: &str = r#"
[[routes]]
name = "agents"
split = [{ pool = "p", weight = 1 }]
retries = 2
"#;

/// Records sent in `[from, to)`.
fn between(records: &[Record], from: Instant, to: Instant) -> Vec<Record> {
    records
        .iter()
        .filter(|r| r.sent >= from && r.sent < to)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_stop_and_kill_mid_load_fail_no_get_and_e_a_broken_label_is_skipped() {
    let scope = scope!("gwstop");
    let _serial = SERIAL.lock().await;
    let gw = gateway(&scope, "[\"*\"]", BODY, None).await;
    let pool_label = scope.label("pool", "p");
    let mut names = Vec::new();
    for short in ["a", "b", "c", "d"] {
        let name = scope
            .agent(
                short,
                std::slice::from_ref(&pool_label),
                &["--no-healthcheck", "-e", "AGENT_STOP_DELAY=1s"],
                &[],
            )
            .await;
        names.push(name);
    }
    let bad = scope
        .agent(
            "bad",
            &[pool_label.clone(), scope.label("weight", "heavy")],
            &["--no-healthcheck"],
            &[],
        )
        .await;
    let state = wait_state(&gw, SLOW, "4 serving and 1 skipped", |s| {
        serving(s, "p", 4) && s.docker.as_ref().is_some_and(|d| d.skipped.len() == 1)
    })
    .await;
    // (e) The skipped container and its reason are in the state; the others serve.
    let skipped = &state.docker.as_ref().expect("docker state").skipped[0];
    eprintln!(
        "FIGURE (e) skipped {}: {}",
        skipped.container, skipped.reason
    );
    assert_eq!(skipped.container, bad);
    assert!(
        skipped.reason.contains(".weight") && skipped.reason.contains("\"heavy\""),
        "{skipped:?}"
    );

    let load = Load::start(gw.addr);
    let began = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let victims = [
        (&names[0], vec!["stop", "-t", "10"]),
        (&names[1], vec!["kill", "-s", "KILL"]),
    ];
    let mut phases = Vec::new();
    for (victim, how) in &victims {
        let addr = container(&gw.state().await, "p", victim)
            .expect("victim is a backend")
            .addr
            .clone();
        let from = Instant::now();
        let mut args = how.clone();
        args.push(victim.as_str());
        cmd("docker", &args).await;
        let returned = Instant::now();
        wait_state(&gw, SLOW, "the stopped replica leaves the pool", |s| {
            pool(s, "p").iter().all(|b| b.addr != addr)
        })
        .await;
        let gone = Instant::now();
        // Enough answers after the change to see who serves now.
        load.wait_answers(gone, 200, SLOW).await;
        phases.push((how[0], from, returned - from, gone - from));
    }
    let until = Instant::now();
    let records = load.stop().await;

    let agents = by_agent(&between(&records, phases[1].1 + phases[1].3, until));
    for (i, (how, from, took, gone)) in phases.iter().enumerate() {
        let to = phases.get(i + 1).map_or(until, |p| p.1);
        let phase = between(&records, *from, to);
        let (get_failed, post_failed) = failures(&phase);
        eprintln!(
            "FIGURE (b) docker {how}: {} requests, failed GET {get_failed} POST {post_failed} (docker {how} took {took:.1?}; out of the pool after {gone:.1?}); first failures {:?}",
            phase.len(),
            describe_failures(&phase, 3)
        );
        assert_eq!(get_failed, 0, "{:?}", describe_failures(&phase, 5));
        if *how == "stop" {
            assert_eq!(post_failed, 0, "{:?}", describe_failures(&phase, 5));
        }
    }
    let before = between(&records, began, phases[0].1);
    let (get_failed, post_failed) = failures(&before);
    assert_eq!(
        (get_failed, post_failed),
        (0, 0),
        "{:?}",
        describe_failures(&before, 5)
    );
    // The two survivors carry the load; the broken container never answered.
    assert_eq!(agents.len(), 2, "{agents:?}");
    assert!(by_agent(&records).keys().all(|a| a != "bad"));
    gw.stop().await;
}
