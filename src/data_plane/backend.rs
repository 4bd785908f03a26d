//! Per-backend runtime state that outlives snapshots.
//!
//! A [`BackendState`] is created once per (pool, address) by the controller's registry
//! and shared by every snapshot that contains that backend, so in-flight counts,
//! latency estimates, health flags and pooled upstream connections survive a config
//! change. Everything here is atomics: the request path never locks.
//!
//! Health (probe status, ejection, slow-start ramp) is a [`BackendHealth`] owned
//! here and driven by `crate::data_plane::health`; this module only folds it into the one
//! eligibility rule. It does not decide *which* backend to use (see `balance`).

use std::cmp;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::control_plane::config::spec::{H2Spec, Protocol};
use crate::data_plane::health::{BackendHealth, HealthStatus};
use crate::data_plane::limits::concurrency::Permits;
use crate::data_plane::pool_stats::PoolStats;
use crate::data_plane::tls::upstream::UpstreamTls;
use crate::data_plane::upstream::ConnPool;
use crate::metrics::BackendMetrics;

/// A backend as one snapshot sees it: static facts plus the shared runtime state.
#[derive(Clone, Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    /// Configured weight, 1 ..= `MAX_WEIGHT`.
    pub weight: u32,
    pub backup: bool,
    pub state: Arc<BackendState>,
    /// Metric handles of this backend in this snapshot (per route of its pool).
    pub metrics: Arc<BackendMetrics>,
}

/// Live state of one backend, shared across snapshots.
#[derive(Debug)]
pub struct BackendState {
    addr: SocketAddr,
    inflight: AtomicU32,
    /// Attempts started on this backend (including failed ones).
    requests: AtomicU64,
    /// Response bodies that ended early: the backend closed or fell silent mid-body.
    broken_streams: AtomicU64,
    /// This backend's attempts, errors and latency histogram (what the dashboard and
    /// `GET /api/v1/stats` show per backend), recorded where the pool's are.
    traffic: PoolStats,
    /// Reasons the backend is withheld from every pick, health aside: bits
    /// [`DRAINING`] and [`DOCKER_UNHEALTHY`]. One byte so eligibility stays one
    /// load for both.
    withheld: AtomicU8,
    health: BackendHealth,
    ewma: PeakEwma,
    conns: ConnPool,
    /// Cancelled when the backend was removed from the config and its
    /// `stream_close_delay` ran out: its upstream connections and tunnels close.
    closed: CancellationToken,
    /// The metric handles the last snapshot built for this backend, reused by the
    /// next one when they would be the same (registering them is most of what a
    /// rebuild of a large fleet costs with metrics on).
    metrics: ArcSwapOption<BackendMetrics>,
    /// The pool's `circuit_breaker.max_connections` for this backend.
    connection_limit: Arc<crate::data_plane::limits::concurrency::InFlight>,
}

