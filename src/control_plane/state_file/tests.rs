//! Round trip, atomic replacement, and what a damaged or stale file does.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::control_plane::config::parse;
use crate::control_plane::config::spec::SplitSpec;
use crate::control_plane::rollout_record::Rollout;

const FILE: &str = r#"
[listen]
http = "127.0.0.1:0"
[[pools]]
name = "blue"
backends = [{ addr = "127.0.0.1:9001" }]
[[pools]]
name = "green"
backends = [{ addr = "127.0.0.1:9011" }]
[[routes]]
name = "agents"
split = [{ pool = "blue", weight = 100 }, { pool = "green", weight = 0 }]
"#;

fn sample(now: Instant) -> Overrides {
    let pool = |n: &str| PoolName(Arc::from(n));
    let mut o = Overrides::default();
    o.set_split(
        RouteName(Arc::from("agents")),
        vec![
            SplitSpec {
                pool: pool("blue"),
                weight: 25,
            },
            SplitSpec {
                pool: pool("green"),
                weight: 75,
            },
        ],
    );
    let addr = "127.0.0.1:9012".parse().expect("literal");
    o.register((pool("green"), addr), 2, Some(Duration::from_secs(30)), now);
    o.set_drain(
        (pool("blue"), "127.0.0.1:9001".parse().expect("literal")),
        true,
    );
    o.set_rollout(RouteName(Arc::from("agents")), rollout("green"));
    o.set_pause(
        RouteName(Arc::from("agents")),
        crate::control_plane::config::spec::PauseSpec {
            max: Duration::from_secs(45),
            max_queued: 7,
        },
    );
    o.set_maintenance(
        RouteName(Arc::from("agents")),
        crate::control_plane::config::spec::MaintenanceSpec {
            message: Some("back at noon".into()),
            retry_after: 600,
        },
    );
    o.set_mirror(
        RouteName(Arc::from("agents")),
        crate::control_plane::config::spec::MirrorSpec {
            pool: PoolName(Arc::from("green")),
            percent: 25,
            max_body: 4096,
            timeout: Duration::from_millis(1500),
        },
    );
    o
}

/// A rollout of route `agents` to `to`, at its second step.
fn rollout(to: &str) -> Rollout {
    let text = format!(
        r#"{{
      "id": "agents-3", "phase": "running", "start_from_file": true,
      "start_split": [{{"pool": "blue", "weight": 100}}, {{"pool": "green", "weight": 0}}],
      "started_ms": 1, "resumed": 0,
      "spec": {{"route": "agents", "to": "{to}", "from": ["blue"], "steps": [5, 75, 100],
        "step_interval": "30s", "max_error_rate": 0.01, "max_p99": "500ms", "min_requests": 20,
        "max_wait": "1m 30s", "on_low_traffic": "fail", "on_restart": "resume"}},
      "steps": [
        {{"weight": 5, "started_ms": 1, "elapsed_ms": 30000, "requests": 1500, "errors": 1,
          "error_rate": 0.000667, "p99_ms": 20.5, "verdict": "passed"}},
        {{"weight": 75, "started_ms": 2, "requests": 0, "errors": 0, "error_rate": 0.0,
          "verdict": "measuring"}}
      ]
    }}"#
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn state_round_trips_through_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let now = Instant::now();
    let before = sample(now);
    save(&path, &before).expect("save");
    let loaded = load(&path).expect("load");
    let (after, skipped) = restore(&loaded, &parse(FILE).expect("valid"), now);
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(after, before);
    assert_eq!(after.rollouts().len(), 1);
    assert_eq!(after.pauses().len(), 1);
    assert_eq!(after.maintenance().len(), 1);
    assert_eq!(after.mirrors().len(), 1);
    // Only the state file is left: the temporary one was renamed over it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["state.json"]);
}

#[test]
fn save_replaces_the_previous_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    save(&path, &sample(Instant::now())).expect("save");
    save(&path, &Overrides::default()).expect("save");
    assert_eq!(load(&path).expect("load").splits.len(), 0);
}

#[test]
fn missing_file_is_empty_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loaded = load(&dir.path().join("absent.json")).expect("empty");
    assert!(loaded.splits.is_empty() && loaded.drains.is_empty());
}

#[test]
fn truncated_file_is_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    save(&path, &sample(Instant::now())).expect("save");
    let text = std::fs::read(&path).expect("read");
    std::fs::write(&path, &text[..text.len() / 2]).expect("truncate");
    let err = load(&path).expect_err("corrupt");
    assert!(matches!(err, StateFileError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("is corrupt"), "{err}");
}

#[test]
fn other_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    std::fs::write(&path, r#"{"version": 7}"#).expect("write");
    assert!(matches!(
        load(&path),
        Err(StateFileError::Version { found: 7, .. })
    ));
}

#[test]
fn restore_rechecks_values_against_the_current_file() {
    let text = r#"{
      "version": 1,
      "splits": {
        "agents": [{"pool": "blue", "weight": -5}],
        "gone": [{"pool": "blue", "weight": 1}]
      },
      "drains": [{"pool": "blue", "addr": "nope"}],
      "backends": [{"pool": "green", "addr": "127.0.0.1:9013", "weight": 1, "ttl": "soon"}]
    }"#;
    let persisted: Persisted = serde_json::from_str(text).expect("shape");
    let (o, skipped) = restore(&persisted, &parse(FILE).expect("valid"), Instant::now());
    assert!(o.is_empty(), "{o:?}");
    let what: Vec<&str> = skipped.iter().map(|d| d.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "split of route agents",
            "registered backend 127.0.0.1:9013 in pool green",
            "drain of nope in pool blue",
            "split of route gone",
        ]
    );
}

#[test]
fn a_rollout_whose_pool_left_the_file_is_dropped_with_a_reason() {
    let mut persisted = Persisted::from_overrides(&sample(Instant::now()));
    persisted.rollouts = vec![rollout("purple")];
    let (o, skipped) = restore(&persisted, &parse(FILE).expect("valid"), Instant::now());
    assert!(o.rollouts().is_empty());
    let dropped: Vec<String> = skipped.iter().map(ToString::to_string).collect();
    assert_eq!(
        dropped,
        ["rollout agents-3 of route agents: pool purple is no longer in the file"]
    );
}

#[test]
fn files_without_rollouts_do_not_mention_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let mut o = sample(Instant::now());
    o.clear_rollout(&RouteName(Arc::from("agents")));
    save(&path, &o).expect("save");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(!text.contains("rollouts"), "{text}");
}
