//! The single writer of the routing snapshot.
//!
//! The [`Controller`] owns the backend registry (runtime state per pool and address)
//! and is the only code that stores into the shared `ArcSwap<Snapshot>`. Every change
//! of routing goes through [`Controller::apply`], which builds a complete new snapshot
//! off the request path and swaps it in atomically; requests already running keep the
//! snapshot (and backends) they started with.
//!
//! Being one owned value with `&mut self` methods is what makes it the single writer;
//! later sources of change (file reload, admin API, discovery, health) send it updates
//! rather than touching the snapshot themselves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::backend::BackendState;
use crate::config::spec::{PoolName, Spec, UpstreamTlsSpec};
use crate::snapshot::Snapshot;
use crate::tls::upstream::UpstreamTls;

/// Shared handle to the current snapshot: requests `load()` it, the controller stores.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// Builds and publishes snapshots; keeps backend state across them.
#[derive(Debug)]
pub struct Controller {
    shared: SharedSnapshot,
    registry: Registry,
}

impl Controller {
    /// Builds the first snapshot from `spec`.
    pub fn new(spec: Spec) -> Controller {
        let (snapshot, registry) = rebuild(&HashMap::new(), spec);
        Controller {
            shared: Arc::new(ArcSwap::from_pointee(snapshot)),
            registry,
        }
    }

    /// The handle the data plane reads.
    pub fn shared(&self) -> SharedSnapshot {
        Arc::clone(&self.shared)
    }

    /// Publishes a snapshot for `spec`. Backends present before keep their state
    /// (in-flight counts, latency, health, pooled connections); removed ones are
    /// forgotten here but live on in requests still using them.
    pub fn apply(&mut self, spec: Spec) {
        let (snapshot, registry) = rebuild(&self.registry, spec);
        self.registry = registry;
        self.shared.store(Arc::new(snapshot));
    }
}

type Registry = HashMap<(PoolName, SocketAddr), Arc<BackendState>>;

/// Builds a snapshot reusing `old` state where (pool, address) matches, and returns
/// the registry of exactly the backends the new snapshot holds.
///
/// A backend is reused only if its pool's `tls` setting is unchanged: its pooled
/// connections were made with the old one. New backends of a TLS pool share one
/// client configuration (and so one session cache) per pool.
fn rebuild(old: &Registry, spec: Spec) -> (Snapshot, Registry) {
    let pool_tls: HashMap<PoolName, UpstreamTlsSpec> = spec
        .pools
        .iter()
        .filter_map(|p| Some((p.name.clone(), p.tls.clone()?)))
        .collect();
    let mut connectors: HashMap<PoolName, Arc<UpstreamTls>> = HashMap::new();
    let mut next = Registry::with_capacity(old.len());
    let snapshot = Snapshot::build(Arc::new(spec), |pool, b| {
        let key = (pool.clone(), b.addr);
        let want = pool_tls.get(pool);
        let state = old
            .get(&key)
            .filter(|s| s.conns().tls_spec() == want)
            .cloned()
            .unwrap_or_else(|| {
                let tls = want.map(|spec| {
                    let connector = connectors
                        .entry(pool.clone())
                        .or_insert_with(|| connector_for(old, pool, spec));
                    Arc::clone(connector)
                });
                Arc::new(BackendState::with_tls(b.addr, tls))
            });
        next.insert(key, Arc::clone(&state));
        state
    });
    (snapshot, next)
}

/// The TLS client side for `pool`: the one its surviving backends use if the
/// setting is unchanged, else a new one.
fn connector_for(old: &Registry, pool: &PoolName, spec: &UpstreamTlsSpec) -> Arc<UpstreamTls> {
    old.iter()
        .filter(|((name, _), _)| name == pool)
        .find_map(|(_, state)| {
            state
                .conns()
                .tls()
                .filter(|tls| tls.spec() == spec)
                .cloned()
        })
        .unwrap_or_else(|| Arc::new(UpstreamTls::build(spec, crate::tls::provider())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_POOLS: &str = r#"
[listen]
http = "127.0.0.1:0"
[[pools]]
name = "a"
backends = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002" }]
[[pools]]
name = "b"
backends = [{ addr = "127.0.0.1:9003" }]
[[routes]]
name = "r"
split = [{ pool = "a", weight = 1 }, { pool = "b", weight = 0 }]
"#;

    fn state_of(c: &Controller, pool: &str, addr: &str) -> Arc<BackendState> {
        let snap = c.shared().load_full();
        let p = snap
            .pools()
            .iter()
            .find(|p| p.name.as_str() == pool)
            .unwrap();
        let b = p.backends().find(|b| b.addr.to_string() == addr).unwrap();
        Arc::clone(&b.state)
    }

    #[test]
    fn backend_state_survives_a_rebuild() {
        let mut c = Controller::new(crate::config::parse(TWO_POOLS).unwrap());
        let before = state_of(&c, "a", "127.0.0.1:9001");
        let _inflight = before.start_request();
        let changed = TWO_POOLS.replace("weight = 0", "weight = 5");
        c.apply(crate::config::parse(&changed).unwrap());
        let after = state_of(&c, "a", "127.0.0.1:9001");
        assert!(Arc::ptr_eq(&before, &after));
        assert_eq!(after.inflight(), 1);
        let snap = c.shared().load_full();
        assert_eq!(snap.routes()[0].split.entries()[1].weight, 5);
    }

    #[test]
    fn backend_state_is_renewed_when_pool_tls_changes() {
        let mut c = Controller::new(crate::config::parse(TWO_POOLS).unwrap());
        let plain = state_of(&c, "a", "127.0.0.1:9001");
        assert!(plain.conns().tls().is_none());
        let tls = TWO_POOLS.replace(
            "name = \"a\"\n",
            "name = \"a\"\ntls = { insecure_skip_verify = true }\n",
        );
        c.apply(crate::config::parse(&tls).unwrap());
        let first = state_of(&c, "a", "127.0.0.1:9001");
        let second = state_of(&c, "a", "127.0.0.1:9002");
        assert!(!Arc::ptr_eq(&plain, &first));
        let (t1, t2) = (first.conns().tls().unwrap(), second.conns().tls().unwrap());
        assert!(Arc::ptr_eq(t1, t2), "one client config per pool");
        assert!(state_of(&c, "b", "127.0.0.1:9003").conns().tls().is_none());

        // Unchanged setting: same state; a new backend shares the pool's connector.
        let more = tls.replace(
            "{ addr = \"127.0.0.1:9002\" }",
            "{ addr = \"127.0.0.1:9002\" }, { addr = \"127.0.0.1:9004\" }",
        );
        c.apply(crate::config::parse(&more).unwrap());
        assert!(Arc::ptr_eq(&first, &state_of(&c, "a", "127.0.0.1:9001")));
        let added = state_of(&c, "a", "127.0.0.1:9004");
        assert!(Arc::ptr_eq(t1, added.conns().tls().unwrap()));
    }

    #[test]
    fn removed_backends_are_forgotten() {
        let mut c = Controller::new(crate::config::parse(TWO_POOLS).unwrap());
        let fewer = TWO_POOLS.replace(", { addr = \"127.0.0.1:9002\" }", "");
        c.apply(crate::config::parse(&fewer).unwrap());
        assert_eq!(c.registry.len(), 2);
        c.apply(crate::config::parse(TWO_POOLS).unwrap());
        // It comes back as a fresh backend.
        assert_eq!(state_of(&c, "a", "127.0.0.1:9002").inflight(), 0);
    }
}
