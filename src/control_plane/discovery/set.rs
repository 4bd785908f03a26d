//! Inspected containers → a [`DiscoveredSet`], and a set + the file's `Spec` →
//! the `Spec` the controller publishes.
//!
//! Pure functions over bollard's models: no I/O, deterministic order, so equal
//! engine states give equal sets (and nothing is re-published).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use bollard::models::{ContainerInspectResponse, HealthStatusEnum};

use super::labels::{self, LabelError, COMPOSE_PROJECT};
use super::network::{self, OwnContainer, RuleSource};
use super::{DiscoveredBackend, DiscoveredSet, Skipped, DEFAULT_HEALTH_PATH};
use http::uri::PathAndQuery;

use crate::control_plane::config::spec::{
    BackendSpec, ContainerRef, DockerHealth, InitialHealth, MirrorSpec, PoolHealthSpec, PoolName,
    PoolSpec, ProbeSpec, ProjectFilter, Protocol, Source, Spec, StatusRange,
    MIRROR_MAX_BODY_DEFAULT, MIRROR_TIMEOUT_DEFAULT,
};

/// Which compose projects are considered, once the gateway's own is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Projects {
    /// Every container.
    Any,
    /// Containers whose `com.docker.compose.project` is one of these.
    Only(Vec<String>),
}

impl Projects {
    /// `[discovery.docker].projects` for a gateway running in `own` (or on the host).
    pub fn resolve(filter: &ProjectFilter, own: Option<&OwnContainer>) -> Projects {
        match filter {
            ProjectFilter::Any => Projects::Any,
            ProjectFilter::Only(list) => Projects::Only(list.clone()),
            ProjectFilter::Own => match own.and_then(|o| o.project.clone()) {
                Some(project) => Projects::Only(vec![project]),
                None => Projects::Any,
            },
        }
    }

    /// Does a container with these labels belong to a considered project?
    pub fn allows(&self, labels: &HashMap<String, String>) -> bool {
        match self {
            Projects::Any => true,
            Projects::Only(list) => labels
                .get(COMPOSE_PROJECT)
                .is_some_and(|p| list.iter().any(|l| l == p)),
        }
    }
}

/// What set building needs besides the containers.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Label key prefix (`sluicegate`).
    pub prefix: &'a str,
    /// `[discovery.docker].network`.
    pub network: Option<&'a str>,
    /// The gateway's own container, when it runs in one.
    pub own: Option<&'a OwnContainer>,
    /// Container id → `State.StartedAt` recorded when a stop event marked it
    /// draining; the mark holds while the container still has that start time.
    pub draining: &'a HashMap<String, String>,
}

/// Builds the set from inspected containers. Containers that are not running,
/// or whose labels do not opt them in, are left out; the ones with label
/// problems go to `skipped`.
pub fn build(containers: &[ContainerInspectResponse], ctx: &Context<'_>) -> DiscoveredSet {
    let mut pools: BTreeMap<PoolName, Vec<DiscoveredBackend>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for c in containers {
        match backend_of(c, ctx) {
            Ok(Some((pool, backend))) => pools.entry(pool).or_default().push(backend),
            Ok(None) => {}
            Err(reason) => skipped.push(Skipped {
                container_name: name_of(c),
                container_id: Arc::from(c.id.as_deref().unwrap_or("")),
                reason,
            }),
        }
    }
    for backends in pools.values_mut() {
        backends.sort_by(|a, b| (&a.container_name, a.addr).cmp(&(&b.container_name, b.addr)));
        // Two containers cannot share an IP on one network; keep the set sane anyway.
        let mut seen = HashSet::new();
        backends.retain(|b| seen.insert(b.addr));
    }
    skipped.sort_by(|a, b| a.container_name.cmp(&b.container_name));
    DiscoveredSet { pools, skipped }
}

