//! Checks of `[cluster]`: which store replicas share their admin state through,
//! the gateway's own Swarm service, the engine to reach a manager, and how often
//! the store is read.

use std::sync::Arc;

use super::values::{check_poll_interval, key_path};
use super::{shape, table_of, Report};
use crate::control_plane::config::raw::RawCluster;
use crate::control_plane::config::spec::{
    ClusterSpec, ClusterStoreKind, CLUSTER_POLL_BOUNDS, DEFAULT_CLUSTER_POLL,
};

/// Longest Swarm service name (Docker's own limit is 63).
const MAX_SERVICE_LEN: usize = 63;

/// Checks `[cluster]`; `None` when it has errors (already reported).
pub(super) fn check_cluster(value: toml::Value, report: &mut Report) -> Option<ClusterSpec> {
    let path = "cluster";
    let table = table_of(value, path, "[cluster]", report)?;
    let raw = shape::<RawCluster>(table, path, report)?;
    let store = match raw.store.as_deref() {
        Some("swarm") => Some(ClusterStoreKind::Swarm),
        None => {
            report.add(
                key_path(path, "store"),
                r#"missing; write store = "swarm" (labels on the gateway's own Swarm service)"#,
            );
            None
        }
        Some(other) => {
            report.add(
                key_path(path, "store"),
                format!(r#"unknown store {other:?}; the one store is "swarm""#),
            );
            None
        }
    };
    let service = match raw.service {
        Some(name) if service_ok(&name) => Some(Arc::from(name.as_str())),
        Some(name) => {
            report.add(
                key_path(path, "service"),
                format!("{name:?} is not a Swarm service name; use 1 to {MAX_SERVICE_LEN} letters, digits, '_', '.' or '-', e.g. \"gateway\" (a stack's service is \"<stack>_<name>\")"),
            );
            None
        }
        None => {
            report.add(
                key_path(path, "service"),
                r#"missing; name the gateway's own Swarm service, e.g. service = "edge_gateway""#,
            );
            None
        }
    };
    let engine = match raw.engine {
        Some(e)
            if crate::control_plane::discovery::swarm::engine::Endpoint::docker(Some(&e))
                .is_err() =>
        {
            report.add(
                key_path(path, "engine"),
                format!("{e:?}: use unix:///path, tcp://host:port or http://host:port"),
            );
            None
        }
        other => Some(other),
    };
    let poll_interval = check_poll_interval(
        raw.poll_interval.as_ref(),
        &key_path(path, "poll_interval"),
        (DEFAULT_CLUSTER_POLL, CLUSTER_POLL_BOUNDS),
        "the store is read",
        ", so that a write reaches every replica within a second",
        report,
    );
    let mut peers = Some(Vec::new());
    for (i, text) in raw.peers.unwrap_or_default().iter().enumerate() {
        match super::discovery::manager_url(text) {
            Ok(url) => {
                if let Some(list) = peers.as_mut() {
                    list.push(url);
                }
            }
            Err(message) => {
                report.add(format!("{path}.peers[{i}]"), message);
                peers = None;
            }
        }
    }
    Some(ClusterSpec {
        peers: peers?,
        store: store?,
        service: service?,
        engine: engine?,
        poll_interval: poll_interval?,
    })
}

fn service_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::control_plane::config::spec::{ClusterSpec, ClusterStoreKind};

    const BASE: &str = "[listen]\nhttp = \"127.0.0.1:8080\"\n";

    fn parse(extra: &str) -> Result<Option<ClusterSpec>, String> {
        // A top-level value must come before the first table.
        let text = if extra.starts_with('[') {
            format!("{BASE}{extra}")
        } else {
            format!("{extra}{BASE}")
        };
        crate::control_plane::config::parse(&text)
            .map(|spec| spec.cluster)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn without_the_table_there_is_no_cluster() {
        assert_eq!(parse(""), Ok(None));
    }

    #[test]
    fn defaults_and_values() {
        let c = parse("[cluster]\nstore = \"swarm\"\nservice = \"edge_gateway\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(c.store, ClusterStoreKind::Swarm);
        assert_eq!(&*c.service, "edge_gateway");
        assert_eq!(c.engine, None);
        assert_eq!(c.poll_interval, Duration::from_millis(250));
        let c = parse("[cluster]\nstore = \"swarm\"\nservice = \"gw\"\nengine = \"unix:///run/d.sock\"\npoll_interval = \"100ms\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(c.engine.as_deref(), Some("unix:///run/d.sock"));
        assert_eq!(c.poll_interval, Duration::from_millis(100));
        let c = parse(
            "[cluster]\nstore = \"swarm\"\nservice = \"gw\"\npeers = [\"http://tasks.gw:9901\"]\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.peers[0].to_string(), "http://tasks.gw:9901");
    }

    #[test]
    fn errors_name_their_key() {
        let cases = [
            ("[cluster]\nservice = \"gw\"\n", "cluster.store"),
            ("[cluster]\nstore = \"etcd\"\nservice = \"gw\"\n", "cluster.store"),
            ("[cluster]\nstore = \"swarm\"\n", "cluster.service"),
            ("[cluster]\nstore = \"swarm\"\nservice = \"a b\"\n", "cluster.service"),
            ("[cluster]\nstore = \"swarm\"\nservice = \"gw\"\nengine = \"ssh://x\"\n", "cluster.engine"),
            ("[cluster]\nstore = \"swarm\"\nservice = \"gw\"\npoll_interval = \"5s\"\n", "cluster.poll_interval"),
            ("[cluster]\nstore = \"swarm\"\nservice = \"gw\"\npoll_interval = \"soon\"\n", "cluster.poll_interval"),
            ("[cluster]\nstore = \"swarm\"\nservice = \"gw\"\nstorage = \"x\"\n", "cluster.storage"),
            ("cluster = 3\n", "cluster"),
            (
                "[cluster]\nstore = \"swarm\"\nservice = \"gw\"\npeers = [\"http://a:1\", \"ftp://b:2\"]\n",
                "cluster.peers[1]",
            ),
            (
                "[admin]\nlisten = \"127.0.0.1:9901\"\nstate_file = \"/tmp/s.json\"\n[cluster]\nstore = \"swarm\"\nservice = \"gw\"\n",
                "cluster",
            ),
        ];
        for (text, path) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                err.lines().any(|l| l.starts_with(&format!("{path}:"))),
                "{text}: {err}"
            );
        }
    }
}
