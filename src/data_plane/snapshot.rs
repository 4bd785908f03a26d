//! The immutable routing table every request reads.
//!
//! A [`Snapshot`] is built from a validated `Spec` off the request path (by the
//! controller) and published through one `ArcSwap`. It holds routes in precedence
//! order, each with its split over pools, and each pool with its backends and
//! prebuilt balancers. Backend runtime state (and each pool's `PoolHealth`) is
//! borrowed from the controller's registry, so it survives rebuilds.
//!
//! [`Pool::pick`] applies the pool's health policy: eligibility, backups (nginx),
//! slow-start ramps and the panic threshold (Envoy).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use crate::control_plane::config::spec::{
    BackendSpec, ConcurrencySpec, HashKey, LearnSpec, PoolHealthSpec, PoolLimitsSpec, PoolName,
    PoolSpec, RouteName, RouteSpec, Spec, Timeouts, Upgrades,
};
use crate::control_plane::config::MatchSpec;
use crate::data_plane::backend::{Backend, BackendState};
use crate::data_plane::balance::{key_hash, Balancer};
use crate::data_plane::gate::{Gate, MaintenancePage, Pause};
use crate::data_plane::health::{PoolHealth, FULL_RAMP};
use crate::data_plane::limits::concurrency::InFlight;
use crate::data_plane::limits::rate::RateTable;
use crate::data_plane::limits::Refusals;
use crate::data_plane::mirror::{Mirror, Slots};
use crate::data_plane::route::{self, RequestView, RouteIndex};
use crate::data_plane::sessions::SessionTable;
use crate::data_plane::split::{cookie_value, Split};
use crate::metrics::handles::RouteMetrics;
use crate::metrics::{BackendMetrics, PairMetrics, Registrar};

/// A routing table generation.
#[derive(Debug)]
pub struct Snapshot {
    /// Routes, most specific first.
    routes: Box<[Route]>,
    /// `routes` grouped by host, so `find` tries only routes whose host can match.
    index: RouteIndex,
    pools: Box<[Arc<Pool>]>,
    spec: Arc<Spec>,
    /// Metrics of requests no route matched (`route=""`, `pool=""`).
    unrouted: PairMetrics,
    /// The gateway's own metrics, which every handle here records into.
    metrics: Registrar,
    /// Whether any route has a [`Gate`] (paused or in maintenance): only then
    /// does a request look for one.
    gated: bool,
    /// Mirrored copies in flight, gateway-wide (passed from snapshot to snapshot).
    mirror_slots: Arc<Slots>,
}

/// A route as the request path sees it.
#[derive(Debug)]
pub struct Route {
    pub name: RouteName,
    pub matcher: MatchSpec,
    pub split: Split,
    pub retries: u32,
    pub timeouts: Timeouts,
    /// Metric handles per split entry (same order).
    pub metrics: RouteMetrics,
    /// Largest request body in bytes; `None` means no limit.
    pub max_request_body: Option<u64>,
    /// `Upgrade` protocols that may become tunnels.
    pub upgrades: Upgrades,
    /// 5xx answers that send a replayable request to another backend.
    pub retry_on_status: Box<[u16]>,
    /// Requests the limits refused (kept across snapshots by route name).
    pub refusals: Arc<Refusals>,
    /// The `rate_limit` buckets (kept across snapshots while the settings stay).
    pub rate: Option<Arc<RateTable>>,
    /// The `concurrency` count (kept across snapshots by route name; a reload
    /// applies new settings to it).
    pub in_flight: Option<Arc<InFlight>>,
    /// Paused or in maintenance (admin overrides; see `gate`).
    pub gate: Option<Gate>,
    /// Shadow traffic to another pool (see `mirror`); `None` when the route has
    /// none or copies 0 %.
    pub mirror: Option<Mirror>,
}

