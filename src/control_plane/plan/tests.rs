//! Plan diff: what a reload would add, remove, change and drop.

use std::sync::Arc;

use tokio::time::Instant;

use super::*;
use crate::control_plane::config::parse;
use crate::control_plane::config::spec::{PoolName, RouteName};

const FILE: &str = r#"
[listen]
http = "127.0.0.1:8080"
[[pools]]
name = "blue"
backends = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002" }]
[[pools]]
name = "green"
backends = [{ addr = "127.0.0.1:9011" }]
[[routes]]
name = "agents"
split = [{ pool = "blue", weight = 90 }, { pool = "green", weight = 10 }]
"#;

fn lines(p: &Plan) -> Vec<String> {
    p.to_string().lines().map(str::to_owned).collect()
}

#[test]
fn same_file_plans_nothing() {
    let file = parse(FILE).expect("valid");
    let p = plan(&file, &file, &Overrides::default(), &file);
    assert!(p.is_empty());
    assert_eq!(
        lines(&p),
        ["No changes: the running gateway already matches this file."]
    );
}

#[test]
fn diff_lists_routes_splits_pools_backends() {
    let file = parse(FILE).expect("valid");
    let next = parse(
        &(FILE
            .replace("weight = 90 }, { pool = \"green\", weight = 10 }", "weight = 0 }, { pool = \"canary\", weight = 100 }")
            .replace(", { addr = \"127.0.0.1:9002\" }", ", { addr = \"127.0.0.1:9003\", weight = 2 }")
            .replace(
                "[[pools]]\nname = \"green\"\nbackends = [{ addr = \"127.0.0.1:9011\" }]",
                "[[pools]]\nname = \"canary\"\nbackends = [{ addr = \"127.0.0.1:9021\" }]",
            )
            + "[[routes]]\nname = \"extra\"\nmatch = { path_prefix = \"/x\" }\nsplit = [{ pool = \"blue\", weight = 1 }]\n"),
    )
    .expect("valid");
    let p = plan(&file, &file, &Overrides::default(), &next);
    assert_eq!(
        lines(&p),
        [
            "~ split agents: blue=90 green=10 → blue=0 canary=100",
            "+ route extra: blue=1",
            "- pool green: 1 backend(s); their open streams close after stream_close_delay",
            "- backend blue 127.0.0.1:9002: source file",
            "+ backend blue 127.0.0.1:9003: weight 2 (file)",
            "+ pool canary: 127.0.0.1:9021",
        ]
    );
}

#[test]
fn plan_shows_dropped_overrides_and_hidden_file_changes() {
    let file = parse(FILE).expect("valid");
    let mut o = Overrides::default();
    let pool = |n: &str| PoolName(Arc::from(n));
    o.set_split(
        RouteName(Arc::from("agents")),
        vec![
            SplitSpec {
                pool: pool("blue"),
                weight: 0,
            },
            SplitSpec {
                pool: pool("green"),
                weight: 100,
            },
        ],
    );
    o.set_drain(
        (pool("blue"), "127.0.0.1:9002".parse().expect("literal")),
        true,
    );
    o.register(
        (pool("green"), "127.0.0.1:9012".parse().expect("literal")),
        1,
        None,
        Instant::now(),
    );
    let running = o.merge(&file);

    // Only the file's split changes: the override hides it, nothing else moves.
    let next = parse(&FILE.replace("weight = 90", "weight = 50")).expect("valid");
    let p = plan(&running, &file, &o, &next);
    assert!(p.is_empty(), "{p}");
    assert_eq!(
        p.notes,
        ["route agents: the file's split changes to blue=50 green=10 but the admin override blue=0 green=100 stays in force"]
    );

    // blue loses 9002: its drain override goes, and so does the backend.
    let next = parse(&FILE.replace(", { addr = \"127.0.0.1:9002\" }", "")).expect("valid");
    let p = plan(&running, &file, &o, &next);
    assert_eq!(
        lines(&p),
        [
            "- backend blue 127.0.0.1:9002: source file",
            "! admin override dropped: drain of 127.0.0.1:9002 in pool blue: the backend is no longer in its pool",
        ]
    );
}

#[test]
fn listener_changes_are_noted_not_planned() {
    let file = parse(FILE).expect("valid");
    let next = parse(
        &(FILE
            .replace("8080", "8081")
            .replace("[listen]\n", "[listen]\nstream_close_delay = \"1m\"\n")),
    )
    .expect("valid");
    let p = plan(&file, &file, &Overrides::default(), &next);
    assert_eq!(
        lines(&p),
        [
            "~ listen.stream_close_delay: 5m → 1m",
            "note: [listen] changes apply only at the next restart",
        ]
    );
}

