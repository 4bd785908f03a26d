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
//!
//! Health does not need snapshots rebuilt (it flips backend atomics), but it follows
//! them: after each publish the [`HealthSupervisor`] reconciles the probe tasks with
//! the new snapshot (`self.health.reconcile(&snapshot)`), and its event channel
//! ([`Controller::health`]`.subscribe()`) reports every health transition.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::backend::BackendState;
use crate::config::spec::{InitialHealth, PoolName, PoolSpec, Spec};
use crate::health::{HealthEvent, HealthStatus, HealthSupervisor, PoolHealth};
use crate::snapshot::Snapshot;

/// Shared handle to the current snapshot: requests `load()` it, the controller stores.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// Builds and publishes snapshots; keeps backend state across them.
#[derive(Debug)]
pub struct Controller {
    shared: SharedSnapshot,
    registry: Registry,
    pools: PoolRegistry,
    health: HealthSupervisor,
}

impl Controller {
    /// Builds the first snapshot from `spec` and starts its probes (which needs a
    /// tokio runtime when a pool has `[pools.health]`).
    pub fn new(spec: Spec) -> Controller {
        let mut health = HealthSupervisor::new();
        let empty = Registries::default();
        let (snapshot, next) = rebuild(&empty, &health, spec, Generation::First);
        let snapshot = Arc::new(snapshot);
        health.reconcile(&snapshot);
        Controller {
            shared: Arc::new(ArcSwap::new(snapshot)),
            registry: next.backends,
            pools: next.pools,
            health,
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
        let old = Registries {
            backends: std::mem::take(&mut self.registry),
            pools: std::mem::take(&mut self.pools),
        };
        let (snapshot, next) = rebuild(&old, &self.health, spec, Generation::Later);
        let snapshot = Arc::new(snapshot);
        self.shared.store(Arc::clone(&snapshot));
        self.health.reconcile(&snapshot);
        for (name, gone) in &old.pools {
            if !next.pools.contains_key(name) {
                // Requests held for a removed pool find it gone and give up now.
                gone.wake_held();
            }
        }
        self.registry = next.backends;
        self.pools = next.pools;
    }

    /// The probe supervisor: live probe count, and `subscribe()` for health events.
    pub fn health(&self) -> &HealthSupervisor {
        &self.health
    }

    /// Every health transition from now on (see [`HealthSupervisor::subscribe`]).
    pub fn subscribe_health(&self) -> tokio::sync::broadcast::Receiver<HealthEvent> {
        self.health.subscribe()
    }
}

type Registry = HashMap<(PoolName, SocketAddr), Arc<BackendState>>;
type PoolRegistry = HashMap<PoolName, Arc<PoolHealth>>;

/// Runtime state kept across snapshots.
#[derive(Default)]
struct Registries {
    backends: Registry,
    pools: PoolRegistry,
}

/// Whether a snapshot is the gateway's first (its backends do not slow-start).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Generation {
    First,
    Later,
}

/// Builds a snapshot reusing `old` state where (pool, address) or pool name matches,
/// and returns the registries of exactly what the new snapshot holds.
fn rebuild(
    old: &Registries,
    health: &HealthSupervisor,
    spec: Spec,
    generation: Generation,
) -> (Snapshot, Registries) {
    let mut next = Registries {
        backends: Registry::with_capacity(old.backends.len()),
        pools: PoolRegistry::with_capacity(old.pools.len()),
    };
    let mut pools = PoolRegistry::new();
    let snapshot = Snapshot::build_with(
        Arc::new(spec),
        |pool, b| {
            let key = (pool.name.clone(), b.addr);
            let state = old
                .backends
                .get(&key)
                .cloned()
                .unwrap_or_else(|| new_backend(pool, b.addr, generation));
            next.backends.insert(key, Arc::clone(&state));
            state
        },
        |pool| {
            let shared =
                old.pools.get(&pool.name).cloned().unwrap_or_else(|| {
                    Arc::new(PoolHealth::new(pool.name.clone(), health.events()))
                });
            pools.insert(pool.name.clone(), Arc::clone(&shared));
            shared
        },
    );
    next.pools = pools;
    (snapshot, next)
}

/// A backend first seen in `pool`: with a probe it starts in the configured initial
/// status (by default *unknown*: no traffic until its first pass); without one it is
/// healthy, and after the first snapshot it slow-starts (if the pool ramps).
fn new_backend(pool: &PoolSpec, addr: SocketAddr, generation: Generation) -> Arc<BackendState> {
    let state = BackendState::new(addr);
    let health = state.health();
    match pool.health.probe.as_ref().map(|p| p.initial) {
        Some(InitialHealth::Unknown) => {
            health.set_status(HealthStatus::Unknown);
        }
        Some(InitialHealth::Unhealthy) => {
            health.set_status(HealthStatus::Unhealthy);
        }
        Some(InitialHealth::Healthy) | None => {
            if generation == Generation::Later {
                health.start_ramp();
            }
        }
    }
    Arc::new(state)
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
    fn removed_backends_are_forgotten() {
        let mut c = Controller::new(crate::config::parse(TWO_POOLS).unwrap());
        let fewer = TWO_POOLS.replace(", { addr = \"127.0.0.1:9002\" }", "");
        c.apply(crate::config::parse(&fewer).unwrap());
        assert_eq!(c.registry.len(), 2);
        assert_eq!(c.health().probes(), 0);
        c.apply(crate::config::parse(TWO_POOLS).unwrap());
        // It comes back as a fresh backend.
        assert_eq!(state_of(&c, "a", "127.0.0.1:9002").inflight(), 0);
    }
}
