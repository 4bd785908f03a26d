//! Operator actions (pause, resume, promote, abort) and blue-green with a bake.

use std::time::Duration;

use super::{canary, table, weights, Rig, CONFIG};
use crate::control_plane::controller::Refusal;
use crate::control_plane::rollout::{Action, Phase, RolloutRequest, Totals, Verdict};

#[tokio::test(start_paused = true)]
async fn pause_holds_the_split_and_resume_measures_the_step_again() {
    let rig = Rig::start(CONFIG).await;
    rig.rollouts
        .start(canary(&[5, 25, 100]))
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let paused = rig.rollouts.act("r-1", Action::Pause).await.expect("pause");
    assert_eq!(paused.phase, Phase::Paused);
    assert!(paused.steps[0].requests > 0, "figures so far are kept");
    tokio::time::sleep(Duration::from_secs(120)).await;
    let still = rig.rollouts.get("r-1").await.unwrap();
    assert_eq!((still.phase, still.steps.len()), (Phase::Paused, 1));
    assert_eq!(weights(&rig.split()), [95, 5]);
    // Pausing twice is harmless.
    rig.rollouts
        .act("r-1", Action::Pause)
        .await
        .expect("pause again");
    let resumed = rig
        .rollouts
        .act("r-1", Action::Resume)
        .await
        .expect("resume");
    assert_eq!(
        (resumed.phase, resumed.steps[0].requests),
        (Phase::Running, 0)
    );
    let t0 = tokio::time::Instant::now();
    let next = rig.until("r-1", "step 2", |r| r.steps.len() == 2).await;
    assert!(
        t0.elapsed() >= Duration::from_secs(30),
        "the whole step is measured again"
    );
    assert_eq!(next.steps[0].verdict, Verdict::Passed);
    assert_eq!(rig.finish("r-1").await.phase, Phase::Succeeded);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn promote_jumps_to_100_and_abort_rolls_back() {
    let rig = Rig::start(CONFIG).await;
    rig.rollouts
        .start(canary(&[5, 25, 50, 100]))
        .await
        .expect("start");
    let r = rig
        .rollouts
        .act("r-1", Action::Promote)
        .await
        .expect("promote");
    assert_eq!(r.phase, Phase::Succeeded);
    assert_eq!(
        r.reason.as_ref().map(|r| r.metric.as_str()),
        Some("promote")
    );
    let steps: Vec<_> = r.steps.iter().map(|s| (s.weight, s.verdict)).collect();
    assert_eq!(steps, [(5, Verdict::Skipped), (100, Verdict::NotJudged)]);
    assert_eq!(weights(&rig.split()), [0, 100]);
    let err = rig.rollouts.act("r-1", Action::Abort).await.unwrap_err();
    assert!(matches!(err, Refusal::Conflict { .. }), "{err}");

    // From 0/100 back to 100/0 with a second rollout, aborted midway: the split
    // returns to where that rollout started (an override, kept as one).
    let back = RolloutRequest {
        to: "blue".into(),
        ..canary(&[10, 100])
    };
    rig.rollouts.start(back).await.expect("start");
    assert_eq!(weights(&rig.split()), [10, 90]);
    let r = rig.rollouts.act("r-2", Action::Abort).await.expect("abort");
    assert_eq!(r.phase, Phase::Aborted);
    assert_eq!(r.reason.as_ref().map(|r| r.metric.as_str()), Some("abort"));
    assert_eq!(weights(&rig.split()), [0, 100]);
    let totals = rig.rollouts.list().await.unwrap().totals;
    assert_eq!(
        totals,
        Totals {
            succeeded: 1,
            rolled_back: 0,
            aborted: 1
        }
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn blue_green_flips_at_once_and_bakes_with_the_gate() {
    let rig = Rig::start(CONFIG).await;
    let flip = RolloutRequest {
        bake: Some("60s".into()),
        ..canary(&[100])
    };
    rig.rollouts.start(flip.clone()).await.expect("start");
    assert_eq!(weights(&rig.split()), [0, 100]);
    let t0 = tokio::time::Instant::now();
    let r = rig.finish("r-1").await;
    assert_eq!(
        (r.phase, r.steps[0].verdict),
        (Phase::Succeeded, Verdict::Passed),
        "{}",
        table(&r)
    );
    assert!(t0.elapsed() >= Duration::from_secs(60));

    // A second flip back to blue whose bake sees errors goes back to green.
    rig.set("blue", 30, 20);
    rig.rollouts
        .start(RolloutRequest {
            to: "blue".into(),
            ..flip
        })
        .await
        .expect("start");
    assert_eq!(weights(&rig.split()), [100, 0]);
    let r = rig.finish("r-2").await;
    assert_eq!(r.phase, Phase::RolledBack, "{}", table(&r));
    assert_eq!(r.reason.map(|r| r.metric), Some("error_rate".into()));
    assert_eq!(weights(&rig.split()), [0, 100]);
    rig.stop().await;
}
