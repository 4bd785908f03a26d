//! `ctl deploy --steps`: the switch runs through the rollout engine, each step
//! judged by its gate. All gates pass → drained, 0 failed; a gate fails → the
//! deploy fails, says why, and the route is rolled back.

use std::time::Duration;

use sluicegate::ctl::deploy::{deploy, DeployArgs};
use sluicegate::ctl::{AdminClient, CtlError};
use tokio::time::Instant;

use crate::live::split_of;
use crate::support::live::{config_text, LiveGateway};
use crate::support::load::{describe_failures, failures, Load};
use crate::support::{agents, backends};

fn stepped(to: &str) -> DeployArgs {
    DeployArgs {
        settle: Duration::from_millis(200),
        poll: Duration::from_millis(50),
        steps: Some(vec![50, 100]),
        step_interval: Some(Duration::from_millis(700)),
        min_requests: Some(5),
        ..DeployArgs::new(
            "agents",
            to,
            Duration::from_secs(10),
            Duration::from_secs(20),
        )
    }
}

#[tokio::test]
async fn stepped_deploy_passes_its_gates_or_rolls_back_saying_why() {
    let blue = agents("blue", "v1", 2).await;
    let green = agents("green", "v2", 2).await;
    let bad = agents("bad", "v3", 1).await;
    for a in &bad {
        a.set_failing(Some(500));
    }
    let body = format!(
        "[[pools]]\nname = \"blue\"\nbackends = {}\n[[pools]]\nname = \"green\"\nbackends = {}\n\
         [[pools]]\nname = \"bad\"\nbackends = {}\n\
         [[routes]]\nname = \"agents\"\n\
         split = [{{ pool = \"blue\", weight = 100 }}, {{ pool = \"green\", weight = 0 }}]\n",
        backends(&blue),
        backends(&green),
        backends(&bad)
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let client =
        AdminClient::new(&gw.admin.to_string(), None, Duration::from_secs(5)).expect("client");

    // A gate fails: rolled back, the command says why.
    let load = Load::start(gw.addr);
    load.wait_answers(Instant::now(), 50, Duration::from_secs(10))
        .await;
    let err = deploy(&client, &stepped("bad"), std::future::pending())
        .await
        .expect_err("a deploy to a pool answering 500 must fail");
    let text = err.to_string();
    assert!(matches!(err, CtlError::Deploy(_)), "{text}");
    assert!(
        text.contains("rolled back at step 50%") && text.contains("routes as before"),
        "{text}"
    );
    assert!(
        text.contains("error rate"),
        "the gate's reason is missing: {text}"
    );
    assert_eq!(
        split_of(&gw.state().await, "agents"),
        [("blue".into(), 100), ("green".into(), 0)]
    );
    let records = load.stop().await;
    let (fg, fp) = failures(&records);
    eprintln!(
        "stepped deploy to a failing pool: {} requests, {} failed (the 50% step on the pool answering 500), rolled back: {text}",
        records.len(),
        fg + fp
    );

    // Every gate passes: drained, 0 failed.
    let load = Load::start(gw.addr);
    load.wait_answers(Instant::now(), 50, Duration::from_secs(10))
        .await;
    let started = Instant::now();
    let timeline = deploy(&client, &stepped("green"), std::future::pending())
        .await
        .expect("stepped deploy");
    let returned = started.elapsed();
    let rollout = timeline.rollout.clone().expect("a rollout ran");
    assert!(timeline.drained_at.is_some());
    // Two steps of 700 ms: the switch was not at once.
    assert!(
        timeline.switched_at >= timeline.healthy_after + Duration::from_millis(700),
        "{timeline:?}"
    );
    let split = split_of(&gw.state().await, "agents");
    assert!(
        split.iter().all(|(p, w)| (p == "green") == (*w > 0)),
        "{split:?}"
    );
    let r = gw
        .api(
            http::Method::GET,
            &format!("/api/v1/rollouts/{rollout}"),
            None,
        )
        .await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("rollout JSON");
    assert_eq!(v["phase"], "succeeded", "{v}");
    let after = Instant::now();
    load.wait_answers(after, 50, Duration::from_secs(10)).await;
    let records = load.stop().await;
    let (fg, fp) = failures(&records);
    assert_eq!(fg + fp, 0, "{:?}", describe_failures(&records, 5));
    eprintln!(
        "stepped deploy 50,100 (700 ms steps): {} requests (GET+POST), 0 failed; healthy after {:?}, switched at {:?} (rollout {rollout}), drained at {:?}; returned after {returned:?}",
        records.len(),
        timeline.healthy_after,
        timeline.switched_at,
        timeline.drained_at,
    );
}
