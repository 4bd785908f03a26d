//! The health part of one backend's runtime state: status, probe counters, passive
//! ejection and slow-start ramp, all atomics.
//!
//! A [`BackendHealth`] lives inside `BackendState` and so survives snapshot swaps.
//! Writers: the backend's probe task (status and probe counters, one writer), the
//! request path (failure streak and ejection, see `outlier`). Readers: every pick
//! (`BackendState::is_eligible`, the ramp) and, later, the admin state view and the
//! metrics, through the read accessors here.
//!
//! Times are nanoseconds since the state was created (`born`), read from
//! `tokio::time::Instant`, so paused-clock tests drive them.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Health as the active probe (or the lack of one) sees a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthStatus {
    /// A probe is configured but has not passed yet (nor failed `fall` times):
    /// no traffic.
    Unknown,
    /// Gets traffic (unless ejected or draining).
    Healthy,
    /// Failed `fall` probes in a row (or started so): no traffic until `rise` passes.
    Unhealthy,
}

impl HealthStatus {
    fn from_u8(v: u8) -> HealthStatus {
        match v {
            STATUS_HEALTHY => HealthStatus::Healthy,
            STATUS_UNHEALTHY => HealthStatus::Unhealthy,
            _ => HealthStatus::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            HealthStatus::Unknown => STATUS_UNKNOWN,
            HealthStatus::Healthy => STATUS_HEALTHY,
            HealthStatus::Unhealthy => STATUS_UNHEALTHY,
        }
    }

    /// Lower-case name for logs, `check` and the admin view.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Unknown => "unknown",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

const STATUS_UNKNOWN: u8 = 0;
const STATUS_HEALTHY: u8 = 1;
const STATUS_UNHEALTHY: u8 = 2;

/// What one active probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The backend answered with this status (pass or fail decided by `expect_status`).
    Status(u16),
    /// No TCP connection (refused, unreachable) or the HTTP handshake failed.
    ConnectFailed,
    /// No response head within the probe timeout.
    TimedOut,
    /// The connection broke while waiting for the answer.
    Broken,
    /// A gRPC health check answered with this `ServingStatus` (1 SERVING
    /// passes; 0 UNKNOWN, 2 NOT_SERVING, 3 SERVICE_UNKNOWN fail).
    GrpcServing(u8),
    /// A gRPC health check failed with this `grpc-status` (12 UNIMPLEMENTED:
    /// no health service; 5 NOT_FOUND: the service is unknown to it; …);
    /// codes above 255 are kept as 255.
    GrpcStatus(u8),
    /// A gRPC health check's answer was not a well-formed one (no
    /// `grpc-status`, a message that does not decode, not `application/grpc`).
    GrpcMalformed,
    /// A probe on an `h2c`/`h2` pool's connections found a backend that does
    /// not answer the HTTP/2 preface with HTTP/2 (an HTTP/1.1-only server).
    NotH2,
}

impl ProbeOutcome {
    /// The `ServingStatus` of a passing gRPC health check.
    pub const SERVING: u8 = 1;

    /// What the probe found, in words (the state view's `last_probe`).
    pub fn describe(self) -> String {
        match self {
            ProbeOutcome::Status(code) => format!("HTTP {code}"),
            ProbeOutcome::ConnectFailed => "connect failed".to_owned(),
            ProbeOutcome::TimedOut => "timed out".to_owned(),
            ProbeOutcome::Broken => "the connection broke before the answer".to_owned(),
            ProbeOutcome::GrpcServing(n) => match n {
                0 => "gRPC health UNKNOWN".to_owned(),
                1 => "gRPC health SERVING".to_owned(),
                2 => "gRPC health NOT_SERVING".to_owned(),
                3 => "gRPC health SERVICE_UNKNOWN".to_owned(),
                n => format!("gRPC health status {n} (not SERVING)"),
            },
            ProbeOutcome::GrpcStatus(code) => {
                let why = match code {
                    12 => " UNIMPLEMENTED: the backend has no grpc.health.v1.Health service",
                    5 => " NOT_FOUND: the backend does not know the grpc_service asked about",
                    14 => " UNAVAILABLE",
                    4 => " DEADLINE_EXCEEDED",
                    13 => " INTERNAL",
                    2 => " UNKNOWN",
                    _ => "",
                };
                format!("gRPC health check failed: grpc-status {code}{why}")
            }
            ProbeOutcome::GrpcMalformed => {
                "not a gRPC health answer (no grpc-status, or a message that does not decode)"
                    .to_owned()
            }
            ProbeOutcome::NotH2 => {
                "the backend does not speak HTTP/2 (its answer to the HTTP/2 preface is not HTTP/2)"
                    .to_owned()
            }
        }
    }
}

/// The last probe of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// When it finished.
    pub at: Instant,
    /// What it found.
    pub outcome: ProbeOutcome,
    /// Whether it counted as a pass.
    pub passed: bool,
}