/// A pool as the request path sees it.
#[derive(Debug)]
pub struct Pool {
    pub name: PoolName,
    pub hash_key: Option<HashKey>,
    policy: PoolHealthSpec,
    /// What the pool speaks to its backends.
    protocol: crate::control_plane::config::spec::Protocol,
    health: Arc<PoolHealth>,
    primaries: Box<[Backend]>,
    primary_balancer: Balancer,
    backups: Box<[Backend]>,
    backup_balancer: Balancer,
    /// Retry budget and circuit breaking (their counts are in `health`).
    pub limits: PoolLimitsSpec,
}

impl Snapshot {
    /// Builds a snapshot; `state_for` supplies (and keeps) each backend's runtime state.
    /// Pools get a fresh, detached `PoolHealth` (see [`build_with`](Self::build_with)).
    pub fn build(
        spec: Arc<Spec>,
        mut state_for: impl FnMut(&PoolName, &BackendSpec) -> Arc<BackendState>,
    ) -> Snapshot {
        Snapshot::build_with(
            spec,
            |p, b| state_for(&p.name, b),
            |p| Arc::new(PoolHealth::detached(p.name.clone())),
        )
    }

    /// Builds a snapshot; `state_for` supplies each backend's runtime state and
    /// `health_for` each pool's health runtime (both kept across rebuilds by the
    /// controller). Routes that learn sessions get fresh tables (see
    /// [`build_full`](Self::build_full)).
    pub fn build_with(
        spec: Arc<Spec>,
        state_for: impl FnMut(&PoolSpec, &BackendSpec) -> Arc<BackendState>,
        health_for: impl FnMut(&PoolSpec) -> Arc<PoolHealth>,
    ) -> Snapshot {
        Snapshot::build_full(
            spec,
            None,
            &Registrar::off(),
            state_for,
            health_for,
            |_, learn| Arc::new(SessionTable::new(learn)),
        )
    }

