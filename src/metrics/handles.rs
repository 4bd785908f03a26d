//! Metric handles resolved when a snapshot is built, so a request only increments.
//!
//! Registering a series (building its label set, looking it up in the registry)
//! allocates; a request must not. So the snapshot builder creates, per route × pool,
//! a [`PairMetrics`] (duration histogram, retry counter, gateway answers) and, per
//! backend, a [`BackendMetrics`] (connect errors and one [`ClassCounters`] per route
//! whose split includes the pool). A request then does a few atomic adds.
//!
//! Series a config makes certain (each backend's five status classes, each pair's
//! histogram and retries, each backend's connect errors) are registered *eagerly*, so
//! they exist at 0 before the first event (`rate()` sees the first error). Series only
//! failures create (gateway answers with `backend=""`, `pool=""`, `route=""`) are
//! registered on first use, once per snapshot, through a `OnceLock`.
//!
//! Handles are registered with the gateway's own recorder (held by its
//! [`Registrar`]), never through the process's global one. With metrics off (no
//! `[admin]`), every handle is a no-op.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;
use metrics::{Counter, Histogram, Key, Level, Metadata, Recorder, SharedString};

use super::names::{self, label, CODE_CLASSES, GRPC_CODES};
use super::Recording;

/// What registrations say about their origin (the Prometheus exporter ignores it).
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// One gateway's way into its own recorder: creates handles (no-op handles when
/// metrics are off for the gateway) and counts the gateway's rare events.
#[derive(Clone, Debug, Default)]
pub struct Registrar {
    recording: Option<Arc<Recording>>,
}

impl Registrar {
    /// Records into `recording`.
    pub(crate) fn recording(recording: Arc<Recording>) -> Self {
        Registrar {
            recording: Some(recording),
        }
    }

    /// A registrar whose handles do nothing (metrics off, unit tests, benches).
    pub fn off() -> Self {
        Registrar { recording: None }
    }

    /// Whether this gateway records metrics at all.
    pub fn enabled(&self) -> bool {
        self.recording.is_some()
    }

    /// The gateway's recording, if metrics are on.
    pub(crate) fn get(&self) -> Option<&Recording> {
        self.recording.as_deref()
    }

    /// The gateway's recording, shared, if metrics are on.
    pub(crate) fn get_arc(&self) -> Option<Arc<Recording>> {
        self.recording.clone()
    }

    /// Runs `f` with this gateway's recorder as the thread's recorder, so the
    /// `metrics` macros inside record here (nothing happens when metrics are off).
    pub(crate) fn with(&self, f: impl FnOnce()) {
        if let Some(r) = &self.recording {
            metrics::with_local_recorder(&r.recorder, f);
        }
    }

    /// Whether both record into the same recorder (or both record nothing).
    fn same_recorder(&self, other: &Registrar) -> bool {
        match (&self.recording, &other.recording) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    // Labels come as a closure so a disabled registrar allocates nothing (a snapshot
    // rebuild makes six handles per backend).
    fn counter(&self, name: &'static str, labels: impl FnOnce() -> Vec<metrics::Label>) -> Counter {
        match &self.recording {
            Some(r) => r
                .recorder
                .register_counter(&Key::from_parts(name, labels()), &METADATA),
            None => Counter::noop(),
        }
    }

    fn histogram(
        &self,
        name: &'static str,
        labels: impl FnOnce() -> Vec<metrics::Label>,
    ) -> Histogram {
        match &self.recording {
            Some(r) => r
                .recorder
                .register_histogram(&Key::from_parts(name, labels()), &METADATA),
            None => Histogram::noop(),
        }
    }
}

fn lbl(key: &'static str, value: &SharedString) -> metrics::Label {
    metrics::Label::new(key, value.clone())
}

/// `requests_total` of one (route, pool, backend), one counter per status class;
/// and, for gRPC calls, `grpc_requests_total` per `grpc_code`.
#[derive(Debug)]
pub struct ClassCounters {
    reg: Registrar,
    /// route, pool, backend.
    labels: [SharedString; 3],
    counters: [OnceLock<Counter>; 5],
    /// Made at the first gRPC call (most routes carry none), each code's series
    /// registered at its first use: at most `GRPC_CODES.len()` per labels.
    grpc: OnceLock<Box<[OnceLock<Counter>; GRPC_CODES.len()]>>,
}

impl ClassCounters {
    /// Counters for these labels; `eager` registers all five classes now.
    pub fn new(reg: Registrar, labels: [SharedString; 3], eager: bool) -> Self {
        let c = ClassCounters {
            reg,
            labels,
            counters: Default::default(),
            grpc: OnceLock::new(),
        };
        // Eager registration only makes series show at 0; a disabled registrar has none.
        if eager && c.reg.enabled() {
            for i in 0..CODE_CLASSES.len() {
                c.get(i);
            }
        }
        c
    }