/// The backend one container provides; `Ok(None)` when it is not one.
fn backend_of(
    c: &ContainerInspectResponse,
    ctx: &Context<'_>,
) -> Result<Option<(PoolName, DiscoveredBackend)>, LabelError> {
    let state = c.state.as_ref();
    let running = state.is_some_and(|s| {
        s.running == Some(true) && s.restarting != Some(true) && s.paused != Some(true)
    });
    let config = c.config.as_ref();
    let empty = HashMap::new();
    let labels = config.and_then(|c| c.labels.as_ref()).unwrap_or(&empty);
    if !running {
        return Ok(None);
    }
    let Some(wanted) = labels::parse(labels, ctx.prefix)? else {
        return Ok(None);
    };
    let exposed = config
        .and_then(|c| c.exposed_ports.as_ref())
        .into_iter()
        .flat_map(|ports| ports.keys().map(String::as_str));
    let port = labels::port(wanted.port, exposed, ctx.prefix)?;
    let no_networks = HashMap::new();
    let networks = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .unwrap_or(&no_networks);
    let rule = match (&wanted.network, ctx.network) {
        (Some(label), _) => Some((&**label, RuleSource::Label)),
        (None, Some(config)) => Some((config, RuleSource::Config)),
        (None, None) => None,
    };
    let own_networks = ctx.own.map(|o| o.networks.as_slice());
    let project = labels.get(COMPOSE_PROJECT).map(String::as_str);
    let (network, ip) = network::choose(networks, own_networks, rule, project, ctx.prefix)?;
    let health = state.and_then(|s| s.health.as_ref()).and_then(|h| h.status);
    let docker_health = match health {
        Some(HealthStatusEnum::STARTING) => DockerHealth::Starting,
        Some(HealthStatusEnum::UNHEALTHY) => DockerHealth::Unhealthy,
        Some(HealthStatusEnum::HEALTHY) => DockerHealth::Healthy,
        _ => DockerHealth::None,
    };
    let docker_healthy = !matches!(
        docker_health,
        DockerHealth::Starting | DockerHealth::Unhealthy
    );
    let id = c.id.as_deref().unwrap_or("");
    let started_at = state.and_then(|s| s.started_at.as_deref()).unwrap_or("");
    let draining = ctx
        .draining
        .get(id)
        .is_some_and(|at| at.is_empty() || at == started_at);
    let backend = DiscoveredBackend {
        addr: SocketAddr::new(ip, port),
        weight: wanted.weight,
        container_name: name_of(c),
        container_id: Arc::from(id),
        docker_healthy,
        docker_health,
        draining,
        health_path: wanted.health_path,
        protocol: wanted.protocol,
        mirror: wanted.mirror,
        rate_limit: wanted.rate_limit,
        network: Arc::from(network),
    };
    Ok(Some((wanted.pool, backend)))
}

fn name_of(c: &ContainerInspectResponse) -> Arc<str> {
    let name = c.name.as_deref().unwrap_or("");
    Arc::from(name.strip_prefix('/').unwrap_or(name))
}

/// A pool that is not in the file's `[[pools]]` and exists because of labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelPool {
    /// Its name (from `sluicegate.pool` or the compose service).
    pub name: PoolName,
    /// The first `sluicegate.health.path` among its containers (by container
    /// name), else [`DEFAULT_HEALTH_PATH`].
    pub health_path: Arc<str>,
    /// The first `sluicegate.protocol` among its containers (by container
    /// name), else HTTP/1.1.
    pub protocol: Protocol,
}

/// The file's spec with discovery applied, and the pools labels created.
#[derive(Clone, Debug)]
pub struct Merged {
    /// File pools with their discovered backends appended (a static backend
    /// with the same address wins); pools only labels name, appended in name
    /// order with the default policy. Every pool not defined in `[[pools]]`
    /// probes its `health_path` with the default probe settings.
    pub spec: Spec,
    /// Every pool not defined in `[[pools]]` (implied by routes or named only by
    /// labels).
    pub created: Vec<LabelPool>,
}

