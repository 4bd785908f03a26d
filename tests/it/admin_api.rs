//! Admin API bodies go through the config rules: every bad one is a 4xx with a JSON
//! `{error, path}`, and none of them changes anything.

use http::Method;
use serde_json::Value;

use crate::live::{split_of, two_pools};
use crate::support::agents;
use crate::support::backends;
use crate::support::live::{config_text, LiveGateway};
use sluicegate_echo_agent::EchoHandle;

/// One blue and one green agent, and a gateway whose `agents` route sends
/// everything to blue (the agents live as long as the handles).
async fn blue_and_green() -> (Vec<EchoHandle>, Vec<EchoHandle>, LiveGateway) {
    let (b, g) = (
        agents("blue", "v1", 1).await,
        agents("green", "v2", 1).await,
    );
    let gw = LiveGateway::start(&config_text(
        &two_pools(&backends(&b), &backends(&g), (100, 0)),
        "",
        "",
    ))
    .await;
    (b, g, gw)
}

#[tokio::test]
async fn bad_api_bodies_are_4xx_with_a_path_and_change_nothing() {
    let (b, _g, gw) = blue_and_green().await;
    let blue = b[0].addr().to_string();
    let split = "/api/v1/routes/agents/split";
    let register = "/api/v1/pools/blue/backends";
    let drain_blue = format!("/api/v1/pools/blue/backends/{blue}/drain");
    let cases: Vec<(Method, String, Option<String>, u16, &str)> = vec![
        (
            Method::PUT,
            split.into(),
            Some(r#"{"blu": 1}"#.into()),
            400,
            "blu",
        ),
        (
            Method::PUT,
            split.into(),
            Some(r#"{"blue": -1, "green": 1}"#.into()),
            400,
            "blue",
        ),
        (
            Method::PUT,
            split.into(),
            Some(r#"{"blue": 1000001}"#.into()),
            400,
            "blue",
        ),
        (
            Method::PUT,
            split.into(),
            Some(r#"{"blue": 99999999999999999999}"#.into()),
            400,
            "blue",
        ),
        (
            Method::PUT,
            split.into(),
            Some(r#"{"blue": 2.5}"#.into()),
            400,
            "blue",
        ),
        (
            Method::PUT,
            split.into(),
            Some(r#"{"blue": 0, "green": 0}"#.into()),
            400,
            "",
        ),
        (
            Method::PUT,
            split.into(),
            Some(r#"{"blue": "#.into()),
            400,
            "",
        ),
        (Method::PUT, split.into(), Some("[1, 2]".into()), 400, ""),
        (
            Method::PUT,
            "/api/v1/routes/nope/split".into(),
            Some(r#"{"blue": 1}"#.into()),
            404,
            "route",
        ),
        (
            Method::POST,
            "/api/v1/pools/nope/backends/127.0.0.1:1/drain".into(),
            None,
            404,
            "pool",
        ),
        (
            Method::POST,
            "/api/v1/pools/blue/backends/localhost:1/drain".into(),
            None,
            400,
            "addr",
        ),
        (
            Method::POST,
            "/api/v1/pools/blue/backends/127.0.0.1:1/drain".into(),
            None,
            404,
            "addr",
        ),
        (
            Method::POST,
            register.into(),
            Some(r#"{"addr": "#.into()),
            400,
            "addr",
        ),
        (
            Method::POST,
            register.into(),
            Some(r#"{"addr": "127.0.0.1:1", "x": 1}"#.into()),
            400,
            "x",
        ),
        (
            Method::POST,
            register.into(),
            Some(r#"{"addr": "agent:80"}"#.into()),
            400,
            "addr",
        ),
        (
            Method::POST,
            register.into(),
            Some(r#"{"addr": "127.0.0.1:1", "weight": 0}"#.into()),
            400,
            "weight",
        ),
        (
            Method::POST,
            register.into(),
            Some(r#"{"addr": "127.0.0.1:1", "ttl": "soon"}"#.into()),
            400,
            "ttl",
        ),
        (
            Method::POST,
            register.into(),
            Some(format!(r#"{{"addr": "{blue}"}}"#)),
            409,
            "addr",
        ),
        (
            Method::DELETE,
            format!("{register}/{blue}"),
            None,
            409,
            "addr",
        ),
        (
            Method::DELETE,
            format!("{register}/127.0.0.1:1"),
            None,
            404,
            "addr",
        ),
    ];
    let before = gw.counters();
    for (method, path, body, status, at) in cases {
        let r = gw.api(method.clone(), &path, body.as_deref()).await;
        assert_eq!(r.status, status, "{method} {path} {body:?}: {:?}", r.body);
        let v: Value = serde_json::from_slice(&r.body).expect("JSON error body");
        assert_eq!(v["path"], at, "{method} {path} {body:?}: {v}");
        assert!(!v["error"].as_str().unwrap_or("").is_empty(), "{v}");
    }
    assert_eq!(gw.counters(), before, "a refused write changed something");
    let state = gw.state().await;
    assert_eq!(
        split_of(&state, "agents"),
        [("blue".into(), 100), ("green".into(), 0)]
    );
    assert!(!state.backend("blue", &blue).expect("backend").draining);
    // And a good write still works after all that.
    let r = gw.api(Method::POST, &drain_blue, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// A write answers with what `GET /api/v1/state` then shows for the route or
/// backend it changed (the answer is built for that entry alone).
#[tokio::test]
async fn a_write_answers_with_the_state_entry_it_changed() {
    let (b, _g, gw) = blue_and_green().await;
    let json = |r: &crate::support::Reply| -> Value {
        assert_eq!(r.status, 200, "{:?}", r.body);
        serde_json::from_slice(&r.body).expect("JSON answer")
    };
    let split = json(
        &gw.api(
            Method::PUT,
            "/api/v1/routes/agents/split",
            Some(r#"{"blue": 90, "green": 10}"#),
        )
        .await,
    );
    let registered = json(
        &gw.api(
            Method::POST,
            "/api/v1/pools/green/backends",
            Some(r#"{"addr": "127.0.0.1:1", "weight": 3, "ttl": "60s"}"#),
        )
        .await,
    );
    let blue = b[0].addr().to_string();
    let drained = json(
        &gw.api(
            Method::POST,
            &format!("/api/v1/pools/blue/backends/{blue}/drain"),
            None,
        )
        .await,
    );
    let state = gw.state().await;
    assert_eq!(
        split,
        serde_json::to_value(state.route("agents").unwrap()).unwrap()
    );
    assert_eq!(split["split_source"], "api");
    for (answer, pool, addr) in [
        (&registered, "green", "127.0.0.1:1"),
        (&drained, "blue", blue.as_str()),
    ] {
        let mut entry = serde_json::to_value(state.backend(pool, addr).unwrap()).unwrap();
        entry["pool"] = Value::String(pool.into());
        // The TTL counts down between the answer and the state read.
        entry.as_object_mut().unwrap().remove("ttl_remaining_ms");
        let mut answer = answer.clone();
        answer.as_object_mut().unwrap().remove("ttl_remaining_ms");
        assert_eq!(answer, entry, "{pool} {addr}");
    }
    assert!(registered["ttl_remaining_ms"]
        .as_u64()
        .is_some_and(|ms| ms > 50_000));
    assert_eq!(drained["draining"], true);
}