    fn get(&self, class: usize) -> &Counter {
        self.counters[class].get_or_init(|| {
            let [route, pool, backend] = &self.labels;
            self.reg.counter(names::REQUESTS, || {
                vec![
                    lbl(label::ROUTE, route),
                    lbl(label::POOL, pool),
                    lbl(label::BACKEND, backend),
                    metrics::Label::from_static_parts(label::CODE_CLASS, CODE_CLASSES[class]),
                ]
            })
        })
    }

    /// Counts one request answered with `status`.
    #[inline]
    pub fn increment(&self, status: StatusCode) {
        self.get(names::class_index(status)).increment(1);
    }

    /// Counts one gRPC call that ended with the code at `index` of
    /// `names::GRPC_CODES` (`proxy::grpc::code_index`; out of range counts as `other`).
    pub fn count_grpc(&self, index: usize) {
        if !self.reg.enabled() {
            return;
        }
        let index = index.min(GRPC_CODES.len() - 1);
        let slots = self.grpc.get_or_init(Default::default);
        slots[index]
            .get_or_init(|| {
                let [route, pool, backend] = &self.labels;
                self.reg.counter(names::GRPC_REQUESTS, || {
                    vec![
                        lbl(label::ROUTE, route),
                        lbl(label::POOL, pool),
                        lbl(label::BACKEND, backend),
                        metrics::Label::from_static_parts(label::GRPC_CODE, GRPC_CODES[index]),
                    ]
                })
            })
            .increment(1);
    }
}

/// The series of one mirror pool: a counter per outcome (registered on first
/// use) and the answers' duration histogram (registered at once, so a silent
/// mirror shows at 0).
#[derive(Debug)]
pub struct MirrorMetrics {
    reg: Registrar,
    pool: SharedString,
    outcomes: [OnceLock<Counter>; names::MIRROR_OUTCOMES.len()],
    duration: Histogram,
}

impl MirrorMetrics {
    /// Handles for the mirror pool `pool`.
    pub fn new(reg: Registrar, pool: &Arc<str>) -> Self {
        let pool: SharedString = Arc::clone(pool).into();
        let duration = reg.histogram(names::MIRROR_DURATION, || vec![lbl(label::POOL, &pool)]);
        MirrorMetrics {
            reg,
            pool,
            outcomes: Default::default(),
            duration,
        }
    }

    /// Counts one copy with outcome `index` (into `names::MIRROR_OUTCOMES`);
    /// `answered_in` is the time to the answer's head, when it answered.
    pub fn record(&self, index: usize, answered_in: Option<Duration>) {
        let Some(slot) = self.outcomes.get(index) else {
            return;
        };
        let counter = slot.get_or_init(|| {
            self.reg.counter(names::MIRROR_REQUESTS, || {
                vec![
                    lbl(label::POOL, &self.pool),
                    metrics::Label::from_static_parts(
                        label::OUTCOME,
                        names::MIRROR_OUTCOMES[index],
                    ),
                ]
            })
        });
        counter.increment(1);
        if let Some(d) = answered_in {
            self.duration.record(d.as_secs_f64());
        }
    }
}

/// Handles of one (route, pool) pair; `pool` is "" when no pool was chosen and both
/// are "" for requests no route matched.
#[derive(Debug)]
pub struct PairMetrics {
    reg: Registrar,
    /// route, pool.
    labels: [SharedString; 2],
    duration: OnceLock<Histogram>,
    retries: OnceLock<Counter>,
    /// Requests the gateway answered without a backend (`backend=""`).
    gateway: ClassCounters,
}

impl PairMetrics {
    /// Handles for `route` × `pool`; `eager` registers the histogram and retry
    /// counter now (the class counters of gateway answers always wait for use).
    pub fn new(reg: Registrar, route: SharedString, pool: SharedString, eager: bool) -> Self {
        let gateway =
            ClassCounters::new(reg.clone(), [route.clone(), pool.clone(), "".into()], false);
        let pair = PairMetrics {
            reg,
            labels: [route, pool],
            duration: OnceLock::new(),
            retries: OnceLock::new(),
            gateway,
        };
        if eager {
            pair.duration();
            pair.retries();
        }
        pair
    }