    /// [`build_with`](Self::build_with), with `sessions_for` supplying the session
    /// table of each route with `sticky.learn_header` (kept across rebuilds by the
    /// controller, so pins survive split changes). A pool of `previous` (the
    /// snapshot being replaced) with the same name lends what its balancers can
    /// share (see [`Balancer::build_reusing`]). Metric handles register with
    /// `metrics`, the gateway's own recorder (see [`crate::metrics`]).
    pub fn build_full(
        spec: Arc<Spec>,
        previous: Option<&Snapshot>,
        metrics: &Registrar,
        mut state_for: impl FnMut(&PoolSpec, &BackendSpec) -> Arc<BackendState>,
        mut health_for: impl FnMut(&PoolSpec) -> Arc<PoolHealth>,
        mut sessions_for: impl FnMut(&RouteName, &LearnSpec) -> Arc<SessionTable>,
    ) -> Snapshot {
        let reg = metrics;
        let before: HashMap<&PoolName, &Pool> = previous
            .map(|s| s.pools.iter().map(|p| (&p.name, &**p)).collect())
            .unwrap_or_default();
        let mut by_name: HashMap<&PoolName, Arc<Pool>> = HashMap::new();
        let mut pools = Vec::with_capacity(spec.pools.len());
        for p in &spec.pools {
            // The routes whose split includes this pool: its backends count per route.
            let serves: Vec<Arc<str>> = spec
                .routes
                .iter()
                .filter(|r| r.split.iter().any(|s| s.pool == p.name))
                .map(|r| Arc::clone(&r.name.0))
                .collect();
            let backends = p
                .backends
                .iter()
                .map(|b| {
                    let state = state_for(p, b);
                    // The state is per (pool, address), so same routes ⇒ same handles.
                    let metrics = state.metrics_or(
                        |m| m.same_as(reg, &serves),
                        || BackendMetrics::new(reg.clone(), &p.name.0, b.addr, &serves),
                    );
                    Backend {
                        addr: b.addr,
                        weight: b.weight,
                        backup: b.backup,
                        state,
                        metrics,
                    }
                })
                .collect();
            let hash_key = match &p.balance {
                crate::control_plane::config::spec::Balance::Hash(key) => Some(key.clone()),
                _ => None,
            };
            let mut pool = Pool::new(
                p.name.clone(),
                &p.balance,
                hash_key,
                (p.health.clone(), health_for(p)),
                backends,
                before.get(&p.name).copied(),
            );
            pool.limits = p.limits.clone();
            pool.health()
                .in_flight()
                .configure(p.limits.concurrency.as_ref());
            // The breaker's cap per backend; its waiting is bounded by the pool's
            // pending count and the route's connect timeout, not by these.
            let cap = p.limits.breaker.map(|b| ConcurrencySpec {
                max_in_flight: b.max_connections,
                queue: 0,
                queue_timeout: Duration::ZERO,
            });
            for b in pool.backends() {
                b.state.connection_limit().configure(cap.as_ref());
            }
            pool.protocol = p.protocol;
            let pool = Arc::new(pool);
            by_name.insert(&p.name, Arc::clone(&pool));
            pools.push(pool);
        }
        // A route keeps its refusal counts across snapshots (they are counters).
        // So do its rate buckets while its `rate_limit` is unchanged.
        let routes_before: HashMap<&RouteName, &Route> = previous
            .map(|s| s.routes.iter().map(|r| (&r.name, r)).collect())
            .unwrap_or_default();
        // Copies in flight are counted gateway-wide, across snapshots.
        let mirror_slots = previous.map_or_else(Arc::default, |s| Arc::clone(&s.mirror_slots));
        let order = route::precedence_order(spec.routes.iter().map(|r| &r.matcher));
        let index = RouteIndex::build(order.iter().map(|&i| &spec.routes[i].matcher));
        let routes = order
            .into_iter()
            .map(|i| {
                let r = &spec.routes[i];
                let split: Vec<(Arc<Pool>, u32)> = r
                    .split
                    .iter()
                    // Validation guarantees every split pool exists.
                    .filter_map(|s| by_name.get(&s.pool).map(|p| (Arc::clone(p), s.weight)))
                    .collect();
                let metrics =
                    RouteMetrics::new(reg.clone(), &r.name.0, split.iter().map(|(p, _)| &p.name.0));
                let sticky = r.sticky.as_ref();
                let sessions = sticky
                    .and_then(|s| s.learn.as_ref())
                    .map(|learn| sessions_for(&r.name, learn));
                let gate = gate_of(r, previous, spec.maintenance.html.as_deref());
                let mirror = r.mirror.as_ref().filter(|m| m.percent > 0).and_then(|m| {
                    let pool = by_name.get(&m.pool)?;
                    Some(Mirror::new(
                        m,
                        Arc::clone(pool),
                        Arc::clone(&mirror_slots),
                        reg,
                    ))
                });
                Route {
                    gate,
                    mirror,
                    name: r.name.clone(),
                    matcher: r.matcher.clone(),
                    split: Split::new(split, sticky.and_then(|s| s.cookie.clone()))
                        .with_sessions(sessions),
                    retries: r.retries,
                    timeouts: r.timeouts,
                    metrics,
                    max_request_body: r.max_request_body,
                    upgrades: r.upgrades.clone(),
                    retry_on_status: r.retry_on_status.clone(),
                    refusals: routes_before
                        .get(&r.name)
                        .map_or_else(Arc::default, |before| Arc::clone(&before.refusals)),
                    rate: r.limits.rate.as_ref().map(|spec| {
                        routes_before
                            .get(&r.name)
                            .and_then(|before| before.rate.as_ref())
                            .filter(|table| table.spec() == spec)
                            .map_or_else(|| Arc::new(RateTable::new(spec)), Arc::clone)
                    }),
                    in_flight: r.limits.concurrency.as_ref().map(|spec| {
                        match routes_before
                            .get(&r.name)
                            .and_then(|b| b.in_flight.as_ref())
                        {
                            Some(kept) => {
                                kept.configure(Some(spec));
                                Arc::clone(kept)
                            }
                            None => Arc::new(InFlight::new(spec)),
                        }
                    }),
                }
            })
            .collect::<Box<[Route]>>();
        let gated = routes.iter().any(|r| r.gate.is_some());
        Snapshot {
            gated,
            mirror_slots,
            routes,
            index,
            pools: pools.into(),
            spec,
            unrouted: PairMetrics::new(reg.clone(), "".into(), "".into(), false),
            metrics: reg.clone(),
        }
    }

