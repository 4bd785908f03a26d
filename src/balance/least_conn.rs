//! Least connections: the usable backend with the fewest in-flight requests per weight.
//!
//! Load is `BackendState::inflight`, which counts until the response body (or tunnel)
//! ends, so long SSE streams and upgrades weigh as much as they cost. Backends are
//! compared as `inflight_a / weight_a < inflight_b / weight_b`, cross-multiplied in
//! `u64` (`u32 × u32` cannot overflow) to stay exact and float-free, as nginx's
//! `least_conn` does.
//!
//! Ties are broken at random, weighted by weight, in one pass with a reservoir (item
//! `i` replaces the current choice with probability `w_i / Σ w` of the ties seen so
//! far): no allocation, and an idle pool (everything tied at 0) still honours the
//! weights, where nginx would fall back to weighted round robin.
//!
//! Slow start scales each weight by the backend's ramp (permille), so a ramping
//! backend counts as more loaded and wins fewer ties.
//!
//! Pick cost: O(n) always: one `usable` call and one atomic load per backend.

use crate::backend::Backend;
use crate::health::FULL_RAMP;

/// Least-connections selection; it needs no table, only the live counters.
#[derive(Debug, Default)]
pub struct LeastConn {
    _private: (),
}

impl LeastConn {
    /// Nothing to precompute: load changes on every request.
    pub fn build(_backends: &[Backend]) -> LeastConn {
        LeastConn::default()
    }

    /// The usable backend with the lowest `inflight / weight`, ties weighted-random.
    pub fn pick(&self, backends: &[Backend], usable: impl Fn(usize) -> bool) -> Option<usize> {
        self.pick_ramped(backends, usable, |_| FULL_RAMP)
    }

    /// [`pick`](Self::pick) with each weight scaled by `ramp(i)` permille (slow start).
    pub fn pick_ramped(
        &self,
        backends: &[Backend],
        usable: impl Fn(usize) -> bool,
        ramp: impl Fn(usize) -> u32,
    ) -> Option<usize> {
        let mut best: Option<usize> = None;
        // Load of `best` as the fraction inflight / weight.
        let (mut best_inflight, mut best_weight) = (0u64, 1u64);
        // Σ weights of the backends tied with `best` so far (including it).
        let mut tied_weight = 0u64;
        for (i, backend) in backends.iter().enumerate() {
            if !usable(i) {
                continue;
            }
            let inflight = u64::from(backend.state.inflight());
            // ≤ 10^6 × 10^3: products with in-flight counts (< 2^32) still fit u64.
            let weight = u64::from(backend.weight.max(1)) * u64::from(ramp(i).max(1));
            let lhs = inflight * best_weight;
            let rhs = best_inflight * weight;
            let take = if best.is_none() || lhs < rhs {
                tied_weight = weight;
                true
            } else if lhs == rhs {
                tied_weight += weight;
                fastrand::u64(..tied_weight) < weight
            } else {
                false
            };
            if take {
                best = Some(i);
                (best_inflight, best_weight) = (inflight, weight);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_backends;
    use super::*;
    use crate::backend::InflightGuard;

    fn load(backends: &[Backend], i: usize, n: usize) -> Vec<InflightGuard> {
        (0..n).map(|_| backends[i].state.start_request()).collect()
    }

    fn spread(lc: &LeastConn, backends: &[Backend], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; backends.len()];
        for _ in 0..picks {
            counts[lc.pick(backends, |_| true).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn least_conn_picks_the_idle_backend() {
        fastrand::seed(1);
        let backends = test_backends(&[1, 1, 1]);
        let _a = load(&backends, 0, 2);
        let _c = load(&backends, 2, 1);
        let lc = LeastConn::build(&backends);
        for _ in 0..100 {
            assert_eq!(lc.pick(&backends, |_| true), Some(1));
        }
        // Idle one excluded (already tried): the next least loaded wins.
        assert_eq!(lc.pick(&backends, |i| i != 1), Some(2));
    }

    #[test]
    fn least_conn_spreads_ties_over_all_tied_backends() {
        // 4 idle backends, 40 000 picks: each within ±5 % of 10 000 (σ ≈ 87).
        fastrand::seed(2);
        let backends = test_backends(&[1, 1, 1, 1]);
        let lc = LeastConn::build(&backends);
        for c in spread(&lc, &backends, 40_000) {
            assert!((9_500..=10_500).contains(&c), "{c}");
        }
    }

    #[test]
    fn least_conn_ties_exclude_busier_backends() {
        // 0 and 2 tied at one request each, 1 busier: 1 never picked, 0/2 about even.
        fastrand::seed(3);
        let backends = test_backends(&[1, 1, 1]);
        let _g = [
            load(&backends, 0, 1),
            load(&backends, 1, 3),
            load(&backends, 2, 1),
        ];
        let lc = LeastConn::build(&backends);
        let counts = spread(&lc, &backends, 10_000);
        assert_eq!(counts[1], 0);
        assert!((4_750..=5_250).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn least_conn_respects_weight() {
        fastrand::seed(4);
        // 2 in flight on weight 3 (0.67) beats 1 in flight on weight 1 (1.0).
        let backends = test_backends(&[1, 3]);
        let _g = [load(&backends, 0, 1), load(&backends, 1, 2)];
        let lc = LeastConn::build(&backends);
        assert_eq!(lc.pick(&backends, |_| true), Some(1));

        // Idle pool, weights 1 : 3 → ties split 25 % / 75 % (±2 points, σ ≈ 0.4).
        let backends = test_backends(&[1, 3]);
        let counts = spread(&lc, &backends, 10_000);
        assert!((2_300..=2_700).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn least_conn_none_when_nothing_usable() {
        let backends = test_backends(&[1, 2]);
        let lc = LeastConn::build(&backends);
        assert_eq!(lc.pick(&backends, |_| false), None);
        assert_eq!(lc.pick(&[], |_| true), None);
    }
}
