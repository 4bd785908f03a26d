//! Backends from the Docker Engine: containers labelled `sluicegate.*` become
//! pool members.
//!
//! Discovery publishes *whole sets*: every re-list of the engine builds a complete
//! [`DiscoveredSet`] (pool → backends) and publishes it on a `watch` channel when it
//! differs from the last one. Docker events are only hints that schedule a
//! debounced re-list; a periodic resync is the backstop; a lost connection keeps
//! the last set, reconnects with backoff and re-lists. The one exception to
//! "events are hints" is stopping: a `kill`/`stop`/`die`/`pause` event of a known
//! container is sent at once as a [`DrainHint`] and the container's backend is
//! marked `draining` in the set, so no new request goes to a replica that is
//! shutting down.
//!
//! This module owns talking to Docker and turning containers into backends
//! (`labels`, `network`, `set`, `docker`). It does not touch snapshots or backend
//! state: the controller consumes [`DockerDiscovery`] and [`merge`]s each set
//! into the file's `Spec`.

mod docker;
pub mod labels;
mod listed;
pub(crate) mod network;
mod set;
pub mod swarm;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use docker::{ConnectError, DockerDiscovery};
pub use labels::LabelError;
pub use listed::ListedGate;
pub use set::{build, merge, Context, LabelPool, Merged, Projects};

use crate::control_plane::config::spec::{DockerHealth, PoolName};

/// Probe path of a pool created by labels that name none.
pub const DEFAULT_HEALTH_PATH: &str = "/health";

/// Every backend Docker currently provides, by pool, plus the containers that
/// were skipped and why. Compared as a whole: equal sets are not re-published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveredSet {
    /// Pool → backends, sorted by container name then address.
    pub pools: BTreeMap<PoolName, Vec<DiscoveredBackend>>,
    /// Labelled containers that are not backends, sorted by container name.
    pub skipped: Vec<Skipped>,
}

impl DiscoveredSet {
    /// Number of backends over all pools.
    pub fn len(&self) -> usize {
        self.pools.values().map(Vec::len).sum()
    }

    /// True when no container is a backend.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backends of `pool` (empty when Docker provides none).
    pub fn pool(&self, pool: &str) -> &[DiscoveredBackend] {
        self.pools
            .iter()
            .find(|(name, _)| name.as_str() == pool)
            .map_or(&[], |(_, backends)| backends.as_slice())
    }

    /// The backend of container `id` (full id), if it is one.
    pub fn by_container(&self, id: &str) -> Option<(&PoolName, &DiscoveredBackend)> {
        self.pools.iter().find_map(|(pool, backends)| {
            let b = backends.iter().find(|b| &*b.container_id == id)?;
            Some((pool, b))
        })
    }
}

/// One container as a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredBackend {
    /// Container IP on the chosen network, and the chosen port.
    pub addr: SocketAddr,
    /// From `sluicegate.weight`, 1 by default.
    pub weight: u32,
    /// Container name without Docker's leading `/`.
    pub container_name: Arc<str>,
    /// Full container id.
    pub container_id: Arc<str>,
    /// False while Docker's health check says `starting` or `unhealthy`; true
    /// when `healthy` or when the container has no health check.
    pub docker_healthy: bool,
    /// Docker's health state (`starting`, …) that `docker_healthy` sums up.
    pub docker_health: DockerHealth,
    /// True from a `kill`/`stop`/`die`/`pause` event until the container is
    /// gone (or started again): no new requests, in-flight ones finish.
    pub draining: bool,
    /// `sluicegate.health.path`, if given.
    pub health_path: Option<Arc<str>>,
    /// `sluicegate.protocol`, if given.
    pub protocol: Option<crate::control_plane::config::spec::Protocol>,
    /// `sluicegate.mirror.*`, if given: the pool mirrors that route.
    pub mirror: Option<labels::MirrorLabel>,
    /// `sluicegate.rate_limit.*`, if given: a rate limit for that route.
    pub rate_limit: Option<labels::RateLimitLabel>,
    /// The network whose IP `addr` is.
    pub network: Arc<str>,
}

impl DiscoveredBackend {
    /// May this backend get new requests, as far as Docker knows?
    pub fn is_eligible(&self) -> bool {
        self.docker_healthy && !self.draining
    }
}

/// A labelled container that is not a backend, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Container name without Docker's leading `/`.
    pub container_name: Arc<str>,
    /// Full container id.
    pub container_id: Arc<str>,
    /// What is wrong with its labels, ports or networks.
    pub reason: LabelError,
}

/// "Stop sending new requests to this container now": sent on its `kill`,
/// `stop`, `die` or `pause` event, before the re-list removes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainHint {
    /// The pool the container's backend is in.
    pub pool: PoolName,
    /// The backend's address.
    pub addr: SocketAddr,
    /// Full container id.
    pub container_id: Arc<str>,
    /// Container name.
    pub container_name: Arc<str>,
    /// The Docker event action that caused it (`kill`, `stop`, …).
    pub action: Arc<str>,
}

/// How the Docker connection is doing (for logs, `/readyz`-style checks, tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryStatus {
    /// True between a successful list and the loss of the connection.
    pub connected: bool,
    /// Successful re-lists so far (including those that changed nothing).
    pub lists: u64,
    /// The last connection or request error, cleared by the next list.
    pub last_error: Option<String>,
    /// Sets published so far (a list equal to the last one publishes none).
    /// Swarm discovery only.
    pub sets_published: u64,
    /// When the set in force was last confirmed by a successful list. Swarm
    /// discovery only.
    pub last_confirmed: Option<std::time::SystemTime>,
    /// Where the last set was read (`swarm engine …`, `manager gateway …`).
    /// Swarm discovery only.
    pub source: Option<String>,
}

/// Timings and the endpoint of Docker discovery; [`Default`] is what the
/// gateway uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// `unix:///path`, `tcp://host:port` or `http://host:port`; `None` means
    /// `$DOCKER_HOST`, else `unix:///var/run/docker.sock`.
    pub docker_host: Option<String>,
    /// Delay from the first event to the re-list it causes (events in between
    /// join the same re-list).
    pub debounce: Duration,
    /// Re-list this often even without events.
    pub resync: Duration,
    /// First reconnect delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Bound on each Docker API request (not on the event stream).
    pub request_timeout: Duration,
    /// Where `docker_events_total` is counted: the gateway's own recorder (the
    /// gateway sets it; off by default).
    pub metrics: crate::metrics::Registrar,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            docker_host: None,
            debounce: Duration::from_millis(150),
            resync: Duration::from_secs(15),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            metrics: crate::metrics::Registrar::off(),
        }
    }
}
