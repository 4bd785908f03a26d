//! Smooth weighted round robin (nginx `ngx_http_upstream_round_robin.c`), lock-free.
//!
//! nginx runs SWRR under a lock per pick: every peer's `current += weight`, the
//! largest `current` wins and pays back the total. The resulting sequence is periodic
//! with period `Σ weights`, so we run that loop once at build time and store one full
//! cycle as indices; a pick is then one atomic `fetch_add` and a table read.
//!
//! Weights are divided by their gcd first (so 100/100/100 is a cycle of 3). If the
//! cycle still exceeds [`MAX_CYCLE`] entries the weights are scaled down
//! proportionally, each kept ≥ 1, trading exact ratios for a bounded table.
//!
//! Pick cost: O(1) when the slot's backend is usable. Unusable slots are skipped by
//! scanning forward; the skipped slots are then *consumed* from the shared counter,
//! so the remaining backends keep exactly their relative proportions (a plain
//! "take the next entry" would hand all of a dead backend's slots to whoever follows
//! it). Worst case O(cycle length) when the usable backends hold few slots; when
//! none is usable the pick gives up after `n` misses plus one O(n) check.
//!
//! Slow start: a ramping backend's slot is accepted with probability `ramp / 1000`
//! and otherwise skipped like a dead slot, which gives it `ramp × weight` relative to
//! the others (one RNG draw per ramping slot; none when nothing ramps).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::data_plane::backend::Backend;
use crate::data_plane::health::FULL_RAMP;

/// Largest precomputed cycle (entries), i.e. 256 KiB of `u32` indices.
const MAX_CYCLE: u64 = 65_536;

/// One precomputed SWRR cycle and the position of the next pick.
#[derive(Debug)]
pub struct RoundRobin {
    /// Backend indices in SWRR order; empty iff there are no backends.
    sequence: Box<[u32]>,
    /// Monotonic pick counter shared by all request tasks; position = `next % len`.
    next: AtomicUsize,
    /// Length of the slice this was built for (every index is below it).
    backends: usize,
}

impl RoundRobin {
    /// Precomputes one SWRR cycle over `backends`' weights.
    pub fn build(backends: &[Backend]) -> RoundRobin {
        let weights = cycle_weights(backends);
        let total: u64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut sequence = Vec::with_capacity(total as usize);
        // nginx's loop verbatim: ties go to the earliest backend, which is what makes
        // 5/1/1 come out as a a b a c a a.
        for _ in 0..total {
            let mut best = 0;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += w as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total as i64;
            sequence.push(u32::try_from(best).expect("pool holds fewer than 2^32 backends"));
        }
        RoundRobin {
            sequence: sequence.into_boxed_slice(),
            next: AtomicUsize::new(0),
            backends: backends.len(),
        }
    }

    /// Next backend of the cycle for which `usable` holds.
    pub fn pick(&self, backends: &[Backend], usable: impl Fn(usize) -> bool) -> Option<usize> {
        self.pick_ramped(backends, usable, |_| FULL_RAMP)
    }

    /// Next backend of the cycle for which `usable` holds, accepting a ramping
    /// backend's slot with probability `ramp(i) / 1000`.
    pub fn pick_ramped(
        &self,
        backends: &[Backend],
        usable: impl Fn(usize) -> bool,
        ramp: impl Fn(usize) -> u32,
    ) -> Option<usize> {
        let len = self.sequence.len();
        if len == 0 || backends.is_empty() {
            return None;
        }
        debug_assert_eq!(
            self.backends,
            backends.len(),
            "pick with the slice given to build"
        );
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // First usable slot whose ramp said no: taken if no slot says yes.
        let mut declined: Option<(usize, usize)> = None;
        for skipped in 0..len {
            let i = self.sequence[start.wrapping_add(skipped) % len] as usize;
            if usable(i) {
                let r = ramp(i);
                if r >= FULL_RAMP || fastrand::u32(..FULL_RAMP) < r {
                    self.consume(skipped);
                    return Some(i);
                }
                declined.get_or_insert((i, skipped));
                continue;
            }
            if declined.is_none()
                && skipped + 1 == backends.len()
                && super::none_usable(backends.len(), &usable)
            {
                return None;
            }
        }
        declined.map(|(i, skipped)| {
            self.consume(skipped);
            i
        })
    }

    /// Consumes the dead (or declined) slots a pick stepped over, so the next pick
    /// starts after this one instead of landing on the same live slot again.
    fn consume(&self, skipped: usize) {
        if skipped > 0 {
            self.next.fetch_add(skipped, Ordering::Relaxed);
        }
    }
}

