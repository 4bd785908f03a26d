//! What Swarm discovery saw, service by service and task by task: the one
//! structure `sluicegate discover` prints, `GET /api/v1/discovery/swarm` serves
//! to gateways on worker nodes, and the [`DiscoveredSet`] is derived from
//! ([`SwarmReport::set`]), so a worker routes exactly as the manager it reads.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::control_plane::config::validate;
use crate::control_plane::discovery::{DiscoveredBackend, DiscoveredSet, LabelError, Skipped};

/// Every service of the swarm, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmReport {
    pub services: Vec<ServiceReport>,
}

/// One service: its pool, or why it gives no backends, and its tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub id: String,
    pub name: String,
    /// The pool its tasks join; `None` when it is not labelled or is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// False for services without `<prefix>.pool` / `<prefix>.enable` labels.
    pub labelled: bool,
    /// Why the whole service is skipped (a bad label, no port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Its live tasks (desired `running`, or stopping and still running), by name.
    #[serde(default)]
    pub tasks: Vec<TaskReport>,
}

/// A service's `sluicegate.rate_limit.*` labels, as written (checked by the
/// manager; a worker applies them only if they pass the same checks).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitReport {
    pub route: String,
    pub rate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One task and what discovery made of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub id: String,
    /// `<service>.<slot>.<task id prefix>` (global services: the node id for the slot).
    pub name: String,
    /// The node's hostname (its id when the node list does not name it).
    pub node: String,
    /// `Status.State` (`running`, `starting`, …).
    pub state: String,
    /// `DesiredState` (`running`, `shutdown`, `remove`).
    pub desired_state: String,
    /// Task IP on the chosen network and the port, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    /// `sluicegate.protocol`, as written (`http1`, `h2c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `sluicegate.mirror.route`: the service's pool mirrors that route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_route: Option<String>,
    /// `sluicegate.mirror.percent` (100 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u8>,
    /// `sluicegate.rate_limit.*`: a rate limit for a route, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitReport>,
    pub role: TaskRole,
    /// Why it is draining, waiting or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a task is to the gateway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskRole {
    /// Gets traffic (after the pool's first probe where the pool is probed).
    Backend,
    /// Known, but gets no new requests (stopping, or its node is down or drained).
    Draining,
    /// Not running yet (Swarm holds a task with a HEALTHCHECK in `starting`).
    #[default]
    Waiting,
    /// Cannot be reached (no address on the chosen network).
    Skipped,
}

impl SwarmReport {
    /// The backends, by pool, and the skipped services and tasks: what the
    /// controller merges. Pure; equal reports give equal sets.
    pub fn set(&self) -> DiscoveredSet {
        let mut set = DiscoveredSet::default();
        for service in &self.services {
            if let Some(reason) = &service.skipped {
                set.skipped
                    .push(skipped(&service.name, &service.id, reason));
                continue;
            }
            let Some(pool) = &service.pool else { continue };
            // The pool name was checked where the report was made; a report
            // from another gateway is input again.
            let pool = match validate::pool_name(pool, "pool") {
                Ok(pool) => pool,
                Err(e) => {
                    let reason = format!("pool {pool:?}: {}", e.message);
                    set.skipped
                        .push(skipped(&service.name, &service.id, &reason));
                    continue;
                }
            };
            for task in &service.tasks {
                let draining = match task.role {
                    TaskRole::Backend => false,
                    TaskRole::Draining => true,
                    TaskRole::Waiting => continue,
                    TaskRole::Skipped => {
                        let reason = task.reason.as_deref().unwrap_or("skipped");
                        set.skipped.push(skipped(&task.name, &task.id, reason));
                        continue;
                    }
                };
                let (Some(addr), Some(network)) = (task.addr, task.network.as_deref()) else {
                    continue;
                };
                set.pools
                    .entry(pool.clone())
                    .or_default()
                    .push(DiscoveredBackend {
                        addr,
                        weight: task.weight.max(1),
                        container_name: Arc::from(task.name.as_str()),
                        container_id: Arc::from(task.id.as_str()),
                        docker_healthy: true,
                        // Swarm reports task state, not a container health check.
                        docker_health: crate::control_plane::config::spec::DockerHealth::None,
                        draining,
                        health_path: task.health_path.as_deref().map(Arc::from),
                        protocol: task
                            .protocol
                            .as_deref()
                            .and_then(crate::control_plane::config::spec::Protocol::parse),
                        mirror: task.mirror_route.as_deref().map(|route| {
                            super::super::labels::MirrorLabel {
                                route: Arc::from(route),
                                percent: task.mirror_percent.unwrap_or(100).min(100),
                            }
                        }),
                        rate_limit: task.rate_limit.as_ref().map(|r| {
                            super::super::labels::RateLimitLabel {
                                route: Arc::from(r.route.as_str()),
                                rate: Arc::from(r.rate.as_str()),
                                burst: r.burst.as_deref().map(Arc::from),
                                key: r.key.as_deref().map(Arc::from),
                            }
                        }),
                        network: Arc::from(network),
                    });
            }
        }
        for backends in set.pools.values_mut() {
            // Serving tasks before draining ones, so a duplicate address keeps
            // the one that serves.
            backends.sort_by(|a, b| {
                (a.draining, &a.container_name, a.addr).cmp(&(
                    b.draining,
                    &b.container_name,
                    b.addr,
                ))
            });
            let mut seen = std::collections::HashSet::new();
            backends.retain(|b| seen.insert(b.addr));
            backends.sort_by(|a, b| (&a.container_name, a.addr).cmp(&(&b.container_name, b.addr)));
        }
        set.skipped
            .sort_by(|a, b| a.container_name.cmp(&b.container_name));
        set
    }
}

fn skipped(name: &str, id: &str, reason: &str) -> Skipped {
    Skipped {
        container_name: Arc::from(name),
        container_id: Arc::from(id),
        reason: LabelError::Reported(reason.to_owned()),
    }
}
