//! The validated protection settings of pools and routes: the retry budget and
//! the concurrency limit of a pool; the rate limit and concurrency limit of a
//! route. The runtime that applies them lives in `crate::data_plane::limits`.
//!
//! Every part is optional; the default of each is "no limit", the behaviour of
//! a file without the keys.

/// Protection settings of one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolLimitsSpec {
    /// `retry_budget = { percent, min_per_second }`; `None`: retries are bounded
    /// only by each route's `retries`.
    pub retry_budget: Option<RetryBudgetSpec>,
    /// `concurrency = { max_in_flight, queue, queue_timeout }`: requests (with
    /// their streams and tunnels) at once across the pool's backends.
    pub concurrency: Option<ConcurrencySpec>,
    /// `circuit_breaker = { max_connections, max_pending }`.
    pub breaker: Option<BreakerSpec>,
}

/// A pool's circuit breaker: at most `max_connections` connections (requests) to
/// each backend at once; a request whose backend is at the cap waits for one
/// (pending) while fewer than `max_pending` of the pool's requests do, for up to
/// the route's `timeouts.connect`, else gets a 503.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSpec {
    /// Connections to one backend at once (HTTP/1.1: one per request in flight;
    /// HTTP/2: streams). 1..=[`ConcurrencySpec::MAX_IN_FLIGHT`].
    pub max_connections: u32,
    /// The pool's requests waiting for a connection (0: none wait).
    pub max_pending: u32,
}

/// A bound on requests at once (`concurrency = { … }` of a route or a pool): a
/// request counts from its admission until its response body or tunnel ends.
/// One over `max_in_flight` waits in a queue of at most `queue` requests for up
/// to `queue_timeout`, else gets a 503.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConcurrencySpec {
    /// Requests at once (1..=[`ConcurrencySpec::MAX_IN_FLIGHT`]).
    pub max_in_flight: u32,
    /// Requests that may wait for a place (0: none wait; 503 at once).
    pub queue: u32,
    /// Longest wait in the queue.
    pub queue_timeout: std::time::Duration,
}

impl ConcurrencySpec {
    /// Largest `max_in_flight` accepted.
    pub const MAX_IN_FLIGHT: u32 = 1_000_000;
    /// Largest `queue` accepted.
    pub const MAX_QUEUE: u32 = 100_000;
    /// Default `queue_timeout`.
    pub const DEFAULT_QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
}

/// Retries allowed to a pool: at most `percent` % of the requests it received
/// over the last [`RetryBudgetSpec::WINDOW_SECS`] seconds, plus `min_per_second`
/// retries a second whatever the traffic (so a quiet pool can still retry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBudgetSpec {
    /// 0..=100.
    pub percent: u8,
    /// 0..=[`RetryBudgetSpec::MAX_MIN_PER_SECOND`].
    pub min_per_second: u32,
}

impl RetryBudgetSpec {
    /// The sliding window, in one-second buckets.
    pub const WINDOW_SECS: u64 = 10;
    /// Default `percent`: Envoy's default budget.
    pub const DEFAULT_PERCENT: u8 = 20;
    /// Default `min_per_second`.
    pub const DEFAULT_MIN_PER_SECOND: u32 = 3;
    /// Largest `min_per_second` accepted.
    pub const MAX_MIN_PER_SECOND: u32 = 10_000;
}

/// Protection settings of one route.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteLimitsSpec {
    /// `rate_limit = { rate, burst, key, trusted_proxies, max_keys }`.
    pub rate: Option<RateLimitSpec>,
    /// `concurrency = { max_in_flight, queue, queue_timeout }`.
    pub concurrency: Option<ConcurrencySpec>,
}

/// A token bucket per key: `rate` requests a second on average, `burst` at once.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitSpec {
    /// Requests a second (> 0).
    pub rate: f64,
    /// Bucket size (≥ 1): requests a key may make at once after a pause.
    pub burst: u32,
    /// What a bucket belongs to.
    pub key: RateKey,
    /// Buckets kept (a power of two ≥ the configured count): the memory bound.
    pub max_keys: usize,
}

impl RateLimitSpec {
    /// Default `max_keys`.
    pub const DEFAULT_MAX_KEYS: usize = 100_000;
    /// Largest `max_keys` accepted.
    pub const MAX_MAX_KEYS: usize = 1 << 24;
    /// Largest `rate` accepted (requests a second).
    pub const MAX_RATE: f64 = 1_000_000.0;
    /// Largest `burst` accepted.
    pub const MAX_BURST: u32 = 1_000_000;
}

/// What a rate limit's bucket belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateKey {
    /// The client's IP: the connection's peer, or, when the peer is one of
    /// `trusted` proxies, the right-most `X-Forwarded-For` address that is not.
    ClientIp {
        /// `trusted_proxies`: networks whose `X-Forwarded-For` is believed.
        trusted: Box<[IpNet]>,
    },
    /// The value of a request header (requests without it share one bucket).
    Header(http::HeaderName),
    /// The route as a whole: one bucket.
    Route,
}

/// An IP network (`10.0.0.0/8`, `::1/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    /// The network's address (host bits zero).
    pub addr: std::net::IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl std::fmt::Display for IpNet {
    /// `10.0.0.0/8`, `::1/128`: what `trusted_proxies` accepts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl IpNet {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}