    fn labels(&self) -> Vec<metrics::Label> {
        let [route, pool] = &self.labels;
        vec![lbl(label::ROUTE, route), lbl(label::POOL, pool)]
    }

    fn duration(&self) -> &Histogram {
        self.duration.get_or_init(|| {
            self.reg
                .histogram(names::REQUEST_DURATION, || self.labels())
        })
    }

    fn retries(&self) -> &Counter {
        self.retries
            .get_or_init(|| self.reg.counter(names::RETRIES, || self.labels()))
    }

    /// Records one finished request: its duration, its retries, and (when no
    /// backend was tried) its status under `backend=""`.
    #[inline]
    pub fn record(
        &self,
        status: StatusCode,
        backend: Option<&ClassCounters>,
        elapsed: Duration,
        retries: u32,
    ) {
        backend.unwrap_or(&self.gateway).increment(status);
        self.duration().record(elapsed.as_secs_f64());
        if retries > 0 {
            self.retries().increment(u64::from(retries));
        }
    }

    /// Counts a gRPC call's code (see [`ClassCounters::count_grpc`]) under
    /// `backend`, or under `backend=""` when no backend was tried.
    pub fn record_grpc(&self, backend: Option<&ClassCounters>, index: usize) {
        backend.unwrap_or(&self.gateway).count_grpc(index);
    }

    /// The route label.
    pub fn route(&self) -> &SharedString {
        &self.labels[0]
    }

    /// The pool label.
    pub fn pool(&self) -> &SharedString {
        &self.labels[1]
    }

    /// The gateway's metrics these handles belong to.
    pub fn registrar(&self) -> &Registrar {
        &self.reg
    }
}

/// The pairs of one route: one per split entry (same order), and one for requests
/// the route matched but no pool took (every weight 0).
#[derive(Debug)]
pub struct RouteMetrics {
    pairs: Box<[PairMetrics]>,
    no_pool: PairMetrics,
}

impl RouteMetrics {
    /// Handles for `route` and its split's `pools`, in split order.
    pub fn new<'a>(
        reg: Registrar,
        route: &Arc<str>,
        pools: impl IntoIterator<Item = &'a Arc<str>>,
    ) -> Self {
        let name: SharedString = Arc::clone(route).into();
        let pairs = pools
            .into_iter()
            .map(|pool| PairMetrics::new(reg.clone(), name.clone(), Arc::clone(pool).into(), true))
            .collect();
        RouteMetrics {
            pairs,
            no_pool: PairMetrics::new(reg, name, "".into(), false),
        }
    }

    /// The pair of split entry `index`.
    #[inline]
    pub fn pair(&self, index: usize) -> &PairMetrics {
        self.pairs.get(index).unwrap_or(&self.no_pool)
    }

    /// The route's requests that found no pool.
    pub fn no_pool(&self) -> &PairMetrics {
        &self.no_pool
    }
}

/// Handles of one backend of one pool in one snapshot.
#[derive(Debug)]
pub struct BackendMetrics {
    reg: Registrar,
    pool: SharedString,
    addr: SharedString,
    /// `upstream_connect_errors_total{pool,backend}`.
    pub connect_errors: Counter,
    /// `requests_total` per route whose split includes the pool.
    routes: Box<[(Arc<str>, Arc<ClassCounters>)]>,
}

