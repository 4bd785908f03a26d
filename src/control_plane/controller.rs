//! The single writer of the routing snapshot.
//!
//! The [`Controller`] owns the backend registry (runtime state per pool and address)
//! and is the only code that stores into the shared `ArcSwap<Snapshot>`. Every change
//! of routing builds a complete new snapshot and swaps it in atomically; requests
//! already running keep the snapshot (and backends) they started with. The
//! controller task publishes with [`Controller::apply_off_worker`], which builds on
//! tokio's blocking pool so that no runtime worker stalls on a large fleet; tests
//! and benches use [`Controller::apply`], which builds on the calling thread.
//!
//! A backend that leaves the config *retires*: requests and streams still using it
//! run on, and only when `[listen].stream_close_delay` has passed are whatever
//! streams remain closed (and counted) by [`Controller::close_retired`]. If the same
//! (pool, address) comes back before that, it gets its old state back.
//!
//! A backend keeps its state only while its pool's `tls` setting is unchanged: its
//! pooled connections were made with that setting. When the setting changes, the
//! old state retires like a removed backend (its idle connections close, its
//! streams run on until `stream_close_delay`) and the backend starts afresh (as a
//! new backend: probed pools wait for its first pass). New backends of a TLS pool
//! share one client configuration (and so one session cache) per pool.
//!
//! Health does not need snapshots rebuilt (it flips backend atomics), but it follows
//! them: after each publish the [`HealthSupervisor`] reconciles the probe tasks with
//! the new snapshot (`self.health.reconcile(&snapshot)`), and its event channel
//! ([`Controller::subscribe_health`]) reports every health transition.
//!
//! Being one owned value with `&mut self` methods is what makes it the single writer.
//! It is driven by the controller task ([`task`]), which receives every change (file
//! reload, admin API, TTL expiry) on one channel.

mod refusal;
pub mod state_view;
pub mod task;

pub use refusal::{Refusal, Stopped};

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::control_plane::config::spec::{
    InitialHealth, PoolName, PoolSpec, RouteName, Spec, UpstreamTlsSpec,
};
use crate::control_plane::off_worker;
use crate::data_plane::backend::BackendState;
use crate::data_plane::health::{HealthEvent, HealthStatus, HealthSupervisor, PoolHealth};
use crate::data_plane::sessions::SessionTable;
use crate::data_plane::snapshot::Snapshot;
use crate::data_plane::tls::upstream::UpstreamTls;
use crate::metrics::Registrar;

/// Shared handle to the current snapshot: requests `load()` it, the controller stores.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// Builds and publishes snapshots; keeps backend state across them.
#[derive(Debug)]
pub struct Controller {
    shared: SharedSnapshot,
    registry: Registry,
    pools: PoolRegistry,
    sessions: SessionRegistry,
    health: HealthSupervisor,
    /// Retired states; a (pool, address) may have several (removed, or replaced
    /// by a `tls` change, more than once within `stream_close_delay`).
    retiring: Vec<(Key, Retiring)>,
    /// Streams closed because their backend was removed (ever).
    streams_closed: u64,
    /// Snapshots published so far (the first one is 1).
    generation: u64,
}

/// A removed backend whose remaining streams close at `at`.
#[derive(Debug)]
struct Retiring {
    state: Arc<BackendState>,
    at: Instant,
}

impl Controller {
    /// Builds the first snapshot from `spec` and starts its probes (which needs a
    /// tokio runtime when a pool has `[pools.health]`).
    pub fn new(spec: Spec) -> Controller {
        Controller::with_metrics(spec, Registrar::off())
    }

    /// The gateway's own metrics (what the current snapshot records into).
    pub fn metrics(&self) -> Registrar {
        self.shared.load().metrics().clone()
    }

