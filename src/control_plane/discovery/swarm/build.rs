//! Services, tasks and nodes (as the engine lists them) → a [`SwarmReport`].
//!
//! Pure and deterministic: equal engine answers give equal reports, so an
//! unchanged poll publishes nothing. The rules:
//! - labels: a service's own labels (compose `deploy.labels`) are laid over its
//!   container labels (compose `labels`), key by key: **service labels win**. With
//!   `<prefix>.enable=true` and no pool, the pool is the service name without its
//!   stack prefix (`shop_blue` in stack `shop` → `blue`).
//! - port: `<prefix>.port`, else the single TCP target port the service publishes.
//! - address: the task's IP on `<prefix>.network`, else `[discovery.swarm].network`
//!   (as written or as `<stack>_<name>`), else its only non-ingress network;
//!   never the service VIP.
//! - a task is a backend when its desired and actual state are both `running` on
//!   a node that is neither down nor drained; it is *draining* (no new requests)
//!   from the moment the orchestrator wants it stopped (desired state `shutdown` or
//!   `remove`) while it still runs, or while its node is `drain`; a task whose node
//!   is `down` is draining while Swarm still wants it and dropped once Swarm gave
//!   up on it (nothing left to drain there).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::model::{Labels, Node, Service, Task};
use super::report::{ServiceReport, SwarmReport, TaskReport, TaskRole};
use crate::control_plane::discovery::labels::{self, key, COMPOSE_SERVICE};

/// Swarm's stack label (`docker stack deploy`).
pub const STACK_NAMESPACE: &str = "com.docker.stack.namespace";

/// What building needs besides the engine's answers.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Label key prefix (`sluicegate`).
    pub prefix: &'a str,
    /// `[discovery.swarm].network`.
    pub network: Option<&'a str>,
}

/// Builds the report. `tasks` are the tasks whose desired state is `running`;
/// `stopping` are tasks that were backends and no longer are wanted, as the
/// engine shows them now (only those still `running` stay, draining).
pub fn build(
    services: &[Service],
    tasks: &[Task],
    stopping: &[Task],
    nodes: &[Node],
    ctx: &Context<'_>,
) -> SwarmReport {
    let nodes: HashMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut by_service: HashMap<&str, Vec<&Task>> = HashMap::new();
    for t in tasks.iter().chain(stopping) {
        by_service.entry(t.service_id.as_str()).or_default().push(t);
    }
    let mut report = SwarmReport {
        services: services
            .iter()
            .map(|s| service_report(s, by_service.get(s.id.as_str()), &nodes, ctx))
            .collect(),
    };
    report
        .services
        .sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    report
}

/// The labels that count: container labels with the service's laid over them.
pub fn effective_labels(s: &Service) -> Labels {
    let mut merged = s.spec.task_template.container_spec.labels.clone();
    merged.extend(s.spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged
}

/// The service name without its stack prefix (`shop_blue` → `blue`).
pub fn short_name(s: &Service) -> &str {
    let name = s.spec.name.as_str();
    s.spec
        .labels
        .get(STACK_NAMESPACE)
        .and_then(|stack| name.strip_prefix(stack.as_str())?.strip_prefix('_'))
        .filter(|short| !short.is_empty())
        .unwrap_or(name)
}

fn service_report(
    s: &Service,
    tasks: Option<&Vec<&Task>>,
    nodes: &HashMap<&str, &Node>,
    ctx: &Context<'_>,
) -> ServiceReport {
    let mut labels = effective_labels(s);
    let mut out = ServiceReport {
        id: s.id.clone(),
        name: s.spec.name.clone(),
        labelled: labels::is_candidate(&labels, ctx.prefix),
        ..ServiceReport::default()
    };
    if !out.labelled {
        return out;
    }
    // `<prefix>.enable=true` names the pool after the service, as compose does.
    labels
        .entry(COMPOSE_SERVICE.to_owned())
        .or_insert_with(|| short_name(s).to_owned());
    let wanted = match labels::parse(&labels, ctx.prefix) {
        Ok(Some(wanted)) => wanted,
        Ok(None) => {
            out.labelled = false;
            return out;
        }
        Err(e) => {
            out.skipped = Some(e.to_string());
            return out;
        }
    };
    let port = match wanted
        .port
        .map(Ok)
        .unwrap_or_else(|| target_port(s, ctx.prefix))
    {
        Ok(port) => port,
        Err(reason) => {
            out.skipped = Some(reason);
            return out;
        }
    };
    out.pool = Some(wanted.pool.as_str().to_owned());
    let stack = s.spec.labels.get(STACK_NAMESPACE).map(String::as_str);
    let rule = match (&wanted.network, ctx.network) {
        (Some(label), _) => Some((&**label, format!("label {}", key(ctx.prefix, "network")))),
        (None, Some(config)) => Some((config, "[discovery.swarm].network".to_owned())),
        (None, None) => None,
    };
    for t in tasks.into_iter().flatten() {
        let node = nodes.get(t.node_id.as_str());
        let mut task = TaskReport {
            id: t.id.clone(),
            name: task_name(&s.spec.name, t),
            node: node
                .map(|n| n.description.hostname.clone())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| t.node_id.clone()),
            state: t.status.state.clone(),
            desired_state: t.desired_state.clone(),
            weight: wanted.weight,
            health_path: wanted.health_path.as_deref().map(str::to_owned),
            protocol: wanted.protocol.map(|p| p.as_str().to_owned()),
            mirror_route: wanted.mirror.as_ref().map(|m| m.route.to_string()),
            mirror_percent: wanted.mirror.as_ref().map(|m| m.percent),
            rate_limit: wanted
                .rate_limit
                .as_ref()
                .map(|r| super::report::RateLimitReport {
                    route: r.route.to_string(),
                    rate: r.rate.to_string(),
                    burst: r.burst.as_deref().map(str::to_owned),
                    key: r.key.as_deref().map(str::to_owned),
                }),
            ..TaskReport::default()
        };
        let node_down =
            node.is_some_and(|n| matches!(n.status.state.as_str(), "down" | "disconnected"));
        let node_drain = node.is_some_and(|n| n.spec.availability == "drain");
        let wanted_running = t.desired_state == "running";
        if t.status.state != "running" {
            if !wanted_running {
                continue;
            }
            task.role = TaskRole::Waiting;
            task.reason = Some(format!(
                "task state {}; traffic once running",
                t.status.state
            ));
        } else if node_down && !wanted_running {
            continue;
        } else {
            match choose(t, rule.as_ref().map(|(n, from)| (*n, from.as_str())), stack) {
                Ok((network, ip)) => {
                    task.addr = Some(SocketAddr::new(ip, port));
                    task.network = Some(network);
                    let why = if !wanted_running {
                        Some(format!("desired state {}", t.desired_state))
                    } else if node_down {
                        Some(format!(
                            "node {} is {}",
                            task.node,
                            node.map_or("", |n| n.status.state.as_str())
                        ))
                    } else if node_drain {
                        Some(format!("node {} availability is drain", task.node))
                    } else {
                        None
                    };
                    task.role = if why.is_some() {
                        TaskRole::Draining
                    } else {
                        TaskRole::Backend
                    };
                    task.reason = why;
                }
                Err(reason) => {
                    task.role = TaskRole::Skipped;
                    task.reason = Some(reason);
                }
            }
        }
        out.tasks.push(task);
    }
    out.tasks
        .sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    out
}

