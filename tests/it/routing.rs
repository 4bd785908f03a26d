//! Routing, splits, balancing and stickiness through a real gateway.

use std::collections::HashMap;

use crate::support::{agents, backends, get, TestGateway};

fn count(replies: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in replies {
        *m.entry(r.clone()).or_insert(0) += 1;
    }
    m
}

#[tokio::test]
async fn split_weights_3_to_1_give_75_25_within_5_percent() {
    let blue = agents("blue", "v1", 1).await;
    let green = agents("green", "v2", 1).await;
    let gw = TestGateway::start(&format!(
        r#"
[[pools]]
name = "blue"
backends = {}
[[pools]]
name = "green"
backends = {}
[[routes]]
name = "all"
split = [{{ pool = "blue", weight = 3 }}, {{ pool = "green", weight = 1 }}]
"#,
        backends(&blue),
        backends(&green)
    ))
    .await;
    // The split draws at random: 2 000 requests put ±5 % at five standard
    // deviations (400 put it at 2.3, a failure in about one run of 50).
    let n = 2000;
    let mut seen = Vec::new();
    for _ in 0..n {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status, 200);
        seen.push(r.agent().to_string());
    }
    let c = count(&seen);
    let blue_share = c.get("blue-1").copied().unwrap_or(0) as f64 / f64::from(n);
    assert!(
        (blue_share - 0.75).abs() <= 0.05,
        "blue share {blue_share}: {c:?}"
    );
    assert_eq!(c.len(), 2, "{c:?}");
}

#[tokio::test]
async fn round_robin_weights_3_to_1_inside_a_pool() {
    let a = agents("a", "v1", 2).await;
    let gw = TestGateway::start(&format!(
        r#"
[[pools]]
name = "p"
balance = "round_robin"
backends = [{{ addr = "{}", weight = 3 }}, {{ addr = "{}", weight = 1 }}]
[[routes]]
name = "all"
split = [{{ pool = "p", weight = 1 }}]
"#,
        a[0].addr(),
        a[1].addr()
    ))
    .await;
    let mut seen = Vec::new();
    for _ in 0..400 {
        seen.push(get(gw.addr, "/", &[]).await.agent().to_string());
    }
    let c = count(&seen);
    // Smooth weighted round robin is exact over whole cycles.
    assert_eq!(c.get("a-1"), Some(&300), "{c:?}");
    assert_eq!(c.get("a-2"), Some(&100), "{c:?}");
}

#[tokio::test]
async fn header_route_wins_and_host_routes_are_separate() {
    let blue = agents("blue", "v1", 1).await;
    let green = agents("green", "v2", 1).await;
    let gw = TestGateway::start(&format!(
        r#"
[[pools]]
name = "blue"
backends = {}
[[pools]]
name = "green"
backends = {}
[[routes]]
name = "default"
split = [{{ pool = "blue", weight = 1 }}]
[[routes]]
name = "testers"
match = {{ headers = {{ "x-canary" = "always" }} }}
split = [{{ pool = "green", weight = 1 }}]
[[routes]]
name = "other-host"
match = {{ host = "green.local" }}
split = [{{ pool = "green", weight = 1 }}]
"#,
        backends(&blue),
        backends(&green)
    ))
    .await;
    for _ in 0..20 {
        assert_eq!(get(gw.addr, "/", &[]).await.agent(), "blue-1");
        assert_eq!(
            get(gw.addr, "/", &[("x-canary", "always")]).await.agent(),
            "green-1"
        );
    }
    // The support client sends Host: test.local; override it.
    let mut req = http::Request::get("/x").header("host", "green.local:8080");
    req = req.header("accept", "*/*");
    let r = crate::support::send(gw.addr, req.body(Default::default()).unwrap()).await;
    assert_eq!(r.agent(), "green-1");
}

#[tokio::test]
async fn no_route_is_404_with_cause() {
    let blue = agents("blue", "v1", 1).await;
    let gw = TestGateway::start(&format!(
        r#"
[[pools]]
name = "blue"
backends = {}
[[routes]]
name = "api-only"
match = {{ path_prefix = "/api" }}
split = [{{ pool = "blue", weight = 1 }}]
"#,
        backends(&blue)
    ))
    .await;
    let r = get(gw.addr, "/other", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "no_route");
    assert_eq!(get(gw.addr, "/api/x", &[]).await.status, 200);
}

#[tokio::test]
async fn sticky_cookie_keeps_a_client_on_its_pool() {
    let blue = agents("blue", "v1", 1).await;
    let green = agents("green", "v2", 1).await;
    let gw = TestGateway::start(&format!(
        r#"
[[pools]]
name = "blue"
backends = {}
[[pools]]
name = "green"
backends = {}
[[routes]]
name = "all"
split = [{{ pool = "blue", weight = 50 }}, {{ pool = "green", weight = 50 }}]
sticky = {{ cookie = "sg_pool" }}
"#,
        backends(&blue),
        backends(&green)
    ))
    .await;
    let first = get(gw.addr, "/", &[]).await;
    let cookie = first.headers["set-cookie"].to_str().unwrap().to_string();
    let pair = cookie.split(';').next().unwrap().to_string();
    let expected = if pair.ends_with("=blue") {
        "blue-1"
    } else {
        "green-1"
    };
    assert_eq!(first.agent(), expected);
    for _ in 0..50 {
        let r = get(gw.addr, "/", &[("cookie", &pair)]).await;
        assert_eq!(r.agent(), expected);
        assert!(r.headers.get("set-cookie").is_none());
    }
}

#[tokio::test]
async fn hash_on_header_pins_a_session_to_one_backend() {
    let a = agents("a", "v1", 4).await;
    let gw = TestGateway::start(&format!(
        r#"
[[pools]]
name = "p"
balance = "hash"
hash_key = "header:x-session-id"
backends = {}
[[routes]]
name = "all"
split = [{{ pool = "p", weight = 1 }}]
"#,
        backends(&a)
    ))
    .await;
    let mut used = std::collections::HashSet::new();
    for s in 0..20 {
        let id = format!("session-{s}");
        let first = get(gw.addr, "/", &[("x-session-id", &id)])
            .await
            .agent()
            .to_string();
        for _ in 0..5 {
            assert_eq!(
                get(gw.addr, "/", &[("x-session-id", &id)]).await.agent(),
                first
            );
        }
        used.insert(first);
    }
    assert!(used.len() >= 3, "20 sessions should spread: {used:?}");
}