    /// [`new`](Self::new), with every snapshot's metric handles and the pools'
    /// ejection counts recorded into `metrics` (the gateway's own recorder).
    pub fn with_metrics(spec: Spec, metrics: Registrar) -> Controller {
        let mut health = HealthSupervisor::new();
        health.task_watch().count_exits_into(metrics.clone());
        let mut old = Registries::default();
        let (snapshot, next) = rebuild(
            &mut old,
            &mut Vec::new(),
            &health.events(),
            spec,
            (None, &metrics),
            Generation::First,
        );
        let snapshot = Arc::new(snapshot);
        health.reconcile(&snapshot);
        Controller {
            shared: Arc::new(ArcSwap::new(snapshot)),
            registry: next.backends,
            pools: next.pools,
            sessions: next.sessions,
            health,
            retiring: Vec::new(),
            streams_closed: 0,
            generation: 1,
        }
    }

    /// The handle the data plane reads.
    pub fn shared(&self) -> SharedSnapshot {
        Arc::clone(&self.shared)
    }

    /// Publishes a snapshot for `spec`. Backends present before keep their state
    /// (in-flight counts, latency, health, pooled connections); removed ones, and
    /// those whose pool's `tls` changed, retire (see the module doc) and live on in
    /// requests still using them.
    ///
    /// Builds on the calling thread: for tests and benches. The controller task uses
    /// [`apply_off_worker`](Self::apply_off_worker).
    pub fn apply(&mut self, spec: Spec) {
        let build = self.begin(spec);
        drop(self.complete(build.run()));
    }

    /// [`apply`](Self::apply), with the snapshot built (and the one it replaces let
    /// go) on tokio's blocking pool.
    ///
    /// A build of a large fleet takes milliseconds (benches/JOURNAL.md, sixth pass);
    /// on a runtime worker it would hold up every request that worker serves, and
    /// with one worker (`--workers 1`) every request. The controller task waits
    /// here, so changes still apply one at a time and in order.
    pub async fn apply_off_worker(&mut self, spec: Spec) {
        self.apply_off_worker_after(spec, || {}).await;
    }

    /// [`apply_off_worker`](Self::apply_off_worker), running `first` on the
    /// blocking pool before the build: tests hold a build there to see whether
    /// the runtime serves other tasks meanwhile.
    async fn apply_off_worker_after(&mut self, spec: Spec, first: impl FnOnce() + Send + 'static) {
        let build = self.begin(spec);
        let run = move || {
            first();
            build.run()
        };
        let Some(built) = off_worker::run("snapshot build", run).await else {
            return;
        };
        let replaced = self.complete(built);
        // Usually requests still hold it; when this is the last reference, freeing
        // a large snapshot is work for the blocking pool too.
        tokio::task::spawn_blocking(move || drop(replaced));
    }

    /// Takes what a build needs out of the controller (given back by `complete`).
    fn begin(&mut self, spec: Spec) -> Build {
        Build {
            old: Registries {
                backends: std::mem::take(&mut self.registry),
                pools: std::mem::take(&mut self.pools),
                sessions: std::mem::take(&mut self.sessions),
            },
            retiring: std::mem::take(&mut self.retiring),
            events: self.health.events(),
            previous: self.shared.load_full(),
            spec,
        }
    }

    /// Publishes what `run` built; returns the snapshot it replaced.
    fn complete(&mut self, built: Built) -> Arc<Snapshot> {
        let Built {
            snapshot,
            next,
            old,
            retiring,
        } = built;
        self.retiring = retiring;
        let delay = snapshot.spec().listen.stream_close_delay;
        let snapshot = Arc::new(snapshot);
        let replaced = self.shared.swap(Arc::clone(&snapshot));
        self.generation += 1;
        self.health.reconcile(&snapshot);
        for (name, gone) in &old.pools {
            if !next.pools.contains_key(name) {
                // Requests held for a removed pool find it gone and give up now.
                gone.wake_held();
            }
        }
        self.registry = next.backends;
        self.pools = next.pools;
        self.sessions = next.sessions;
        // What is left in `old.backends` was removed (or replaced: its pool's tls
        // setting changed).
        let at = crate::clock::later(Instant::now(), delay);
        for (key, state) in old.backends {
            state.conns().clear_idle();
            if state.inflight() > 0 {
                tracing::info!(
                    pool = %key.0, backend = %key.1, inflight = state.inflight(), ?delay,
                    "backend removed or its pool's tls changed: its remaining streams close after stream_close_delay"
                );
            }
            self.retiring.push((key, Retiring { state, at }));
        }
        replaced
    }