    /// The most specific route matching the request (the first in precedence order,
    /// found through the host index).
    #[inline]
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Route> {
        let routes = &self.routes;
        let i = self.index.find(req.host, |i| {
            route::matches_beyond_host(&routes[i].matcher, req)
        })?;
        routes.get(i)
    }

    /// Mirrored copies in flight now, gateway-wide.
    pub fn mirror_inflight(&self) -> usize {
        self.mirror_slots.inflight()
    }

    /// Whether any route is paused or in maintenance.
    #[inline]
    pub fn gated(&self) -> bool {
        self.gated
    }

    /// Wakes the requests waiting on this snapshot's paused routes, to look at the
    /// snapshot that replaced it (the controller calls it after each swap).
    pub fn wake_gates(&self) {
        for route in &self.routes {
            if let Some(Gate::Pause(p)) = &route.gate {
                p.shared.wake();
            }
        }
    }

    /// Routes in precedence order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Pools in file order.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name.as_str() == name)
    }

    /// The spec this snapshot was built from.
    pub fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }

    /// Metric handles of requests no route matched.
    pub fn unrouted(&self) -> &PairMetrics {
        &self.unrouted
    }

    /// The gateway's own metrics (a no-op registrar when metrics are off).
    pub fn metrics(&self) -> &Registrar {
        &self.metrics
    }
}

/// A route's gate: maintenance beats a pause (it answers at once); a pause keeps
/// the waiting room of the previous snapshot's pause of the same route.
/// `template`: the operator's maintenance page (`[maintenance]`), if any.
fn gate_of(r: &RouteSpec, previous: Option<&Snapshot>, template: Option<&str>) -> Option<Gate> {
    if let Some(m) = &r.maintenance {
        let template = template.unwrap_or(crate::data_plane::gate::DEFAULT_TEMPLATE);
        return Some(Gate::Maintenance(Arc::new(MaintenancePage::new(
            r.name.as_str(),
            m,
            template,
        ))));
    }
    let spec = r.pause.clone()?;
    let shared = previous
        .and_then(|s| s.routes.iter().find(|p| p.name == r.name))
        .and_then(|p| match &p.gate {
            Some(Gate::Pause(p)) => Some(Arc::clone(&p.shared)),
            _ => None,
        })
        .unwrap_or_default();
    Some(Gate::Pause(Pause { spec, shared }))
}

impl Pool {
    fn new(
        name: PoolName,
        balance: &crate::control_plane::config::spec::Balance,
        hash_key: Option<HashKey>,
        (policy, health): (PoolHealthSpec, Arc<PoolHealth>),
        backends: Vec<Backend>,
        previous: Option<&Pool>,
    ) -> Pool {
        let (backups, primaries): (Vec<_>, Vec<_>) = backends.into_iter().partition(|b| b.backup);
        let build = |backends: &[Backend], before: Option<&Balancer>| {
            Balancer::build_reusing(balance, backends, before)
        };
        Pool {
            name,
            hash_key,
            policy,
            protocol: crate::control_plane::config::spec::Protocol::Http1,
            health,
            primary_balancer: build(&primaries, previous.map(|p| &p.primary_balancer)),
            backup_balancer: build(&backups, previous.map(|p| &p.backup_balancer)),
            primaries: primaries.into(),
            backups: backups.into(),
            limits: PoolLimitsSpec::default(),
        }
    }

    /// The primaries' hash ring, when the pool hashes (for tests of rebuilds).
    #[cfg(test)]
    pub(crate) fn primary_ring(&self) -> Option<&Arc<crate::data_plane::balance::HashRing>> {
        match &self.primary_balancer {
            Balancer::Hash(ring) => Some(ring),
            _ => None,
        }
    }

