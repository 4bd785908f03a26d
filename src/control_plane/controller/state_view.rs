//! The state view: the running config and live backend state, as the controller
//! sees it (`GET /api/v1/state` serializes it, rollout checks read it).
//!
//! The same types serialize on the gateway and deserialize in `sluicegate ctl`, so
//! the two cannot drift. It belongs to the controller, which owns what it shows;
//! the admin layer only renders it. A new section (another discovery source) is
//! one more optional field of [`StateView`] and a view type beside [`DockerView`]. Each value says where it came from (`source`: file | api |
//! docker | rollout); live numbers (in-flight, health, ejection) are read from the
//! backends' atomics at the moment of the request. Backends from Docker name their
//! container and its Docker health; `docker` shows the engine connection and the
//! labelled containers that were skipped, with the reason. Gathered by the
//! controller task, which owns what it shows ([`StateParts::take`]); the backends'
//! part is built on the blocking pool ([`StateParts::finish`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::task::Counters;
use super::Controller;
use crate::control_plane::config::spec::{
    BackendSpec, Balance, PoolName, RouteName, RouteSpec, Source, Spec, SplitSpec,
};
use crate::control_plane::discovery::{DiscoveredSet, DiscoveryStatus};
use crate::control_plane::overrides::{BackendKey, Overrides};
use crate::data_plane::backend::BackendState;
use crate::data_plane::snapshot::{Route, Snapshot};

mod limits;

pub use limits::{InFlightView, RateView, RouteLimitsView};

/// The whole state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateView {
    /// The watched config file, if any.
    pub config_file: Option<String>,
    pub counters: Counters,
    /// Routes in file order.
    pub routes: Vec<RouteView>,
    /// Pools in file order (then pools Docker labels created, by name).
    pub pools: Vec<PoolView>,
    /// Docker discovery, when `[discovery.docker]` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerView>,
    /// The shared state of gateway replicas, when `[cluster]` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
}

/// `[cluster]`: the store, what this replica serves, and the replicas it knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Where the shared state lives.
    pub store: String,
    /// This replica.
    pub replica: String,
    pub node: String,
    /// Whether the last read of the store worked.
    pub reachable: bool,
    /// True while the store does not answer or holds a value this replica
    /// ignores: the state served may be behind the other replicas'.
    pub stale: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the store was last read (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_read: Option<String>,
    /// The store's version last seen (its compare-and-set token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_version: Option<u64>,
    /// The state version (`seq` of the shared document) this replica serves;
    /// 0: nothing was written yet.
    pub serving: u64,
    /// Which replica wrote the state served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
    /// A value in the store that was ignored (malformed or foreign), and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
    /// Writes to the store by this replica, and version conflicts it met.
    pub writes: u64,
    pub conflicts: u64,
    /// The replicas this one knows (itself first).
    #[serde(default)]
    pub replicas: Vec<ReplicaView>,
}

/// A gateway replica as another one sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub id: String,
    pub node: String,
    /// When it was last heard from (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// The state version it serves, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<u64>,
    /// Why it could not be read, if the last try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How Docker discovery is doing and which labelled containers it skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerView {
    /// True between a successful list and the loss of the engine connection
    /// (while false, the last known backends keep serving).
    pub connected: bool,
    /// Container lists so far.
    pub lists: u64,
    /// The last connection error, cleared by the next list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Swarm: when a list last confirmed the set in force (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_confirmed: Option<String>,
    /// Swarm: where the set was read (`swarm engine …`, `manager gateway …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Labelled containers (Swarm: services and tasks) that are not backends, with the reason.
    pub skipped: Vec<SkippedView>,
}

/// A labelled container discovery skipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedView {
    pub container: String,
    pub reason: String,
}

impl DockerView {
    /// The view of discovery's `status` and current `set`.
    pub fn new(status: &DiscoveryStatus, set: &DiscoveredSet) -> DockerView {
        DockerView {
            connected: status.connected,
            lists: status.lists,
            last_error: status.last_error.clone(),
            last_confirmed: status
                .last_confirmed
                .map(crate::control_plane::discovery::swarm::rfc3339),
            source: status.source.clone(),
            skipped: set
                .skipped
                .iter()
                .map(|s| SkippedView {
                    container: s.container_name.to_string(),
                    reason: s.reason.to_string(),
                })
                .collect(),
        }
    }
}

