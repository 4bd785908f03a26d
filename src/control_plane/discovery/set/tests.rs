//! Set building and merging over hand-made inspect responses (no Docker).

use std::collections::HashMap;

use bollard::models::{
    ContainerConfig, ContainerState, EndpointSettings, Health, HealthStatusEnum, NetworkSettings,
};

use super::*;

/// A running container `name` on network `front` at `ip`, exposing 8080/tcp.
fn container(name: &str, ip: &str, labels: &[(&str, &str)]) -> ContainerInspectResponse {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let networks = HashMap::from([(
        "front".to_owned(),
        EndpointSettings {
            ip_address: Some(ip.to_owned()),
            ..Default::default()
        },
    )]);
    ContainerInspectResponse {
        id: Some(format!("id-{name}")),
        name: Some(format!("/{name}")),
        config: Some(ContainerConfig {
            labels: Some(labels),
            exposed_ports: Some(HashMap::from([("8080/tcp".to_owned(), HashMap::new())])),
            ..Default::default()
        }),
        state: Some(ContainerState {
            running: Some(true),
            started_at: Some("2026-01-01T00:00:00Z".to_owned()),
            ..Default::default()
        }),
        network_settings: Some(NetworkSettings {
            networks: Some(networks),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_health(
    mut c: ContainerInspectResponse,
    status: HealthStatusEnum,
) -> ContainerInspectResponse {
    if let Some(state) = c.state.as_mut() {
        state.health = Some(Health {
            status: Some(status),
            ..Default::default()
        });
    }
    c
}

fn build_plain(containers: &[ContainerInspectResponse]) -> DiscoveredSet {
    let draining = HashMap::new();
    let ctx = Context {
        prefix: "sluicegate",
        network: None,
        own: None,
        draining: &draining,
    };
    build(containers, &ctx)
}

#[test]
fn labelled_running_containers_become_backends_in_name_order() {
    let set = build_plain(&[
        container(
            "blue-2",
            "172.20.0.3",
            &[("sluicegate.pool", "blue"), ("sluicegate.protocol", "h2c")],
        ),
        container(
            "blue-1",
            "172.20.0.2",
            &[("sluicegate.pool", "blue"), ("sluicegate.weight", "3")],
        ),
        container(
            "green-1",
            "172.20.0.4",
            &[("sluicegate.pool", "green"), ("sluicegate.port", "9000")],
        ),
        container("unlabelled", "172.20.0.9", &[]),
    ]);
    let blue: Vec<_> = set
        .pool("blue")
        .iter()
        .map(|b| (b.container_name.to_string(), b.addr.to_string(), b.weight))
        .collect();
    assert_eq!(
        blue,
        vec![
            ("blue-1".to_owned(), "172.20.0.2:8080".to_owned(), 3),
            ("blue-2".to_owned(), "172.20.0.3:8080".to_owned(), 1),
        ]
    );
    assert_eq!(set.pool("green")[0].addr.to_string(), "172.20.0.4:9000");
    assert_eq!(set.len(), 3);
    assert!(set.skipped.is_empty());
    let (pool, b) = set.by_container("id-green-1").expect("found");
    assert_eq!((pool.as_str(), &*b.network), ("green", "front"));
}

#[test]
fn a_broken_label_skips_only_that_container_with_its_reason() {
    let set = build_plain(&[
        container("good", "172.20.0.2", &[("sluicegate.pool", "p")]),
        container(
            "bad",
            "172.20.0.3",
            &[("sluicegate.pool", "p"), ("sluicegate.weight", "heavy")],
        ),
    ]);
    assert_eq!(set.pool("p").len(), 1);
    assert_eq!(set.skipped.len(), 1);
    assert_eq!(&*set.skipped[0].container_name, "bad");
    let reason = set.skipped[0].reason.to_string();
    assert!(
        reason.contains("sluicegate.weight") && reason.contains("\"heavy\""),
        "{reason}"
    );
}

#[test]
fn docker_health_starting_and_unhealthy_are_present_but_not_eligible() {
    let labels = [("sluicegate.pool", "p")];
    let set = build_plain(&[
        with_health(
            container("a", "172.20.0.2", &labels),
            HealthStatusEnum::STARTING,
        ),
        with_health(
            container("b", "172.20.0.3", &labels),
            HealthStatusEnum::UNHEALTHY,
        ),
        with_health(
            container("c", "172.20.0.4", &labels),
            HealthStatusEnum::HEALTHY,
        ),
        container("d", "172.20.0.5", &labels),
    ]);
    let flags: Vec<(bool, bool)> = set
        .pool("p")
        .iter()
        .map(|b| (b.docker_healthy, b.is_eligible()))
        .collect();
    assert_eq!(
        flags,
        vec![(false, false), (false, false), (true, true), (true, true)]
    );
}

#[test]
fn stopped_or_paused_containers_are_left_out() {
    let mut stopped = container("a", "172.20.0.2", &[("sluicegate.pool", "p")]);
    stopped.state = Some(ContainerState {
        running: Some(false),
        ..Default::default()
    });
    let mut paused = container("b", "172.20.0.3", &[("sluicegate.pool", "p")]);
    if let Some(s) = paused.state.as_mut() {
        s.paused = Some(true);
    }
    assert!(build_plain(&[stopped, paused]).is_empty());
}

#[test]
fn draining_mark_holds_only_for_the_same_start() {
    let c = container("a", "172.20.0.2", &[("sluicegate.pool", "p")]);
    let same = HashMap::from([("id-a".to_owned(), "2026-01-01T00:00:00Z".to_owned())]);
    let restarted = HashMap::from([("id-a".to_owned(), "2025-12-31T00:00:00Z".to_owned())]);
    for (marks, expect) in [(&same, true), (&restarted, false)] {
        let ctx = Context {
            prefix: "sluicegate",
            network: None,
            own: None,
            draining: marks,
        };
        let set = build(std::slice::from_ref(&c), &ctx);
        assert_eq!(set.pool("p")[0].draining, expect);
    }
}

#[test]
fn gateway_in_compose_uses_the_shared_network_and_its_project() {
    let mut c = container(
        "a",
        "172.20.0.2",
        &[("sluicegate.pool", "p"), (COMPOSE_PROJECT, "shop")],
    );
    if let Some(n) = c
        .network_settings
        .as_mut()
        .and_then(|n| n.networks.as_mut())
    {
        let other = EndpointSettings {
            ip_address: Some("10.1.0.2".into()),
            ..Default::default()
        };
        n.insert("shop_default".to_owned(), other);
    }
    let own = OwnContainer {
        id: "gw".into(),
        networks: vec!["shop_default".into()],
        project: Some("shop".into()),
    };
    let draining = HashMap::new();
    let ctx = Context {
        prefix: "sluicegate",
        network: None,
        own: Some(&own),
        draining: &draining,
    };
    let set = build(&[c], &ctx);
    assert_eq!(set.pool("p")[0].addr.to_string(), "10.1.0.2:8080");
    let projects = Projects::resolve(&ProjectFilter::Own, Some(&own));
    assert_eq!(projects, Projects::Only(vec!["shop".into()]));
    let in_shop = HashMap::from([(COMPOSE_PROJECT.to_owned(), "shop".to_owned())]);
    assert!(projects.allows(&in_shop));
    assert!(!projects.allows(&HashMap::new()));
    assert_eq!(Projects::resolve(&ProjectFilter::Own, None), Projects::Any);
}

#[test]
fn merge_adds_to_file_pools_and_creates_label_pools() {
    let file = crate::control_plane::config::parse(
        r#"
[listen]
http = "127.0.0.1:0"
[discovery.docker]
[[pools]]
name = "blue"
backends = [{ addr = "172.20.0.2:8080", weight = 7 }]
[[routes]]
name = "r"
split = [{ pool = "blue", weight = 1 }, { pool = "green", weight = 0 }]
"#,
    )
    .expect("valid");
    let set = build_plain(&[
        container("blue-1", "172.20.0.2", &[("sluicegate.pool", "blue")]),
        container("blue-2", "172.20.0.3", &[("sluicegate.pool", "blue")]),
        container(
            "green-1",
            "172.20.0.4",
            &[
                ("sluicegate.pool", "green"),
                ("sluicegate.health.path", "/ready"),
                ("sluicegate.protocol", "h2c"),
            ],
        ),
        container("extra-1", "172.20.0.5", &[("sluicegate.pool", "extra")]),
    ]);
    let merged = merge(&file, &set);
    let backends = |pool: &str| -> Vec<(String, u32)> {
        let p = merged
            .spec
            .pools
            .iter()
            .find(|p| p.name.as_str() == pool)
            .expect(pool);
        p.backends
            .iter()
            .map(|b| (b.addr.to_string(), b.weight))
            .collect()
    };
    // The static backend keeps its weight; the duplicate from Docker is dropped.
    assert_eq!(
        backends("blue"),
        vec![("172.20.0.2:8080".into(), 7), ("172.20.0.3:8080".into(), 1)]
    );
    assert_eq!(backends("green"), vec![("172.20.0.4:8080".into(), 1)]);
    assert_eq!(backends("extra"), vec![("172.20.0.5:8080".into(), 1)]);
    let created: Vec<(&str, &str)> = merged
        .created
        .iter()
        .map(|p| (p.name.as_str(), &*p.health_path))
        .collect();
    assert_eq!(created, vec![("green", "/ready"), ("extra", "/health")]);
    // A label's protocol sets a pool labels create; a file pool keeps its own.
    let protocol = |pool: &str| {
        merged
            .spec
            .pools
            .iter()
            .find(|p| p.name.as_str() == pool)
            .map(|p| p.protocol)
    };
    use crate::control_plane::config::spec::Protocol;
    assert_eq!(protocol("green"), Some(Protocol::H2c));
    assert_eq!(protocol("extra"), Some(Protocol::Http1));
    assert_eq!(protocol("blue"), Some(Protocol::Http1));
    // An empty set leaves the file as it was (implied pools stay, empty).
    let empty = merge(&file, &DiscoveredSet::default());
    assert_eq!(empty.spec.pools.len(), 2);
    assert!(backends_of(&empty.spec, "green").is_empty());
}

fn backends_of<'a>(spec: &'a Spec, pool: &str) -> &'a [BackendSpec] {
    spec.pools
        .iter()
        .find(|p| p.name.as_str() == pool)
        .map_or(&[], |p| p.backends.as_slice())
}

#[test]
fn mirror_labels_give_a_route_without_a_file_mirror_its_shadow_pool() {
    let file = crate::control_plane::config::parse(
        r#"
[listen]
http = "127.0.0.1:0"
[discovery.docker]
[[pools]]
name = "blue"
backends = [{ addr = "172.20.0.2:8080" }]
[[routes]]
name = "r"
split = [{ pool = "blue", weight = 1 }]
[[routes]]
name = "kept"
match = { path_prefix = "/kept" }
split = [{ pool = "blue", weight = 1 }]
mirror = { pool = "blue", percent = 3 }
"#,
    )
    .expect("valid");
    let set = build_plain(&[
        container(
            "v2-1",
            "172.20.0.4",
            &[
                ("sluicegate.pool", "v2"),
                ("sluicegate.mirror.route", "r"),
                ("sluicegate.mirror.percent", "25"),
            ],
        ),
        container(
            "v3-1",
            "172.20.0.5",
            &[
                ("sluicegate.pool", "v3"),
                ("sluicegate.mirror.route", "kept"),
            ],
        ),
        container(
            "bad-1",
            "172.20.0.6",
            &[
                ("sluicegate.pool", "bad"),
                ("sluicegate.mirror.route", "r"),
                ("sluicegate.mirror.percent", "101"),
            ],
        ),
    ]);
    assert_eq!(set.skipped.len(), 1, "{:?}", set.skipped);
    assert!(
        set.skipped[0]
            .reason
            .to_string()
            .contains("sluicegate.mirror.percent"),
        "{}",
        set.skipped[0].reason
    );
    let merged = merge(&file, &set);
    let mirror = |name: &str| {
        let r = merged.spec.routes.iter().find(|r| r.name.as_str() == name);
        r.and_then(|r| r.mirror.clone())
            .map(|m| (m.pool.to_string(), m.percent))
    };
    assert_eq!(mirror("r"), Some(("v2".into(), 25)));
    // The file's own mirror wins over a label's.
    assert_eq!(mirror("kept"), Some(("blue".into(), 3)));
}

#[test]
fn rate_limit_labels_limit_a_route_without_a_file_limit() {
    let file = crate::control_plane::config::parse(
        r#"
[listen]
http = "127.0.0.1:0"
[discovery.docker]
[[pools]]
name = "blue"
backends = [{ addr = "172.20.0.2:8080" }]
[[routes]]
name = "r"
split = [{ pool = "blue", weight = 1 }]
[[routes]]
name = "kept"
match = { path_prefix = "/kept" }
split = [{ pool = "blue", weight = 1 }]
rate_limit = { rate = 3 }
"#,
    )
    .expect("valid");
    let set = build_plain(&[
        container(
            "v2-1",
            "172.20.0.4",
            &[
                ("sluicegate.pool", "v2"),
                ("sluicegate.rate_limit.route", "r"),
                ("sluicegate.rate_limit.rate", "25"),
                ("sluicegate.rate_limit.burst", "50"),
                ("sluicegate.rate_limit.key", "header:x-api-key"),
            ],
        ),
        container(
            "v3-1",
            "172.20.0.5",
            &[
                ("sluicegate.pool", "v3"),
                ("sluicegate.rate_limit.route", "kept"),
                ("sluicegate.rate_limit.rate", "1000"),
            ],
        ),
        container(
            "bad-1",
            "172.20.0.6",
            &[
                ("sluicegate.pool", "bad"),
                ("sluicegate.rate_limit.route", "r"),
                ("sluicegate.rate_limit.rate", "-1"),
            ],
        ),
        container(
            "bad-2",
            "172.20.0.7",
            &[
                ("sluicegate.pool", "bad"),
                ("sluicegate.rate_limit.rate", "5"),
            ],
        ),
        container(
            "bad-3",
            "172.20.0.8",
            &[
                ("sluicegate.pool", "bad"),
                ("sluicegate.rate_limit.route", "r"),
                ("sluicegate.rate_limit.rate", "5"),
                ("sluicegate.rate_limit.burst", "many"),
            ],
        ),
    ]);
    let reasons: Vec<String> = set.skipped.iter().map(|s| s.reason.to_string()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("sluicegate.rate_limit.rate"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("sluicegate.rate_limit.rate") && reasons[1].contains("names no route"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("sluicegate.rate_limit.burst"),
        "{reasons:?}"
    );
    let merged = merge(&file, &set);
    let limit = |name: &str| {
        let r = merged.spec.routes.iter().find(|r| r.name.as_str() == name);
        r.and_then(|r| r.limits.rate.clone())
            .map(|l| (l.rate, l.burst, format!("{:?}", l.key)))
    };
    let (rate, burst, key) = limit("r").expect("the labels' limit");
    assert_eq!((rate, burst), (25.0, 50));
    assert!(key.contains("x-api-key"), "{key}");
    // The file's own limit wins over a label's.
    assert_eq!(limit("kept").map(|l| (l.0, l.1)), Some((3.0, 3)));
}