    /// The probe supervisor: live probe count, and `subscribe()` for health events.
    pub fn health(&self) -> &HealthSupervisor {
        &self.health
    }

    /// Every health transition from now on (see [`HealthSupervisor::subscribe`]).
    pub fn subscribe_health(&self) -> tokio::sync::broadcast::Receiver<HealthEvent> {
        self.health.subscribe()
    }

    /// Runtime state of a backend in the current snapshot.
    pub fn backend_state(&self, pool: &PoolName, addr: SocketAddr) -> Option<&Arc<BackendState>> {
        self.registry.get(&(pool.clone(), addr))
    }

    /// Runtime state of a pool (hold queue, wake-ups) in the current snapshot.
    pub fn pool_health(&self, pool: &PoolName) -> Option<&Arc<PoolHealth>> {
        self.pools.get(pool)
    }

    /// When the next retired backend's streams are due to close.
    pub fn next_retirement(&self) -> Option<Instant> {
        self.retiring.iter().map(|(_, r)| r.at).min()
    }

    /// Closes the streams of retired backends whose delay ran out by `now`;
    /// returns how many streams that closed.
    pub fn close_retired(&mut self, now: Instant) -> u64 {
        let mut closed = 0;
        self.retiring.retain(|((pool, addr), r)| {
            if r.at > now {
                return true;
            }
            let n = u64::from(r.state.inflight());
            if n > 0 {
                tracing::warn!(%pool, backend = %addr, streams = n, "closing streams of a removed backend: stream_close_delay ran out");
            }
            r.state.close_streams();
            closed += n;
            false
        });
        self.streams_closed += closed;
        closed
    }

    /// Drops pooled upstream connections their backends closed while idle.
    pub fn sweep_idle_conns(&self) {
        for state in self.registry.values() {
            state.conns().sweep_idle();
        }
    }

    /// Streams closed because their backend was removed, since start.
    pub fn streams_closed(&self) -> u64 {
        self.streams_closed
    }

    /// How many snapshots were published (1 after [`new`](Self::new)).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

type Key = (PoolName, SocketAddr);
type Registry = HashMap<Key, Arc<BackendState>>;
type PoolRegistry = HashMap<PoolName, Arc<PoolHealth>>;
type SessionRegistry = HashMap<RouteName, Arc<SessionTable>>;

/// Runtime state kept across snapshots.
#[derive(Default)]
struct Registries {
    backends: Registry,
    pools: PoolRegistry,
    sessions: SessionRegistry,
}

/// Whether a snapshot is the gateway's first (its backends do not slow-start).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Generation {
    First,
    Later,
}

/// A snapshot build: everything [`rebuild`] needs, owned, so that it can run on
/// another thread while the controller waits.
struct Build {
    spec: Spec,
    old: Registries,
    retiring: Vec<(Key, Retiring)>,
    events: broadcast::Sender<HealthEvent>,
    /// The snapshot being replaced: it lends its hash rings.
    previous: Arc<Snapshot>,
}

/// What a [`Build`] made, and the registries it took, for `Controller::complete`.
struct Built {
    snapshot: Snapshot,
    next: Registries,
    old: Registries,
    retiring: Vec<(Key, Retiring)>,
}

