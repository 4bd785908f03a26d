//! Restarts mid-rollout (from the state file) and conflicts with other writers.

use std::time::Duration;

use super::{canary, table, weights, Rig, CONFIG};
use crate::control_plane::controller::task::Change;
use crate::control_plane::controller::Refusal;
use crate::control_plane::rollout::{OnRestart, Phase, RolloutRequest, Verdict};

/// [`CONFIG`] with an `[admin]` table persisting to `state.json` in `dir`.
fn config(dir: &tempfile::TempDir) -> String {
    let state = dir.path().join("state.json");
    CONFIG.replacen(
        "[[pools]]",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"\n[[pools]]",
            state.display()
        ),
        1,
    )
}

#[tokio::test(start_paused = true)]
async fn a_restart_mid_rollout_resumes_the_step_it_was_at() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(&dir);
    let rig = Rig::start(&text).await;
    rig.rollouts
        .start(canary(&[5, 25, 50, 100]))
        .await
        .expect("start");
    rig.until("r-1", "step 2", |r| r.steps.len() == 2).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    rig.stop().await;

    let saved = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(
        saved.contains("\"id\": \"r-1\"") && saved.contains("\"phase\": \"running\""),
        "{saved}"
    );

    // The split is back before the rollout manager even looked at it.
    let rig = Rig::start(&text).await;
    assert_eq!(weights(&rig.split()), [75, 25]);
    let resumed = rig.until("r-1", "resumed", |r| r.resumed == 1).await;
    assert_eq!(resumed.phase, Phase::Running);
    let step = resumed.steps.last().unwrap();
    assert_eq!((step.weight, step.verdict), (25, Verdict::Measuring));
    assert!(step
        .note
        .as_deref()
        .is_some_and(|n| n.contains("restarted")));
    let t0 = tokio::time::Instant::now();
    let r = rig.finish("r-1").await;
    eprintln!("{}", table(&r));
    assert_eq!(r.phase, Phase::Succeeded);
    // Step 2 was measured in full after the restart.
    assert!(
        t0.elapsed() >= Duration::from_secs(60),
        "{:?}",
        t0.elapsed()
    );
    assert!(r.steps[1].requests >= 7_000, "{}", table(&r));
    assert_eq!(weights(&rig.split()), [0, 100]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_rolls_back_when_asked_to() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(&dir);
    let rig = Rig::start(&text).await;
    let req = RolloutRequest {
        on_restart: Some(OnRestart::Rollback),
        ..canary(&[5, 25, 100])
    };
    rig.rollouts.start(req).await.expect("start");
    rig.until("r-1", "step 2", |r| r.steps.len() == 2).await;
    rig.stop().await;

    let rig = Rig::start(&text).await;
    let r = rig.finish("r-1").await;
    assert_eq!(r.phase, Phase::RolledBack);
    assert_eq!(r.reason.map(|r| r.metric), Some("restart".into()));
    assert_eq!(weights(&rig.split()), [100, 0]);
    rig.stop().await;

    // And the rollback itself was persisted: a third start changes nothing.
    let rig = Rig::start(&text).await;
    assert_eq!(weights(&rig.split()), [100, 0]);
    let r = rig.rollouts.get("r-1").await.expect("kept for GET");
    assert_eq!(r.phase, Phase::RolledBack);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn one_rollout_per_route_and_no_hand_made_split_meanwhile() {
    let rig = Rig::start(CONFIG).await;
    rig.rollouts.start(canary(&[5, 100])).await.expect("start");
    let again = rig.rollouts.start(canary(&[5, 100])).await.unwrap_err();
    assert!(
        matches!(&again, Refusal::Conflict { path, message } if path == "route" && message.contains("r-1 is running")),
        "{again}"
    );
    let by_hand = Change::SetSplit {
        route: "r".into(),
        weights: vec![("blue".into(), 50), ("green".into(), 50)],
    };
    let refused = rig.control.change(by_hand).await.unwrap_err();
    assert!(
        matches!(&refused, Refusal::Conflict { message, .. } if message.contains("abort it first")),
        "{refused}"
    );
    assert_eq!(weights(&rig.split()), [95, 5]);
    rig.rollouts
        .act("r-1", crate::control_plane::rollout::Action::Abort)
        .await
        .expect("abort");
    // After the rollout, a hand-made split is fine and takes the split over.
    let by_hand = Change::SetSplit {
        route: "r".into(),
        weights: vec![("blue".into(), 50), ("green".into(), 50)],
    };
    rig.control.change(by_hand).await.expect("split by hand");
    let state = rig.control.state().await.unwrap();
    let route = state.route("r").unwrap();
    assert_eq!(
        (route.split_source, route.rollout.is_none()),
        (crate::control_plane::config::spec::Source::Api, true)
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bad_requests_name_every_problem_with_its_path() {
    let rig = Rig::start(CONFIG).await;
    let bad = RolloutRequest {
        to: "purple".into(),
        steps: vec![50, 20, 101],
        step_interval: "soon".into(),
        max_error_rate: Some(2.0),
        ..canary(&[])
    };
    let err = rig.rollouts.start(bad).await.unwrap_err();
    let Refusal::Invalid(errors) = err else {
        panic!("expected 400, got {err}");
    };
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "to",
            "steps[1]",
            "steps[2]",
            "step_interval",
            "max_error_rate"
        ]
    );
    let missing = RolloutRequest {
        route: "nope".into(),
        ..canary(&[100])
    };
    assert!(matches!(
        rig.rollouts.start(missing).await,
        Err(Refusal::NotFound { .. })
    ));
    // Nothing to move: green already has it all.
    let none = RolloutRequest {
        from: Some(vec!["green".into()]),
        to: "blue".into(),
        ..canary(&[100])
    };
    assert!(
        matches!(rig.rollouts.start(none).await, Err(Refusal::Conflict { path, .. }) if path == "from")
    );
    rig.stop().await;
}