/// Weights for the cycle: each ≥ 1, divided by their gcd, scaled to ≤ [`MAX_CYCLE`].
fn cycle_weights(backends: &[Backend]) -> Vec<u64> {
    // Validation keeps weights ≥ 1; clamp anyway so a 0 cannot starve the cycle math.
    let mut weights: Vec<u64> = backends
        .iter()
        .map(|b| u64::from(b.weight.max(1)))
        .collect();
    divide_by_gcd(&mut weights);
    let total: u64 = weights.iter().sum();
    if total > MAX_CYCLE {
        // Σ floor(w·budget/total) ≤ budget, and the `max(1)` adds at most n, so the
        // cycle fits in MAX_CYCLE (unless n itself exceeds it: one slot each, then).
        let budget = MAX_CYCLE.saturating_sub(weights.len() as u64);
        for w in &mut weights {
            *w = (*w * budget / total).max(1);
        }
        divide_by_gcd(&mut weights);
    }
    weights
}

fn divide_by_gcd(weights: &mut [u64]) {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w));
    if g > 1 {
        for w in weights {
            *w /= g;
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::super::test_backends;
    use super::*;

    fn picks(
        rr: &RoundRobin,
        backends: &[Backend],
        n: usize,
        usable: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        (0..n)
            .map(|_| rr.pick(backends, &usable).unwrap())
            .collect()
    }

    fn counts(picks: &[usize], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &p in picks {
            c[p] += 1;
        }
        c
    }

    #[test]
    fn swrr_sequence_is_smooth() {
        // nginx's documented sequence for weights 5, 1, 1: a a b a c a a, repeating.
        let backends = test_backends(&[5, 1, 1]);
        let rr = RoundRobin::build(&backends);
        let cycle = [0, 0, 1, 0, 2, 0, 0];
        assert_eq!(picks(&rr, &backends, 7, |_| true), cycle);
        assert_eq!(picks(&rr, &backends, 7, |_| true), cycle);
    }

    #[test]
    fn swrr_equal_weights_rotate_evenly() {
        // gcd 4 → cycle of 3: strict rotation, never the same backend twice in a row.
        let backends = test_backends(&[4, 4, 4]);
        let rr = RoundRobin::build(&backends);
        assert_eq!(rr.sequence.len(), 3);
        assert_eq!(
            picks(&rr, &backends, 9, |_| true),
            [0, 1, 2, 0, 1, 2, 0, 1, 2]
        );
    }

    #[test]
    fn swrr_cycle_matches_weights_exactly() {
        let weights = [3, 7, 1, 4, 2];
        let backends = test_backends(&weights);
        let rr = RoundRobin::build(&backends);
        assert_eq!(rr.sequence.len(), 17);
        let got = counts(&picks(&rr, &backends, 17 * 10, |_| true), 5);
        assert_eq!(
            got,
            weights.iter().map(|&w| w as usize * 10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn swrr_skips_unusable_keeping_proportions() {
        // a (5) down: b and c alternate 1:1 instead of b inheriting a's slots.
        let backends = test_backends(&[5, 1, 1]);
        let rr = RoundRobin::build(&backends);
        let got = picks(&rr, &backends, 100, |i| i != 0);
        assert_eq!(counts(&got, 3), [0, 50, 50]);

        // 1 / 2 / 3 with the first down: exactly 2 : 3 over whole cycles.
        let backends = test_backends(&[1, 2, 3]);
        let rr = RoundRobin::build(&backends);
        let got = picks(&rr, &backends, 5 * 40, |i| i != 0);
        assert_eq!(counts(&got, 3), [0, 80, 120]);
    }

    #[test]
    fn swrr_large_weights_are_capped() {
        let weights = [1_000_000, 999_999, 3, 1];
        let backends = test_backends(&weights);
        let rr = RoundRobin::build(&backends);
        let len = rr.sequence.len();
        assert!(len as u64 <= MAX_CYCLE, "{len}");
        let got = counts(&picks(&rr, &backends, len, |_| true), 4);
        // Every backend keeps at least one slot; the big two stay within 0.1 % of 1:1.
        assert!(got.iter().all(|&c| c >= 1), "{got:?}");
        let ratio = got[0] as f64 / got[1] as f64;
        assert!((0.999..=1.001).contains(&ratio), "{got:?}");
    }

    #[test]
    fn swrr_none_when_nothing_usable() {
        let backends = test_backends(&[1_000_000, 1]);
        let rr = RoundRobin::build(&backends);
        assert_eq!(rr.pick(&backends, |_| false), None);
        // The light backend alone is still found even though it holds one slot.
        assert_eq!(rr.pick(&backends, |i| i == 1), Some(1));
        assert_eq!(RoundRobin::build(&[]).pick(&[], |_| true), None);
    }
}