/// Permille of the configured weight a fully ramped backend gets.
pub const FULL_RAMP: u32 = 1000;
/// Permille a backend starts its slow-start ramp at (~10 %).
pub const RAMP_START: u32 = 100;

/// Live health of one backend. See the module header for who writes what.
#[derive(Debug)]
pub struct BackendHealth {
    born: Instant,
    status: AtomicU8,
    // Active probe; written by the backend's one probe task.
    pub(super) probe_passes: AtomicU32,
    pub(super) probe_failures: AtomicU32,
    pub(super) passed_once: AtomicBool,
    /// `ProbeOutcome` packed by `pack_outcome`; 0 = no probe yet.
    last_probe: AtomicU32,
    last_probe_at: AtomicU64,
    // Passive ejection; written by the request path (see `outlier`).
    pub(super) failures: AtomicU32,
    /// Set from an ejection until a probation request decides; `ejected_until` says
    /// whether the ejection is still running (then no traffic) or over (probation).
    pub(super) ejected: AtomicBool,
    pub(super) ejected_until: AtomicU64,
    /// Ejections since the last successful probation: the next lasts base × 2^level.
    pub(super) ejection_level: AtomicU32,
    pub(super) ejections_total: AtomicU64,
    // Slow start: 1 + when the current ramp began; 0 = not ramping.
    ramp_since: AtomicU64,
}