/// One route and its split.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouteView {
    pub name: String,
    /// The split in force.
    pub split: Vec<SplitView>,
    /// `api` when an admin override is in force, else `file`.
    pub split_source: Source,
    /// The file's split, shown when an override hides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_split: Option<Vec<SplitView>>,
    /// The rollout that set the split (or rolled it back), and where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutRef>,
    /// Set while the route is paused (`ctl pause`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseView>,
    /// Set while the route is in maintenance (`ctl maintenance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceView>,
    /// Its rate and concurrency limits and what they refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RouteLimitsView>,
    /// The route's mirror (shadow traffic), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorView>,
}

/// A route's mirror as the state shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorView {
    pub pool: String,
    pub percent: u8,
    /// Bytes; larger request bodies are not mirrored.
    pub max_body: u64,
    /// Whole life of one copy, e.g. `10s`.
    pub timeout: String,
    /// `file`, `api` (`ctl mirror`) or `docker` (a container's `mirror.*` labels).
    pub source: Source,
}

/// A route's pause as the state shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseView {
    /// Longest wait of one request, e.g. `30s`.
    pub max: String,
    pub max_queued: usize,
}

/// A route's maintenance as the state shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub retry_after: u32,
}

/// The rollout behind a route's split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRef {
    pub id: String,
    /// `running`, `paused`, `succeeded`, `rolled_back`, `aborted`.
    pub phase: String,
}

/// One pool of a split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitView {
    pub pool: String,
    pub weight: u32,
}

/// One pool and its backends.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolView {
    pub name: String,
    pub balance: String,
    /// `protocol` of the pool: `http1`, `h2c` or `h2`.
    #[serde(default = "http1")]
    pub protocol: String,
    /// Its `concurrency`, with the live count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlightView>,
    pub backends: Vec<BackendView>,
}

/// One backend: config facts and live state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendView {
    pub addr: String,
    pub weight: u32,
    pub backup: bool,
    pub source: Source,
    pub draining: bool,
    /// Requests, streams and tunnels using it now; 0 on a drained backend means
    /// it is safe to stop.
    pub inflight: u32,
    pub healthy: bool,
    pub ejected: bool,
    /// Response bodies that ended early (backend closed or went silent mid-body).
    #[serde(default)]
    pub broken_streams: u64,
    /// The container of a backend from Docker (`source: docker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Docker's health verdict for that container: false while `starting` or
    /// `unhealthy` (no traffic then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_healthy: Option<bool>,
    /// Docker's own word for that container's health (`starting`, `unhealthy`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_health: Option<String>,
    /// For a registered backend with a TTL: time left before it lapses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_remaining_ms: Option<u64>,
    /// What the pool's active probe found last, in words: `"pass: …"` or
    /// `"fail: …"` (`"fail: gRPC health NOT_SERVING"`); absent before the first
    /// probe and in a pool without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<String>,
}

impl StateView {
    /// A route by name.
    pub fn route(&self, name: &str) -> Option<&RouteView> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// A backend by pool and address.
    pub fn backend(&self, pool: &str, addr: &str) -> Option<&BackendView> {
        self.pools
            .iter()
            .find(|p| p.name == pool)?
            .backends
            .iter()
            .find(|b| b.addr == addr)
    }
}

