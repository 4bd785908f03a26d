//! Admin writes: check against the running config, persist, publish, answer.
//!
//! Each write is checked with the file's rules (`config::validate`) and against what
//! is running (the route, pool or backend must exist), applied to a *copy* of the
//! overrides, persisted, and only then made current and published — so a write the
//! state file could not record is refused rather than lost at the next restart. A
//! write that changes nothing visible (a heartbeat) neither rewrites the state file
//! nor rebuilds the snapshot. While a rollout runs on a route, only the rollout
//! manager may change its split; a hand-made split replaces a finished rollout's
//! record.

use std::net::SocketAddr;

use tokio::time::Instant;

use super::{Change, RolloutSplit, Task, Written};
use crate::control_plane::config::spec::{PoolName, PoolSpec, RouteName, Source};
use crate::control_plane::config::validate::{validate_backend, validate_mirror, validate_split};
use crate::control_plane::controller::{state_view, Refusal};
use crate::control_plane::events::By;
use crate::control_plane::overrides::Overrides;
use crate::control_plane::rollout_record::Weight;
use crate::control_plane::state_file::Persisted;

impl Task {
    /// Applies one admin write; the answer is the changed part of the state.
    /// With `[cluster]` it goes to the shared store first (see `cluster`): on a
    /// version conflict the write is prepared again on what the store holds.
    pub(super) async fn change(&mut self, change: Change) -> Result<Written, Refusal> {
        let by = match change {
            Change::Rollout { .. } => By::Rollout,
            _ => By::Api,
        };
        if self.cluster.is_none() {
            let (next, answer) = self.prepare(&change)?;
            self.commit(next, by).await?;
            return Ok(self.answer(answer));
        }
        let driving = match &change {
            Change::Rollout { record, .. } => Some(record.id.clone()),
            _ => None,
        };
        for _ in 0..super::cluster::MAX_TRIES {
            let (next, answer) = self.prepare(&change)?;
            let leasing = driving
                .as_deref()
                .map_or(super::cluster::Leasing::Keep, super::cluster::Leasing::Step);
            match self.commit_shared(next, by, leasing).await? {
                super::cluster::Written::Done => return Ok(self.answer(answer)),
                super::cluster::Written::Stale => self.refresh().await?,
            }
        }
        Err(Refusal::conflict(
            "cluster",
            format!(
                "other replicas kept changing the shared state while this write was tried {} times; nothing was changed, try again",
                super::cluster::MAX_TRIES
            ),
        ))
    }

