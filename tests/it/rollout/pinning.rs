//! Version pinning by a learned session header during a rollout: 200 sessions
//! started at 95/5 keep their version through steps 25 and 50 (0 bounces) while
//! new sessions follow the weights; when the rollout ends with blue at 0, blue's
//! sessions move to green and stay there. Two gateways sharing nothing send
//! client-named sessions to the same version, and a growing canary keeps its own;
//! with `prefix`, sessions the agent names agree on both as well.

use http::Method;
use sluicegate::testing::control_plane::rollout::{Phase, Rollout};

use crate::support::live::{config_text, LiveGateway};
use sluicegate_echo_agent::EchoHandle;

use crate::support::{agents, backends, get, Reply, WAIT};

const SESSION: &str = "mcp-session-id";

fn version(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.headers
        .get("x-agent-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Pools `blue` and `green` of `blue_agents` and `green_agents`, and route
/// `agents` over them at 95/5 with `sticky = { <sticky> }`.
fn blue_green_route(
    blue_agents: &[EchoHandle],
    green_agents: &[EchoHandle],
    sticky: &str,
) -> String {
    format!(
        r#"
[[pools]]
name = "blue"
backends = {}
[[pools]]
name = "green"
backends = {}
[[routes]]
name = "agents"
split = [{{ pool = "blue", weight = 95 }}, {{ pool = "green", weight = 5 }}]
sticky = {{ {sticky} }}
"#,
        backends(blue_agents),
        backends(green_agents)
    )
}

/// Starts `n` sessions (the agent names each); returns (id, version).
async fn start_sessions(gw: &LiveGateway, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = get(gw.addr, "/mcp", &[]).await;
        let id = r.headers[SESSION].to_str().expect("ascii").to_owned();
        out.push((id, version(&r)));
    }
    out
}

/// Sends two requests per session; returns how many landed on another version.
async fn bounces(gw: &LiveGateway, sessions: &[(String, String)]) -> usize {
    let mut bounced = 0;
    for (id, v) in sessions {
        for _ in 0..2 {
            let r = get(gw.addr, "/mcp", &[(SESSION, id)]).await;
            bounced += usize::from(version(&r) != *v);
        }
    }
    bounced
}

fn green_share(sessions: &[(String, String)]) -> f64 {
    sessions.iter().filter(|(_, v)| v == "v2").count() as f64 / sessions.len() as f64
}

async fn act(gw: &LiveGateway, id: &str, action: &str) -> Rollout {
    let r = gw
        .api(
            Method::POST,
            &format!("/api/v1/rollouts/{id}/{action}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    serde_json::from_slice(&r.body).expect("rollout JSON")
}

/// Waits (bounded) until rollout `id` has reached `steps` steps.
async fn wait_steps(gw: &LiveGateway, id: &str, steps: usize) {
    let mut changes = gw.rollouts.changes();
    tokio::time::timeout(WAIT, async {
        loop {
            changes.borrow_and_update();
            if gw.rollouts.get(id).await.expect("rollout").steps.len() >= steps {
                return;
            }
            changes.changed().await.expect("manager running");
        }
    })
    .await
    .expect("the step within the bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_their_version_through_the_steps_and_new_ones_follow_the_weights() {
    let blue = agents("blue", "v1", 2).await;
    let green = agents("green", "v2", 2).await;
    let body = blue_green_route(
        &blue,
        &green,
        &format!(r#"learn_header = "{SESSION}", idle = "30m", max_sessions = 100000"#),
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let old = start_sessions(&gw, 200).await;
    eprintln!(
        "pinning: 200 sessions started at 95/5: {:.1} % on green",
        green_share(&old) * 100.0
    );

    let r = gw
        .api(
            Method::POST,
            "/api/v1/rollouts",
            Some(r#"{"route": "agents", "to": "green", "steps": [25, 50, 100], "step_interval": "2s", "min_requests": 0}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    // Each step is held (paused) while the sessions are checked.
    assert_eq!(act(&gw, &id, "pause").await.current_weight(), 25);
    let mut all = old.clone();
    for weight in [25u32, 50] {
        if weight == 50 {
            act(&gw, &id, "resume").await;
            wait_steps(&gw, &id, 2).await;
            assert_eq!(act(&gw, &id, "pause").await.current_weight(), 50);
        }
        let bounced = bounces(&gw, &all).await;
        let fresh = start_sessions(&gw, 400).await;
        let share = green_share(&fresh);
        eprintln!(
            "pinning: step {weight} %: {} sessions checked, {bounced} bounces; 400 new sessions {:.1} % on green",
            all.len(),
            share * 100.0
        );
        assert_eq!(bounced, 0, "sessions changed version at step {weight}");
        let want = f64::from(weight) / 100.0;
        assert!(
            (share - want).abs() < 0.09,
            "new sessions {share} vs {want}"
        );
        all.extend(fresh);
    }

    // The rollout ends with blue at 0: blue's sessions move to green, then stay.
    let done = act(&gw, &id, "promote").await;
    assert_eq!(done.phase, Phase::Succeeded);
    let moved: Vec<(String, String)> = old
        .iter()
        .map(|(id, _)| (id.clone(), "v2".into()))
        .collect();
    assert_eq!(
        bounces(&gw, &moved).await,
        0,
        "every session on green after the rollout"
    );
    let state = gw.state().await;
    assert_eq!(state.route("agents").expect("route").split[1].weight, 100);
}

/// Sets the split of route `agents` on `gw` to blue/green.
async fn set_split(gw: &LiveGateway, blue: u32, green: u32) {
    let body = format!(r#"{{"blue": {blue}, "green": {green}}}"#);
    let r = gw
        .api(Method::PUT, "/api/v1/routes/agents/split", Some(&body))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// Two gateways that share nothing, with the same config and split, send every
/// session named by the client to the same version; as green's share grows
/// 5 → 25 → 50 → 100 no session leaves green, and rolling back to 0 returns
/// every session to blue on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_pin_sessions_alike_and_growth_never_leaves_the_canary() {
    let blue = agents("blue", "v1", 2).await;
    let green = agents("green", "v2", 2).await;
    let body = blue_green_route(&blue, &green, &format!(r#"learn_header = "{SESSION}""#));
    let text = config_text(&body, "", "");
    let (a, b) = (
        LiveGateway::start(&text).await,
        LiveGateway::start(&text).await,
    );
    let ids: Vec<String> = (0..200).map(|i| format!("client-session-{i}")).collect();
    let mut on_green = vec![false; ids.len()];
    for (blue_w, green_w) in [(95, 5), (75, 25), (50, 50), (0, 100)] {
        set_split(&a, blue_w, green_w).await;
        set_split(&b, blue_w, green_w).await;
        let (mut disagreed, mut left_green, mut green_n) = (0, 0, 0);
        for (i, (id, was_green)) in ids.iter().zip(on_green.iter_mut()).enumerate() {
            // Alternate which gateway sees the session first.
            let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let v1 = version(&get(first.addr, "/mcp", &[(SESSION, id)]).await);
            let v2 = version(&get(second.addr, "/mcp", &[(SESSION, id)]).await);
            let v3 = version(&get(first.addr, "/mcp", &[(SESSION, id)]).await);
            disagreed += usize::from(v1 != v2 || v1 != v3);
            let now = v1 == "v2";
            left_green += usize::from(*was_green && !now);
            green_n += usize::from(now);
            *was_green = now;
        }
        eprintln!(
            "pinning, 2 gateways: {blue_w}/{green_w}: 200 sessions, {green_n} on green, \
             {disagreed} disagreements, {left_green} left green"
        );
        assert_eq!(disagreed, 0, "the gateways disagreed at {blue_w}/{green_w}");
        assert_eq!(left_green, 0, "sessions left green at {blue_w}/{green_w}");
        // 200 sessions: 5 standard deviations of a binomial share, at least 1.
        let p = f64::from(green_w) / 100.0;
        let bound = (5.0 * (p * (1.0 - p) * 200.0).sqrt()).max(1.0);
        assert!(
            (green_n as f64 - p * 200.0).abs() <= bound,
            "{green_n} of 200 on green at {blue_w}/{green_w}"
        );
    }
    // Rollback: everyone returns to blue on both.
    set_split(&a, 100, 0).await;
    set_split(&b, 100, 0).await;
    for id in &ids {
        for gw in [&a, &b] {
            assert_eq!(version(&get(gw.addr, "/mcp", &[(SESSION, id)]).await), "v1");
        }
    }
}

/// The `mcp-session-id` the agent saw, from its echo of the request.
fn agent_saw(r: &Reply) -> Option<String> {
    r.json()["headers"][SESSION].as_str().map(str::to_owned)
}

/// Two gateways that share nothing, with `prefix = true`: 200 sessions the
/// *agent* names (as an MCP server answers `initialize`), each started on
/// either gateway, come back to the version that created them through either
/// gateway while green's share goes 5 → 25 → 50 (the id the client holds is
/// `<pool>~<id>`; the agent only ever sees its own id). When green drops to 0
/// its sessions go to blue on both gateways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_agree_on_sessions_the_agent_names_with_prefix() {
    let blue = agents("blue", "v1", 2).await;
    let green = agents("green", "v2", 2).await;
    let body = blue_green_route(
        &blue,
        &green,
        &format!(r#"learn_header = "{SESSION}", prefix = true"#),
    );
    let text = config_text(&body, "", "");
    let gws = [
        LiveGateway::start(&text).await,
        LiveGateway::start(&text).await,
    ];
    // (id the client holds, the agent's own id, version that created it)
    let mut sessions: Vec<(String, String, String)> = Vec::new();
    for (blue_w, green_w) in [(95, 5), (75, 25), (50, 50)] {
        for gw in &gws {
            set_split(gw, blue_w, green_w).await;
        }
        // New sessions at this share, started on alternating gateways.
        for i in 0..100 {
            let r = get(gws[i % 2].addr, "/mcp", &[]).await;
            let v = version(&r);
            let held = r.headers[SESSION].to_str().expect("ascii").to_owned();
            let (pool, own) = held.split_once('~').expect("a prefixed id");
            assert_eq!(pool, if v == "v2" { "green" } else { "blue" }, "{held}");
            assert!(own.starts_with(pool), "the agent's own id: {held}");
            sessions.push((held.clone(), own.to_owned(), v));
        }
        let (mut bounced, mut unknown_to_agent, mut green_n) = (0, 0, 0);
        for (i, (held, own, v)) in sessions.iter().enumerate() {
            for gw in [&gws[i % 2], &gws[(i + 1) % 2]] {
                let r = get(gw.addr, "/mcp", &[(SESSION, held)]).await;
                bounced += usize::from(version(&r) != *v);
                unknown_to_agent += usize::from(agent_saw(&r).as_deref() != Some(own));
                // An agent echoing the id gets it back to the client prefixed.
                assert!(!r.headers.contains_key(SESSION) || r.headers[SESSION] == held.as_str());
            }
            green_n += usize::from(v == "v2");
        }
        eprintln!(
            "pinning, 2 gateways, prefix: {blue_w}/{green_w}: {} agent-named sessions ({green_n} on green), \
             each asked through both: {bounced} bounces, {unknown_to_agent} ids the agent did not see as its own",
            sessions.len()
        );
        assert_eq!(bounced, 0, "sessions changed version at {blue_w}/{green_w}");
        assert_eq!(unknown_to_agent, 0, "the agent saw a prefixed id");
    }
    assert!(
        sessions.iter().any(|(_, _, v)| v == "v2"),
        "some sessions were created on green"
    );
    for gw in &gws {
        set_split(gw, 100, 0).await;
    }
    for (held, own, _) in &sessions {
        for gw in &gws {
            let r = get(gw.addr, "/mcp", &[(SESSION, held)]).await;
            assert_eq!(version(&r), "v1", "{held} after green dropped to 0");
            assert_eq!(agent_saw(&r).as_deref(), Some(own.as_str()));
        }
    }
}
