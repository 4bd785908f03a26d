//! `GET /metrics` after known traffic: exact counts per route, pool, backend and
//! status class; histogram counts; gauges after a health flip, a split change and a
//! backend removal; reload counters. Each gateway has its own recorder: two
//! gateways in one process share no series (`gateways_in_one_process_share_no_metrics`).

pub(crate) mod scrape;

use std::time::Duration;

use http::Method;
use scrape::Scrape;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::health::probe;
use crate::support::live::{config_text, LiveGateway};
use crate::support::{agents, get, until_agent_has, WAIT};

/// Polls `/metrics` (bounded) until `done` holds; returns that scrape.
async fn scrape_until(gw: &LiveGateway, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = Scrape::get(gw).await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_counts_requests_exactly_per_route_pool_backend_and_class() {
    let ags = agents("m", "v1", 3).await;
    let (a1, a2, a3) = (ags[0].addr(), ags[1].addr(), ags[2].addr());
    // Refused connections: a port that was bound and released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let body = format!(
        r#"
[[pools]]
name = "mc-blue"
backends = [{{ addr = "{a1}" }}]
[[pools]]
name = "mc-green"
backends = [{{ addr = "{a2}" }}]
[[pools]]
name = "mc-retry"
backends = [{{ addr = "{dead}" }}, {{ addr = "{a3}" }}]
[[routes]]
name = "mc-blue-r"
match = {{ headers = {{ "x-to" = "blue" }} }}
split = [{{ pool = "mc-blue", weight = 1 }}]
[[routes]]
name = "mc-green-r"
match = {{ headers = {{ "x-to" = "green" }} }}
split = [{{ pool = "mc-green", weight = 1 }}]
[[routes]]
name = "mc-retry-r"
match = {{ headers = {{ "x-to" = "retry" }} }}
split = [{{ pool = "mc-retry", weight = 1 }}]
retries = 1
"#
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let before = Scrape::get(&gw).await;
    let unrouted = |s: &Scrape| {
        s.value(
            "sluicegate_requests_total",
            &[
                ("route", ""),
                ("pool", ""),
                ("backend", ""),
                ("code_class", "4xx"),
            ],
        )
        .unwrap_or(0.0)
    };

    let blue = [("x-to", "blue")];
    for path in [
        "/status/200",
        "/status/200",
        "/status/201",
        "/status/404",
        "/status/418",
    ] {
        get(gw.addr, path, &blue).await;
    }
    assert_eq!(get(gw.addr, "/status/503", &blue).await.status, 503);
    for _ in 0..4 {
        assert_eq!(get(gw.addr, "/", &[("x-to", "green")]).await.status, 200);
    }
    for _ in 0..4 {
        assert_eq!(get(gw.addr, "/", &[("x-to", "retry")]).await.status, 200);
    }
    assert_eq!(get(gw.addr, "/", &[]).await.error(), "no_route");

    let s = Scrape::get(&gw).await;
    let req = |route: &str, pool: &str, backend: &str, class: &str| {
        let labels = [
            ("route", route),
            ("pool", pool),
            ("backend", backend),
            ("code_class", class),
        ];
        s.value("sluicegate_requests_total", &labels)
    };
    let (a1, a2, a3, dead) = (
        a1.to_string(),
        a2.to_string(),
        a3.to_string(),
        dead.to_string(),
    );
    assert_eq!(
        req("mc-blue-r", "mc-blue", &a1, "2xx"),
        Some(3.0),
        "{}",
        s.text
    );
    assert_eq!(req("mc-blue-r", "mc-blue", &a1, "4xx"), Some(2.0));
    assert_eq!(req("mc-blue-r", "mc-blue", &a1, "5xx"), Some(1.0));
    // Known backends' classes exist from the start, at 0.
    assert_eq!(req("mc-blue-r", "mc-blue", &a1, "1xx"), Some(0.0));
    assert_eq!(req("mc-blue-r", "mc-blue", &a1, "3xx"), Some(0.0));
    assert_eq!(req("mc-green-r", "mc-green", &a2, "2xx"), Some(4.0));
    assert_eq!(req("mc-retry-r", "mc-retry", &a3, "2xx"), Some(4.0));
    assert_eq!(req("mc-retry-r", "mc-retry", &dead, "5xx"), Some(0.0));
    assert!(unrouted(&s) >= unrouted(&before) + 1.0);

    let count = |route: &str, pool: &str| {
        s.value(
            "sluicegate_request_duration_seconds_count",
            &[("route", route), ("pool", pool)],
        )
    };
    assert_eq!(count("mc-blue-r", "mc-blue"), Some(6.0));
    assert_eq!(count("mc-green-r", "mc-green"), Some(4.0));
    assert_eq!(count("mc-retry-r", "mc-retry"), Some(4.0));
    let le_minute = [("route", "mc-green-r"), ("pool", "mc-green"), ("le", "60")];
    assert_eq!(
        s.value("sluicegate_request_duration_seconds_bucket", &le_minute),
        Some(4.0)
    );

    // Smooth round robin tries the first backend (dead) first: at least one retry,
    // and every connect error on it was followed by exactly one retry.
    let refused = s
        .value(
            "sluicegate_upstream_connect_errors_total",
            &[("pool", "mc-retry"), ("backend", &dead)],
        )
        .expect("connect errors series");
    assert!(refused >= 1.0, "{}", s.text);
    let retries = [("route", "mc-retry-r"), ("pool", "mc-retry")];
    assert_eq!(s.value("sluicegate_retries_total", &retries), Some(refused));
    assert_eq!(
        s.value(
            "sluicegate_retries_total",
            &[("route", "mc-blue-r"), ("pool", "mc-blue")]
        ),
        Some(0.0)
    );
    let a1_labels = [("pool", "mc-blue"), ("backend", a1.as_str())];
    assert_eq!(s.value("sluicegate_backend_healthy", &a1_labels), Some(1.0));
    assert_eq!(
        s.value("sluicegate_backend_inflight", &a1_labels),
        Some(0.0)
    );
    let split = [("route", "mc-green-r"), ("pool", "mc-green")];
    assert_eq!(s.value("sluicegate_pool_split_weight", &split), Some(1.0));
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(s.value("sluicegate_build_info", &version), Some(1.0));
    assert!(s.value("sluicegate_active_connections", &[]).is_some());
    for name in [
        "sluicegate_requests_total",
        "sluicegate_request_duration_seconds",
        "sluicegate_upstream_connect_errors_total",
        "sluicegate_retries_total",
        "sluicegate_backend_healthy",
        "sluicegate_pool_split_weight",
    ] {
        assert!(
            s.text.contains(&format!("# HELP {name} ")),
            "no help for {name}"
        );
    }
    scrape::promtool_check(&s.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_follow_health_splits_and_removal_and_reloads_are_counted() {
    let ags = agents("g", "v1", 3).await;
    let (a1, a2, a3) = (ags[0].addr(), ags[1].addr(), ags[2].addr());
    let pools = |green: &str| {
        format!(
            r#"
[[pools]]
name = "mg-blue"
backends = [{{ addr = "{a1}" }}]
{probe}
[[pools]]
name = "mg-green"
backends = [{green}]
[[routes]]
name = "mg-r"
split = [{{ pool = "mg-blue", weight = 100 }}, {{ pool = "mg-green", weight = 0 }}]
"#,
            probe = probe(1, 1)
        )
    };
    let both = format!("{{ addr = \"{a2}\" }}, {{ addr = \"{a3}\" }}");
    let gw = LiveGateway::start(&config_text(&pools(&both), "", "")).await;
    let (a1, a2, a3) = (a1.to_string(), a2.to_string(), a3.to_string());
    let blue = [("pool", "mg-blue"), ("backend", a1.as_str())];
    let healthy = |s: &Scrape| s.value("sluicegate_backend_healthy", &blue);
    scrape_until(&gw, "blue healthy", |s| healthy(s) == Some(1.0)).await;

    // Health flip: the probe takes the backend out, and that counts as an ejection.
    ags[0].set_healthy(false);
    let s = scrape_until(&gw, "blue unhealthy", |s| healthy(s) == Some(0.0)).await;
    let probe_ejection = [
        ("pool", "mg-blue"),
        ("backend", a1.as_str()),
        ("reason", "probe"),
    ];
    assert_eq!(
        s.value("sluicegate_backend_ejections_total", &probe_ejection),
        Some(1.0)
    );
    ags[0].set_healthy(true);
    scrape_until(&gw, "blue healthy again", |s| healthy(s) == Some(1.0)).await;

    // A split change through the admin API shows at the next scrape.
    gw.split("mg-r", r#"{"mg-blue": 10, "mg-green": 90}"#).await;
    let s = Scrape::get(&gw).await;
    let weight = |pool: &str| {
        s.value(
            "sluicegate_pool_split_weight",
            &[("route", "mg-r"), ("pool", pool)],
        )
    };
    assert_eq!(
        (weight("mg-blue"), weight("mg-green")),
        (Some(10.0), Some(90.0))
    );

    // Removing a backend from the file removes its gauges (not its counters).
    let reloads = |s: &Scrape, result: &str| {
        s.value("sluicegate_config_reloads_total", &[("result", result)])
            .unwrap_or(0.0)
    };
    let ok_before = reloads(&s, "ok");
    let gone = [("pool", "mg-green"), ("backend", a3.as_str())];
    assert_eq!(s.value("sluicegate_backend_healthy", &gone), Some(1.0));
    gw.reload(&config_text(
        &pools(&format!("{{ addr = \"{a2}\" }}")),
        "",
        "",
    ))
    .await;
    let s = scrape_until(&gw, "removed backend's gauges gone", |s| {
        s.value("sluicegate_backend_healthy", &gone).is_none()
            && s.value("sluicegate_backend_inflight", &gone).is_none()
    })
    .await;
    let kept = [("pool", "mg-green"), ("backend", a2.as_str())];
    assert_eq!(s.value("sluicegate_backend_healthy", &kept), Some(1.0));
    let old_class = [
        ("route", "mg-r"),
        ("pool", "mg-green"),
        ("backend", a3.as_str()),
        ("code_class", "2xx"),
    ];
    assert_eq!(s.value("sluicegate_requests_total", &old_class), Some(0.0));
    assert!(reloads(&s, "ok") >= ok_before + 1.0);

    // A bad file is counted as an error; nothing changes.
    let errors_before = reloads(&s, "error");
    let failed_before = gw.counters().reloads_failed;
    gw.rewrite("[listen]\nhttp = 8080\n");
    gw.wait_counters(|c| c.reloads_failed > failed_before).await;
    let s = Scrape::get(&gw).await;
    assert!(reloads(&s, "error") >= errors_before + 1.0, "{}", s.text);
    assert_eq!(s.value("sluicegate_backend_healthy", &kept), Some(1.0));
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    // Any variable the process already has works as the token's source; PATH spares
    // this test a `set_var` racing other threads' environment reads.
    let token = std::env::var("PATH").expect("PATH is set");
    let body = "[[pools]]\nname = \"mt\"\nbackends = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\nname = \"mt-r\"\nsplit = [{ pool = \"mt\", weight = 1 }]\n";
    let gw = LiveGateway::start(&config_text(body, "", "token_env = \"PATH\"")).await;
    let denied = gw.api(Method::GET, "/metrics", None).await;
    assert_eq!(denied.status, 401);
    let r = crate::support::live::api(gw.admin, Method::GET, "/metrics", None, Some(&token)).await;
    assert_eq!(r.status, 200);
    let ctype = r.headers["content-type"].to_str().unwrap_or("");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_series_follow_the_rollout() {
    let ags = agents("ro", "v1", 2).await;
    let (a1, a2) = (ags[0].addr(), ags[1].addr());
    let body = format!(
        r#"
[[pools]]
name = "mr-blue"
backends = [{{ addr = "{a1}" }}]
[[pools]]
name = "mr-green"
backends = [{{ addr = "{a2}" }}]
[[routes]]
name = "mr-r"
split = [{{ pool = "mr-blue", weight = 100 }}, {{ pool = "mr-green", weight = 0 }}]
"#
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let aborted = |s: &Scrape| {
        s.value("sluicegate_rollouts_total", &[("result", "aborted")])
            .unwrap_or(0.0)
    };
    let before = aborted(&Scrape::get(&gw).await);
    let start = r#"{"route": "mr-r", "to": "mr-green", "steps": [5, 100], "step_interval": "1m"}"#;
    let r = gw.api(Method::POST, "/api/v1/rollouts", Some(start)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let state = |s: &Scrape, state: &str| {
        s.value(
            "sluicegate_rollout_state",
            &[("route", "mr-r"), ("state", state)],
        )
    };
    let s = scrape_until(&gw, "rollout at step 5", |s| {
        s.value("sluicegate_rollout_step", &[("route", "mr-r")]) == Some(5.0)
    })
    .await;
    assert_eq!(
        (state(&s, "running"), state(&s, "aborted")),
        (Some(1.0), Some(0.0))
    );
    let green = [("route", "mr-r"), ("pool", "mr-green")];
    assert_eq!(s.value("sluicegate_pool_split_weight", &green), Some(5.0));

    let r = gw
        .api(Method::POST, &format!("/api/v1/rollouts/{id}/abort"), None)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let s = scrape_until(&gw, "rollout aborted", |s| state(s, "aborted") == Some(1.0)).await;
    assert_eq!(state(&s, "running"), Some(0.0));
    assert_eq!(
        s.value("sluicegate_rollout_step", &[("route", "mr-r")]),
        Some(0.0)
    );
    assert!(aborted(&s) >= before + 1.0, "{}", s.text);
}

/// Two gateways with the same config in one process: traffic, an open connection
/// and a rollout on one show on its own `/metrics` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_in_one_process_share_no_metrics() {
    let ags = agents("ng", "v1", 2).await;
    let (a1, a2) = (ags[0].addr(), ags[1].addr());
    let body = format!(
        r#"
[[pools]]
name = "ng-blue"
backends = [{{ addr = "{a1}" }}]
[[pools]]
name = "ng-green"
backends = [{{ addr = "{a2}" }}]
[[routes]]
name = "ng-r"
split = [{{ pool = "ng-blue", weight = 100 }}, {{ pool = "ng-green", weight = 0 }}]
"#
    );
    let busy = LiveGateway::start(&config_text(&body, "", "")).await;
    let idle = LiveGateway::start(&config_text(&body, "", "")).await;
    let blue = a1.to_string();
    let ok = [
        ("route", "ng-r"),
        ("pool", "ng-blue"),
        ("backend", blue.as_str()),
        ("code_class", "2xx"),
    ];
    for _ in 0..5 {
        assert_eq!(get(busy.addr, "/", &[]).await.status, 200);
    }
    // A client connection held open on the busy gateway only.
    let held = tokio::net::TcpStream::connect(busy.addr)
        .await
        .expect("connect");
    let start = r#"{"route": "ng-r", "to": "ng-green", "steps": [5, 100], "step_interval": "1m"}"#;
    let r = busy
        .api(Method::POST, "/api/v1/rollouts", Some(start))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let step = |s: &Scrape| s.value("sluicegate_rollout_step", &[("route", "ng-r")]);
    let b = scrape_until(
        &busy,
        "traffic, connection and rollout on the busy gateway",
        |s| {
            step(s) == Some(5.0)
                && s.value("sluicegate_active_connections", &[]).unwrap_or(0.0) >= 1.0
        },
    )
    .await;
    assert_eq!(
        b.value("sluicegate_requests_total", &ok),
        Some(5.0),
        "{}",
        b.text
    );

    let s = Scrape::get(&idle).await;
    // The idle gateway's own series exist (at 0), and carry none of the busy one's.
    assert_eq!(
        s.value("sluicegate_requests_total", &ok),
        Some(0.0),
        "{}",
        s.text
    );
    assert_eq!(
        s.value(
            "sluicegate_request_duration_seconds_count",
            &[("route", "ng-r"), ("pool", "ng-blue")]
        )
        .unwrap_or(0.0),
        0.0,
        "{}",
        s.text
    );
    assert_eq!(
        s.value("sluicegate_active_connections", &[]),
        Some(0.0),
        "{}",
        s.text
    );
    assert_eq!(step(&s), None, "{}", s.text);
    assert_eq!(
        s.value(
            "sluicegate_rollout_state",
            &[("route", "ng-r"), ("state", "running")]
        ),
        None,
        "{}",
        s.text
    );
    assert_eq!(
        s.value(
            "sluicegate_pool_split_weight",
            &[("route", "ng-r"), ("pool", "ng-green")]
        ),
        Some(0.0),
        "{}",
        s.text
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_tunnel_is_one_upgraded_request_with_its_bytes_each_way() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let ags = agents("mt", "v1", 1).await;
    let a = ags[0].addr();
    let body = format!(
        r#"
[[pools]]
name = "mt-ws"
backends = [{{ addr = "{a}" }}]
[[routes]]
name = "mt-ws-r"
split = [{{ pool = "mt-ws", weight = 1 }}]
"#
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    tokio::time::timeout(WAIT, async {
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let url = format!("ws://{}/ws", gw.addr);
        let (mut ws, resp) = tokio_tungstenite::client_async(url, stream).await.unwrap();
        assert_eq!(resp.status(), 101);
        ws.send(Message::Binary(vec![7; 1000])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Binary(vec![7; 1000])
        );
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    })
    .await
    .expect("bounded");
    let a = a.to_string();
    let tunnel = |s: &Scrape, direction: &str| {
        let labels = [
            ("route", "mt-ws-r"),
            ("pool", "mt-ws"),
            ("direction", direction),
        ];
        s.value("sluicegate_tunnel_bytes_total", &labels)
            .unwrap_or(0.0)
    };
    let s = scrape_until(&gw, "the tunnel's bytes", |s| {
        tunnel(s, "up") > 1000.0 && tunnel(s, "down") > 1000.0
    })
    .await;
    let labels = [
        ("route", "mt-ws-r"),
        ("pool", "mt-ws"),
        ("backend", a.as_str()),
        ("code_class", "1xx"),
    ];
    assert_eq!(s.value("sluicegate_requests_total", &labels), Some(1.0));
}

/// A client that hangs up while its request waits for the backend's answer is
/// recorded as nginx records it (499: class 4xx, under the backend it waited for),
/// not forgotten, and never as the backend's 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_before_its_answer_is_counted_as_a_client_abort() {
    let ags = agents("gone", "v1", 1).await;
    let a = ags[0].addr();
    let body = format!(
        r#"
[[pools]]
name = "gone"
backends = [{{ addr = "{a}" }}]
[[routes]]
name = "gone-r"
split = [{{ pool = "gone", weight = 1 }}]
"#
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let a = a.to_string();
    let class = |s: &Scrape, class: &str| {
        let labels = [
            ("route", "gone-r"),
            ("pool", "gone"),
            ("backend", a.as_str()),
            ("code_class", class),
        ];
        s.value("sluicegate_requests_total", &labels).unwrap_or(0.0)
    };
    for n in 1..=3u64 {
        let mut s = TcpStream::connect(gw.addr).await.expect("connect");
        s.write_all(b"GET /slow?ms=20000 HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .expect("write");
        until_agent_has(&ags[0], n, "the slow request").await;
        drop(s);
    }
    let s = scrape_until(&gw, "three client aborts", |s| class(s, "4xx") >= 3.0).await;
    assert_eq!(class(&s, "4xx"), 3.0, "{}", s.text);
    assert_eq!(class(&s, "2xx"), 0.0, "{}", s.text);
    assert_eq!(class(&s, "5xx"), 0.0, "{}", s.text);
}

/// Refusals of a route's limits are `sluicegate_limited_total{route,kind}`: a
/// rate limit's 429s, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_limits_are_counted_by_route_and_kind() {
    let ags = agents("lim", "v1", 1).await;
    let a1 = ags[0].addr();
    let body = format!(
        r#"
[[pools]]
name = "lim-p"
backends = [{{ addr = "{a1}" }}]
[[routes]]
name = "lim-r"
split = [{{ pool = "lim-p", weight = 1 }}]
rate_limit = {{ rate = 0.01, burst = 2, key = "route" }}
"#
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let mut refused = 0;
    for _ in 0..7 {
        if get(gw.addr, "/", &[]).await.status == 429 {
            refused += 1;
        }
    }
    assert_eq!(refused, 5, "burst 2 of 7");
    let labels = [("route", "lim-r"), ("kind", "rate")];
    let s = scrape_until(&gw, "limited_total", |s| {
        s.value("sluicegate_limited_total", &labels).is_some()
    })
    .await;
    assert_eq!(s.value("sluicegate_limited_total", &labels), Some(5.0));
}
