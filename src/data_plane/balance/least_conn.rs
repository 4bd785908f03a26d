//! Least connections: the usable backend with the fewest in-flight requests per weight.
//!
//! Load is `BackendState::inflight`, which counts until the response body (or tunnel)
//! ends, so long SSE streams and upgrades weigh as much as they cost. Backends are
//! compared as `inflight_a / weight_a < inflight_b / weight_b`, cross-multiplied in
//! `u64` (`u32 × u32` cannot overflow) to stay exact and float-free, as nginx's
//! `least_conn` does.
//!
//! **Pools of up to [`EXACT_MAX`] backends** are scanned exactly, as nginx does: the
//! global minimum wins. Ties are broken at random, weighted by weight: the scan
//! keeps them on the stack and draws one number among them at the end. No
//! allocation, and an idle pool (everything tied at 0) still honours the weights,
//! where nginx would fall back to weighted round robin.
//!
//! **Larger pools** compare a random sample instead, like Envoy's `LEAST_REQUEST`
//! with its default `choice_count` of 2 (power of two choices, Mitzenmacher):
//! [`CHOICES`] candidates
//! are drawn with probability proportional to weight (an alias table built with the
//! snapshot, O(1) a draw), and the least loaded of them by the same
//! `inflight / weight` comparison wins. A scan's cost grows with the pool, a
//! sample's does not (benches/JOURNAL.md, seventh pass); and with k choices the most loaded
//! backend stays within O(log log n / log k) of the average (the classic result),
//! so the pool is still balanced by load, just not by the exact minimum on every
//! pick (which also spares the herd effect of every task piling onto the same
//! momentarily idle backend). Ties among the candidates go to the reservoir
//! weighted by ramp only (the draw already followed the weights), so an idle pool
//! still gets `weight` shares. Candidates that are not usable (ineligible, or
//! already tried by this request) are redrawn, up to [`MAX_DRAWS`] draws in all;
//! when none of those was usable (most of the pool is down), the pick falls back
//! to the exact scan, so it finds a usable backend whenever there is one.
//!
//! Slow start scales each weight by the backend's ramp (permille), so a ramping
//! backend counts as more loaded and wins fewer ties.
//!
//! Pick cost: O(n) up to [`EXACT_MAX`] backends (one `usable` call and one atomic
//! load per backend); above, O(1) (at most [`MAX_DRAWS`] draws) while draws find
//! usable backends, O(n) when they all miss.

use std::cmp::Ordering;

use super::alias::AliasTable;
use crate::data_plane::backend::Backend;
use crate::data_plane::health::FULL_RAMP;

/// Largest pool scanned exactly; larger ones are sampled.
pub(super) const EXACT_MAX: usize = 16;
/// Candidates compared per pick in a sampled pool.
pub(super) const CHOICES: usize = 2;
/// Draws a sampled pick makes to find its [`CHOICES`] usable candidates (with half
/// the pool unusable, all 8 miss 0.4 % of the time and the pick scans).
pub(super) const MAX_DRAWS: usize = 8;

/// Least-connections selection over the live counters; for large pools, plus the
/// weighted sampling table.
#[derive(Debug, Default)]
pub struct LeastConn {
    /// Present iff the pool has more than [`EXACT_MAX`] backends.
    sample: Option<AliasTable>,
}

impl LeastConn {
    /// Builds the sampling table when the pool is too large to scan on every pick.
    pub fn build(backends: &[Backend]) -> LeastConn {
        LeastConn {
            sample: if backends.len() > EXACT_MAX {
                AliasTable::build(backends)
            } else {
                None
            },
        }
    }

