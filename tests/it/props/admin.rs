//! Admin API bodies: the validators never panic and accept only what the file
//! could say; the live API answers every seed and mutation with a 2xx or 4xx.

use std::net::SocketAddr;

use http::Method;
use proptest::prelude::*;
use sluicegate::config::raw::RawDuration;
use sluicegate::config::spec::MAX_WEIGHT;
use sluicegate::config::validate::{validate_backend, validate_split, ApiBackend};
use tokio::time::Instant;

use super::{check, edits, mutate, out_of_time, runner, seeds};
use crate::support::live::{config_text, LiveGateway};

const POOLS: &[&str] = &["agent-blue", "agent-green"];

#[test]
fn split_bodies_accept_only_known_pools_and_weights_in_range() {
    let name = prop_oneof![
        proptest::sample::select(POOLS).prop_map(str::to_owned),
        ".{0,12}",
    ];
    let entries = proptest::collection::vec((name, any::<i64>()), 0..5);
    check(runner(1024), entries, |entries| {
        if let Ok(split) = validate_split(&entries, POOLS) {
            prop_assert!(split.iter().all(|s| POOLS.contains(&s.pool.as_str())));
            prop_assert!(split.iter().all(|s| s.weight <= MAX_WEIGHT));
            prop_assert!(
                split.iter().any(|s| s.weight > 0),
                "an all-zero split passed"
            );
            prop_assert_eq!(split.len(), entries.len());
        }
        Ok(())
    });
}

#[test]
fn backend_bodies_accept_only_ip_ports_and_positive_ttls() {
    let addr = prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p)).to_string()),
        (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p)).to_string()),
        ".{0,24}",
    ];
    let ttl = proptest::option::of(prop_oneof!["[0-9]{1,6}(ms|s|m|h)", ".{0,8}"]);
    let body = (addr, proptest::option::of(any::<i64>()), ttl);
    check(runner(1024), body, |(addr, weight, ttl)| {
        let body = ApiBackend {
            addr: addr.clone(),
            weight,
            ttl: ttl.map(RawDuration),
        };
        if let Ok((backend, ttl)) = validate_backend(&body) {
            prop_assert_eq!(addr.parse::<SocketAddr>().ok(), Some(backend.addr));
            prop_assert!((1..=MAX_WEIGHT).contains(&backend.weight));
            prop_assert!(ttl.is_none_or(|t| !t.is_zero()));
        }
        Ok(())
    });
}

const JSON_VOCABULARY: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "-1",
    "1e999",
    "0.5",
    "\"agent-blue\"",
    "\"addr\"",
    "\"ttl\"",
    "\"weight\"",
    "\\u0000",
    "\\ud800",
    "é",
];

#[tokio::test]
async fn live_admin_api_answers_every_body_with_2xx_or_4xx() {
    let body = r#"
[[pools]]
name = "agent-blue"
backends = [{ addr = "127.0.0.1:9" }]
[[pools]]
name = "agent-green"
backends = []
[[routes]]
name = "agents"
split = [{ pool = "agent-blue", weight = 1 }, { pool = "agent-green", weight = 0 }]
"#;
    let gw = LiveGateway::start(&config_text(body, "", "")).await;
    let endpoints = [
        (Method::PUT, "/api/v1/routes/agents/split"),
        (Method::POST, "/api/v1/pools/agent-green/backends"),
        (Method::DELETE, "/api/v1/pools/agent-green/backends"),
        (Method::POST, "/api/v1/plan"),
    ];
    let corpus: Vec<Vec<u8>> = seeds("admin_json").into_iter().map(|(_, b)| b).collect();
    // The corpus as is, then mutations of it, to every endpoint.
    let mut bodies = corpus.clone();
    let mut runner = runner(96);
    let strategy = (proptest::sample::select(corpus), edits(JSON_VOCABULARY));
    for _ in 0..runner.config().cases {
        let tree = strategy.new_tree(&mut runner).expect("value");
        let (seed, edits) = proptest::strategy::ValueTree::current(&tree);
        bodies.push(mutate(seed, &edits));
    }
    let started = Instant::now();
    for body in bodies {
        if out_of_time(started) {
            break;
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        for (method, path) in &endpoints {
            let r = gw.api(method.clone(), path, Some(&text)).await;
            let status = r.status.as_u16();
            assert!(
                (200..500).contains(&status),
                "{method} {path} {text:?} → {status} {:?}",
                r.body
            );
        }
    }
    assert_eq!(gw.api(Method::GET, "/api/v1/state", None).await.status, 200);
}