impl Build {
    fn run(mut self) -> Built {
        let (snapshot, next) = rebuild(
            &mut self.old,
            &mut self.retiring,
            &self.events,
            self.spec,
            (Some(&self.previous), &self.previous.metrics().clone()),
            Generation::Later,
        );
        Built {
            snapshot,
            next,
            old: self.old,
            retiring: self.retiring,
        }
    }
}

/// Builds a snapshot reusing state from `old` (taking it out) or from `retiring`
/// (bringing it back) where (pool, address) matches and the pool's `tls` setting
/// is the one the state was made with, and pool state by name; returns the
/// registries of exactly what the new snapshot holds. What stays in
/// `old.backends` was removed or replaced. Each backend's `draining` and Docker
/// health flags are set from the spec. `previous` is the snapshot being replaced;
/// `metrics` is the gateway's recorder (the same for every snapshot of a gateway).
fn rebuild(
    old: &mut Registries,
    retiring: &mut Vec<(Key, Retiring)>,
    events: &broadcast::Sender<HealthEvent>,
    spec: Spec,
    (previous, metrics): (Option<&Snapshot>, &Registrar),
    generation: Generation,
) -> (Snapshot, Registries) {
    let mut backends = Registry::with_capacity(old.backends.len());
    let mut pools = PoolRegistry::with_capacity(old.pools.len());
    let mut sessions = SessionRegistry::new();
    let mut connectors: HashMap<PoolName, Arc<UpstreamTls>> = HashMap::new();
    let old_pools = &old.pools;
    let old_sessions = &old.sessions;
    let old_backends = &mut old.backends;
    let snapshot = Snapshot::build_full(
        Arc::new(spec),
        previous,
        metrics,
        |pool, b| {
            let key = (pool.name.clone(), b.addr);
            let want = pool.tls.as_ref();
            // One lookup in the common case (the backend survives unchanged); a state
            // made for another `tls` setting stays to be retired with the rest.
            let reused = match old_backends.entry(key.clone()) {
                Entry::Occupied(e) if e.get().conns().tls_spec() == want => Some(e.remove()),
                _ => take_retiring(retiring, &key, want),
            };
            let state = reused.unwrap_or_else(|| {
                let tls = want.map(|spec| {
                    let connector = connectors.entry(pool.name.clone()).or_insert_with(|| {
                        let known = old_backends.iter().chain(backends.iter());
                        connector_for(known, &pool.name, spec)
                    });
                    Arc::clone(connector)
                });
                new_backend(pool, b.addr, generation, tls)
            });
            state.set_draining(b.draining);
            state.set_docker_healthy(b.container.as_ref().is_none_or(|c| c.docker_healthy));
            backends.insert(key, Arc::clone(&state));
            state
        },
        |pool| {
            let shared = old_pools.get(&pool.name).cloned().unwrap_or_else(|| {
                let health = PoolHealth::new(pool.name.clone(), events.clone());
                Arc::new(health.counting_into(metrics.clone()))
            });
            pools.insert(pool.name.clone(), Arc::clone(&shared));
            shared
        },
        |route, learn| {
            // Same settings: keep the table, so pins survive split changes.
            let table = old_sessions
                .get(route)
                .filter(|t| t.settings() == learn)
                .cloned()
                .unwrap_or_else(|| Arc::new(SessionTable::new(learn)));
            sessions.insert(route.clone(), Arc::clone(&table));
            table
        },
    );
    (
        snapshot,
        Registries {
            backends,
            pools,
            sessions,
        },
    )
}

/// The retired state of `key` made for the pool `tls` setting `want`, taken out
/// of `retiring`.
fn take_retiring(
    retiring: &mut Vec<(Key, Retiring)>,
    key: &Key,
    want: Option<&UpstreamTlsSpec>,
) -> Option<Arc<BackendState>> {
    let i = retiring
        .iter()
        .position(|(k, r)| k == key && r.state.conns().tls_spec() == want)?;
    Some(retiring.swap_remove(i).1.state)
}