    /// The overrides after `change`, prepared on those in force, and what to
    /// answer; nothing is changed yet.
    fn prepare(&self, change: &Change) -> Result<(Overrides, Answer), Refusal> {
        let mut next = self.overrides.clone();
        let answer = match change {
            Change::SetSplit { route, weights } => {
                let mut weights = weights.clone();
                let route = self.route(route)?;
                self.refuse_during_rollout(&route)?;
                next.clear_rollout(&route);
                self.order_like_file(&route, &mut weights);
                let pools: Vec<&str> = self.file.pools.iter().map(|p| p.name.as_str()).collect();
                let split = validate_split(&weights, &pools).map_err(Refusal::Invalid)?;
                tracing::info!(%route, ?weights, "split set through the admin API");
                next.set_split(route.clone(), split);
                Answer::Route(route)
            }
            Change::ClearSplit { route } => {
                let route = self.route(route)?;
                self.refuse_during_rollout(&route)?;
                next.clear_rollout(&route);
                if next.clear_split(&route) {
                    tracing::info!(%route, "split override removed: back to the file's split");
                }
                Answer::Route(route)
            }
            Change::Drain { pool, addr, action } => {
                let pool = self.pool(pool)?.name.clone();
                let addr = parse_addr(addr)?;
                let running = self.controller.backend_state(&pool, addr).is_some();
                if !running {
                    return Err(not_found(
                        "addr",
                        format!("pool {pool} has no backend {addr}"),
                    ));
                }
                if next.set_drain((pool.clone(), addr), action.draining()) {
                    let verb = if action.draining() {
                        "drained"
                    } else {
                        "undrained"
                    };
                    tracing::info!(%pool, backend = %addr, "backend {verb} through the admin API");
                }
                Answer::Backend(pool, addr)
            }
            Change::Register { pool, body } => {
                let pool = self.pool(pool)?;
                let (backend, ttl) = validate_backend(body).map_err(Refusal::Invalid)?;
                match listed(pool, backend.addr) {
                    Some(Source::Docker) => return Err(conflict(format!(
                        "{} is a backend of pool {} found by Docker discovery; register only backends nothing else lists",
                        backend.addr, pool.name
                    ))),
                    Some(_) => return Err(conflict(format!(
                        "{} is a backend of pool {} in the config file; register only backends the file does not list",
                        backend.addr, pool.name
                    ))),
                    None => {}
                }
                let key = (pool.name.clone(), backend.addr);
                if !next.backends().contains_key(&key) {
                    tracing::info!(pool = %key.0, backend = %key.1, ?ttl, "backend registered through the admin API");
                }
                next.register(key.clone(), backend.weight, ttl, Instant::now());
                Answer::Backend(key.0, key.1)
            }
            Change::Deregister { pool, addr } => {
                let pool = self.pool(pool)?;
                let addr = parse_addr(addr)?;
                match listed(pool, addr) {
                    Some(Source::Docker) => {
                        return Err(conflict(format!(
                            "{addr} comes from Docker discovery; stop its container (or drain it)"
                        )))
                    }
                    Some(_) => {
                        return Err(conflict(format!(
                            "{addr} comes from the config file; remove it there (or drain it)"
                        )))
                    }
                    None => {}
                }
                let key = (pool.name.clone(), addr);
                if !next.deregister(&key) {
                    return Err(not_found(
                        "addr",
                        format!("{addr} is not registered in pool {}", key.0),
                    ));
                }
                tracing::info!(pool = %key.0, backend = %addr, "backend deregistered through the admin API");
                Answer::Gone(key.0, addr)
            }
            Change::Pause { route, pause } => {
                let route = self.route(route)?;
                match pause {
                    Some(pause) => {
                        tracing::info!(%route, max = ?pause.max, max_queued = pause.max_queued, "route paused through the admin API");
                        next.set_pause(route.clone(), pause.clone());
                    }
                    None => {
                        if next.clear_pause(&route) {
                            tracing::info!(%route, "route resumed through the admin API");
                        }
                    }
                }
                Answer::Route(route)
            }
            Change::Mirror { route, mirror } => {
                let route = self.route(route)?;
                match mirror {
                    Some(raw) => {
                        let pools: Vec<&str> =
                            self.base.pools.iter().map(|p| p.name.as_str()).collect();
                        let m = validate_mirror(raw, &pools).map_err(Refusal::Invalid)?;
                        tracing::info!(%route, pool = %m.pool, percent = m.percent, "mirror set through the admin API");
                        next.set_mirror(route.clone(), m);
                    }
                    None => {
                        if next.clear_mirror(&route) {
                            tracing::info!(%route, "mirror override removed: back to the file's (or labels') mirror");
                        }
                    }
                }
                Answer::Route(route)
            }
            Change::Maintenance { route, maintenance } => {
                let route = self.route(route)?;
                match maintenance {
                    Some(m) => {
                        tracing::info!(%route, retry_after = m.retry_after, "route in maintenance through the admin API");
                        next.set_maintenance(route.clone(), m.clone());
                    }
                    None => {
                        if next.clear_maintenance(&route) {
                            tracing::info!(%route, "route out of maintenance through the admin API");
                        }
                    }
                }
                Answer::Route(route)
            }
            Change::RateLimit { route, limit } => {
                let route = self.route(route)?;
                match limit {
                    Some(limit) => {
                        tracing::info!(%route, rate = limit.rate, burst = limit.burst, "rate limit set through the admin API");
                        next.set_rate_limit(route.clone(), limit.clone());
                    }
                    None => {
                        if next.clear_rate_limit(&route) {
                            tracing::info!(%route, "rate limit back to the file's");
                        }
                    }
                }
                Answer::Route(route)
            }
            Change::Rollout {
                record,
                split,
                expect,
            } => {
                let route = self.route(&record.spec.route)?;
                if let Some(other) = next.active_rollout(&route) {
                    if other.id != record.id {
                        return Err(Refusal::conflict(
                            "route",
                            format!(
                                "rollout {} is {} on route {route}",
                                other.id,
                                other.phase.as_str()
                            ),
                        ));
                    }
                }
                if let Some(expect) = expect {
                    if &self.running_split(&route) != expect {
                        return Err(Refusal::conflict(
                            "route",
                            format!("the split of route {route} changed while the rollout was starting; try again"),
                        ));
                    }
                }
                match split {
                    RolloutSplit::Set(weights) => {
                        let pools: Vec<&str> =
                            self.file.pools.iter().map(|p| p.name.as_str()).collect();
                        let split = validate_split(weights, &pools).map_err(Refusal::Invalid)?;
                        next.set_split(route.clone(), split);
                    }
                    RolloutSplit::File => {
                        next.clear_split(&route);
                    }
                    RolloutSplit::Keep => {}
                }
                next.set_rollout(route.clone(), (**record).clone());
                Answer::Route(route)
            }
        };
        Ok((next, answer))
    }