/// `r` of the effective spec as the state shows it, with its `live` counts.
fn route_view(
    r: &RouteSpec,
    file: &Spec,
    overrides: &Overrides,
    live: Option<&Route>,
) -> RouteView {
    let overridden = overrides.splits().contains_key(&r.name);
    let file_split = file
        .routes
        .iter()
        .find(|f| f.name == r.name)
        .filter(|_| overridden)
        .map(|f| split_view(&f.split));
    let rollout = overrides.rollouts().get(&r.name);
    RouteView {
        name: r.name.to_string(),
        split: split_view(&r.split),
        split_source: match (overridden, rollout) {
            (true, Some(_)) => Source::Rollout,
            (true, None) => Source::Api,
            (false, _) => Source::File,
        },
        file_split,
        rollout: rollout.map(|r| RolloutRef {
            id: r.id.clone(),
            phase: r.phase.as_str().to_owned(),
        }),
        paused: overrides.pauses().get(&r.name).map(|p| PauseView {
            max: humantime::format_duration(p.max).to_string(),
            max_queued: p.max_queued,
        }),
        maintenance: overrides
            .maintenance()
            .get(&r.name)
            .map(|m| MaintenanceView {
                message: m.message.clone(),
                retry_after: m.retry_after,
            }),
        mirror: r.mirror.as_ref().map(|m| MirrorView {
            pool: m.pool.to_string(),
            percent: m.percent,
            max_body: m.max_body,
            timeout: humantime::format_duration(m.timeout).to_string(),
            source: if overrides.mirrors().contains_key(&r.name) {
                Source::Api
            } else if file
                .routes
                .iter()
                .any(|f| f.name == r.name && f.mirror.as_ref() == Some(m))
            {
                Source::File
            } else {
                Source::Docker
            },
        }),
        limits: limits::route_limits(
            &r.limits,
            if overrides.rate_limits().contains_key(&r.name) {
                Source::Api
            } else if r.limits.rate.is_some()
                && file
                    .routes
                    .iter()
                    .any(|f| f.name == r.name && f.limits.rate.is_none())
            {
                // Not the file's, not the API's: a container's labels.
                Source::Docker
            } else {
                Source::File
            },
            live,
        ),
    }
}

/// What a state answer needs from the controller task, gathered there in
/// microseconds. [`finish`](Self::finish) builds the backends' part, which is most
/// of a large fleet's answer (milliseconds for 10 000 backends), and can run off
/// the task's worker: it reads the backends' live state from the snapshot.
#[derive(Debug)]
pub struct StateParts {
    snapshot: Arc<Snapshot>,
    config_file: Option<String>,
    counters: Counters,
    routes: Vec<RouteView>,
    /// When each backend registered with a TTL lapses: the one per-backend fact
    /// the snapshot does not hold.
    expires: HashMap<BackendKey, Instant>,
    docker: Option<DockerView>,
    cluster: Option<ClusterView>,
}

impl StateParts {
    /// Takes the current snapshot and what only the task holds.
    pub fn take(
        controller: &Controller,
        file: &Spec,
        overrides: &Overrides,
        counters: Counters,
        config_file: Option<&Path>,
        docker: Option<DockerView>,
    ) -> StateParts {
        let snapshot = controller.shared().load_full();
        let live: HashMap<&RouteName, &Route> =
            snapshot.routes().iter().map(|r| (&r.name, r)).collect();
        let routes = snapshot
            .spec()
            .routes
            .iter()
            .map(|r| route_view(r, file, overrides, live.get(&r.name).copied()))
            .collect();
        let expires = overrides
            .backends()
            .iter()
            .filter_map(|(key, r)| Some((key.clone(), r.expires?)))
            .collect();
        StateParts {
            snapshot,
            config_file: config_file.map(|p| p.display().to_string()),
            counters,
            routes,
            expires,
            docker,
            cluster: None,
        }
    }

    /// Adds the `[cluster]` section.
    pub fn with_cluster(mut self, cluster: Option<ClusterView>) -> StateParts {
        self.cluster = cluster;
        self
    }

