//! Power of two random choices over peak-EWMA latency × load (tower `peak_ewma`).
//!
//! Two distinct usable backends are drawn at random and the cheaper one wins, with
//! `cost = latency_estimate_ns × (inflight + 1) / weight`. Comparing just two keeps
//! the pick O(1) and avoids the herd effect of "always the global minimum" (every
//! gateway task piling onto the same momentarily-fast backend), while still steering
//! away from slow or busy backends (Mitzenmacher, "The Power of Two Choices").
//! The `+ 1` counts the request being placed, so an idle slow backend still loses to
//! an idle fast one instead of both costing 0.
//!
//! Each draw retries a bounded number of times to land on a usable backend, then
//! falls back to a linear scan from a random start, so a pick still succeeds whenever
//! anything is usable; with one usable backend that one is returned.
//!
//! Slow start divides a ramping backend's weight by its ramp (the cost rises), so it
//! loses more of the pairs it is drawn into.
//!
//! The latency estimate decays while a backend is idle, so a once-slow backend is
//! retried eventually. Both candidates decay by the same factor from the later of
//! their two update stamps on, so the pick compares the stored estimates with the
//! older one decayed to the newer stamp, and no clock read, instead of two clock
//! reads and two `exp()` to decay both to "now" (which chose the same backend, at
//! a higher cost: benches/JOURNAL.md, seventh pass). Bounds on the decay settle all
//! but near-ties without its
//! `exp()` either.
//!
//! Pick cost: O(1) when most backends are usable (two `usable` calls, two latency
//! reads, at most one `exp()`); O(n) when random draws keep missing.

use crate::data_plane::backend::Backend;
use crate::data_plane::health::FULL_RAMP;

/// Random draws per candidate before scanning for one.
const DRAWS: usize = 3;

/// Power-of-two-choices selection; it needs no table, only the live estimates.
#[derive(Debug, Default)]
pub struct P2c {
    _private: (),
}

impl P2c {
    /// Nothing to precompute: costs change on every response.
    pub fn build(_backends: &[Backend]) -> P2c {
        P2c::default()
    }

    /// The cheaper of two distinct random usable backends (or the only usable one).
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
        let n = backends.len();
        if n <= 1 {
            return (n == 1 && usable(0)).then_some(0);
        }
        let a = draw(n, None, &usable)?;
        let Some(b) = draw(n, Some(a), &usable) else {
            return Some(a);
        };
        // Strict `<`: on equal cost keep `a`, which was drawn at random anyway.
        // cost_b < cost_a with each cost's weight moved to the other side (all
        // positive), which spares the two divisions.
        let (ba, bb) = (&backends[a], &backends[b]);
        let b_cheaper = bb.state.latency_stamp().scaled_lt(
            load(bb) * weight(ba, ramp(a)),
            ba.state.latency_stamp(),
            load(ba) * weight(bb, ramp(b)),
        );
        if b_cheaper {
            Some(b)
        } else {
            Some(a)
        }
    }
}

/// The load side of the cost of sending one more request to `backend`:
/// `inflight + 1`, divided by [`weight`]. The latency side is compared separately,
/// as stored estimates (see [`crate::data_plane::backend::LatencyStamp::scaled_lt`]).
#[inline]
fn load(backend: &Backend) -> f64 {
    f64::from(backend.state.inflight()) + 1.0
}

/// `backend`'s weight ramped to `ramp` permille (0 counts as 1).
#[inline]
fn weight(backend: &Backend, ramp: u32) -> f64 {
    f64::from(backend.weight.max(1)) * f64::from(ramp.max(1))
}