    /// A hand-made split change while a rollout owns the route is refused (409).
    fn refuse_during_rollout(&self, route: &RouteName) -> Result<(), Refusal> {
        match self.overrides.active_rollout(route) {
            Some(r) => Err(Refusal::conflict(
                "route",
                format!(
                    "rollout {} is {} on route {route}; abort it first (`sluicegate ctl rollout abort {}`) or let it finish",
                    r.id,
                    r.phase.as_str(),
                    r.id
                ),
            )),
            None => Ok(()),
        }
    }

    /// The route's split in the running snapshot.
    fn running_split(&self, route: &RouteName) -> Vec<Weight> {
        let snapshot = self.controller.shared.load();
        snapshot
            .spec()
            .routes
            .iter()
            .find(|r| &r.name == route)
            .map(|r| {
                r.split
                    .iter()
                    .map(|s| Weight {
                        pool: s.pool.to_string(),
                        weight: s.weight,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Persists `next` if what would be on disk changed, makes it current, and
    /// publishes if the effective spec changed.
    async fn commit(&mut self, next: Overrides, by: By) -> Result<(), Refusal> {
        let visible =
            Persisted::from_overrides(&next) != Persisted::from_overrides(&self.overrides);
        if visible {
            self.persist(&next).map_err(Refusal::Persist)?;
        }
        self.overrides = next;
        if visible {
            self.publish(by).await;
        }
        Ok(())
    }

    fn answer(&self, answer: Answer) -> Written {
        match answer {
            Answer::Route(route) => Written::Route(
                state_view::route_of(&self.controller, &self.file, &self.overrides, &route)
                    .map(Box::new),
            ),
            Answer::Backend(pool, addr) => {
                let backend =
                    state_view::backend_of(&self.controller, &self.overrides, &pool, addr);
                Written::Backend { pool, backend }
            }
            Answer::Gone(pool, addr) => Written::Removed { pool, addr },
        }
    }

    /// The route named in the URL; routes come from the file only.
    fn route(&self, name: &str) -> Result<RouteName, Refusal> {
        match self.file.routes.iter().find(|r| r.name.as_str() == name) {
            Some(r) => Ok(r.name.clone()),
            None => {
                let known: Vec<&str> = self.file.routes.iter().map(|r| r.name.as_str()).collect();
                Err(not_found(
                    "route",
                    format!("no route named {name:?}; routes: {}", known.join(", ")),
                ))
            }
        }
    }

    /// Sorts API weights (a JSON object has no order) like the route's file split,
    /// other pools after, by name, so the state shows a stable, familiar order.
    fn order_like_file(&self, route: &RouteName, weights: &mut [(String, i64)]) {
        let file_split = self.file.routes.iter().find(|r| &r.name == route);
        let rank = |pool: &str| {
            file_split
                .and_then(|r| r.split.iter().position(|s| s.pool.as_str() == pool))
                .unwrap_or(usize::MAX)
        };
        weights.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    }

    /// The pool named in the URL, as the file and Docker discovery define it
    /// (without admin-registered backends).
    fn pool(&self, name: &str) -> Result<&PoolSpec, Refusal> {
        self.base
            .pools
            .iter()
            .find(|p| p.name.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.base.pools.iter().map(|p| p.name.as_str()).collect();
                not_found(
                    "pool",
                    format!("no pool named {name:?}; pools: {}", known.join(", ")),
                )
            })
    }
}

/// Which part of the state an answer shows.
enum Answer {
    Route(RouteName),
    Backend(PoolName, SocketAddr),
    Gone(PoolName, SocketAddr),
}

/// Who lists `addr` in `pool` apart from the admin API, if anyone.
fn listed(pool: &PoolSpec, addr: SocketAddr) -> Option<Source> {
    pool.backends
        .iter()
        .find(|b| b.addr == addr)
        .map(|b| b.source)
}

fn parse_addr(addr: &str) -> Result<SocketAddr, Refusal> {
    addr.parse().map_err(|_| {
        Refusal::invalid(
            "addr",
            format!("{addr:?} is not an ip:port address; write e.g. \"10.0.0.5:9001\""),
        )
    })
}

fn not_found(path: &str, message: String) -> Refusal {
    Refusal::not_found(path, message)
}

fn conflict(message: String) -> Refusal {
    Refusal::conflict("addr", message)
}