    /// The state, with every backend's live numbers read now.
    pub fn finish(self) -> StateView {
        let now = Instant::now();
        let live_pools = self.snapshot.pools();
        let pools = self
            .snapshot
            .spec()
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                // The snapshot's pools are built in the spec's order.
                let live = match live_pools.get(i) {
                    Some(live) if live.name == p.name => Some(live),
                    _ => self.snapshot.pool(p.name.as_str()),
                };
                let states: HashMap<SocketAddr, &Arc<BackendState>> = live
                    .map(|l| l.backends().map(|b| (b.addr, &b.state)).collect())
                    .unwrap_or_default();
                PoolView {
                    name: p.name.to_string(),
                    balance: balance_name(&p.balance),
                    protocol: p.protocol.as_str().to_owned(),
                    in_flight: p.limits.concurrency.as_ref().map(|c| {
                        InFlightView::of(c, live.map(|l| l.health().in_flight().as_ref()))
                    }),
                    backends: p
                        .backends
                        .iter()
                        .map(|b| {
                            // Most fleets register none: skip the key's clone then.
                            let expires = (!self.expires.is_empty())
                                .then(|| self.expires.get(&(p.name.clone(), b.addr)).copied())
                                .flatten();
                            backend_view(states.get(&b.addr).copied(), expires, now, b)
                        })
                        .collect(),
                }
            })
            .collect();
        StateView {
            config_file: self.config_file,
            counters: self.counters,
            routes: self.routes,
            pools,
            docker: self.docker,
            cluster: self.cluster,
        }
    }
}

/// Backend `b` as the state shows it, with its live `state` and, when it was
/// registered with a TTL, when it `expires`.
fn backend_view(
    state: Option<&Arc<BackendState>>,
    expires: Option<Instant>,
    now: Instant,
    b: &BackendSpec,
) -> BackendView {
    let ttl_remaining_ms = expires.map(|at| at.saturating_duration_since(now).as_millis() as u64);
    BackendView {
        addr: b.addr.to_string(),
        weight: b.weight,
        backup: b.backup,
        source: b.source,
        draining: b.draining,
        inflight: state.map_or(0, |s| s.inflight()),
        healthy: state.is_none_or(|s| s.is_healthy()),
        ejected: state.is_some_and(|s| s.is_ejected()),
        broken_streams: state.map_or(0, |s| s.broken_streams()),
        container: b.container.as_ref().map(|c| c.name.to_string()),
        docker_healthy: b.container.as_ref().map(|c| c.docker_healthy),
        docker_health: b
            .container
            .as_ref()
            .map(|c| c.docker_health.as_str().to_owned()),
        ttl_remaining_ms,
        last_probe: state.and_then(|s| s.health().last_probe()).map(|p| {
            let verdict = if p.passed { "pass" } else { "fail" };
            format!("{verdict}: {}", p.outcome.describe())
        }),
    }
}

/// A route as the state shows it, built for that route alone (the answer to a
/// route write): the whole state of a large fleet takes milliseconds, on the
/// controller task's worker.
pub fn route_of(
    controller: &Controller,
    file: &Spec,
    overrides: &Overrides,
    route: &RouteName,
) -> Option<RouteView> {
    let snapshot = controller.shared().load_full();
    snapshot
        .spec()
        .routes
        .iter()
        .find(|r| r.name == *route)
        .map(|r| {
            let live = snapshot.routes().iter().find(|l| l.name == r.name);
            route_view(r, file, overrides, live)
        })
}

/// A backend as the state shows it, built for that backend alone (as
/// [`route_of`]).
pub fn backend_of(
    controller: &Controller,
    overrides: &Overrides,
    pool: &PoolName,
    addr: SocketAddr,
) -> Option<BackendView> {
    let snapshot = controller.shared().load_full();
    let found = snapshot
        .spec()
        .pools
        .iter()
        .find(|p| p.name == *pool)
        .and_then(|p| p.backends.iter().find(|b| b.addr == addr))?;
    let expires = overrides
        .backends()
        .get(&(pool.clone(), addr))
        .and_then(|r| r.expires);
    Some(backend_view(
        controller.backend_state(pool, addr),
        expires,
        Instant::now(),
        found,
    ))
}

fn split_view(split: &[SplitSpec]) -> Vec<SplitView> {
    split
        .iter()
        .map(|s| SplitView {
            pool: s.pool.to_string(),
            weight: s.weight,
        })
        .collect()
}

/// A state view written before pools had a `protocol` spoke HTTP/1.1.
fn http1() -> String {
    "http1".to_owned()
}

fn balance_name(balance: &Balance) -> String {
    match balance {
        Balance::RoundRobin => "round_robin".into(),
        Balance::LeastConn => "least_conn".into(),
        Balance::P2c => "p2c".into(),
        Balance::Hash(_) => "hash".into(),
    }
}
