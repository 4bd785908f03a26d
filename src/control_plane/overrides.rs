//! Admin overrides and how they sit on top of the file.
//!
//! The file (`routes.toml`) is the base; an admin API call does not edit it but
//! records an *override*: a route's split or rate limit, a drained backend, or a backend
//! registered by an agent outside Docker (optionally with a TTL that heartbeats
//! renew). [`Overrides::merge`] lays them over a file spec to give the *effective*
//! spec the controller publishes.
//!
//! When the file changes, [`Overrides::prune`] keeps every override that still
//! applies and drops (returning a reason to log) those that do not: a split whose
//! route or one of whose pools is gone, a registration whose pool is gone or whose
//! address the file now lists itself (the file takes over), a drain whose backend is
//! gone. An override always beats the file for the value it covers, even if the
//! file's value changed; `DELETE …/split` returns a route to the file's split.
//!
//! A route's split may also have been set by a rollout: the overrides then hold the
//! rollout's record beside the split (the latest rollout per route), so the state
//! file persists the two together and the state view can say `source: rollout`. A
//! split set by hand replaces that record; a record goes with its route or pools.
//!
//! This module owns no I/O: persisting is `state_file`, applying is the controller.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::control_plane::config::spec::{
    BackendSpec, MaintenanceSpec, MirrorSpec, PauseSpec, PoolName, RateLimitSpec, RouteName,
    Source, Spec, SplitSpec,
};
use crate::control_plane::rollout_record::Rollout;

/// Identifies one backend: its pool and address.
pub(crate) type BackendKey = (PoolName, SocketAddr);

/// A backend registered through the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub weight: u32,
    /// Renewal period; `None` = until deregistered.
    pub ttl: Option<Duration>,
    /// When it lapses without a heartbeat (`None` without a TTL).
    pub expires: Option<Instant>,
}

/// Everything set through the admin API, on top of the file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    splits: BTreeMap<RouteName, Vec<SplitSpec>>,
    drains: BTreeSet<BackendKey>,
    backends: BTreeMap<BackendKey, Registered>,
    /// The latest rollout of each route whose split it explains.
    rollouts: BTreeMap<RouteName, Rollout>,
    /// Paused routes (`ctl pause`).
    pauses: BTreeMap<RouteName, PauseSpec>,
    /// Routes in maintenance (`ctl maintenance`).
    maintenance: BTreeMap<RouteName, MaintenanceSpec>,
    /// Mirrors set through the API (`ctl mirror`); they win over the file's and
    /// the labels' (percent 0 stops theirs).
    mirrors: BTreeMap<RouteName, MirrorSpec>,
    /// Rate limits set through the admin API, in place of the file's.
    rate_limits: BTreeMap<RouteName, RateLimitSpec>,
}

/// An override that no longer applies, and why (logged, shown by `plan`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// What it was, e.g. `split of route agents`.
    pub what: String,
    /// Why it no longer applies.
    pub why: String,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