    /// The usable backend with the lowest `inflight / weight`, ties weighted-random
    /// (of all backends, or of a weighted sample in a large pool).
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
        // A table built for another slice would draw out of range: scan instead.
        let sample = self.sample.as_ref().filter(|t| t.len() == backends.len());
        if let Some(table) = sample {
            let mut best = Least::default();
            let mut found = 0;
            for _ in 0..MAX_DRAWS {
                let i = table.draw();
                if !usable(i) {
                    continue;
                }
                let r = ramp(i);
                let weight = ramped_weight(&backends[i], r);
                best.offer(i, backends[i].state.inflight(), weight, u64::from(r.max(1)));
                found += 1;
                if found == CHOICES {
                    break;
                }
            }
            if best.index.is_some() {
                return best.index;
            }
        }
        if backends.len() <= EXACT_MAX {
            return scan_small(backends, usable, ramp);
        }
        let mut best = Least::default();
        for (i, backend) in backends.iter().enumerate() {
            if usable(i) {
                let weight = ramped_weight(backend, ramp(i));
                best.offer(i, backend.state.inflight(), weight, weight);
            }
        }
        best.index
    }
}

/// The exact scan of a pool of up to [`EXACT_MAX`] backends: the lowest
/// `inflight / weight`, ties chosen at random weighted by weight.
///
/// The ties are kept on the stack and one number is drawn among them at the end,
/// where the reservoir of larger pools draws one per tie: an idle pool of ten
/// drew ten (benches/JOURNAL.md, seventh pass).
fn scan_small(
    backends: &[Backend],
    usable: impl Fn(usize) -> bool,
    ramp: impl Fn(usize) -> u32,
) -> Option<usize> {
    debug_assert!(backends.len() <= EXACT_MAX);
    if backends.len() == 1 {
        return usable(0).then_some(0);
    }
    // The ties' indices, and the running sum of their weights up to each.
    let mut tied = [0u8; EXACT_MAX];
    let mut upto = [0u64; EXACT_MAX];
    let mut count = 0;
    let mut least = (0u64, 1u64);
    for (i, backend) in backends.iter().enumerate().take(EXACT_MAX) {
        if !usable(i) {
            continue;
        }
        let weight = ramped_weight(backend, ramp(i));
        let load = (u64::from(backend.state.inflight()), weight);
        if count > 0 {
            match cmp_load(load, least) {
                Ordering::Less => count = 0,
                Ordering::Equal => {}
                Ordering::Greater => continue,
            }
        }
        if count == 0 {
            least = load;
        }
        let before = if count == 0 { 0 } else { upto[count - 1] };
        // i < EXACT_MAX = 16: fits a byte.
        tied[count] = i as u8;
        upto[count] = before + weight;
        count += 1;
    }
    match count {
        0 => None,
        1 => Some(usize::from(tied[0])),
        _ => {
            let r = fastrand::u64(..upto[count - 1]);
            let at = upto[..count].partition_point(|&sum| sum <= r);
            Some(usize::from(tied[at]))
        }
    }
}

/// `backend`'s weight scaled by its `ramp` permille (0 counts as 1 for both).
/// At most 10^6 × 10^3: products with in-flight counts (< 2^32) still fit `u64`.
fn ramped_weight(backend: &Backend, ramp: u32) -> u64 {
    u64::from(backend.weight.max(1)) * u64::from(ramp.max(1))
}

/// How load `a` compares with load `b`, each `(inflight, weight)` standing for
/// `inflight / weight`: cross-multiplied, so exact and float-free.
fn cmp_load(a: (u64, u64), b: (u64, u64)) -> Ordering {
    (a.0 * b.1).cmp(&(b.0 * a.1))
}

/// The running minimum of `inflight / weight`, with a weighted reservoir over ties.
#[derive(Debug)]
struct Least {
    index: Option<usize>,
    /// Load of `index` as the fraction inflight / weight.
    inflight: u64,
    weight: u64,
    /// Σ tie weights of the candidates tied with `index` so far (including it).
    tied: u64,
}

impl Default for Least {
    fn default() -> Self {
        Least {
            index: None,
            inflight: 0,
            weight: 1,
            tied: 0,
        }
    }
}