/// The TLS client side for `pool`: the one its surviving backends use if the
/// setting is unchanged, else a new one.
fn connector_for<'a>(
    known: impl Iterator<Item = (&'a Key, &'a Arc<BackendState>)>,
    pool: &PoolName,
    spec: &UpstreamTlsSpec,
) -> Arc<UpstreamTls> {
    known
        .filter(|((name, _), _)| name == pool)
        .find_map(|(_, state)| {
            state
                .conns()
                .tls()
                .filter(|tls| tls.spec() == spec)
                .cloned()
        })
        .unwrap_or_else(|| Arc::new(UpstreamTls::build(spec, crate::data_plane::tls::provider())))
}

/// A backend first seen in `pool` (or whose pool's `tls` changed), spoken to over
/// `tls` if given: with a probe it starts in the configured initial status (by
/// default *unknown*: no traffic until its first pass); without one it is
/// healthy, and after the first snapshot it slow-starts (if the pool ramps).
fn new_backend(
    pool: &PoolSpec,
    addr: SocketAddr,
    generation: Generation,
    tls: Option<Arc<UpstreamTls>>,
) -> Arc<BackendState> {
    let state = BackendState::with_tls(addr, tls);
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

    /// The controller task's publish must not occupy a runtime worker while the
    /// snapshot is built: with one worker that would hold up every request.
    #[tokio::test(flavor = "current_thread")]
    async fn the_task_builds_a_snapshot_while_the_runtime_runs_other_tasks() {
        let mut c = Controller::new(crate::control_plane::config::parse(TWO_POOLS).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        // The build waits for a message that only another task on this one-thread
        // runtime sends: built on the runtime's thread, it would wait out its 10 s
        // and panic.
        let gate = move || {
            if rx.recv_timeout(std::time::Duration::from_secs(10)).is_err() {
                panic!("build gate: no message within 10 s");
            }
        };
        let other = tokio::spawn(async move { tx.send(()) });
        let fewer = TWO_POOLS.replace(r#", { addr = "127.0.0.1:9002" }"#, "");
        c.apply_off_worker_after(crate::control_plane::config::parse(&fewer).unwrap(), gate)
            .await;
        assert!(other.await.unwrap().is_ok());
        assert_eq!(c.generation(), 2);
        let snap = c.shared().load_full();
        let a = snap
            .pools()
            .iter()
            .find(|p| p.name.as_str() == "a")
            .unwrap();
        assert_eq!(a.backends().count(), 1, "the new snapshot is published");
        assert_eq!(c.retiring.len(), 1, "the removed backend retires");
    }

    #[test]
    fn a_rebuild_keeps_a_hash_ring_exactly_while_its_backends_stay_the_same() {
        const HASHED: &str = r#"
[listen]
http = "127.0.0.1:0"
[[pools]]
name = "h"
balance = "hash"
hash_key = "client_ip"
backends = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002", weight = 2 }]
[[pools]]
name = "other"
backends = [{ addr = "127.0.0.1:9003" }]
[[routes]]
name = "r"
split = [{ pool = "h", weight = 1 }, { pool = "other", weight = 0 }]
"#;
        let ring = |c: &Controller| {
            let snap = c.shared().load_full();
            let pool = snap.pool("h").expect("pool h");
            Arc::clone(pool.primary_ring().expect("a hash pool"))
        };
        let mut c = Controller::new(crate::control_plane::config::parse(HASHED).unwrap());
        let first = ring(&c);

        // Another pool and the split change: the same ring serves on.
        let elsewhere = HASHED
            .replace("weight = 0", "weight = 3")
            .replace("9003\" }]", "9003\" }, { addr = \"127.0.0.1:9004\" }]");
        c.apply(crate::control_plane::config::parse(&elsewhere).unwrap());
        assert!(
            Arc::ptr_eq(&first, &ring(&c)),
            "rebuilt for an unchanged pool"
        );

        // A weight, an address or the order changes the ring: each is built anew.
        let changes = [
            elsewhere.replace("9002\", weight = 2", "9002\", weight = 3"),
            elsewhere.replace("9002", "9005"),
            elsewhere.replace(
                r#"[{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002", weight = 2 }]"#,
                r#"[{ addr = "127.0.0.1:9002", weight = 2 }, { addr = "127.0.0.1:9001" }]"#,
            ),
        ];
        for changed in changes {
            assert_ne!(changed, elsewhere);
            let before = ring(&c);
            c.apply(crate::control_plane::config::parse(&changed).unwrap());
            let after = ring(&c);
            assert!(!Arc::ptr_eq(&before, &after), "kept for {changed}");
            let snap = c.shared().load_full();
            let pool = snap.pool("h").expect("pool h");
            let backends: Vec<_> = pool.backends().cloned().collect();
            assert!(after.built_for(&backends));
            c.apply(crate::control_plane::config::parse(&elsewhere).unwrap());
        }
    }

    #[test]
    fn backend_state_survives_a_rebuild() {
        let mut c = Controller::new(crate::control_plane::config::parse(TWO_POOLS).unwrap());
        let before = state_of(&c, "a", "127.0.0.1:9001");
        let _inflight = before.start_request();
        let changed = TWO_POOLS.replace("weight = 0", "weight = 5");
        c.apply(crate::control_plane::config::parse(&changed).unwrap());
        let after = state_of(&c, "a", "127.0.0.1:9001");
        assert!(Arc::ptr_eq(&before, &after));
        assert_eq!(after.inflight(), 1);
        let snap = c.shared().load_full();
        assert_eq!(snap.routes()[0].split.entries()[1].weight, 5);
    }

    #[test]
    fn backend_state_is_renewed_when_pool_tls_changes() {
        let mut c = Controller::new(crate::control_plane::config::parse(TWO_POOLS).unwrap());
        let plain = state_of(&c, "a", "127.0.0.1:9001");
        assert!(plain.conns().tls().is_none());
        let tls = TWO_POOLS.replace(
            "name = \"a\"\n",
            "name = \"a\"\ntls = { insecure_skip_verify = true }\n",
        );
        c.apply(crate::control_plane::config::parse(&tls).unwrap());
        let first = state_of(&c, "a", "127.0.0.1:9001");
        let second = state_of(&c, "a", "127.0.0.1:9002");
        assert!(!Arc::ptr_eq(&plain, &first));
        let (t1, t2) = (first.conns().tls().unwrap(), second.conns().tls().unwrap());
        assert!(Arc::ptr_eq(t1, t2), "one client config per pool");
        assert!(state_of(&c, "b", "127.0.0.1:9003").conns().tls().is_none());
        // The replaced plain state retires like a removed backend.
        assert_eq!(c.retiring.len(), 2);
        assert!(c.next_retirement().is_some());

        // Unchanged setting: same state; a new backend shares the pool's connector.
        let more = tls.replace(
            "{ addr = \"127.0.0.1:9002\" }",
            "{ addr = \"127.0.0.1:9002\" }, { addr = \"127.0.0.1:9004\" }",
        );
        c.apply(crate::control_plane::config::parse(&more).unwrap());
        assert!(Arc::ptr_eq(&first, &state_of(&c, "a", "127.0.0.1:9001")));
        let added = state_of(&c, "a", "127.0.0.1:9004");
        assert!(Arc::ptr_eq(t1, added.conns().tls().unwrap()));

        // Back to plain: the retired plain state comes back; the TLS one retires
        // next to the other (not in its place).
        c.apply(crate::control_plane::config::parse(TWO_POOLS).unwrap());
        assert!(Arc::ptr_eq(&plain, &state_of(&c, "a", "127.0.0.1:9001")));
        assert_eq!(
            c.retiring
                .iter()
                .filter(|((pool, addr), _)| pool.as_str() == "a"
                    && addr.to_string() == "127.0.0.1:9001")
                .count(),
            1
        );
        assert_eq!(c.retiring.len(), 3);
    }

    #[test]
    fn removed_backend_retires_and_comes_back_with_its_state() {
        let mut c = Controller::new(crate::control_plane::config::parse(TWO_POOLS).unwrap());
        let before = state_of(&c, "a", "127.0.0.1:9002");
        let fewer = TWO_POOLS.replace(", { addr = \"127.0.0.1:9002\" }", "");
        c.apply(crate::control_plane::config::parse(&fewer).unwrap());
        assert_eq!(c.registry.len(), 2);
        assert_eq!(c.health().probes(), 0);
        assert!(c.next_retirement().is_some());
        c.apply(crate::control_plane::config::parse(TWO_POOLS).unwrap());
        assert!(Arc::ptr_eq(&before, &state_of(&c, "a", "127.0.0.1:9002")));
        assert_eq!(c.next_retirement(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn streams_of_a_removed_backend_close_after_the_delay() {
        let text = TWO_POOLS.replace("[listen]\n", "[listen]\nstream_close_delay = \"5m\"\n");
        let mut c = Controller::new(crate::control_plane::config::parse(&text).unwrap());
        let state = state_of(&c, "b", "127.0.0.1:9003");
        let _stream = state.start_request();
        let no_b = text
            .replace(
                "[[pools]]\nname = \"b\"\nbackends = [{ addr = \"127.0.0.1:9003\" }]\n",
                "",
            )
            .replace(", { pool = \"b\", weight = 0 }", "");
        c.apply(crate::control_plane::config::parse(&no_b).unwrap());
        // A later reload does not touch it either.
        c.apply(crate::control_plane::config::parse(&no_b).unwrap());
        let due = c.next_retirement().expect("retiring");
        assert_eq!(c.close_retired(due - std::time::Duration::from_secs(1)), 0);
        assert!(!state.closed().is_cancelled());
        tokio::time::advance(std::time::Duration::from_secs(300)).await;
        assert_eq!(c.close_retired(Instant::now()), 1);
        assert!(state.closed().is_cancelled());
        assert_eq!(c.streams_closed(), 1);
        assert_eq!(c.next_retirement(), None);
    }

    #[test]
    fn session_table_survives_split_changes_but_not_new_settings() {
        let text = TWO_POOLS.replace(
            "weight = 0 }]\n",
            "weight = 0 }]\nsticky = { learn_header = \"mcp-session-id\" }\n",
        );
        let table = |c: &Controller| {
            let snap = c.shared().load_full();
            Arc::clone(snap.routes()[0].split.sessions().expect("a table"))
        };
        let mut c = Controller::new(crate::control_plane::config::parse(&text).unwrap());
        let first = table(&c);
        c.apply(
            crate::control_plane::config::parse(&text.replace("weight = 0", "weight = 5")).unwrap(),
        );
        assert!(Arc::ptr_eq(&first, &table(&c)));
        let idle = text.replace("\" }\n", "\", idle = \"1m\" }\n");
        c.apply(crate::control_plane::config::parse(&idle).unwrap());
        assert!(!Arc::ptr_eq(&first, &table(&c)));
    }

    #[test]
    fn draining_flag_follows_the_spec() {
        let mut c = Controller::new(crate::control_plane::config::parse(TWO_POOLS).unwrap());
        let mut spec = crate::control_plane::config::parse(TWO_POOLS).unwrap();
        spec.pools[0].backends[0].draining = true;
        c.apply(spec);
        let s = state_of(&c, "a", "127.0.0.1:9001");
        assert!(s.is_draining() && !s.is_eligible());
        c.apply(crate::control_plane::config::parse(TWO_POOLS).unwrap());
        assert!(!s.is_draining());
    }
}