impl Overrides {
    /// True when nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.splits.is_empty()
            && self.drains.is_empty()
            && self.backends.is_empty()
            && self.rollouts.is_empty()
            && self.pauses.is_empty()
            && self.maintenance.is_empty()
            && self.mirrors.is_empty()
            && self.rate_limits.is_empty()
    }

    /// Mirrors set through the API.
    pub fn mirrors(&self) -> &BTreeMap<RouteName, MirrorSpec> {
        &self.mirrors
    }

    /// Sets `route`'s mirror (the caller checked the route and the pool exist).
    pub fn set_mirror(&mut self, route: RouteName, mirror: MirrorSpec) {
        self.mirrors.insert(route, mirror);
    }

    /// Removes `route`'s mirror override (back to the file's or the labels');
    /// false when there was none.
    pub fn clear_mirror(&mut self, route: &RouteName) -> bool {
        self.mirrors.remove(route).is_some()
    }

    /// Rate limits set through the admin API, by route.
    pub fn rate_limits(&self) -> &BTreeMap<RouteName, RateLimitSpec> {
        &self.rate_limits
    }

    /// Sets `route`'s rate limit over the file's (the caller checked the route exists).
    pub fn set_rate_limit(&mut self, route: RouteName, limit: RateLimitSpec) {
        self.rate_limits.insert(route, limit);
    }

    /// Returns `route` to the file's rate limit; false when none was set.
    pub fn clear_rate_limit(&mut self, route: &RouteName) -> bool {
        self.rate_limits.remove(route).is_some()
    }

    /// Paused routes.
    pub fn pauses(&self) -> &BTreeMap<RouteName, PauseSpec> {
        &self.pauses
    }

    /// Routes in maintenance.
    pub fn maintenance(&self) -> &BTreeMap<RouteName, MaintenanceSpec> {
        &self.maintenance
    }

    /// Pauses `route` (or changes its pause); the caller checked the route exists.
    pub fn set_pause(&mut self, route: RouteName, pause: PauseSpec) {
        self.pauses.insert(route, pause);
    }

    /// Ends `route`'s pause; false when it was not paused.
    pub fn clear_pause(&mut self, route: &RouteName) -> bool {
        self.pauses.remove(route).is_some()
    }

    /// Puts `route` in maintenance (or changes its message).
    pub fn set_maintenance(&mut self, route: RouteName, m: MaintenanceSpec) {
        self.maintenance.insert(route, m);
    }

    /// Ends `route`'s maintenance; false when it was not in maintenance.
    pub fn clear_maintenance(&mut self, route: &RouteName) -> bool {
        self.maintenance.remove(route).is_some()
    }

    /// Rollout records by route.
    pub fn rollouts(&self) -> &BTreeMap<RouteName, Rollout> {
        &self.rollouts
    }

    /// Records `rollout` as the one explaining `route`'s split.
    pub fn set_rollout(&mut self, route: RouteName, rollout: Rollout) {
        self.rollouts.insert(route, rollout);
    }

    /// Forgets `route`'s rollout record (its split is someone else's now).
    pub fn clear_rollout(&mut self, route: &RouteName) -> Option<Rollout> {
        self.rollouts.remove(route)
    }

    /// The rollout running or paused on `route`, if any.
    pub fn active_rollout(&self, route: &RouteName) -> Option<&Rollout> {
        self.rollouts.get(route).filter(|r| r.phase.is_active())
    }

    /// Split overrides by route.
    pub fn splits(&self) -> &BTreeMap<RouteName, Vec<SplitSpec>> {
        &self.splits
    }

    /// Drained backends.
    pub fn drains(&self) -> &BTreeSet<BackendKey> {
        &self.drains
    }

    /// Registered backends.
    pub fn backends(&self) -> &BTreeMap<BackendKey, Registered> {
        &self.backends
    }

    /// Replaces `route`'s split (validated by the caller).
    pub fn set_split(&mut self, route: RouteName, split: Vec<SplitSpec>) {
        self.splits.insert(route, split);
    }

    /// Returns `route` to the file's split; false when it had no override.
    pub fn clear_split(&mut self, route: &RouteName) -> bool {
        self.splits.remove(route).is_some()
    }

    /// Drains (`true`) or undrains a backend; false when nothing changed.
    pub fn set_drain(&mut self, key: BackendKey, drain: bool) -> bool {
        if drain {
            self.drains.insert(key)
        } else {
            self.drains.remove(&key)
        }
    }

    /// Registers a backend or renews its registration (a heartbeat).
    pub fn register(&mut self, key: BackendKey, weight: u32, ttl: Option<Duration>, now: Instant) {
        let expires = ttl.map(|ttl| crate::clock::later(now, ttl));
        self.backends.insert(
            key,
            Registered {
                weight,
                ttl,
                expires,
            },
        );
    }

    /// Sets when `key`'s registration lapses (a replica learning another's
    /// heartbeat from the cluster store); false when it is not registered with a TTL.
    pub fn renew_until(&mut self, key: &BackendKey, at: Instant) -> bool {
        match self.backends.get_mut(key) {
            Some(reg) if reg.ttl.is_some() => {
                reg.expires = Some(at);
                true
            }
            _ => false,
        }
    }

    /// Removes a registration (and its drain); false when it was not registered.
    pub fn deregister(&mut self, key: &BackendKey) -> bool {
        let was = self.backends.remove(key).is_some();
        if was {
            self.drains.remove(key);
        }
        was
    }

    /// The earliest registration expiry, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.backends.values().filter_map(|r| r.expires).min()
    }

    /// Removes registrations whose TTL lapsed by `now`; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<BackendKey> {
        let lapsed: Vec<BackendKey> = self
            .backends
            .iter()
            .filter(|(_, r)| r.expires.is_some_and(|at| at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &lapsed {
            self.deregister(key);
        }
        lapsed
    }

    /// Drops the overrides that do not apply to `file`; returns what was dropped.
    pub fn prune(&mut self, file: &Spec) -> Vec<Dropped> {
        let mut dropped = Vec::new();
        let pool_of = |name: &PoolName| file.pools.iter().find(|p| &p.name == name);

        self.splits.retain(|route, split| {
            let what = format!("split of route {route}");
            if !file.routes.iter().any(|r| &r.name == route) {
                dropped.push(Dropped {
                    what,
                    why: "the route is no longer in the file".into(),
                });
                return false;
            }
            match split.iter().find(|s| pool_of(&s.pool).is_none()) {
                Some(gone) => {
                    dropped.push(Dropped {
                        what,
                        why: format!("pool {} is no longer in the file", gone.pool),
                    });
                    false
                }
                None => true,
            }
        });

        self.backends.retain(|(pool, addr), _| {
            let what = format!("registered backend {addr} in pool {pool}");
            let why = match pool_of(pool) {
                None => format!("pool {pool} is no longer in the file"),
                Some(p) if p.backends.iter().any(|b| b.addr == *addr) => {
                    "the file now lists it; the file's entry takes over".into()
                }
                Some(_) => return true,
            };
            dropped.push(Dropped { what, why });
            false
        });

        self.rollouts.retain(|route, r| {
            let what = format!("rollout {} of route {route}", r.id);
            if !file.routes.iter().any(|f| &f.name == route) {
                dropped.push(Dropped {
                    what,
                    why: "the route is no longer in the file".into(),
                });
                return false;
            }
            let pools = std::iter::once(&r.spec.to).chain(&r.spec.from);
            match pools
                .into_iter()
                .find(|p| !file.pools.iter().any(|f| f.name.as_str() == p.as_str()))
            {
                Some(gone) => {
                    dropped.push(Dropped {
                        what,
                        why: format!("pool {gone} is no longer in the file"),
                    });
                    false
                }
                None => true,
            }
        });

        for (kind, map) in [
            ("pause", &mut self.pauses as &mut dyn RouteKeyed),
            ("maintenance", &mut self.maintenance),
            ("rate limit", &mut self.rate_limits),
        ] {
            map.retain_routes(&mut |route: &RouteName| {
                let keep = file.routes.iter().any(|f| &f.name == route);
                if !keep {
                    dropped.push(Dropped {
                        what: format!("{kind} of route {route}"),
                        why: "the route is no longer in the file".into(),
                    });
                }
                keep
            });
        }

        self.mirrors.retain(|route, m| {
            let what = format!("mirror of route {route}");
            let why = if !file.routes.iter().any(|f| &f.name == route) {
                "the route is no longer in the file".to_owned()
            } else if pool_of(&m.pool).is_none() {
                format!("pool {} is no longer in the file", m.pool)
            } else {
                return true;
            };
            dropped.push(Dropped { what, why });
            false
        });

        let backends = &self.backends;
        self.drains.retain(|key| {
            let (pool, addr) = key;
            let exists = pool_of(pool).is_some_and(|p| p.backends.iter().any(|b| b.addr == *addr))
                || backends.contains_key(key);
            if !exists {
                dropped.push(Dropped {
                    what: format!("drain of {addr} in pool {pool}"),
                    why: "the backend is no longer in its pool".into(),
                });
            }
            exists
        });
        dropped
    }

    /// The effective spec: `file` with these overrides laid over it. Overrides that
    /// do not apply are ignored here; [`prune`](Self::prune) reports them.
    pub fn merge(&self, file: &Spec) -> Spec {
        let mut spec = file.clone();
        for route in &mut spec.routes {
            if let Some(split) = self.splits.get(&route.name) {
                route.split = split.clone();
            }
            route.pause = self.pauses.get(&route.name).cloned();
            route.maintenance = self.maintenance.get(&route.name).cloned();
            if let Some(mirror) = self.mirrors.get(&route.name) {
                route.mirror = Some(mirror.clone());
            }
            if let Some(limit) = self.rate_limits.get(&route.name) {
                route.limits.rate = Some(limit.clone());
            }
        }
        for pool in &mut spec.pools {
            let registered = self.backends.iter().filter(|((p, _), _)| *p == pool.name);
            for ((_, addr), reg) in registered {
                if pool.backends.iter().all(|b| b.addr != *addr) {
                    pool.backends.push(BackendSpec {
                        addr: *addr,
                        weight: reg.weight,
                        backup: false,
                        draining: false,
                        source: Source::Api,
                        container: None,
                    });
                }
            }
            for backend in &mut pool.backends {
                // OR: a backend Docker discovery marked draining (its container is
                // stopping) stays drained whatever the admin API says.
                backend.draining |= self.drains.contains(&(pool.name.clone(), backend.addr));
            }
        }
        spec
    }
}

/// A map keyed by route, so `prune` treats pauses and maintenance alike.
trait RouteKeyed {
    fn retain_routes(&mut self, keep: &mut dyn FnMut(&RouteName) -> bool);
}

impl<V> RouteKeyed for BTreeMap<RouteName, V> {
    fn retain_routes(&mut self, keep: &mut dyn FnMut(&RouteName) -> bool) {
        self.retain(|route, _| keep(route));
    }
}

#[cfg(test)]
mod tests;