/// Adds `set` to `file`. All discovered backends are included, eligible or not:
/// each carries its container ([`ContainerRef`]: name, Docker health) and its
/// `draining` mark, and the controller holds back the ones that may not serve.
pub fn merge(file: &Spec, set: &DiscoveredSet) -> Merged {
    let mut spec = file.clone();
    let implied: &[PoolName] = file.discovery.implied_pools();
    let mut created: Vec<LabelPool> = implied
        .iter()
        .map(|name| label_pool(name, set.pool(name.as_str())))
        .collect();
    for (name, backends) in &set.pools {
        let extra = backends.iter().map(|b| BackendSpec {
            addr: b.addr,
            weight: b.weight,
            backup: false,
            draining: b.draining,
            source: Source::Docker,
            container: Some(ContainerRef {
                name: Arc::clone(&b.container_name),
                docker_healthy: b.docker_healthy,
                docker_health: b.docker_health,
            }),
        });
        match spec.pools.iter_mut().find(|p| &p.name == name) {
            Some(pool) => {
                let statics: HashSet<_> = pool.backends.iter().map(|b| b.addr).collect();
                pool.backends
                    .extend(extra.filter(|b| !statics.contains(&b.addr)));
            }
            None => {
                let mut pool = PoolSpec::empty(name.clone());
                pool.backends.extend(extra);
                spec.pools.push(pool);
                created.push(label_pool(name, backends));
            }
        }
    }
    for label in &created {
        if let Some(pool) = spec.pools.iter_mut().find(|p| p.name == label.name) {
            pool.health = probe_health(&label.health_path);
            pool.protocol = label.protocol;
        }
    }
    mirror_from_labels(&mut spec, set);
    rate_limits_from_labels(&mut spec, set);
    Merged { spec, created }
}

/// A route without a `mirror` in the file takes the one its mirror pool's
/// containers ask for (`sluicegate.mirror.route`); when several pools ask for the
/// same route, the first by pool name wins (then by container name). A label
/// naming a route the file lacks does nothing.
fn mirror_from_labels(spec: &mut Spec, set: &DiscoveredSet) {
    for (pool, backends) in &set.pools {
        for m in backends.iter().filter_map(|b| b.mirror.as_ref()) {
            let route = spec
                .routes
                .iter_mut()
                .find(|r| r.name.as_str() == &*m.route);
            if let Some(route) = route.filter(|r| r.mirror.is_none()) {
                route.mirror = Some(MirrorSpec {
                    pool: pool.clone(),
                    percent: m.percent,
                    max_body: MIRROR_MAX_BODY_DEFAULT,
                    timeout: MIRROR_TIMEOUT_DEFAULT,
                });
            }
        }
    }
}

/// A route without a `rate_limit` in the file takes the one a container's
/// `sluicegate.rate_limit.*` labels ask for; when several containers ask for the
/// same route, the first by pool name wins (then by container). A label naming a
/// route the file lacks does nothing. The admin API's override applies over this.
fn rate_limits_from_labels(spec: &mut Spec, set: &DiscoveredSet) {
    for backends in set.pools.values() {
        for label in backends.iter().filter_map(|b| b.rate_limit.as_ref()) {
            let route = spec
                .routes
                .iter_mut()
                .find(|r| r.name.as_str() == &*label.route);
            if let Some(route) = route.filter(|r| r.limits.rate.is_none()) {
                // Checked when the labels were read; the prefix only names errors.
                if let Ok(limit) = label.spec("labels") {
                    route.limits.rate = Some(limit);
                }
            }
        }
    }
}

fn label_pool(name: &PoolName, backends: &[DiscoveredBackend]) -> LabelPool {
    let path = backends.iter().find_map(|b| b.health_path.clone());
    LabelPool {
        name: name.clone(),
        health_path: path.unwrap_or_else(|| Arc::from(DEFAULT_HEALTH_PATH)),
        protocol: backends.iter().find_map(|b| b.protocol).unwrap_or_default(),
    }
}

/// The health settings of a pool labels created: `GET path` with the file's
/// defaults for `[pools.health]` (every 2 s, rise 2, fall 3, no traffic before the
/// first pass); no ejection, ramp, panic or hold. A path that is not a valid
/// request target (the label check only asks for a leading `/`) falls back to
/// [`DEFAULT_HEALTH_PATH`].
fn probe_health(path: &str) -> PoolHealthSpec {
    let path = path
        .parse::<PathAndQuery>()
        .unwrap_or_else(|_| PathAndQuery::from_static(DEFAULT_HEALTH_PATH));
    let interval = ProbeSpec::DEFAULT_INTERVAL;
    PoolHealthSpec {
        probe: Some(Arc::new(ProbeSpec {
            path,
            host: None,
            interval,
            timeout: ProbeSpec::DEFAULT_TIMEOUT.min(interval / 2),
            rise: ProbeSpec::DEFAULT_RISE,
            fall: ProbeSpec::DEFAULT_FALL,
            start_period: std::time::Duration::ZERO,
            expect_status: StatusRange::DEFAULT,
            initial: InitialHealth::default(),
            grpc: None,
        })),
        ..PoolHealthSpec::default()
    }
}

#[cfg(test)]
mod tests;
