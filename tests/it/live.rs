//! Live changes in-process: a bad file changes nothing, state survives reloads and
//! restarts, drains let work finish.

use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::support::live::{config_text, LiveGateway};
use crate::support::{agents, backends, get, until_agent_has, WAIT};

pub(crate) fn two_pools(blue: &str, green: &str, split: (u32, u32)) -> String {
    format!(
        r#"
[[pools]]
name = "blue"
backends = {blue}
[[pools]]
name = "green"
backends = {green}
[[routes]]
name = "agents"
split = [{{ pool = "blue", weight = {} }}, {{ pool = "green", weight = {} }}]
"#,
        split.0, split.1
    )
}

/// Which agents answered `n` GETs, as "name" per request.
async fn answered_by(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = get(addr, "/", &[]).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        out.push(r.agent().to_owned());
    }
    out
}

pub(crate) fn split_of(
    state: &sluicegate::state_view::StateView,
    route: &str,
) -> Vec<(String, u32)> {
    let r = state.route(route).expect("route");
    r.split.iter().map(|s| (s.pool.clone(), s.weight)).collect()
}

#[tokio::test]
async fn bad_file_is_counted_and_changes_nothing() {
    let (b, g) = (
        agents("blue", "v1", 1).await,
        agents("green", "v2", 1).await,
    );
    let good = config_text(&two_pools(&backends(&b), &backends(&g), (100, 0)), "", "");
    let gw = LiveGateway::start(&good).await;
    let before = gw.counters();
    // Two mistakes: both are reported, neither half is applied.
    let bad = good
        .replace("weight = 100", "weight = -3")
        .replace("pool = \"green\"", "pool = \"gren\"");
    gw.rewrite(&bad);
    let after = gw.wait_counters(|c| c.reloads_failed == 1).await;
    assert_eq!((after.generation, after.reloads_ok), (before.generation, 0));
    assert!(answered_by(gw.addr, 10).await.iter().all(|a| a == "blue-1"));
    assert_eq!(
        split_of(&gw.state().await, "agents"),
        [("blue".into(), 100), ("green".into(), 0)]
    );
    // Fixing the file applies it.
    gw.reload(
        &good
            .replace("weight = 100", "weight = 0")
            .replace("weight = 0 }]", "weight = 5 }]"),
    )
    .await;
    assert!(answered_by(gw.addr, 10)
        .await
        .iter()
        .all(|a| a == "green-1"));
}

