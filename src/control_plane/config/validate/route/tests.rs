//! Error kinds of `[[routes]]`: exact path and a fragment of the message for
//! each.

use crate::control_plane::config::tests::{assert_one, with_pools, with_route, LISTEN, ROUTE};

#[test]
fn missing_split() {
    assert_one(
        &with_route(""),
        "routes[0].split",
        "missing required key `split`",
    );
}

#[test]
fn empty_split() {
    assert_one(
        &with_route("split = []"),
        "routes[0].split",
        "split is empty",
    );
}

#[test]
fn unknown_split_pool_lists_defined_pools() {
    let text = with_route(
        r#"split = [{ pool = "agent-blue", weight = 1 }, { pool = "agent-gren", weight = 1 }]"#,
    );
    assert_one(
        &text,
        "routes[0].split[1].pool",
        r#"no pool named "agent-gren"; defined pools: agent-blue, agent-green"#,
    );
}

#[test]
fn split_pool_twice() {
    let text = with_route(
        r#"split = [{ pool = "agent-blue", weight = 1 }, { pool = "agent-blue", weight = 1 }]"#,
    );
    assert_one(&text, "routes[0].split[1].pool", "appears twice");
}

#[test]
fn split_weight_range() {
    let text = with_route(r#"split = [{ pool = "agent-blue", weight = -1 }]"#);
    assert_one(&text, "routes[0].split[0].weight", "between 0 and 1000000");
}

#[test]
fn split_all_zero_weights() {
    let text = with_route(
        r#"split = [{ pool = "agent-blue", weight = 0 }, { pool = "agent-green", weight = 0 }]"#,
    );
    assert_one(
        &text,
        "routes[0].split",
        "all weights are 0: the route could never send traffic",
    );
}

#[test]
fn split_to_broken_pool_is_not_reported_missing() {
    let text = format!(
        "{LISTEN}[[pools]]\nname = \"agent-blue\"\nbackends = [{{ addr = 9001 }}]\n{ROUTE}"
    );
    assert_one(
        &text,
        "pools[0].backends[0].addr",
        "expected a string, found integer",
    );
}

#[test]
fn duplicate_route_name() {
    let text = with_pools(&format!("{ROUTE}{ROUTE}"));
    assert_one(
        &text,
        "routes[1].name",
        "duplicate route name \"agents\" (first defined at routes[0])",
    );
}

#[test]
fn host_rules() {
    let split = r#"split = [{ pool = "agent-blue", weight = 1 }]"#;
    let host = |h: &str| with_route(&format!("match = {{ host = \"{h}\" }}\n{split}"));
    assert_one(
        &host("agents.local:8080"),
        "routes[0].match.host",
        "must not include a port",
    );
    assert_one(
        &host("agents.*.local"),
        "routes[0].match.host",
        "only allowed as the whole first label",
    );
    assert_one(
        &host("agents..local"),
        "routes[0].match.host",
        "not a valid host name",
    );
    assert_one(&host(""), "routes[0].match.host", "host is empty");
}

#[test]
fn path_prefix_must_start_with_slash() {
    let text = with_route(
        "match = { path_prefix = \"api\" }\nsplit = [{ pool = \"agent-blue\", weight = 1 }]",
    );
    assert_one(
        &text,
        "routes[0].match.path_prefix",
        "must start with '/'; write \"/api\"",
    );
}

#[test]
fn header_name_and_value_rules() {
    let header = |h: &str| {
        with_route(&format!(
            "match = {{ headers = {{ {h} }} }}\nsplit = [{{ pool = \"agent-blue\", weight = 1 }}]"
        ))
    };
    assert_one(
        &header(r#""x canary" = "1""#),
        r#"routes[0].match.headers."x canary""#,
        "not a valid header name",
    );
    assert_one(
        &header(r#""x-canary" = "a\u0001b""#),
        "routes[0].match.headers.x-canary",
        "control characters",
    );
    assert_one(
        &header(r#""X-Canary" = "1", "x-canary" = "2""#),
        "routes[0].match.headers.x-canary",
        "listed twice",
    );
}

#[test]
fn method_rules() {
    let method = |m: &str| {
        with_route(&format!(
            "match = {{ method = {m} }}\nsplit = [{{ pool = \"agent-blue\", weight = 1 }}]"
        ))
    };
    assert_one(
        &method(r#""GE T""#),
        "routes[0].match.method",
        "not an HTTP method",
    );
    assert_one(
        &method(r#"["GET", "(x)"]"#),
        "routes[0].match.method[1]",
        "not an HTTP method",
    );
    assert_one(
        &method("[]"),
        "routes[0].match.method",
        "method list is empty",
    );
    assert_one(
        &method(r#"["get", "GET"]"#),
        "routes[0].match.method[1]",
        "listed twice",
    );
    assert_one(
        &method(r#"["GET", 1]"#),
        "routes[0].match.method[1]",
        "expected a string, found integer",
    );
    assert_one(
        &method("true"),
        "routes[0].match.method",
        r#"expected a method like "GET""#,
    );
}

#[test]
fn unknown_match_key() {
    let text =
        with_route("match = { hots = \"a\" }\nsplit = [{ pool = \"agent-blue\", weight = 1 }]");
    assert_one(
        &text,
        "routes[0].match.hots",
        "accepted keys: host, path_prefix, headers, method",
    );
}

#[test]
fn sticky_cookie_name() {
    let text = with_route(
        "sticky = { cookie = \"sg pool\" }\nsplit = [{ pool = \"agent-blue\", weight = 1 }]",
    );
    assert_one(&text, "routes[0].sticky.cookie", "not a valid cookie name");
}

#[test]
fn sticky_learn_header_with_defaults_and_limits() {
    let route = |sticky: &str| {
        with_route(&format!(
            "sticky = {{ {sticky} }}\nsplit = [{{ pool = \"agent-blue\", weight = 1 }}]"
        ))
    };
    let spec =
        crate::control_plane::config::parse(&route(r#"learn_header = "Mcp-Session-Id""#)).unwrap();
    let sticky = spec.routes[0].sticky.clone().expect("sticky");
    let learn = sticky.learn.expect("learn");
    assert_eq!(sticky.cookie, None);
    assert_eq!(learn.header.as_str(), "mcp-session-id");
    assert_eq!(learn.idle, std::time::Duration::from_secs(1800));
    assert_eq!(learn.max_sessions, 100_000);
    let both =
        route(r#"cookie = "sg_pool", learn_header = "x-session", idle = "5m", max_sessions = 10"#);
    let sticky = crate::control_plane::config::parse(&both).unwrap().routes[0]
        .sticky
        .clone()
        .unwrap();
    assert_eq!(sticky.cookie.as_deref(), Some("sg_pool"));
    assert_eq!(
        sticky.learn.map(|l| (l.idle.as_secs(), l.max_sessions)),
        Some((300, 10))
    );

    assert_one(
        &route(r#"learn_header = "set-cookie""#),
        "routes[0].sticky.learn_header",
        "cannot name a session",
    );
    assert_one(
        &route(r#"learn_header = "a b""#),
        "routes[0].sticky.learn_header",
        "not a valid header name",
    );
    assert_one(
        &route(r#"learn_header = "s", idle = "0s""#),
        "routes[0].sticky.idle",
        "greater than 0",
    );
    assert_one(
        &route(r#"learn_header = "s", max_sessions = 0"#),
        "routes[0].sticky.max_sessions",
        "between 1 and 10000000, got 0",
    );
    assert_one(
        &route(r#"cookie = "c", idle = "5m""#),
        "routes[0].sticky.idle",
        "add learn_header",
    );
    assert_one(&route(""), "routes[0].sticky", "sticky needs cookie");
    assert_one(
        &route(r#"learn = "x""#),
        "routes[0].sticky.learn",
        "accepted keys: cookie, learn_header, idle, max_sessions, prefix",
    );
    assert_one(
        &route(r#"cookie = "c", prefix = true"#),
        "routes[0].sticky.prefix",
        "add learn_header",
    );
}

#[test]
fn sticky_prefix_is_on_by_default_exactly_with_a_cluster() {
    let route = |sticky: &str, cluster: &str| {
        format!(
            "{}{cluster}",
            with_route(&format!(
                "sticky = {{ {sticky} }}\nsplit = [{{ pool = \"agent-blue\", weight = 1 }}]"
            ))
        )
    };
    let prefix = |text: String| {
        crate::control_plane::config::parse(&text).unwrap().routes[0]
            .sticky
            .clone()
            .and_then(|s| s.learn)
            .map(|l| l.prefix)
    };
    let cluster = "\n[cluster]\nstore = \"swarm\"\nservice = \"gw\"\n";
    let learn = r#"learn_header = "mcp-session-id""#;
    assert_eq!(prefix(route(learn, "")), Some(false));
    assert_eq!(prefix(route(learn, cluster)), Some(true));
    let off = r#"learn_header = "mcp-session-id", prefix = false"#;
    assert_eq!(prefix(route(off, cluster)), Some(false));
    let on = r#"learn_header = "mcp-session-id", prefix = true"#;
    assert_eq!(prefix(route(on, "")), Some(true));
    assert_one(
        &route(r#"learn_header = "s", prefix = "yes""#, ""),
        "routes[0].sticky.prefix",
        "",
    );
}

#[test]
fn retries_range() {
    let text = with_route("retries = 11\nsplit = [{ pool = \"agent-blue\", weight = 1 }]");
    assert_one(&text, "routes[0].retries", "between 0 and 10, got 11");
}

#[test]
fn timeout_rules() {
    let timeouts = |t: &str| {
        with_route(&format!(
            "timeouts = {{ {t} }}\nsplit = [{{ pool = \"agent-blue\", weight = 1 }}]"
        ))
    };
    assert_one(
        &timeouts(r#"connect = "0ms""#),
        "routes[0].timeouts.connect",
        "greater than 0",
    );
    assert_one(
        &timeouts(r#"idle = "1 parsec""#),
        "routes[0].timeouts.idle",
        "is not a duration",
    );
    assert_one(
        &timeouts(r#"total = "1s""#),
        "routes[0].timeouts.total",
        "accepted keys: connect, response_header, idle, client_body",
    );
    assert_one(
        &timeouts(r#"client_body = "2h""#),
        "routes[0].timeouts.client_body",
        "use at most \"1h\"",
    );
    assert_one(
        &timeouts(r#"client_body = "0s""#),
        "routes[0].timeouts.client_body",
        "greater than 0",
    );
}

#[test]
fn upgrade_rules() {
    let upgrades = |u: &str| {
        with_route(&format!(
            "upgrades = {u}\nsplit = [{{ pool = \"agent-blue\", weight = 1 }}]"
        ))
    };
    assert_one(
        &upgrades(r#"["websocket", "h2c/1"]"#),
        "routes[0].upgrades[1]",
        "is not a protocol name",
    );
    assert_one(
        &upgrades(r#"["websocket", ""]"#),
        "routes[0].upgrades[1]",
        "is not a protocol name",
    );
    assert_one(
        &upgrades(r#"["websocket", "WebSocket"]"#),
        "routes[0].upgrades[1]",
        "listed twice (first at routes[0].upgrades[0])",
    );
    assert_one(&upgrades(r#""websocket""#), "routes[0].upgrades", "");
}

#[test]
fn max_request_body_defaults_to_100_mib_and_zero_is_unlimited() {
    let body = |line: &str| {
        let text = with_route(&format!(
            "split = [{{ pool = \"agent-blue\", weight = 1 }}]\n{line}"
        ));
        crate::control_plane::config::parse(&text)
            .expect("valid")
            .routes
            .remove(0)
            .max_request_body
    };
    assert_eq!(body(""), Some(100 * 1024 * 1024));
    assert_eq!(body("max_request_body = 0"), None);
    assert_eq!(body("max_request_body = \"0B\""), None);
    assert_eq!(body("max_request_body = \"1KiB\""), Some(1024));
    assert_one(
        &with_route(
            "split = [{ pool = \"agent-blue\", weight = 1 }]\nmax_request_body = \"1025GiB\"",
        ),
        "routes[0].max_request_body",
        "out of range",
    );
    assert_one(
        &with_route("split = [{ pool = \"agent-blue\", weight = 1 }]\nmax_request_body = -1"),
        "routes[0].max_request_body",
        "is not a size",
    );
}

#[test]
fn retry_on_status_takes_5xx_statuses_once() {
    let route = |line: &str| {
        with_route(&format!(
            "split = [{{ pool = \"agent-blue\", weight = 1 }}]\n{line}"
        ))
    };
    let spec =
        crate::control_plane::config::parse(&route("retry_on_status = [502, 503]")).expect("valid");
    assert_eq!(&*spec.routes[0].retry_on_status, &[502, 503]);
    assert_one(
        &route("retry_on_status = [503, 404]"),
        "routes[0].retry_on_status[1]",
        "404 is not a 5xx status",
    );
    assert_one(
        &route("retry_on_status = [503, 503]"),
        "routes[0].retry_on_status[1]",
        "503 is listed twice",
    );
}

#[test]
fn retry_budget_fields_are_checked_with_their_paths() {
    let pool = |budget: &str| {
        format!(
            "{LISTEN}\n[[pools]]\nname = \"agent-blue\"\nbackends = []\nretry_budget = {budget}\n{ROUTE}"
        )
    };
    let spec = crate::control_plane::config::parse(&pool("{}")).expect("valid");
    let budget = spec.pools[0].limits.retry_budget.expect("a budget");
    assert_eq!((budget.percent, budget.min_per_second), (20, 3));
    assert_one(
        &pool("{ percent = 101 }"),
        "pools[0].retry_budget.percent",
        "between 0 and 100, got 101",
    );
    assert_one(
        &pool("{ min_per_second = -1 }"),
        "pools[0].retry_budget.min_per_second",
        "got -1",
    );
    assert_one(
        &pool("{ percnt = 5 }"),
        "pools[0].retry_budget.percnt",
        "unknown key `percnt`; accepted keys: percent, min_per_second",
    );
}

#[test]
fn rate_limit_fields_are_checked_with_their_paths() {
    let route = |limit: &str| {
        with_route(&format!(
            "split = [{{ pool = \"agent-blue\", weight = 1 }}]\nrate_limit = {limit}"
        ))
    };
    let spec = crate::control_plane::config::parse(&route(
        "{ rate = 2.5, trusted_proxies = [\"10.0.0.0/8\", \"::1\"] }",
    ))
    .expect("valid");
    let rate = spec.routes[0].limits.rate.clone().expect("a rate limit");
    assert_eq!((rate.rate, rate.burst, rate.max_keys), (2.5, 3, 100_000));
    assert!(
        matches!(rate.key, crate::control_plane::config::spec::RateKey::ClientIp { ref trusted } if trusted.len() == 2)
    );
    for (limit, path, fragment) in [
        (
            "{ burst = 3 }",
            "routes[0].rate_limit.rate",
            "rate is required",
        ),
        (
            "{ rate = 0 }",
            "routes[0].rate_limit.rate",
            "must be above 0",
        ),
        (
            "{ rate = 1, burst = 0 }",
            "routes[0].rate_limit.burst",
            "between 1 and",
        ),
        (
            "{ rate = 1, key = \"cookie:x\" }",
            "routes[0].rate_limit.key",
            "is not a key",
        ),
        (
            "{ rate = 1, max_keys = 0 }",
            "routes[0].rate_limit.max_keys",
            "between 1 and",
        ),
        (
            "{ rate = 1, trusted_proxies = [\"10.0.0.1/8\"] }",
            "routes[0].rate_limit.trusted_proxies[0]",
            "is not an IP address or network",
        ),
        (
            "{ rate = 1, key = \"route\", trusted_proxies = [\"10.0.0.0/8\"] }",
            "routes[0].rate_limit.trusted_proxies",
            "only applies to key = \"client_ip\"",
        ),
    ] {
        assert_one(&route(limit), path, fragment);
    }
}

#[test]
fn concurrency_fields_are_checked_with_their_paths() {
    let route = |limit: &str| {
        with_route(&format!(
            "split = [{{ pool = \"agent-blue\", weight = 1 }}]\nconcurrency = {limit}"
        ))
    };
    let spec =
        crate::control_plane::config::parse(&route("{ max_in_flight = 20 }")).expect("valid");
    let c = spec.routes[0].limits.concurrency.expect("a limit");
    assert_eq!(
        (c.max_in_flight, c.queue, c.queue_timeout),
        (20, 0, std::time::Duration::from_secs(1))
    );
    for (limit, path, fragment) in [
        (
            "{ queue = 5 }",
            "routes[0].concurrency.max_in_flight",
            "max_in_flight is required",
        ),
        (
            "{ max_in_flight = 0 }",
            "routes[0].concurrency.max_in_flight",
            "between 1 and 1000000, got 0",
        ),
        (
            "{ max_in_flight = 1, queue = -1 }",
            "routes[0].concurrency.queue",
            "got -1",
        ),
        (
            "{ max_in_flight = 1, queue = 200000 }",
            "routes[0].concurrency.queue",
            "got 200000",
        ),
        (
            "{ max_in_flight = 1, queue = 1, queue_timeout = \"soon\" }",
            "routes[0].concurrency.queue_timeout",
            "not a duration",
        ),
        (
            "{ max_in_flight = 1, queue_timeout = \"1s\" }",
            "routes[0].concurrency.queue_timeout",
            "needs a queue",
        ),
        (
            "{ max_inflight = 1 }",
            "routes[0].concurrency.max_inflight",
            "unknown key `max_inflight`",
        ),
    ] {
        assert_one(&route(limit), path, fragment);
    }
    // The same keys on a pool, at the pool's path.
    let pool = format!(
        "{LISTEN}\n[[pools]]\nname = \"agent-blue\"\nbackends = []\nconcurrency = {{ max_in_flight = 0 }}\n{ROUTE}"
    );
    assert_one(&pool, "pools[0].concurrency.max_in_flight", "got 0");
}

#[test]
fn circuit_breaker_fields_are_checked_with_their_paths() {
    let pool = |breaker: &str| {
        format!(
            "{LISTEN}\n[[pools]]\nname = \"agent-blue\"\nbackends = []\ncircuit_breaker = {breaker}\n{ROUTE}"
        )
    };
    let spec =
        crate::control_plane::config::parse(&pool("{ max_connections = 8 }")).expect("valid");
    let b = spec.pools[0].limits.breaker.expect("a breaker");
    assert_eq!((b.max_connections, b.max_pending), (8, 0));
    for (breaker, path, fragment) in [
        (
            "{ max_pending = 3 }",
            "pools[0].circuit_breaker.max_connections",
            "max_connections is required",
        ),
        (
            "{ max_connections = 0 }",
            "pools[0].circuit_breaker.max_connections",
            "got 0",
        ),
        (
            "{ max_connections = 1, max_pending = -2 }",
            "pools[0].circuit_breaker.max_pending",
            "got -2",
        ),
        (
            "{ max_connections = 1, pending = 2 }",
            "pools[0].circuit_breaker.pending",
            "unknown key `pending`",
        ),
    ] {
        assert_one(&pool(breaker), path, fragment);
    }
}
