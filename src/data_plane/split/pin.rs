//! Deterministic pinning: the pool of a session is a function of its key and the
//! split, the same on every replica, with no table shared between them.
//!
//! The choice is weighted rendezvous hashing: every pool carrying weight scores
//! `-ln(u) / weight`, `u` being a stable hash of (session key, pool name) mapped
//! into (0, 1), and the lowest score wins. Two properties follow, and they are why
//! this and not one hash point laid over the cumulative weights:
//! - a pool wins with probability `weight / total` (the scores are exponential
//!   variables with rates equal to the weights);
//! - a pool's score depends on its own weight only, so raising one pool's weight
//!   (and lowering the others') can move a session onto that pool and never off it,
//!   whatever the number of pools and their order in the split; a pool at weight 0
//!   takes part in nothing, so on rollback its sessions all return to the others.
//!   The cumulative layout has the same property only when the growing pool is
//!   placed first, which needs to know which pool is "new".
//!
//! IEEE division and comparison are monotone, so the property holds exactly in
//! floating point. The hash is fixed (FNV-1a then a 64-bit finaliser), not keyed
//! per process: replicas, restarts and builds of the same version agree. A client
//! can choose its key and so its pool; it could as well send the sticky cookie of
//! the pool it wants, so nothing is lost.

/// A stable 64-bit hash of `bytes` (FNV-1a, then mixed): equal on every replica.
#[inline]
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The 64-bit finaliser of SplitMix64: every input bit moves every output bit.
#[inline]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Pool `pool_hash`'s score for session `key` at `weight` (> 0); lower wins.
#[inline]
fn score(key: u64, pool_hash: u64, weight: u32) -> f64 {
    // 53 random bits, centred in their interval: u is in (0, 1), never 0 or 1.
    let bits = mix(key ^ pool_hash) >> 11;
    let u = (bits as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    -u.ln() / f64::from(weight)
}

/// The index of the pool session `key` is pinned to among `pools` (each a stable
/// hash of the pool's name and its weight), or `None` when every weight is 0.
/// Ties (a 2^-53 event) go to the earlier pool.
#[inline]
pub(crate) fn pick(key: u64, pools: impl Iterator<Item = (u64, u32)>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, (pool_hash, weight)) in pools.enumerate() {
        if weight == 0 {
            continue;
        }
        let s = score(key, pool_hash, weight);
        if best.is_none_or(|(_, b)| s < b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(weights: &[u32]) -> Vec<(u64, u32)> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| (stable_hash(format!("pool-{i}").as_bytes()), *w))
            .collect()
    }

    fn pin(key: u64, weights: &[u32]) -> Option<usize> {
        pick(key, pools(weights).into_iter())
    }

    fn keys(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(|i| stable_hash(format!("session-{i}").as_bytes()))
    }

    #[test]
    fn the_hash_is_fixed_across_processes() {
        // A per-process key would make replicas disagree: these values are the
        // contract between replicas (and between builds of the same format).
        assert_eq!(stable_hash(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(stable_hash(b"abc"), stable_hash(b"abc"));
        assert_ne!(stable_hash(b"abc"), stable_hash(b"abd"));
        assert_eq!(stable_hash(b"session-1"), 0x8f9d4a83e2384785);
    }

    #[test]
    fn shares_follow_the_weights_within_binomial_bounds() {
        // 20 000 keys; 4.5 standard deviations of a binomial share.
        let n = 20_000u64;
        for weights in [[95u32, 5, 0], [75, 25, 0], [50, 30, 20], [1, 1, 1]] {
            let total: u32 = weights.iter().sum();
            let mut counts = [0u64; 3];
            for k in keys(n) {
                counts[pin(k, &weights).expect("a pool")] += 1;
            }
            for (i, w) in weights.iter().enumerate() {
                let p = f64::from(*w) / f64::from(total);
                let share = counts[i] as f64 / n as f64;
                let sd = (p * (1.0 - p) / n as f64).sqrt();
                assert!(
                    (share - p).abs() <= 4.5 * sd + 1e-9,
                    "{weights:?}: pool {i} got {share}, want {p}"
                );
            }
        }
    }

    #[test]
    fn a_growing_pool_only_gains_sessions() {
        // Canary green (index 1) 5 → 25 → 50 → 100: a session on green stays.
        let steps: [[u32; 2]; 5] = [[100, 0], [95, 5], [75, 25], [50, 50], [0, 100]];
        let mut moved_on = 0;
        for k in keys(10_000) {
            let mut on_green = false;
            for w in steps {
                let green = pin(k, &w) == Some(1);
                assert!(green || !on_green, "key {k:x} left green at {w:?}");
                moved_on += usize::from(green && !on_green);
                on_green = green;
            }
            assert!(on_green, "everyone on green at 0/100");
        }
        assert_eq!(moved_on, 10_000);
    }

    #[test]
    fn growth_of_any_pool_in_any_position_only_gains_it_sessions() {
        // Three pools, the growing one first, middle or last.
        for grow in 0..3 {
            let mut last: Vec<Option<usize>> = Vec::new();
            for g in [1u32, 10, 30, 60, 90] {
                let mut w = [40u32, 40, 40];
                w[grow] = g;
                let now: Vec<Option<usize>> = keys(5_000).map(|k| pin(k, &w)).collect();
                for (before, after) in last.iter().zip(&now) {
                    if *before == Some(grow) {
                        assert_eq!(*after, Some(grow), "left pool {grow} at {w:?}");
                    } else if *after != Some(grow) {
                        // Sessions not moving onto the growing pool stay put.
                        assert_eq!(before, after, "moved between the others at {w:?}");
                    }
                }
                last = now;
            }
        }
    }

    #[test]
    fn rollback_returns_everyone_and_no_weight_means_no_pool() {
        for k in keys(2_000) {
            assert_eq!(pin(k, &[100, 0]), Some(0));
            assert_eq!(pin(k, &[0, 7]), Some(1));
        }
        assert_eq!(pin(1, &[0, 0]), None);
        assert_eq!(pin(1, &[]), None);
    }
}