impl BackendState {
    /// A fresh backend: healthy, not draining, no load, no latency history.
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_tls(addr, None)
    }

    /// Like [`new`](Self::new), for a backend spoken to over TLS when `tls` is given.
    pub fn with_tls(addr: SocketAddr, tls: Option<Arc<UpstreamTls>>) -> Self {
        Self::with_upstream(addr, tls, Protocol::Http1, &H2Spec::default())
    }

    /// Like [`with_tls`](Self::with_tls), speaking `protocol` (HTTP/2 with `h2`'s
    /// connection settings).
    pub fn with_upstream(
        addr: SocketAddr,
        tls: Option<Arc<UpstreamTls>>,
        protocol: Protocol,
        h2: &H2Spec,
    ) -> Self {
        let closed = CancellationToken::new();
        BackendState {
            addr,
            inflight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            broken_streams: AtomicU64::new(0),
            traffic: PoolStats::new(),
            withheld: AtomicU8::new(0),
            health: BackendHealth::new(),
            ewma: PeakEwma::new(),
            conns: ConnPool::with_protocol(addr, closed.clone(), tls, protocol, h2),
            connection_limit: Arc::default(),
            closed,
            metrics: ArcSwapOption::empty(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The one eligibility rule: healthy (gateway probes), not withheld
    /// (draining, or Docker's health check not `healthy`), not ejected.
    ///
    /// Read on every pick, so any change takes effect on the next pick. Three
    /// relaxed loads; the clock is read only while an ejection flag is set (to tell
    /// a running ejection from probation).
    #[inline]
    pub fn is_eligible(&self) -> bool {
        self.health.is_healthy()
            && self.withheld.load(Ordering::Relaxed) == 0
            && !self.health.is_ejected()
    }

    /// Draining or Docker-unhealthy: no request at all, not even in panic mode
    /// (which ignores only the gateway's own health verdicts).
    #[inline]
    pub fn is_withheld(&self) -> bool {
        self.withheld.load(Ordering::Relaxed) != 0
    }

    /// Requests (and tunnels, and streaming bodies) currently using this backend.
    #[inline]
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Attempts started on this backend since it was created (for metrics and tests).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// This backend's traffic counters (attempts, errors, latency histogram).
    pub fn traffic(&self) -> &PoolStats {
        &self.traffic
    }

    /// Health status, probe counters, ejection and ramp of this backend.
    pub fn health(&self) -> &BackendHealth {
        &self.health
    }

    /// Whether the health status is `Healthy` (ejection and draining aside).
    pub fn is_healthy(&self) -> bool {
        self.health.is_healthy()
    }

    /// Sets the health status to healthy or unhealthy (probes do this themselves; for
    /// other sources of health, like Docker's).
    pub fn set_healthy(&self, healthy: bool) {
        let status = if healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        };
        self.health.set_status(status);
    }

    /// No new requests (admin drain or a stopping container); in-flight ones finish.
    pub fn is_draining(&self) -> bool {
        self.withheld.load(Ordering::Relaxed) & DRAINING != 0
    }

    /// Drains (`true`) or undrains the backend.
    pub fn set_draining(&self, draining: bool) {
        self.set_withheld(DRAINING, draining);
    }

    /// What Docker's health check says (`true` also when the container has none,
    /// and for backends not from Docker).
    pub fn is_docker_healthy(&self) -> bool {
        self.withheld.load(Ordering::Relaxed) & DOCKER_UNHEALTHY == 0
    }

    /// Records Docker's health verdict (`starting`/`unhealthy` → `false`).
    pub fn set_docker_healthy(&self, healthy: bool) {
        self.set_withheld(DOCKER_UNHEALTHY, !healthy);
    }

    fn set_withheld(&self, bit: u8, on: bool) {
        // Every rebuild sets both bits of every backend, nearly always to what they
        // are: a plain load then spares the locked read-modify-write. Only the
        // controller task writes these bits, so the check races with no writer.
        if (self.withheld.load(Ordering::Relaxed) & bit != 0) == on {
            return;
        }
        if on {
            self.withheld.fetch_or(bit, Ordering::Relaxed);
        } else {
            self.withheld.fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// Whether an outlier ejection is running (see `health::outlier`).
    pub fn is_ejected(&self) -> bool {
        self.health.is_ejected()
    }

    /// Peak-EWMA latency estimate in nanoseconds (decayed to now).
    #[inline]
    pub fn latency_estimate_ns(&self) -> f64 {
        self.ewma.estimate_ns()
    }

    /// The latency estimate as last stored, for comparing backends on the pick path
    /// without reading the clock (see [`LatencyStamp::scaled_lt`]).
    #[inline]
    pub fn latency_stamp(&self) -> LatencyStamp {
        self.ewma.stamp()
    }

    /// Feeds one response latency, observed at `at`, into the estimate. The caller
    /// passes the clock reading it took the latency from: a reading is not free
    /// (benches/JOURNAL.md, eighth pass), and a request already takes several.
    pub fn observe_latency(&self, rtt: Duration, at: Instant) {
        self.ewma.observe(rtt, ns_at(at));
    }

    /// Closes every connection and tunnel to this backend (streams still running on
    /// a removed backend once its `stream_close_delay` ran out). Not reversible.
    pub fn close_streams(&self) {
        self.closed.cancel();
        // hyper's connection tasks end on the signal; the gateway's own idle ones
        // have no task, so they are closed here.
        self.conns.close();
    }

    /// Resolves once [`close_streams`](Self::close_streams) was called.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// The metric handles of the last snapshot if `same(handles)`, else those `make`
    /// returns (kept for the next snapshot). Called by the snapshot build only.
    pub fn metrics_or(
        &self,
        same: impl FnOnce(&BackendMetrics) -> bool,
        make: impl FnOnce() -> BackendMetrics,
    ) -> Arc<BackendMetrics> {
        if let Some(kept) = self.metrics.load_full().filter(|m| same(m)) {
            return kept;
        }
        let made = Arc::new(make());
        self.metrics.store(Some(Arc::clone(&made)));
        made
    }

    /// Pooled keep-alive connections to this backend.
    pub fn conns(&self) -> &ConnPool {
        &self.conns
    }

    /// Response bodies from this backend that ended before their end of stream.
    pub fn broken_streams(&self) -> u64 {
        self.broken_streams.load(Ordering::Relaxed)
    }

    /// Records a response body cut short (the client saw a truncated stream).
    pub fn count_broken_stream(&self) {
        self.broken_streams.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections (requests) to this backend under its pool's
    /// `circuit_breaker.max_connections` (no limit while the pool has none).
    pub fn connection_limit(&self) -> &Arc<crate::data_plane::limits::concurrency::InFlight> {
        &self.connection_limit
    }

    /// Counts one unit of load until the returned guard is dropped.
    ///
    /// The guard is meant to live as long as the response body (or tunnel), so a
    /// long SSE stream keeps counting as load while it streams.
    pub fn start_request(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InflightGuard {
            state: Arc::clone(self),
            permits: Permits::default(),
        }
    }
}

/// [`BackendState`] withheld bit: draining.
const DRAINING: u8 = 1;
/// [`BackendState`] withheld bit: Docker's health check is not `healthy`.
const DOCKER_UNHEALTHY: u8 = 2;

/// Decrements the backend's in-flight count when dropped.
#[derive(Debug)]
pub struct InflightGuard {
    state: Arc<BackendState>,
    /// The request's places under its route's and pool's `concurrency`, given
    /// back with this guard (when the body or tunnel ends).
    permits: Permits,
}

impl InflightGuard {
    /// Keeps the request's route and pool places until this guard drops.
    pub fn hold(&mut self, permits: Permits) {
        self.permits.route = permits.route;
        self.permits.pool = permits.pool;
    }

    /// Keeps the attempt's connection under the pool's circuit breaker.
    pub fn hold_connection(
        &mut self,
        permit: Option<crate::data_plane::limits::concurrency::Permit>,
    ) {
        self.permits.connection = permit;
    }

    pub fn backend(&self) -> &Arc<BackendState> {
        &self.state
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.state.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decay window of the latency estimate (tower's `peak_ewma` uses the same idea).
const EWMA_DECAY_NS: f64 = 10_000_000_000.0;
/// Estimate for a backend with no observation yet: optimistic so it gets tried.
const EWMA_DEFAULT_NS: f64 = 1_000_000.0;

/// Peak-sensitive exponentially weighted moving average of response latency.
///
/// A sample above the current estimate replaces it at once (peak); lower samples
/// decay it with a weight that depends on the time since the last update. Two racing
/// writers may lose one sample: acceptable for a load estimate, and it keeps the path
/// lock-free.
#[derive(Debug)]
struct PeakEwma {
    /// f64 bits of the estimate in nanoseconds.
    value: AtomicU64,
    /// Nanoseconds since [`epoch`] of the last update.
    stamp: AtomicU64,
}

impl PeakEwma {
    fn new() -> Self {
        PeakEwma {
            value: AtomicU64::new(EWMA_DEFAULT_NS.to_bits()),
            stamp: AtomicU64::new(now_ns()),
        }
    }

    fn estimate_ns(&self) -> f64 {
        let value = f64::from_bits(self.value.load(Ordering::Relaxed));
        let elapsed = now_ns().saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        // Decay toward zero while idle so a once-slow backend is retried eventually.
        value * (-elapsed / EWMA_DECAY_NS).exp()
    }

    fn stamp(&self) -> LatencyStamp {
        LatencyStamp {
            value_ns: f64::from_bits(self.value.load(Ordering::Relaxed)),
            at_ns: self.stamp.load(Ordering::Relaxed),
        }
    }

    fn observe(&self, rtt: Duration, now: u64) {
        let sample = rtt.as_nanos() as f64;
        let prev = f64::from_bits(self.value.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        let next = if sample > prev {
            sample
        } else {
            let w = (-elapsed / EWMA_DECAY_NS).exp();
            prev * w + sample * (1.0 - w)
        };
        self.value.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(now, Ordering::Relaxed);
    }
}

/// A peak-EWMA latency estimate as stored at its last update: `value_ns` at `at_ns`.
///
/// Its value now is `value_ns × e^(−(now − at_ns) / τ)`. Two such estimates decay by
/// the same factor from the later stamp on, so which of them is smaller does not
/// depend on `now`: comparing them needs neither a clock read nor a second `exp()`
/// (one `exp()` of the stamps' difference). That keeps `p2c`'s pick cheap.
#[derive(Clone, Copy, Debug)]
pub struct LatencyStamp {
    value_ns: f64,
    at_ns: u64,
}

impl LatencyStamp {
    /// Whether `self × a < other × b` once both are decayed to the same instant
    /// (any instant at or after both stamps: the answer is the same).
    #[inline]
    pub fn scaled_lt(self, a: f64, other: LatencyStamp, b: f64) -> bool {
        let (lhs, rhs) = (self.value_ns * a, other.value_ns * b);
        // The older estimate is decayed to the newer stamp.
        if self.at_ns <= other.at_ns {
            decayed_cmp(lhs, rhs, other.at_ns - self.at_ns) == cmp::Ordering::Less
        } else {
            decayed_cmp(rhs, lhs, self.at_ns - other.at_ns) == cmp::Ordering::Greater
        }
    }
}

/// How `older`, decayed over `elapsed_ns` by `d = e^(−x)` (`x` = `elapsed_ns` / τ),
/// compares with `newer` (both ≥ 0).
///
/// Under load both stamps are recent and `x` tiny: the bounds `1 − x ≤ d ≤
/// 1 / (1 + x)` settle the comparison without the `exp()` (a third of a p2c pick's
/// time when computed every time); only a pair within their width of a tie
/// computes it.
#[inline]
fn decayed_cmp(older: f64, newer: f64, elapsed_ns: u64) -> cmp::Ordering {
    if older < newer {
        // d ≤ 1: no need to know it.
        return cmp::Ordering::Less;
    }
    let x = decay_units(elapsed_ns);
    if older < newer * (1.0 + x) {
        cmp::Ordering::Less
    } else if older * (1.0 - x) > newer {
        cmp::Ordering::Greater
    } else {
        (older * decay_factor(elapsed_ns))
            .partial_cmp(&newer)
            .unwrap_or(cmp::Ordering::Equal)
    }
}

/// `elapsed_ns` in units of the decay's time constant τ.
#[inline]
fn decay_units(elapsed_ns: u64) -> f64 {
    elapsed_ns as f64 / EWMA_DECAY_NS
}

/// `e^(−elapsed / τ)`: how much an idle estimate shrinks over `elapsed_ns`.
#[inline]
fn decay_factor(elapsed_ns: u64) -> f64 {
    (-decay_units(elapsed_ns)).exp()
}

/// Nanoseconds since the first call in this process (monotonic).
fn now_ns() -> u64 {
    ns_at(Instant::now())
}

/// `at` as nanoseconds since the first call in this process (0 for earlier ones).
fn ns_at(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    at.saturating_duration_since(epoch).as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Arc<BackendState> {
        Arc::new(BackendState::new("127.0.0.1:1".parse().unwrap()))
    }

    #[test]
    fn guard_counts_until_dropped() {
        let s = state();
        let a = s.start_request();
        let b = s.start_request();
        assert_eq!(s.inflight(), 2);
        drop(a);
        assert_eq!(s.inflight(), 1);
        drop(b);
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn eligibility_needs_healthy_not_ejected_not_draining() {
        let s = state();
        assert!(s.is_eligible());
        s.set_draining(true);
        assert!(!s.is_eligible());
        s.set_draining(false);
        s.set_healthy(false);
        assert!(!s.is_eligible());
        s.set_healthy(true);
        assert!(s.is_eligible());
    }

    #[test]
    fn docker_health_and_draining_withhold_independently() {
        let s = state();
        s.set_docker_healthy(false);
        assert!(!s.is_eligible() && s.is_withheld() && !s.is_draining());
        s.set_draining(true);
        s.set_docker_healthy(true);
        assert!(!s.is_eligible() && s.is_draining() && s.is_docker_healthy());
        s.set_draining(false);
        assert!(s.is_eligible() && !s.is_withheld());
    }

    #[test]
    fn latency_stamps_compare_as_decayed_estimates() {
        let at = |value_ns: f64, at_ns: u64| LatencyStamp { value_ns, at_ns };
        // 100 ms stored 10 s (one τ) before 50 ms: decayed to 36.8 ms, so smaller.
        let old = at(100e6, 0);
        let new = at(50e6, 10_000_000_000);
        assert!(old.scaled_lt(1.0, new, 1.0));
        assert!(!new.scaled_lt(1.0, old, 1.0));
        // Twice the load on the old one makes it 73.6 ms: now the new one wins.
        assert!(new.scaled_lt(1.0, old, 2.0));
        // Same stamp: plain comparison, equal is not less.
        assert!(!at(5.0, 7).scaled_lt(1.0, at(5.0, 7), 1.0));
        // Hours apart: the old estimate decays to 0 without NaN or overflow.
        let ancient = at(1e12, 0);
        let recent = at(1.0, 100_000_000_000_000);
        assert!(ancient.scaled_lt(1e9, recent, 1.0));
        assert!(!recent.scaled_lt(1.0, ancient, 1e9));
    }

    #[test]
    fn latency_comparison_by_bounds_agrees_with_the_decayed_values() {
        // The bounds must decide exactly as decaying with exp() does, near ties
        // (where they cannot decide and exp() runs) and far from them.
        fastrand::seed(41);
        let reference = |x: LatencyStamp, a: f64, y: LatencyStamp, b: f64| {
            let (older, newer) = if x.at_ns <= y.at_ns { (x, y) } else { (y, x) };
            let d = (-((newer.at_ns - older.at_ns) as f64) / EWMA_DECAY_NS).exp();
            let (xv, yv) = if x.at_ns <= y.at_ns {
                (x.value_ns * d, y.value_ns)
            } else {
                (x.value_ns, y.value_ns * d)
            };
            xv * a < yv * b
        };
        for _ in 0..200_000 {
            let x = LatencyStamp {
                value_ns: 1e5 + fastrand::f64() * 1e8,
                at_ns: fastrand::u64(..100_000_000_000),
            };
            // Half the pairs are a hair from a tie once decayed (the bounds cannot
            // decide, exp() does), the rest anywhere (the bounds decide).
            let gap = fastrand::u64(..50_000_000_000);
            let at_ns = if fastrand::bool() {
                x.at_ns + gap
            } else {
                x.at_ns.saturating_sub(gap)
            };
            let d = (-(x.at_ns.abs_diff(at_ns) as f64) / EWMA_DECAY_NS).exp();
            let tie = if at_ns >= x.at_ns {
                x.value_ns * d
            } else {
                x.value_ns / d
            };
            let value_ns = if fastrand::bool() {
                tie * (1.0 + (fastrand::f64() - 0.5) * 1e-9)
            } else {
                1e5 + fastrand::f64() * 1e8
            };
            let y = LatencyStamp { value_ns, at_ns };
            let (a, b) = (1.0 + fastrand::f64(), 1.0 + fastrand::f64());
            let (a, b) = if fastrand::bool() { (a, a) } else { (a, b) };
            assert_eq!(
                x.scaled_lt(a, y, b),
                reference(x, a, y, b),
                "{x:?} {a} {y:?} {b}"
            );
            assert_eq!(
                y.scaled_lt(b, x, a),
                reference(y, b, x, a),
                "{y:?} {b} {x:?} {a}"
            );
        }
    }

    #[test]
    fn metric_handles_are_kept_while_the_same() {
        let s = state();
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            BackendMetrics::off()
        };
        let first = s.metrics_or(|_| true, make);
        let again = s.metrics_or(|_| true, make);
        assert!(Arc::ptr_eq(&first, &again));
        let changed = s.metrics_or(|_| false, make);
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(made.get(), 2);
    }

    #[test]
    fn ewma_takes_peaks_at_once() {
        let s = state();
        s.observe_latency(Duration::from_millis(50), Instant::now());
        let est = s.latency_estimate_ns();
        assert!(est > 40_000_000.0 && est <= 50_000_000.0, "{est}");
    }
}
