//! The immutable routing table every request reads.
//!
//! A [`Snapshot`] is built from a validated `Spec` off the request path (by the
//! controller) and published through one `ArcSwap`. It holds routes in precedence
//! order, each with its split over pools, and each pool with its backends and
//! prebuilt balancers. Backend runtime state is borrowed from the controller's
//! registry, so it survives rebuilds.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;

use crate::backend::{Backend, BackendState};
use crate::balance::{key_hash, Balancer};
use crate::config::spec::{BackendSpec, HashKey, PoolName, RouteName, Spec, Timeouts};
use crate::config::MatchSpec;
use crate::route::{self, RequestView};
use crate::split::{cookie_value, Split};

/// A routing table generation.
#[derive(Debug)]
pub struct Snapshot {
    /// Routes, most specific first.
    routes: Box<[Route]>,
    pools: Box<[Arc<Pool>]>,
    spec: Arc<Spec>,
}

/// A route as the request path sees it.
#[derive(Debug)]
pub struct Route {
    pub name: RouteName,
    pub matcher: MatchSpec,
    pub split: Split,
    pub retries: u32,
    pub timeouts: Timeouts,
}

/// A pool as the request path sees it.
#[derive(Debug)]
pub struct Pool {
    pub name: PoolName,
    pub hash_key: Option<HashKey>,
    primaries: Box<[Backend]>,
    primary_balancer: Balancer,
    backups: Box<[Backend]>,
    backup_balancer: Balancer,
}

impl Snapshot {
    /// Builds a snapshot; `state_for` supplies (and keeps) each backend's runtime state.
    pub fn build(
        spec: Arc<Spec>,
        mut state_for: impl FnMut(&PoolName, &BackendSpec) -> Arc<BackendState>,
    ) -> Snapshot {
        let mut by_name: HashMap<&PoolName, Arc<Pool>> = HashMap::new();
        let mut pools = Vec::with_capacity(spec.pools.len());
        for p in &spec.pools {
            let backends = p
                .backends
                .iter()
                .map(|b| Backend {
                    addr: b.addr,
                    weight: b.weight,
                    backup: b.backup,
                    state: state_for(&p.name, b),
                })
                .collect();
            let hash_key = match &p.balance {
                crate::config::spec::Balance::Hash(key) => Some(key.clone()),
                _ => None,
            };
            let pool = Arc::new(Pool::new(p.name.clone(), &p.balance, hash_key, backends));
            by_name.insert(&p.name, Arc::clone(&pool));
            pools.push(pool);
        }
        let order = route::precedence_order(spec.routes.iter().map(|r| &r.matcher));
        let routes = order
            .into_iter()
            .map(|i| {
                let r = &spec.routes[i];
                let split = r
                    .split
                    .iter()
                    // Validation guarantees every split pool exists.
                    .filter_map(|s| by_name.get(&s.pool).map(|p| (Arc::clone(p), s.weight)))
                    .collect();
                Route {
                    name: r.name.clone(),
                    matcher: r.matcher.clone(),
                    split: Split::new(split, r.sticky.as_ref().map(|s| s.cookie.clone())),
                    retries: r.retries,
                    timeouts: r.timeouts,
                }
            })
            .collect();
        Snapshot {
            routes,
            pools: pools.into(),
            spec,
        }
    }

    /// The most specific route matching the request.
    #[inline]
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| route::matches(&r.matcher, req))
    }

    /// Routes in precedence order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Pools in file order.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// The spec this snapshot was built from.
    pub fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }
}

impl Pool {
    fn new(
        name: PoolName,
        balance: &crate::config::spec::Balance,
        hash_key: Option<HashKey>,
        backends: Vec<Backend>,
    ) -> Pool {
        let (backups, primaries): (Vec<_>, Vec<_>) = backends.into_iter().partition(|b| b.backup);
        Pool {
            name,
            hash_key,
            primary_balancer: Balancer::build(balance, &primaries),
            backup_balancer: Balancer::build(balance, &backups),
            primaries: primaries.into(),
            backups: backups.into(),
        }
    }

    /// A pool with no backends (for unit tests of other modules).
    #[cfg(test)]
    pub fn empty_for_tests(name: &str) -> Pool {
        Pool::new(
            PoolName(Arc::from(name)),
            &crate::config::spec::Balance::RoundRobin,
            None,
            Vec::new(),
        )
    }

    /// Primary backends then backups.
    pub fn backends(&self) -> impl Iterator<Item = &Backend> {
        self.primaries.iter().chain(self.backups.iter())
    }

    /// The request's hash input for `balance = "hash"`, hashed with the fixed seed.
    pub fn request_key(&self, headers: &HeaderMap, client_ip: std::net::IpAddr) -> Option<u64> {
        match self.hash_key.as_ref()? {
            HashKey::Header(name) => headers.get(name).map(|v| key_hash(v.as_bytes())),
            HashKey::Cookie(name) => cookie_value(headers, name).map(|v| key_hash(v.as_bytes())),
            HashKey::ClientIp => Some(match client_ip {
                std::net::IpAddr::V4(ip) => key_hash(&ip.octets()),
                std::net::IpAddr::V6(ip) => key_hash(&ip.octets()),
            }),
        }
    }

    /// Picks an eligible backend not yet `tried`; backups only when no primary is
    /// eligible at all (nginx's `backup` semantics).
    pub fn pick(&self, key: Option<u64>, tried: &Tried) -> Option<&Backend> {
        let primaries = &self.primaries;
        let picked = self.primary_balancer.pick(primaries, key, |i| {
            primaries[i].state.is_eligible() && !tried.contains(&primaries[i])
        });
        if let Some(i) = picked {
            return Some(&primaries[i]);
        }
        if primaries.iter().any(|b| b.state.is_eligible()) {
            // Primaries exist but were all tried: do not spill onto backups.
            return None;
        }
        let backups = &self.backups;
        self.backup_balancer
            .pick(backups, key, |i| {
                backups[i].state.is_eligible() && !tried.contains(&backups[i])
            })
            .map(|i| &backups[i])
    }
}

/// Backends already attempted by one request (retries go elsewhere).
///
/// Identity is the address of the shared runtime state; nothing is allocated until a
/// first attempt fails.
#[derive(Debug, Default)]
pub struct Tried {
    states: Vec<usize>,
}

impl Tried {
    /// Remembers a failed attempt on `backend`.
    pub fn add(&mut self, backend: &Backend) {
        self.states.push(Arc::as_ptr(&backend.state) as usize);
    }

    /// Whether `backend` was already attempted.
    #[inline]
    pub fn contains(&self, backend: &Backend) -> bool {
        let id = Arc::as_ptr(&backend.state) as usize;
        self.states.contains(&id)
    }

    /// How many attempts failed so far.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}