impl BackendHealth {
    /// A healthy, never-probed, never-ejected backend.
    pub fn new() -> Self {
        BackendHealth {
            born: Instant::now(),
            status: AtomicU8::new(STATUS_HEALTHY),
            probe_passes: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
            passed_once: AtomicBool::new(false),
            last_probe: AtomicU32::new(0),
            last_probe_at: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            ejected_until: AtomicU64::new(0),
            ejection_level: AtomicU32::new(0),
            ejections_total: AtomicU64::new(0),
            ramp_since: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since this state was created.
    pub(super) fn now(&self) -> u64 {
        let ns = Instant::now()
            .saturating_duration_since(self.born)
            .as_nanos();
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    fn instant(&self, ns: u64) -> Instant {
        self.born + Duration::from_nanos(ns)
    }

    /// When this backend's state was created (the reference of `start_period`).
    pub fn born(&self) -> Instant {
        self.born
    }

    /// Active-probe status (`Healthy` when the pool has no probe).
    #[inline]
    pub fn status(&self) -> HealthStatus {
        HealthStatus::from_u8(self.status.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn is_healthy(&self) -> bool {
        self.status.load(Ordering::Relaxed) == STATUS_HEALTHY
    }

    /// Sets the status; returns the previous one. Turning healthy from anything else
    /// starts a slow-start ramp (used only if the pool has `slow_start`).
    pub fn set_status(&self, status: HealthStatus) -> HealthStatus {
        let prev = HealthStatus::from_u8(self.status.swap(status.as_u8(), Ordering::Relaxed));
        if status == HealthStatus::Healthy && prev != HealthStatus::Healthy {
            self.start_ramp();
        }
        prev
    }

    /// Whether an ejection is running now (expired ejections are probation: eligible).
    ///
    /// Cheap when not ejected: one relaxed load; the clock is read only while the
    /// ejected flag is set.
    #[inline]
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
            && self.now() < self.ejected_until.load(Ordering::Relaxed)
    }

    /// The end of the running ejection, if one is running.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.is_ejected()
            .then(|| self.instant(self.ejected_until.load(Ordering::Relaxed)))
    }

    /// The ejection ended but no request has decided yet: the next outcome either
    /// clears it (success) or ejects again for twice as long (failure).
    pub fn in_probation(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
            && self.now() >= self.ejected_until.load(Ordering::Relaxed)
    }

    /// Ejections of this backend since it was created (for metrics).
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// Ejections since the last successful probation (the doubling exponent).
    pub fn ejection_level(&self) -> u32 {
        self.ejection_level.load(Ordering::Relaxed)
    }

    /// Failed attempts of real traffic in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Passing probes in a row.
    pub fn probe_passes(&self) -> u32 {
        self.probe_passes.load(Ordering::Relaxed)
    }

    /// Counted failing probes in a row (failures inside `start_period` do not count).
    pub fn probe_failures(&self) -> u32 {
        self.probe_failures.load(Ordering::Relaxed)
    }

    /// The most recent probe, if any ran.
    pub fn last_probe(&self) -> Option<ProbeResult> {
        let packed = self.last_probe.load(Ordering::Relaxed);
        let (outcome, passed) = unpack_outcome(packed)?;
        let at = self.instant(self.last_probe_at.load(Ordering::Relaxed));
        Some(ProbeResult {
            at,
            outcome,
            passed,
        })
    }

    pub(super) fn store_last_probe(&self, outcome: ProbeOutcome, passed: bool) {
        self.last_probe_at.store(self.now(), Ordering::Relaxed);
        self.last_probe
            .store(pack_outcome(outcome, passed), Ordering::Relaxed);
    }

    /// Starts (or restarts) the slow-start ramp now.
    pub fn start_ramp(&self) {
        self.ramp_since
            .store(self.now().saturating_add(1), Ordering::Relaxed);
    }

    /// Share of its configured weight the backend gets now, in permille
    /// ([`RAMP_START`] ..= [`FULL_RAMP`]), ramping linearly over `window`.
    ///
    /// One relaxed load when not ramping; the clock is read only during a ramp, and the
    /// first call after the ramp ends clears it.
    #[inline]
    pub fn ramp_permille(&self, window: Duration) -> u32 {
        let since = self.ramp_since.load(Ordering::Relaxed);
        if since == 0 {
            return FULL_RAMP;
        }
        let elapsed = self.now().saturating_add(1).saturating_sub(since);
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX).max(1);
        if elapsed >= window_ns {
            // Lost race with a new ramp start is harmless: that ramp restarts later.
            let _ =
                self.ramp_since
                    .compare_exchange(since, 0, Ordering::Relaxed, Ordering::Relaxed);
            return FULL_RAMP;
        }
        let span = u64::from(FULL_RAMP - RAMP_START);
        // elapsed < window_ns, so the quotient is < span and fits u32.
        let gained = (u128::from(elapsed) * u128::from(span) / u128::from(window_ns)) as u32;
        RAMP_START + gained
    }
}

impl Default for BackendHealth {
    fn default() -> Self {
        BackendHealth::new()
    }
}

/// Bits: 0-15 status code, 16-19 kind (1-7), 20 passed. 0 means "none".
fn pack_outcome(outcome: ProbeOutcome, passed: bool) -> u32 {
    let (kind, code) = match outcome {
        ProbeOutcome::Status(code) => (1, code),
        ProbeOutcome::ConnectFailed => (2, 0),
        ProbeOutcome::TimedOut => (3, 0),
        ProbeOutcome::Broken => (4, 0),
        ProbeOutcome::GrpcServing(n) => (5, u16::from(n)),
        ProbeOutcome::GrpcStatus(n) => (6, u16::from(n)),
        ProbeOutcome::GrpcMalformed => (7, 0),
        ProbeOutcome::NotH2 => (8, 0),
    };
    u32::from(code) | (kind << 16) | (u32::from(passed) << 20)
}

fn unpack_outcome(packed: u32) -> Option<(ProbeOutcome, bool)> {
    let code = (packed & 0xffff) as u16;
    let outcome = match (packed >> 16) & 0xf {
        1 => ProbeOutcome::Status(code),
        2 => ProbeOutcome::ConnectFailed,
        3 => ProbeOutcome::TimedOut,
        4 => ProbeOutcome::Broken,
        5 => ProbeOutcome::GrpcServing(u8::try_from(code).unwrap_or(u8::MAX)),
        6 => ProbeOutcome::GrpcStatus(u8::try_from(code).unwrap_or(u8::MAX)),
        7 => ProbeOutcome::GrpcMalformed,
        8 => ProbeOutcome::NotH2,
        _ => return None,
    };
    Some((outcome, packed & (1 << 20) != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_from_ten_percent_to_full() {
        let h = BackendHealth::new();
        let window = Duration::from_secs(30);
        assert_eq!(h.ramp_permille(window), FULL_RAMP, "no ramp before healthy");
        h.set_status(HealthStatus::Unhealthy);
        h.set_status(HealthStatus::Healthy);
        assert_eq!(h.ramp_permille(window), RAMP_START);
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(h.ramp_permille(window), 550);
        tokio::time::advance(Duration::from_secs(12)).await;
        assert_eq!(h.ramp_permille(window), 910);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(h.ramp_permille(window), FULL_RAMP);
        // Ended ramps are cleared, so staying healthy never ramps again.
        h.set_status(HealthStatus::Healthy);
        assert_eq!(h.ramp_permille(window), FULL_RAMP);
    }

    #[test]
    fn last_probe_round_trips() {
        let h = BackendHealth::new();
        assert_eq!(h.last_probe(), None);
        for (outcome, passed) in [
            (ProbeOutcome::Status(204), true),
            (ProbeOutcome::Status(503), false),
            (ProbeOutcome::ConnectFailed, false),
            (ProbeOutcome::TimedOut, false),
            (ProbeOutcome::Broken, false),
            (ProbeOutcome::GrpcServing(1), true),
            (ProbeOutcome::GrpcServing(2), false),
            (ProbeOutcome::GrpcStatus(12), false),
            (ProbeOutcome::GrpcMalformed, false),
            (ProbeOutcome::NotH2, false),
        ] {
            h.store_last_probe(outcome, passed);
            let last = h.last_probe().expect("stored");
            assert_eq!((last.outcome, last.passed), (outcome, passed));
        }
    }
}