/// A random usable index in `0..n` other than `exclude`, if there is one.
fn draw(n: usize, exclude: Option<usize>, usable: impl Fn(usize) -> bool) -> Option<usize> {
    for _ in 0..DRAWS {
        // Draw from the n - 1 others and step over `exclude`: distinct without retrying.
        let i = match exclude {
            None => fastrand::usize(..n),
            Some(x) => {
                let i = fastrand::usize(..n - 1);
                i + usize::from(i >= x)
            }
        };
        if usable(i) {
            return Some(i);
        }
    }
    // Most backends are unusable: scan from a random start so the few left share load.
    let start = fastrand::usize(..n);
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| Some(i) != exclude && usable(i))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::super::test_backends;
    use super::*;
    use crate::data_plane::backend::InflightGuard;

    fn share_of(p2c: &P2c, backends: &[Backend], target: usize, picks: usize) -> f64 {
        let hits = (0..picks)
            .filter(|_| p2c.pick(backends, |_| true) == Some(target))
            .count();
        hits as f64 / picks as f64
    }

    #[test]
    fn p2c_prefers_the_fast_backend() {
        fastrand::seed(5);
        let backends = test_backends(&[1, 1]);
        backends[0]
            .state
            .observe_latency(Duration::from_millis(100), Instant::now());
        backends[1]
            .state
            .observe_latency(Duration::from_millis(1), Instant::now());
        let p2c = P2c::build(&backends);
        let share = share_of(&p2c, &backends, 1, 10_000);
        assert!(share >= 0.9, "fast share {share}");
    }

    #[test]
    fn p2c_fast_backend_wins_every_pair_it_is_in() {
        // 1 fast among 4 slow: it is in a random pair 2/5 of the time and then always
        // wins, so its share is 0.40 (±0.03 over 10 000 picks, σ ≈ 0.005).
        fastrand::seed(6);
        let backends = test_backends(&[1; 5]);
        // Peak EWMA would keep a 100 ms peak for seconds, so backend 2 only ever sees 1 ms.
        for (i, b) in backends.iter().enumerate() {
            let ms = if i == 2 { 1 } else { 100 };
            b.state
                .observe_latency(Duration::from_millis(ms), Instant::now());
        }
        let p2c = P2c::build(&backends);
        let share = share_of(&p2c, &backends, 2, 10_000);
        assert!((0.37..=0.43).contains(&share), "fast share {share}");
    }

    #[test]
    fn p2c_load_and_weight_count() {
        fastrand::seed(7);
        // Same latency: 4 in flight (cost ×5) loses to idle (×1).
        let backends = test_backends(&[1, 1]);
        let _busy: Vec<InflightGuard> = (0..4).map(|_| backends[0].state.start_request()).collect();
        let p2c = P2c::build(&backends);
        assert_eq!(share_of(&p2c, &backends, 1, 1_000), 1.0);

        // Same latency and load, weight 10 vs 1: the heavy one is 10× cheaper.
        let backends = test_backends(&[1, 10]);
        assert_eq!(share_of(&p2c, &backends, 1, 1_000), 1.0);
    }

    #[test]
    fn p2c_single_usable_backend_is_always_chosen() {
        fastrand::seed(8);
        let backends = test_backends(&[1; 8]);
        let p2c = P2c::build(&backends);
        for _ in 0..1_000 {
            assert_eq!(p2c.pick(&backends, |i| i == 6), Some(6));
        }
        assert_eq!(p2c.pick(&backends[..1], |_| true), Some(0));
    }

    #[test]
    fn p2c_compares_even_when_few_are_usable() {
        // Only 0 (slow) and 7 (fast) usable out of 8: random draws mostly miss, and the
        // scan fallback must still produce a second, distinct candidate, so the fast
        // one wins every pick (returning the first hit alone would give ~50 %).
        fastrand::seed(9);
        let backends = test_backends(&[1; 8]);
        backends[0]
            .state
            .observe_latency(Duration::from_millis(100), Instant::now());
        let p2c = P2c::build(&backends);
        for _ in 0..10_000 {
            assert_eq!(p2c.pick(&backends, |i| i == 0 || i == 7), Some(7));
        }
    }

    #[test]
    fn p2c_none_when_nothing_usable() {
        let backends = test_backends(&[1, 1, 1]);
        let p2c = P2c::build(&backends);
        assert_eq!(p2c.pick(&backends, |_| false), None);
        assert_eq!(p2c.pick(&[], |_| true), None);
    }
}
