//! Merge and prune: how admin overrides sit on top of a changing file.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::control_plane::config::parse;

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
[[routes]]
name = "other"
match = { path_prefix = "/other" }
split = [{ pool = "blue", weight = 1 }]
"#;

fn pool(name: &str) -> PoolName {
    PoolName(Arc::from(name))
}

fn route(name: &str) -> RouteName {
    RouteName(Arc::from(name))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal")
}

fn split(pairs: &[(&str, u32)]) -> Vec<SplitSpec> {
    pairs
        .iter()
        .map(|(p, w)| SplitSpec {
            pool: pool(p),
            weight: *w,
        })
        .collect()
}

fn weights(spec: &Spec, route_name: &str) -> Vec<u32> {
    let r = spec.routes.iter().find(|r| r.name.as_str() == route_name);
    r.expect("route").split.iter().map(|s| s.weight).collect()
}

fn full_overrides(now: Instant) -> Overrides {
    let mut o = Overrides::default();
    o.set_split(route("agents"), split(&[("blue", 10), ("green", 90)]));
    o.register((pool("green"), addr("127.0.0.1:9012")), 3, None, now);
    o.set_drain((pool("blue"), addr("127.0.0.1:9001")), true);
    o.set_drain((pool("green"), addr("127.0.0.1:9012")), true);
    o
}

#[test]
fn merge_lays_overrides_over_the_file() {
    let file = parse(FILE).expect("valid");
    let o = full_overrides(Instant::now());
    let eff = o.merge(&file);
    assert_eq!(weights(&eff, "agents"), [10, 90]);
    assert_eq!(weights(&eff, "other"), [1]);
    let green = &eff.pools[1];
    assert_eq!(green.backends.len(), 2);
    let reg = &green.backends[1];
    assert_eq!(
        (reg.addr, reg.weight, reg.source, reg.draining),
        (addr("127.0.0.1:9012"), 3, Source::Api, true)
    );
    assert_eq!(green.backends[0].source, Source::File);
    assert!(eff.pools[0].backends[0].draining);
    // The file spec itself is untouched.
    assert!(!file.pools[0].backends[0].draining);
    assert_eq!(weights(&file, "agents"), [100, 0]);
}

#[test]
fn override_beats_a_changed_file_value() {
    let mut o = Overrides::default();
    o.set_split(route("agents"), split(&[("blue", 10), ("green", 90)]));
    let changed = parse(&FILE.replace("weight = 100 }", "weight = 50 }")).expect("valid");
    assert!(o.prune(&changed).is_empty());
    assert_eq!(weights(&o.merge(&changed), "agents"), [10, 90]);
    assert!(o.clear_split(&route("agents")));
    assert_eq!(weights(&o.merge(&changed), "agents"), [50, 0]);
}

#[test]
fn prune_keeps_what_applies_and_drops_the_rest() {
    let now = Instant::now();
    let mut o = full_overrides(now);
    assert!(o.prune(&parse(FILE).expect("valid")).is_empty());
    assert_eq!(o, full_overrides(now));

    // green is gone: its split use, its registration and its drain all drop.
    let no_green = FILE
        .replace(
            "[[pools]]\nname = \"green\"\nbackends = [{ addr = \"127.0.0.1:9011\" }]\n",
            "",
        )
        .replace(", { pool = \"green\", weight = 0 }", "");
    let dropped = o.prune(&parse(&no_green).expect("valid"));
    let shown: Vec<String> = dropped.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "split of route agents: pool green is no longer in the file",
            "registered backend 127.0.0.1:9012 in pool green: pool green is no longer in the file",
            "drain of 127.0.0.1:9012 in pool green: the backend is no longer in its pool",
        ]
    );
    // The drain of a blue backend that still exists is kept.
    assert_eq!(o.drains().len(), 1);
    assert!(o.splits().is_empty() && o.backends().is_empty());
}

#[test]
fn prune_drops_split_of_removed_route_and_registration_the_file_took_over() {
    let now = Instant::now();
    let mut o = full_overrides(now);
    let file = FILE
        .replace("name = \"agents\"", "name = \"renamed\"")
        .replace(
            "backends = [{ addr = \"127.0.0.1:9011\" }]",
            "backends = [{ addr = \"127.0.0.1:9011\" }, { addr = \"127.0.0.1:9012\" }]",
        );
    let dropped = o.prune(&parse(&file).expect("valid"));
    let what: Vec<&str> = dropped.iter().map(|d| d.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "split of route agents",
            "registered backend 127.0.0.1:9012 in pool green"
        ]
    );
    // The drain follows the address, now a file backend.
    assert_eq!(o.drains().len(), 2);
    let eff = o.merge(&parse(&file).expect("valid"));
    assert!(eff.pools[1].backends[1].draining);
    assert_eq!(eff.pools[1].backends[1].source, Source::File);
}