#[tokio::test]
async fn restart_with_state_file_keeps_split_drain_and_registration() {
    let (b, g) = (
        agents("blue", "v1", 2).await,
        agents("green", "v2", 1).await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let state_file = dir.path().join("state.json");
    let admin = format!("state_file = {:?}", state_file.display().to_string());
    let text = config_text(
        &two_pools(&backends(&b[..1]), &backends(&g), (100, 0)),
        "",
        &admin,
    );
    let gw = LiveGateway::start_in(dir, &text).await;
    gw.split("agents", r#"{"green": 100, "blue": 0}"#).await;
    let blue1 = b[0].addr();
    let r = gw
        .api(
            Method::POST,
            &format!("/api/v1/pools/blue/backends/{blue1}/drain"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let body = format!(r#"{{"addr": "{}", "weight": 2}}"#, b[1].addr());
    let r = gw
        .api(Method::POST, "/api/v1/pools/blue/backends", Some(&body))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (_, dir) = gw.stop().await;
    assert!(state_file.exists());

    let gw = LiveGateway::start_in(dir, &text).await;
    let state = gw.state().await;
    let agents_route = state.route("agents").expect("route");
    assert_eq!(
        agents_route.split_source,
        sluicegate::config::spec::Source::Api
    );
    assert_eq!(
        split_of(&state, "agents"),
        [("blue".into(), 0), ("green".into(), 100)]
    );
    assert!(
        state
            .backend("blue", &blue1.to_string())
            .expect("drained")
            .draining
    );
    let reg = state
        .backend("blue", &b[1].addr().to_string())
        .expect("registered");
    assert_eq!(
        (reg.weight, reg.source),
        (2, sluicegate::config::spec::Source::Api)
    );
    assert!(answered_by(gw.addr, 10)
        .await
        .iter()
        .all(|a| a == "green-1"));
}

#[tokio::test]
async fn drain_lets_the_slow_request_finish_and_sends_no_new_ones() {
    let a = agents("a", "v1", 2).await;
    let body = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\n",
        backends(&a)
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let addr = gw.addr;
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=800", &[]).await });
    let busy = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(i) = a.iter().position(|x| x.requests() == 1) {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("slow request reached an agent");
    let (drained, other) = (&a[busy], &a[1 - busy]);
    let path = format!("/api/v1/pools/p/backends/{}/drain", drained.addr());
    let r = gw.api(Method::POST, &path, None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(
        (v["draining"].as_bool(), v["inflight"].as_u64()),
        (Some(true), Some(1))
    );

    let before = drained.requests();
    let seen = answered_by(gw.addr, 20).await;
    assert!(seen.iter().all(|x| x == other.name()), "{seen:?}");
    assert_eq!(
        drained.requests(),
        before,
        "a new request reached the drained backend"
    );

    let reply = slow.await.expect("slow task");
    assert_eq!(
        (reply.status.as_u16(), reply.agent()),
        (200, drained.name())
    );
    let key = drained.addr().to_string();
    tokio::time::timeout(WAIT, async {
        while gw
            .state()
            .await
            .backend("p", &key)
            .expect("backend")
            .inflight
            != 0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("in-flight fell to 0");

    let path = format!("/api/v1/pools/p/backends/{}/undrain", drained.addr());
    assert_eq!(gw.api(Method::POST, &path, None).await.status, 200);
    let seen = answered_by(gw.addr, 10).await;
    assert!(seen.iter().any(|x| x == drained.name()), "{seen:?}");
}

#[tokio::test]
async fn reload_keeps_backend_state_and_overrides_of_unchanged_pools() {
    let (b, g) = (
        agents("blue", "v1", 1).await,
        agents("green", "v2", 2).await,
    );
    let text = config_text(
        &two_pools(&backends(&b), &backends(&g[..1]), (1, 0)),
        "",
        "",
    );
    let gw = LiveGateway::start(&text).await;
    let addr = gw.addr;
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=1500", &[]).await });
    let blue = b[0].addr().to_string();
    let green1 = g[0].addr().to_string();
    until_agent_has(&b[0], 1, "in flight").await;
    let path = format!("/api/v1/pools/green/backends/{green1}/drain");
    assert_eq!(gw.api(Method::POST, &path, None).await.status, 200);

    // green gains a backend, the file's split changes: blue is untouched.
    gw.reload(&config_text(
        &two_pools(&backends(&b), &backends(&g), (3, 1)),
        "",
        "",
    ))
    .await;
    let state = gw.state().await;
    assert_eq!(
        state.backend("blue", &blue).expect("blue").inflight,
        1,
        "blue's state was rebuilt"
    );
    assert!(
        state.backend("green", &green1).expect("green-1").draining,
        "drain lost on reload"
    );
    assert_eq!(
        split_of(&state, "agents"),
        [("blue".into(), 3), ("green".into(), 1)]
    );
    assert_eq!(slow.await.expect("slow").status, 200);
    assert_eq!(
        gw.state()
            .await
            .backend("blue", &blue)
            .expect("blue")
            .inflight,
        0
    );
}

#[tokio::test]
async fn readyz_answers_503_while_the_gateway_drains() {
    let a = agents("a", "v1", 1).await;
    let body = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\n",
        backends(&a)
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    assert_eq!(gw.api(Method::GET, "/readyz", None).await.status, 200);
    let addr = gw.addr;
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=1000", &[]).await });
    until_agent_has(&a[0], 1, "in flight").await;
    let admin = gw.admin;
    let stopping = tokio::spawn(gw.stop());
    tokio::time::timeout(WAIT, async {
        loop {
            let r = crate::support::live::api(admin, Method::GET, "/readyz", None, None).await;
            if r.status == 503 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("readyz went 503 during the drain");
    assert_eq!(slow.await.expect("slow").status, 200);
    stopping.await.expect("stopped");
}
