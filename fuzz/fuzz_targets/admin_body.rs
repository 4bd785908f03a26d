//! Admin API request bodies, through the checks the admin layer and the controller
//! apply: a registration (first byte 0), a split (1) or a rollout request (2).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use sluicegate::state_view::StateView;
use sluicegate::config::validate::{validate_backend, validate_split, ApiBackend};
use sluicegate::testing::control_plane::rollout::request::{check, RolloutRequest};

/// The running state a rollout request is checked against: one route over two
/// pools, as `GET /api/v1/state` shows it.
const STATE: &str = r#"{
  "config_file": null,
  "counters": {"generation": 1, "reloads_ok": 0, "reloads_failed": 0, "streams_closed": 0},
  "routes": [{"name": "agents", "split_source": "file",
              "split": [{"pool": "agent-blue", "weight": 100}, {"pool": "agent-green", "weight": 0}]}],
  "pools": [
    {"name": "agent-blue", "balance": "p2c", "backends": [
      {"addr": "127.0.0.1:9001", "weight": 1, "backup": false, "source": "file", "draining": false,
       "inflight": 0, "healthy": true, "ejected": false}]},
    {"name": "agent-green", "balance": "p2c", "backends": []}
  ]
}"#;

fn state() -> &'static StateView {
    static VIEW: OnceLock<StateView> = OnceLock::new();
    VIEW.get_or_init(|| serde_json::from_str(STATE).expect("the fixture state parses"))
}

/// The admin layer's JSON parse: serde with the key path of a shape error.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            let Some(api) = parse::<ApiBackend>(body) else {
                return;
            };
            if let Ok((_, Some(ttl))) = validate_backend(&api) {
                // The expiry the controller computes for an accepted registration
                // (`Overrides::register`).
                let _ = sluicegate::testing::clock::later(tokio::time::Instant::now(), ttl);
            }
        }
        1 => {
            let Some(map) = parse::<serde_json::Map<String, serde_json::Value>>(body) else {
                return;
            };
            let weights: Option<Vec<(String, i64)>> =
                map.into_iter().map(|(p, v)| Some((p, v.as_i64()?))).collect();
            if let Some(weights) = weights {
                let _ = validate_split(&weights, &["agent-blue", "agent-green"]);
            }
        }
        _ => {
            if let Some(req) = parse::<RolloutRequest>(body) {
                let _ = check(&req, state());
            }
        }
    }
});