/// `<service>.<slot>.<id prefix>`; global services have no slot and use the node.
fn task_name(service: &str, t: &Task) -> String {
    let id: String = t.id.chars().take(12).collect();
    if t.slot > 0 {
        format!("{service}.{}.{id}", t.slot)
    } else {
        let node: String = t.node_id.chars().take(12).collect();
        format!("{service}.{node}.{id}")
    }
}

/// The single TCP target port the service publishes.
fn target_port(s: &Service, prefix: &str) -> Result<u16, String> {
    let mut ports: Vec<u32> = s
        .spec
        .endpoint_spec
        .iter()
        .flat_map(|e| &e.ports)
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "tcp"))
        .filter_map(|p| p.target_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let port_key = key(prefix, "port");
    match ports.as_slice() {
        [one] => u16::try_from(*one)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("the service publishes target port {one}, which is not a port; add {port_key}")),
        [] => Err(format!(
            "no {port_key} label and the service publishes no port to take it from; add {port_key} (deploy.labels or labels)"
        )),
        many => Err(format!(
            "no {port_key} label and the service publishes several target ports ({}); add {port_key} to pick one",
            many.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The network and IP to reach task `t` on (see the module doc).
fn choose(
    t: &Task,
    rule: Option<(&str, &str)>,
    stack: Option<&str>,
) -> Result<(String, IpAddr), String> {
    let mut candidates: Vec<(&str, &str)> = t
        .networks_attachments
        .iter()
        .filter(|a| !a.network.spec.ingress && a.network.spec.name != "ingress")
        .filter_map(|a| Some((a.network.spec.name.as_str(), a.addresses.first()?.as_str())))
        .collect();
    candidates.sort_unstable();
    let names = || {
        let list: Vec<&str> = candidates.iter().map(|(n, _)| *n).collect();
        if list.is_empty() {
            "none".to_owned()
        } else {
            list.join(", ")
        }
    };
    let (name, addr) = match rule {
        Some((wanted, from)) => {
            let stacked = stack.map(|s| format!("{s}_{wanted}"));
            *candidates
                .iter()
                .find(|(n, _)| *n == wanted || Some(*n) == stacked.as_deref())
                .ok_or_else(|| {
                    format!("has no address on network {wanted:?} (from {from}); the task is on: {}", names())
                })?
        }
        None => match candidates.as_slice() {
            [one] => *one,
            [] => return Err("has no address on any overlay network (only ingress or none); attach the service to the gateway's network".to_owned()),
            _ => {
                return Err(format!(
                    "is on several networks ({}) and nothing says which to use; set [discovery.swarm].network or the label sluicegate.network",
                    names()
                ))
            }
        },
    };
    // `10.0.1.5/24`: the prefix length is the network's, not the task's.
    let ip = addr.split('/').next().unwrap_or("");
    let ip = ip.parse::<IpAddr>().map_err(|_| {
        format!("network {name:?} reports address {addr:?}, which is not an IP address")
    })?;
    Ok((name.to_owned(), ip))
}

#[cfg(test)]
mod tests;
