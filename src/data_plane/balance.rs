//! Load balancing: choosing one backend inside one pool.
//!
//! A [`Balancer`] is built at snapshot time from the pool's backends (one for the
//! primaries, one for the backups) and picked from on the request path. Building may
//! allocate and take its time; [`Balancer::pick`] never locks and never allocates: it
//! uses only atomics, the backends' shared state and `fastrand`'s thread-local RNG.
//!
//! This module does not decide *whether* a backend may be used: the caller passes a
//! `usable(i)` predicate that applies eligibility (`BackendState::is_eligible`) and
//! excludes backends already tried by a retry. Nor does it choose the pool (that is
//! the route's split) or extract the hash key from the request (see [`key_hash`]).
//!
//! Slow start enters as a second predicate, `ramp(i)`: the permille (100 ..= 1000) of
//! its configured weight a backend gets right now. `least_conn` and `p2c` multiply it
//! into the weight; `round_robin` accepts a ramping backend's slot with that
//! probability (a rejected slot is skipped like an unusable one, so over time the
//! backend gets `ramp × weight` relative to the others); `hash` ignores it (moving keys
//! around to ramp would break their affinity).
//!
//! Cost of one pick, `n` = backends in the slice (details in each file's header):
//!
//! | policy        | all usable            | worst case (few or none usable)        |
//! |---------------|-----------------------|----------------------------------------|
//! | `round_robin` | O(1)                  | O(cycle length), cycle ≤ 65 536        |
//! | `least_conn`  | O(n) to 16, O(1) over | O(n)                                   |
//! | `p2c`         | O(1)                  | O(n)                                   |
//! | `hash`        | O(1) expected         | O(ring), ring ≤ ~200 000; O(n) if none |
//!
//! `least_conn` scans pools of up to 16 backends exactly and compares a weighted
//! random sample of 2 in larger ones (see its module doc).

mod alias;
mod hash;
mod least_conn;
mod p2c;
mod round_robin;

pub use hash::HashRing;
pub use least_conn::LeastConn;
pub use p2c::P2c;
pub use round_robin::RoundRobin;

use std::sync::Arc;

use crate::control_plane::config::spec::Balance;
use crate::data_plane::backend::Backend;
use crate::data_plane::health::FULL_RAMP;

/// The selection table of one set of backends, one variant per policy.
#[derive(Debug)]
pub enum Balancer {
    /// Smooth weighted round robin (nginx), precomputed as one cycle.
    RoundRobin(RoundRobin),
    /// Fewest in-flight requests relative to weight.
    LeastConn(LeastConn),
    /// Power of two random choices over latency × load.
    P2c(P2c),
    /// Consistent hash ring with virtual nodes; shared with the previous snapshot's
    /// pool when its backends are the same (rebuilding a large ring is most of a
    /// snapshot rebuild's time).
    Hash(Arc<HashRing>),
}

impl Balancer {
    /// Builds the selection table for `backends` (the pool's primaries OR its backups,
    /// one balancer each).
    pub fn build(policy: &Balance, backends: &[Backend]) -> Balancer {
        Balancer::build_reusing(policy, backends, None)
    }

    /// [`build`](Self::build), taking what it can from `previous`, the same pool's
    /// balancer in the last snapshot: a hash ring built for the same backends, or
    /// the points of the backends that stayed the same.
    pub fn build_reusing(
        policy: &Balance,
        backends: &[Backend],
        previous: Option<&Balancer>,
    ) -> Balancer {
        match policy {
            Balance::RoundRobin => Balancer::RoundRobin(RoundRobin::build(backends)),
            Balance::LeastConn => Balancer::LeastConn(LeastConn::build(backends)),
            Balance::P2c => Balancer::P2c(P2c::build(backends)),
            // Which request property is hashed matters to the caller, not to the ring.
            Balance::Hash(_) => Balancer::Hash(match previous {
                Some(Balancer::Hash(ring)) if ring.built_for(backends) => Arc::clone(ring),
                Some(Balancer::Hash(ring)) => Arc::new(HashRing::build_from(ring, backends)),
                _ => Arc::new(HashRing::build(backends)),
            }),
        }
    }

    /// Picks the index of a backend in `backends` (the same slice given to
    /// [`build`](Self::build)) for which `usable(i)` is true.
    ///
    /// `key` is the request's hash key (see [`key_hash`]) and is only used by
    /// [`Balancer::Hash`]; without one, the hash ring picks a random usable backend.
    /// Returns `None` when no index is usable (or the slice is empty).
    #[inline]
    pub fn pick<F: Fn(usize) -> bool>(
        &self,
        backends: &[Backend],
        key: Option<u64>,
        usable: F,
    ) -> Option<usize> {
        self.pick_ramped(backends, key, usable, |_| FULL_RAMP)
    }

