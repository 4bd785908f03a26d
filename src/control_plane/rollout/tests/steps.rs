//! The gate at work: passing steps, each kind of breach, too little traffic, and
//! the target's health.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{canary, table, weights, Rig, CONFIG};
use crate::control_plane::rollout::{engine, LowTraffic, Phase, RolloutRequest, Totals, Verdict};

#[tokio::test(start_paused = true)]
async fn a_healthy_target_passes_every_step_and_ends_at_100() {
    let rig = Rig::start(CONFIG).await;
    let started = rig
        .rollouts
        .start(canary(&[5, 25, 50, 100]))
        .await
        .expect("start");
    assert_eq!(started.id, "r-1");
    assert_eq!(weights(&rig.split()), [95, 5]);
    let t0 = tokio::time::Instant::now();
    let r = rig.finish("r-1").await;
    eprintln!("{}", table(&r));
    assert_eq!(r.phase, Phase::Succeeded, "{}", table(&r));
    let verdicts: Vec<_> = r.steps.iter().map(|s| (s.weight, s.verdict)).collect();
    assert_eq!(
        verdicts,
        [
            (5, Verdict::Passed),
            (25, Verdict::Passed),
            (50, Verdict::Passed),
            (100, Verdict::NotJudged)
        ]
    );
    // Each judged step saw about its share of 1000 req/s for 30 s.
    for (s, share) in r.steps.iter().zip([0.05, 0.25, 0.5]) {
        let want = 30_000.0 * share;
        assert!(
            (s.requests as f64 - want).abs() < want * 0.05,
            "{}",
            table(&r)
        );
        assert_eq!(s.errors, 0);
        assert!(s.p99_ms.is_some_and(|p| (20.0..=22.5).contains(&p)));
    }
    assert!(t0.elapsed() >= Duration::from_secs(90) && t0.elapsed() < Duration::from_secs(92));
    assert_eq!(weights(&rig.split()), [0, 100]);
    let state = rig.control.state().await.unwrap();
    let route = state.route("r").unwrap();
    assert_eq!(
        route.split_source,
        crate::control_plane::config::spec::Source::Rollout
    );
    assert_eq!(
        route.rollout.as_ref().map(|r| r.phase.as_str()),
        Some("succeeded")
    );
    let list = rig.rollouts.list().await.unwrap();
    assert_eq!(
        list.totals,
        Totals {
            succeeded: 1,
            ..Totals::default()
        }
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_error_rate_breach_at_step_2_rolls_back_with_the_reason() {
    let rig = Rig::start(CONFIG).await;
    rig.rollouts
        .start(canary(&[5, 25, 50, 100]))
        .await
        .expect("start");
    rig.until("r-1", "step 2 starts", |r| r.steps.len() == 2)
        .await;
    rig.set("green", 50, 20);
    let r = rig.finish("r-1").await;
    eprintln!("{}", table(&r));
    assert_eq!(r.phase, Phase::RolledBack);
    let reason = r.reason.clone().expect("a reason");
    assert_eq!(
        (reason.metric.as_str(), reason.bound),
        ("error_rate", Some(0.01))
    );
    let rate = reason.value.unwrap();
    assert!((0.045..=0.051).contains(&rate), "{rate}");
    assert!(
        reason.message.contains("> max_error_rate 1.00%"),
        "{}",
        reason.message
    );
    assert_eq!(r.steps[0].verdict, Verdict::Passed);
    assert_eq!(
        (r.steps[1].weight, r.steps[1].verdict),
        (25, Verdict::Failed)
    );
    assert_eq!(r.steps.len(), 2);
    // Back to the file's split (the rollout started from it): no override left.
    assert_eq!(weights(&rig.split()), [100, 0]);
    let state = rig.control.state().await.unwrap();
    assert_eq!(
        state.route("r").unwrap().split_source,
        crate::control_plane::config::spec::Source::File
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_p99_breach_rolls_back_at_the_first_step() {
    let rig = Rig::start(CONFIG).await;
    rig.set("green", 0, 800);
    rig.rollouts
        .start(canary(&[5, 50, 100]))
        .await
        .expect("start");
    let r = rig.finish("r-1").await;
    let reason = r.reason.clone().expect("a reason");
    assert_eq!(
        (r.phase, reason.metric.as_str()),
        (Phase::RolledBack, "p99"),
        "{}",
        table(&r)
    );
    assert_eq!(reason.bound, Some(500.0));
    assert!(reason.value.is_some_and(|v| (800.0..=900.0).contains(&v)));
    assert_eq!(r.steps.len(), 1);
    assert_eq!(weights(&rig.split()), [100, 0]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn too_little_traffic_waits_until_max_wait_then_follows_the_policy() {
    let rig = Rig::start(CONFIG).await;
    // 100 req/s: 5 % is 5 req/s, 150 in a step; min_requests 1000 is out of reach.
    rig.rate.store(1, Ordering::Relaxed);
    let req = RolloutRequest {
        min_requests: Some(1000),
        max_wait: Some("90s".into()),
        ..canary(&[5, 100])
    };
    rig.rollouts.start(req.clone()).await.expect("start");
    let t0 = tokio::time::Instant::now();
    let waiting = rig
        .until("r-1", "waiting", |r| {
            r.steps[0]
                .note
                .as_deref()
                .is_some_and(|n| n.starts_with("waiting for traffic"))
        })
        .await;
    assert_eq!(waiting.phase, Phase::Running);
    let r = rig.finish("r-1").await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(90) && took < Duration::from_secs(91),
        "{took:?}"
    );
    let reason = r.reason.clone().expect("a reason");
    assert_eq!(
        (reason.metric.as_str(), reason.bound),
        ("requests", Some(1000.0)),
        "{}",
        table(&r)
    );
    assert!(reason.message.contains("too little traffic"));
    assert_eq!(weights(&rig.split()), [100, 0]);

    // With on_low_traffic = pass the same step passes (other bounds still apply).
    let lenient = RolloutRequest {
        on_low_traffic: Some(LowTraffic::Pass),
        ..req
    };
    rig.rollouts.start(lenient).await.expect("start");
    let r = rig.finish("r-2").await;
    assert_eq!(r.phase, Phase::Succeeded, "{}", table(&r));
    assert!(r.steps[0]
        .note
        .as_deref()
        .is_some_and(|n| n.contains("on_low_traffic = pass")));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn most_of_the_target_ejected_aborts_without_waiting_for_the_step() {
    let rig = Rig::start(CONFIG).await;
    rig.rollouts.start(canary(&[5, 100])).await.expect("start");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let snap = rig.snapshot.load_full();
    let green = snap.pool("green").unwrap();
    // One of two is not "most".
    green.backends().next().unwrap().state.set_healthy(false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rig.rollouts.get("r-1").await.unwrap().phase, Phase::Running);
    green.backends().nth(1).unwrap().state.set_healthy(false);
    let t0 = tokio::time::Instant::now();
    let r = rig.finish("r-1").await;
    assert!(t0.elapsed() <= engine::DEFAULT_POLL, "{:?}", t0.elapsed());
    let reason = r.reason.clone().unwrap();
    assert_eq!(
        (reason.metric.as_str(), reason.value),
        ("health", Some(2.0))
    );
    assert_eq!(r.steps[0].verdict, Verdict::Skipped);
    assert_eq!(weights(&rig.split()), [100, 0]);
    rig.stop().await;
}