impl Default for BackendMetrics {
    /// Handles that do nothing.
    fn default() -> Self {
        BackendMetrics {
            reg: Registrar::off(),
            pool: "".into(),
            addr: "".into(),
            connect_errors: Counter::noop(),
            routes: Box::new([]),
        }
    }
}

impl BackendMetrics {
    /// Handles for backend `addr` of `pool`, used by `routes`.
    pub fn new(reg: Registrar, pool: &Arc<str>, addr: SocketAddr, routes: &[Arc<str>]) -> Self {
        let pool: SharedString = Arc::clone(pool).into();
        let addr: SharedString = addr.to_string().into();
        let connect_errors = reg.counter(names::CONNECT_ERRORS, || {
            vec![lbl(label::POOL, &pool), lbl(label::BACKEND, &addr)]
        });
        let routes = routes
            .iter()
            .map(|route| {
                let labels = [Arc::clone(route).into(), pool.clone(), addr.clone()];
                (
                    Arc::clone(route),
                    Arc::new(ClassCounters::new(reg.clone(), labels, true)),
                )
            })
            .collect();
        BackendMetrics {
            reg,
            pool,
            addr,
            connect_errors,
            routes,
        }
    }

    /// Whether these are the handles [`new`](Self::new) would make for `reg` and
    /// `routes` (same pool and address given): a rebuild reuses them then, instead
    /// of registering six series per backend again.
    pub fn same_as(&self, reg: &Registrar, routes: &[Arc<str>]) -> bool {
        self.reg.same_recorder(reg)
            && self.routes.len() == routes.len()
            && self
                .routes
                .iter()
                .zip(routes)
                .all(|((r, _), want)| r == want)
    }

    /// Handles that do nothing (backends built outside a snapshot: tests, benches).
    pub fn off() -> Self {
        BackendMetrics::default()
    }

    /// The `requests_total` counters of this backend under `route`.
    ///
    /// Normally a pointer comparison on the first entry. A request held across a
    /// reload may come back with a backend of a newer snapshot whose pool no longer
    /// serves its route: then the counters are registered now (rare, allocates).
    #[inline]
    pub fn responses(&self, route: &Arc<str>) -> Arc<ClassCounters> {
        let found = self
            .routes
            .iter()
            .find(|(r, _)| Arc::ptr_eq(r, route))
            .or_else(|| self.routes.iter().find(|(r, _)| r == route));
        match found {
            Some((_, counters)) => Arc::clone(counters),
            None => Arc::new(ClassCounters::new(
                self.reg.clone(),
                [
                    Arc::clone(route).into(),
                    self.pool.clone(),
                    self.addr.clone(),
                ],
                false,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_handles_do_nothing_and_never_panic() {
        let reg = Registrar::off();
        let route: Arc<str> = Arc::from("r");
        let pool: Arc<str> = Arc::from("p");
        let b = BackendMetrics::new(
            reg.clone(),
            &pool,
            "127.0.0.1:1".parse().unwrap(),
            std::slice::from_ref(&route),
        );
        b.connect_errors.increment(1);
        let pair = PairMetrics::new(reg, route.clone().into(), pool.into(), true);
        let counters = b.responses(&route);
        pair.record(StatusCode::OK, Some(&counters), Duration::from_millis(3), 1);
        pair.record(StatusCode::SERVICE_UNAVAILABLE, None, Duration::ZERO, 0);
    }

    #[test]
    fn responses_are_found_by_route_name_across_snapshots() {
        let reg = Registrar::off();
        let pool: Arc<str> = Arc::from("p");
        let built: Arc<str> = Arc::from("agents");
        let b = BackendMetrics::new(
            reg,
            &pool,
            "127.0.0.1:1".parse().unwrap(),
            std::slice::from_ref(&built),
        );
        let same = b.responses(&built);
        // Another snapshot's Arc with the same name finds the same counters.
        let other: Arc<str> = Arc::from("agents");
        assert!(Arc::ptr_eq(&same, &b.responses(&other)));
        // A route the pool does not serve gets fresh counters.
        assert!(!Arc::ptr_eq(&same, &b.responses(&Arc::from("elsewhere"))));
    }
}