#[test]
fn log_changes_are_noted_not_planned() {
    let file = parse(FILE).expect("valid");
    let next = parse(&format!("{FILE}\n[log]\naccess = \"stdout\"\n")).expect("valid");
    let p = plan(&file, &file, &Overrides::default(), &next);
    assert_eq!(
        lines(&p),
        [
            "No changes: the running gateway already matches this file.",
            "note: [log] changes apply only at the next restart"
        ]
    );
}

#[test]
fn tls_listener_changes_are_noted_and_pool_tls_is_planned() {
    let file = parse(FILE).expect("valid");
    let next = parse(
        &(FILE
            .replace(
                "[listen]\nhttp = \"127.0.0.1:8080\"\n",
                "[listen]\nhttp = \"127.0.0.1:8080\"\nhttps = \"127.0.0.1:8443\"\n[[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n",
            )
            .replace(
                "name = \"green\"\n",
                "name = \"green\"\ntls = { insecure_skip_verify = true }\n",
            )),
    )
    .expect("valid");
    let p = plan(&file, &file, &Overrides::default(), &next);
    let text = lines(&p).join("\n");
    for line in [
        "~ pool green: tls changed: its backends start afresh",
        "note: [listen] changes apply only at the next restart",
        "note: [tls] changes (certificate list, handshake_timeout) apply only at the next restart",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
}

#[test]
fn discovery_setting_changes_are_noted_like_the_reload_keeps_them() {
    let file = parse(FILE).expect("valid");
    let next = parse(&format!(
        "{FILE}\n[discovery.docker]\nnetwork = \"front\"\n"
    ))
    .expect("valid");
    let p = plan(&file, &file, &Overrides::default(), &next);
    let text = lines(&p).join("\n");
    assert!(
        text.contains("note: [discovery.docker] changes apply only at the next restart"),
        "{text}"
    );
    // The reload and the plan share one rule: what is noted is what is kept.
    let mut kept = next.clone();
    assert_eq!(
        keep_restart_only(&file, &mut kept),
        ["[discovery.docker] changes apply only at the next restart"]
    );
    assert_eq!(
        kept.discovery.docker.is_some(),
        file.discovery.docker.is_some()
    );
}

#[test]
fn a_file_mirror_change_is_planned_and_an_override_over_a_gone_pool_dropped() {
    let file = parse(FILE).expect("valid");
    let next = parse(&format!(
        "{FILE}mirror = {{ pool = \"green\", percent = 10 }}\n"
    ))
    .expect("valid");
    let p = plan(&file, &file, &Overrides::default(), &next);
    assert_eq!(
        lines(&p),
        ["~ mirror agents: none → green 10% (max_body 1048576, timeout 10s)"]
    );
    let mut o = Overrides::default();
    o.set_mirror(
        RouteName(Arc::from("agents")),
        crate::control_plane::config::spec::MirrorSpec {
            pool: PoolName(Arc::from("green")),
            percent: 50,
            max_body: 1,
            timeout: std::time::Duration::from_secs(1),
        },
    );
    let running = o.merge(&file);
    let without_green = parse(
        &FILE
            .replace(", { pool = \"green\", weight = 10 }", "")
            .replace(
                "[[pools]]\nname = \"green\"\nbackends = [{ addr = \"127.0.0.1:9011\" }]\n",
                "",
            ),
    )
    .expect("valid");
    let p = plan(&running, &file, &o, &without_green);
    assert!(
        p.dropped
            .iter()
            .any(|d| d.contains("mirror of route agents") && d.contains("pool green")),
        "{p}"
    );
}

#[test]
fn limit_changes_are_named() {
    let file = parse(FILE).expect("valid");
    let next = parse(
        &FILE
            .replace(
                "split = [{ pool = \"blue\", weight = 90 }",
                "concurrency = { max_in_flight = 10 }\nrate_limit = { rate = 5 }\nsplit = [{ pool = \"blue\", weight = 90 }",
            )
            .replace(
                "name = \"green\"\n",
                "name = \"green\"\ncircuit_breaker = { max_connections = 4 }\n",
            ),
    )
    .expect("valid");
    let text = plan(&file, &file, &Overrides::default(), &next).to_string();
    assert!(
        text.contains("rate_limit") && text.contains("concurrency"),
        "{text}"
    );
    assert!(text.contains("limits changed (circuit_breaker)"), "{text}");
}