impl Least {
    /// Considers candidate `i`; on a tie it wins with probability `tie_weight / Σ`.
    #[inline]
    fn offer(&mut self, i: usize, inflight: u32, weight: u64, tie_weight: u64) {
        let inflight = u64::from(inflight);
        let order = cmp_load((inflight, weight), (self.inflight, self.weight));
        let take = if self.index.is_none() || order == Ordering::Less {
            self.tied = tie_weight;
            true
        } else if order == Ordering::Equal {
            self.tied += tie_weight;
            fastrand::u64(..self.tied) < tie_weight
        } else {
            false
        };
        if take {
            self.index = Some(i);
            (self.inflight, self.weight) = (inflight, weight);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_backends;
    use super::*;
    use crate::data_plane::backend::InflightGuard;

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
    fn least_conn_forgets_ties_once_a_less_loaded_backend_comes() {
        // 0 and 1 tie first, then 2 and 3 at a lower load: only 2 and 3, about even.
        fastrand::seed(5);
        let backends = test_backends(&[1, 1, 1, 1]);
        let _g = [load(&backends, 0, 1), load(&backends, 1, 1)];
        let lc = LeastConn::build(&backends);
        let counts = spread(&lc, &backends, 10_000);
        assert_eq!(counts[0] + counts[1], 0, "{counts:?}");
        assert!((4_750..=5_250).contains(&counts[2]), "{counts:?}");
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

    #[test]
    fn least_conn_large_pool_prefers_idle_candidates() {
        // 40 backends, the even ones 1 in flight: a pick lands on a busy one only
        // when both candidates are busy, (1/2)^2 = 25 % (σ ≈ 0.4 points over 10 000
        // picks; bound 28 %); a random pick would be 50 %.
        fastrand::seed(13);
        let backends = test_backends(&[1; 40]);
        let _g: Vec<_> = (0..40).step_by(2).map(|i| load(&backends, i, 1)).collect();
        let lc = LeastConn::build(&backends);
        let counts = spread(&lc, &backends, 10_000);
        let busy: usize = counts.iter().step_by(2).sum();
        assert!(busy <= 2_800, "busy share {busy} / 10 000");
    }

    #[test]
    fn least_conn_large_pool_keeps_load_even() {
        // 64 backends, 6 400 requests that all stay in flight: every backend ends
        // within a few of 100 (best of 2 keeps the gap O(log log n)); a uniformly
        // random choice would spread them ±10 (σ) and more.
        fastrand::seed(14);
        let backends = test_backends(&[1; 64]);
        let lc = LeastConn::build(&backends);
        let mut guards = Vec::new();
        for _ in 0..6_400 {
            let i = lc.pick(&backends, |_| true).unwrap();
            guards.push(backends[i].state.start_request());
        }
        let loads: Vec<u32> = backends.iter().map(|b| b.state.inflight()).collect();
        let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(*min >= 95 && *max <= 105, "{loads:?}");
    }

    #[test]
    fn least_conn_large_pool_idle_follows_weights() {
        // 32 idle backends, weights 1 and 3 alternating: the weight-3 half gets 75 %
        // of 40 000 picks (±2 points).
        fastrand::seed(15);
        let weights: Vec<u32> = (0..32).map(|i| if i % 2 == 0 { 1 } else { 3 }).collect();
        let backends = test_backends(&weights);
        let lc = LeastConn::build(&backends);
        let counts = spread(&lc, &backends, 40_000);
        let heavy: usize = counts.iter().skip(1).step_by(2).sum();
        assert!((29_200..=30_800).contains(&heavy), "{heavy}");
    }

    #[test]
    fn least_conn_large_pool_finds_the_few_usable() {
        // Draws almost always miss the one usable backend: the scan fallback finds it;
        // with none usable there is no pick.
        fastrand::seed(16);
        let backends = test_backends(&[1; 100]);
        let lc = LeastConn::build(&backends);
        for _ in 0..1_000 {
            assert_eq!(lc.pick(&backends, |i| i == 57), Some(57));
        }
        assert_eq!(lc.pick(&backends, |_| false), None);
    }
}