#[test]
fn ttl_registrations_expire_unless_renewed() {
    let t0 = Instant::now();
    let mut o = Overrides::default();
    let key = (pool("green"), addr("127.0.0.1:9012"));
    o.register(key.clone(), 1, Some(Duration::from_secs(30)), t0);
    o.register((pool("green"), addr("127.0.0.1:9013")), 1, None, t0);
    assert_eq!(o.next_expiry(), Some(t0 + Duration::from_secs(30)));
    // A heartbeat at t0+20s pushes expiry to t0+50s.
    o.register(
        key.clone(),
        1,
        Some(Duration::from_secs(30)),
        t0 + Duration::from_secs(20),
    );
    assert!(o.expire(t0 + Duration::from_secs(40)).is_empty());
    assert_eq!(o.expire(t0 + Duration::from_secs(50)), [key]);
    assert_eq!(o.backends().len(), 1);
    assert_eq!(o.next_expiry(), None);
}

#[test]
fn deregister_forgets_the_drain_too() {
    let mut o = full_overrides(Instant::now());
    let key = (pool("green"), addr("127.0.0.1:9012"));
    assert!(o.deregister(&key));
    assert!(!o.deregister(&key));
    assert!(!o.drains().contains(&key));
}

#[test]
fn pause_and_maintenance_merge_into_their_route_and_go_with_it() {
    let file = parse(FILE).expect("valid");
    let mut o = Overrides::default();
    let pause = crate::control_plane::config::spec::PauseSpec {
        max: Duration::from_secs(5),
        max_queued: 3,
    };
    o.set_pause(route("other"), pause.clone());
    o.set_maintenance(
        route("agents"),
        crate::control_plane::config::spec::MaintenanceSpec {
            message: None,
            retry_after: 30,
        },
    );
    let merged = o.merge(&file);
    let of = |name: &str| merged.routes.iter().find(|r| r.name.as_str() == name);
    assert_eq!(of("other").and_then(|r| r.pause.clone()), Some(pause));
    assert!(of("agents").is_some_and(|r| r.maintenance.is_some() && r.pause.is_none()));
    assert!(o.prune(&file).is_empty());

    let without_other = FILE.replace(
        "[[routes]]\nname = \"other\"\nmatch = { path_prefix = \"/other\" }\nsplit = [{ pool = \"blue\", weight = 1 }]\n",
        "",
    );
    let dropped = o.prune(&parse(&without_other).expect("valid"));
    let what: Vec<&str> = dropped.iter().map(|d| d.what.as_str()).collect();
    assert_eq!(what, ["pause of route other"]);
    assert!(o.pauses().is_empty());
    assert_eq!(o.maintenance().len(), 1);
    o.clear_maintenance(&route("agents"));
    assert!(o.is_empty());
}

#[test]
fn mirror_override_wins_over_the_file_and_is_dropped_with_its_pool() {
    let with_mirror = FILE.replace(
        "[[routes]]\nname = \"other\"",
        "mirror = { pool = \"green\", percent = 5 }\n[[routes]]\nname = \"other\"",
    );
    let file = parse(&with_mirror).expect("valid");
    let mirror_of = |spec: &Spec, r: &str| {
        let r = spec.routes.iter().find(|x| x.name.as_str() == r);
        r.and_then(|r| r.mirror.clone())
            .map(|m| (m.pool.to_string(), m.percent))
    };
    assert_eq!(mirror_of(&file, "agents"), Some(("green".into(), 5)));
    let mut o = Overrides::default();
    let spec = crate::control_plane::config::spec::MirrorSpec {
        pool: pool("blue"),
        percent: 0,
        max_body: 1024,
        timeout: Duration::from_secs(1),
    };
    o.set_mirror(route("agents"), spec);
    assert_eq!(
        mirror_of(&o.merge(&file), "agents"),
        Some(("blue".into(), 0))
    );
    assert_eq!(mirror_of(&o.merge(&file), "other"), None);
    // A file without the mirror's pool drops the override, and says why.
    let without_blue = parse(
        r#"
[listen]
http = "127.0.0.1:0"
[[pools]]
name = "green"
backends = [{ addr = "127.0.0.1:9011" }]
[[routes]]
name = "agents"
split = [{ pool = "green", weight = 1 }]
"#,
    )
    .expect("valid");
    let dropped = o.prune(&without_blue);
    assert!(
        dropped
            .iter()
            .any(|d| d.what == "mirror of route agents" && d.why.contains("pool blue")),
        "{dropped:?}"
    );
    assert!(o.mirrors().is_empty());
    assert!(!o.clear_mirror(&route("agents")));
}
