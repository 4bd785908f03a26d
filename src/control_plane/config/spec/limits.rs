//! The validated protection settings of pools and routes: the retry budget and
//! the per-pool circuit breaker of a pool; the rate limit and concurrency limit
//! of a route. The runtime that applies them lives in `crate::data_plane::limits`.
//!
//! Every part is optional; the default of each is "no limit", the behaviour of
//! a file without the keys.

/// Protection settings of one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolLimitsSpec {
    /// `retry_budget = { percent, min_per_second }`; `None`: retries are bounded
    /// only by each route's `retries`.
    pub retry_budget: Option<RetryBudgetSpec>,
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
