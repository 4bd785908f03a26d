//! Protection of the agents at run time (`docs/limits.md`): the retry budget of
//! a pool ([`budget`]), a route's rate limit ([`rate`]), the concurrency limit of
//! a route or pool ([`concurrency`]), and the count of every request a limit refused
//! ([`Refusals`]), exported as `sluicegate_limited_total{route,kind}` and shown by
//! `ctl status`.
//!
//! Everything here is atomics: the request path takes no lock and allocates
//! nothing to apply a limit. The state lives in `Arc`s the controller keeps
//! across snapshots (a pool's in `PoolHealth`, a route's by name), so a reload
//! does not reset a window or a count.

pub mod budget;
pub mod concurrency;
pub mod rate;

use std::sync::atomic::{AtomicU64, Ordering};

/// What a limit refused: the `kind` label of `sluicegate_limited_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Kind {
    /// A retry the pool's retry budget did not allow (not made; the request
    /// got the answer or error of its last attempt).
    RetryBudget,
    /// A request over the route's `rate_limit` (429).
    Rate,
    /// A request over the route's `concurrency.max_in_flight` (503), refused
    /// at once or after its wait in the queue.
    InFlight,
    /// A request over its pool's `concurrency.max_in_flight` (503), refused at
    /// once or after its wait in the queue.
    PoolInFlight,
    /// A request whose backend was at its pool's
    /// `circuit_breaker.max_connections`, with no pending allowed (503).
    Connections,
    /// A request refused because its pool's `circuit_breaker.max_pending`
    /// requests already waited for a connection, or its wait timed out (503).
    Pending,
}

impl Kind {
    /// Every kind, in label order.
    pub const ALL: [Kind; 6] = [
        Kind::RetryBudget,
        Kind::Rate,
        Kind::InFlight,
        Kind::PoolInFlight,
        Kind::Connections,
        Kind::Pending,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RetryBudget => "retry_budget",
            Kind::Rate => "rate",
            Kind::InFlight => "in_flight",
            Kind::PoolInFlight => "pool_in_flight",
            Kind::Connections => "max_connections",
            Kind::Pending => "max_pending",
        }
    }
}

/// Requests a route's limits refused, by kind, since the route first appeared
/// (kept across snapshots by route name).
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; Kind::ALL.len()],
}

impl Refusals {
    /// Counts one refusal of `kind`.
    #[inline]
    pub fn count(&self, kind: Kind) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals of `kind` so far.
    pub fn get(&self, kind: Kind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }
}