    /// A pool with no backends (for unit tests of other modules).
    #[cfg(test)]
    pub fn empty_for_tests(name: &str) -> Pool {
        let name = PoolName(Arc::from(name));
        let health = Arc::new(PoolHealth::detached(name.clone()));
        Pool::new(
            name,
            &crate::control_plane::config::spec::Balance::RoundRobin,
            None,
            (PoolHealthSpec::default(), health),
            Vec::new(),
            None,
        )
    }

    /// What the pool speaks to its backends (`protocol`).
    pub fn protocol(&self) -> crate::control_plane::config::spec::Protocol {
        self.protocol
    }

    /// The pool's health settings (probe, outlier, slow start, panic, hold).
    pub fn policy(&self) -> &PoolHealthSpec {
        &self.policy
    }

    /// The pool's health runtime, shared by every snapshot's version of the pool.
    pub fn health(&self) -> &Arc<PoolHealth> {
        &self.health
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
    /// eligible at all (nginx's `backup` semantics). Ramping backends (slow start) get
    /// their share of their weight; with `panic_threshold`, see [`in_panic`](Self::in_panic).
    pub fn pick(&self, key: Option<u64>, tried: &Tried) -> Option<&Backend> {
        if let Some(threshold) = self.policy.panic_threshold {
            if self.in_panic(threshold) {
                return self.pick_in_panic(key, tried);
            }
        }
        let window = self.policy.slow_start;
        let primaries = &self.primaries;
        let picked = self.primary_balancer.pick_ramped(
            primaries,
            key,
            |i| primaries[i].state.is_eligible() && !tried.contains(&primaries[i]),
            |i| ramp(&primaries[i], window),
        );
        if let Some(i) = picked {
            return Some(&primaries[i]);
        }
        if primaries.iter().any(|b| b.state.is_eligible()) {
            // Primaries exist but were all tried: do not spill onto backups.
            return None;
        }
        let backups = &self.backups;
        self.backup_balancer
            .pick_ramped(
                backups,
                key,
                |i| backups[i].state.is_eligible() && !tried.contains(&backups[i]),
                |i| ramp(&backups[i], window),
            )
            .map(|i| &backups[i])
    }

    /// Envoy's panic mode: fewer than `threshold` % of the (non-withheld) primaries
    /// are eligible, and no backup can stand in for them. Then health is ignored
    /// and load spreads over all of them: better some errors than a few survivors
    /// crushed, or a 503 for everyone when health checks are wrong.
    ///
    /// Costs one pass over the primaries per pick, only in pools that set a threshold.
    pub fn in_panic(&self, threshold: u8) -> bool {
        let (mut total, mut eligible) = (0usize, 0usize);
        for b in self.primaries.iter().filter(|b| !b.state.is_withheld()) {
            total += 1;
            eligible += usize::from(b.state.is_eligible());
        }
        let below = eligible * 100 < usize::from(threshold) * total;
        below && (eligible > 0 || !self.backups.iter().any(|b| b.state.is_eligible()))
    }

    /// A pick that ignores health and ejection (not withheld, not `tried`).
    fn pick_in_panic(&self, key: Option<u64>, tried: &Tried) -> Option<&Backend> {
        let sets = [
            (&self.primaries, &self.primary_balancer),
            (&self.backups, &self.backup_balancer),
        ];
        sets.into_iter().find_map(|(set, balancer)| {
            balancer
                .pick(set, key, |i| {
                    !set[i].state.is_withheld() && !tried.contains(&set[i])
                })
                .map(|i| &set[i])
        })
    }

    /// When the earliest running ejection in this pool ends (held requests wake then).
    pub fn next_ejection_end(&self) -> Option<Instant> {
        self.backends()
            .filter_map(|b| b.state.health().ejected_until())
            .min()
    }
}

/// The permille of its weight `backend` gets under a slow start of `window`.
#[inline]
fn ramp(backend: &Backend, window: Option<Duration>) -> u32 {
    match window {
        None => FULL_RAMP,
        Some(window) => backend.state.health().ramp_permille(window),
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

    /// How many backends are remembered.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Forgets every attempt (after a hold wait, the backends deserve another look).
    pub fn clear(&mut self) {
        self.states.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}
