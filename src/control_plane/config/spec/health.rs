//! The validated health policy of a pool: active probe, passive ejection, slow start,
//! panic threshold and hold.
//!
//! Every part is optional and the default ([`PoolHealthSpec::default`]) is the
//! behaviour of a pool without any of the keys: every backend is healthy, nothing is
//! ejected, no ramp, a 503 at once when no backend is eligible. The runtime that
//! applies these settings lives in `crate::data_plane::health`.

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::HeaderValue;

/// Health settings of one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolHealthSpec {
    /// `[pools.health]`; `None`: backends are healthy unless drained.
    pub probe: Option<Arc<ProbeSpec>>,
    /// `[pools.outlier]`; `None`: real traffic never ejects.
    pub outlier: Option<OutlierSpec>,
    /// `slow_start`: ramp of a backend that became healthy.
    pub slow_start: Option<Duration>,
    /// `panic_threshold` in percent (1..=100); `None` (or 0 in the file): never panic.
    pub panic_threshold: Option<u8>,
    /// `hold`: wait for a backend instead of failing at once.
    pub hold: Option<HoldSpec>,
}

/// `[pools.health]`: one HTTP `GET` (or gRPC health check) per backend every
/// `interval`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Origin-form target, e.g. `/health`.
    pub path: PathAndQuery,
    /// `Host` header; the backend's `ip:port` when `None`.
    pub host: Option<HeaderValue>,
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// Always shorter than `interval`.
    pub timeout: Duration,
    /// Consecutive passes to turn healthy (≥ 1).
    pub rise: u32,
    /// Consecutive counted failures to turn unhealthy (≥ 1).
    pub fall: u32,
    /// Failures of a backend younger than this that never passed do not count.
    pub start_period: Duration,
    /// Statuses that pass.
    pub expect_status: StatusRange,
    /// Status before the first probe.
    pub initial: InitialHealth,
    /// `grpc = true`: the probe is a `grpc.health.v1.Health/Check` call on the
    /// pool's HTTP/2 connection (then `path` and `expect_status` are unused).
    pub grpc: Option<GrpcCheck>,
}

/// `[pools.health] grpc = true`: what the gRPC health check asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcCheck {
    /// `grpc_service`: the service whose status is asked; `""` is the server
    /// as a whole.
    pub service: String,
}

impl GrpcCheck {
    /// The longest `grpc_service` accepted, in bytes.
    pub const MAX_SERVICE: usize = 256;
}

/// Default `[pools.health]` values.
impl ProbeSpec {
    /// `path` when absent.
    pub const DEFAULT_PATH: &'static str = "/health";
    /// `interval` when absent.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
    /// The timeout default is this or half the interval, whichever is shorter.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    /// `rise` when absent.
    pub const DEFAULT_RISE: u32 = 2;
    /// `fall` when absent.
    pub const DEFAULT_FALL: u32 = 3;
}

/// The status of a backend before its first probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialHealth {
    /// No traffic until the first passing probe (one pass is enough).
    #[default]
    Unknown,
    /// Traffic at once; `fall` failures take it away.
    Healthy,
    /// No traffic until `rise` passes.
    Unhealthy,
}

impl InitialHealth {
    /// The spelling used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            InitialHealth::Unknown => "unknown",
            InitialHealth::Healthy => "healthy",
            InitialHealth::Unhealthy => "unhealthy",
        }
    }
}

/// An inclusive range of HTTP status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    /// Lowest passing status.
    pub lo: u16,
    /// Highest passing status.
    pub hi: u16,
}

impl StatusRange {
    /// 200-399: success and redirects pass, like HAProxy's and nginx's checks.
    pub const DEFAULT: StatusRange = StatusRange { lo: 200, hi: 399 };

    /// Whether `status` passes.
    pub fn contains(self, status: u16) -> bool {
        (self.lo..=self.hi).contains(&status)
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// `[pools.outlier]`: ejection by consecutive failures of real requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierSpec {
    /// Failed attempts in a row that eject (≥ 1).
    pub consecutive_failures: u32,
    /// Whether 5xx answers count as failures.
    pub count_5xx: bool,
    /// First ejection; doubled on each re-ejection.
    pub base_ejection: Duration,
    /// Cap of the doubling (≥ `base_ejection`).
    pub max_ejection: Duration,
    /// Share of the pool that may be ejected at once, 0..=100.
    pub max_ejected_percent: u8,
}

/// Default `[pools.outlier]` values.
impl OutlierSpec {
    /// `consecutive_failures` when absent.
    pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
    /// `base_ejection` when absent.
    pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(10);
    /// `max_ejection` when absent (or `base_ejection`, if longer).
    pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
    /// `max_ejected_percent` when absent.
    pub const DEFAULT_MAX_EJECTED_PERCENT: u8 = 50;
}

/// `hold = { timeout, max_queued }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldSpec {
    /// Longest one request waits, in total.
    pub timeout: Duration,
    /// Requests waiting at once per pool (≥ 1).
    pub max_queued: usize,
}

/// Default `hold` values.
impl HoldSpec {
    /// `timeout` when absent.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// `max_queued` when absent.
    pub const DEFAULT_MAX_QUEUED: usize = 1000;
}