    /// [`pick`](Self::pick) with slow start: `ramp(i)` is the permille of its weight
    /// backend `i` gets now ([`FULL_RAMP`] when not ramping). Called only for usable
    /// backends.
    #[inline]
    pub fn pick_ramped<F: Fn(usize) -> bool, R: Fn(usize) -> u32>(
        &self,
        backends: &[Backend],
        key: Option<u64>,
        usable: F,
        ramp: R,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(rr) => rr.pick_ramped(backends, &usable, &ramp),
            Balancer::LeastConn(lc) => lc.pick_ramped(backends, &usable, &ramp),
            Balancer::P2c(p2c) => p2c.pick_ramped(backends, &usable, &ramp),
            Balancer::Hash(ring) => ring.pick(backends, key, &usable),
        }
    }
}

/// Fixed-seed 64-bit hash of a key's bytes: FNV-1a followed by splitmix64's finaliser.
///
/// Stable across restarts, builds and platforms (no `RandomState`), so the same key
/// reaches the same backend after a restart or on another gateway replica. FNV-1a
/// alone mixes short, similar keys (`user-1`, `user-2`) poorly into the high bits; the
/// finaliser spreads every input bit over the whole word, which the ring relies on.
pub fn key_hash(bytes: &[u8]) -> u64 {
    key_hash_finish(fnv_extend(FNV_OFFSET, bytes))
}

/// FNV-1a's starting state: [`key_hash`] is `key_hash_finish(fnv_extend(FNV_OFFSET, bytes))`.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues an FNV-1a state over `bytes` (so a shared prefix is hashed once).
#[inline]
fn fnv_extend(mut h: u64, bytes: &[u8]) -> u64 {
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// splitmix64's finaliser over an FNV-1a state: the last step of [`key_hash`].
#[inline]
fn key_hash_finish(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// True when no index in `0..n` is usable.
///
/// Table-walking policies call this once after `n` misses: it turns the "whole pool
/// is down" case from a walk over the full table into O(n), while a walk that merely
/// has to skip a few unusable entries is left alone (it keeps proportions exact).
fn none_usable(n: usize, usable: impl Fn(usize) -> bool) -> bool {
    !(0..n).any(usable)
}

/// Backends `10.0.0.{i+1}:8080` with the given weights, all eligible and idle.
#[cfg(test)]
fn test_backends(weights: &[u32]) -> Vec<Backend> {
    use std::sync::Arc;

    use crate::data_plane::backend::BackendState;

    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| {
            let addr =
                std::net::SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 8080));
            Backend {
                addr,
                weight,
                backup: false,
                state: Arc::new(BackendState::new(addr)),
                metrics: Default::default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::config::spec::HashKey;

    fn all_policies() -> [Balance; 4] {
        [
            Balance::RoundRobin,
            Balance::LeastConn,
            Balance::P2c,
            Balance::Hash(HashKey::ClientIp),
        ]
    }

    #[test]
    fn key_hash_is_pinned() {
        // Golden values (cross-checked with an independent Python FNV-1a + splitmix64):
        // changing them re-maps every sticky key and ring point in every deployment.
        assert_eq!(key_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(key_hash(b"user-1"), 0xc499_b5f8_a721_df58);
        assert_eq!(key_hash(b"10.0.0.1:8080#0"), 0x5e71_d853_6458_55d8);
    }

    #[test]
    fn key_hash_spreads_similar_keys_over_high_bits() {
        // Top 4 bits of 16 000 sequential keys: each of the 16 buckets within ±10 %.
        let mut buckets = [0u32; 16];
        for k in 0..16_000 {
            buckets[(key_hash(format!("user-{k}").as_bytes()) >> 60) as usize] += 1;
        }
        for b in buckets {
            assert!((900..=1100).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn every_policy_returns_none_for_empty_or_unusable() {
        let backends = test_backends(&[1, 2, 3]);
        for policy in all_policies() {
            let empty = Balancer::build(&policy, &[]);
            assert_eq!(empty.pick(&[], Some(7), |_| true), None, "{policy:?}");
            let b = Balancer::build(&policy, &backends);
            assert_eq!(b.pick(&backends, Some(7), |_| false), None, "{policy:?}");
            assert_eq!(b.pick(&backends, None, |_| false), None, "{policy:?}");
        }
    }

    #[test]
    fn every_policy_finds_the_single_usable_backend() {
        fastrand::seed(11);
        let backends = test_backends(&[4, 1, 2, 7, 1]);
        for policy in all_policies() {
            let b = Balancer::build(&policy, &backends);
            for k in 0..200u64 {
                let key = (k % 2 == 0).then(|| key_hash(&k.to_le_bytes()));
                assert_eq!(b.pick(&backends, key, |i| i == 3), Some(3), "{policy:?}");
            }
        }
    }
}
