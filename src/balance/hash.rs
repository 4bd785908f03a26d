//! Consistent hashing on a ring of virtual nodes (Karger et al.; ketama-style).
//!
//! Each backend owns `100 × weight` points on a 64-bit ring, placed at
//! `key_hash("<addr>#<i>")`. A request key is served by the first point clockwise of
//! it whose backend is usable. Because points depend only on the backend's address
//! and weight (never on its position in the slice or on the other backends), a
//! restart or a reordered config maps every key identically, and removing one backend
//! moves only the keys it owned; marking it unusable moves exactly the same keys to
//! exactly the same places, so a flapping health check does not reshuffle the rest.
//!
//! The ring is capped near [`MAX_POINTS`]: when `Σ 100 × weight` exceeds it, every
//! backend's point count is shifted right by the same power of two. A shift (rather
//! than an exact ratio) only changes when the total crosses a power of two, so adding
//! or removing one backend rarely rescales the others.
//!
//! Finding the first point ≥ the key goes through a bucket index built with the
//! ring: the top bits of a point select a bucket holding the range of ring positions
//! whose points share those bits (2 to 8 points per bucket), and only that range
//! is searched. A plain binary search over 200 000 points is ~18 dependent cache
//! misses (~110 ns a pick at 1000 backends); with the bucket index it is about two
//! (the bucket's bounds, then its points, each stored beside its owner).
//!
//! Pick cost: O(1) expected lookup (bucket, then a search of its few points) plus a
//! short clockwise walk past unusable points; O(ring) worst case while some backend
//! is usable, O(n) when none is (one check after `n` misses). Without a key, a
//! random point is used: a random usable backend, weighted by ring share.

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::backend::Backend;

/// Virtual nodes per unit of weight: ±10 % key share per backend at weight 1.
const POINTS_PER_WEIGHT: u64 = 100;
/// Rough upper bound on ring points (16 bytes each, so ~3 MiB).
const MAX_POINTS: u64 = 200_000;

/// Most bits of a point the bucket index uses: 2^16 buckets (256 KiB of `u32`)
/// covers a ring of [`MAX_POINTS`] at a few points per bucket.
const MAX_BUCKET_BITS: u32 = 16;

/// A sorted ring of `(point, backend index)`.
#[derive(Debug)]
pub struct HashRing {
    /// Sorted by point, then by backend address (a tie-break independent of order).
    ring: Box<[(u64, u32)]>,
    /// The top `bucket_bits` bits of a point select bucket `b`; `buckets[b]` is the
    /// first ring position whose point is in bucket `b` or later (so bucket `b` is
    /// `buckets[b]..buckets[b + 1]`). `2^bucket_bits + 1` entries, the last = len.
    buckets: Box<[u32]>,
    bucket_bits: u32,
    /// Address and weight of each backend of the slice this was built for, in its
    /// order: all the ring depends on, so a rebuild with the same list reuses it.
    members: Box<[(SocketAddr, u32)]>,
}

impl HashRing {
    /// Places every backend's virtual nodes and sorts the ring.
    ///
    /// Off the request path, but a snapshot rebuild builds every hash pool's ring, so
    /// it is kept linear: the `"<addr>#"` prefix of a point's label is hashed once per
    /// backend (FNV-1a is a running state; the points are the same), and since the
    /// points are uniform the ring is sorted by distributing them into the buckets of
    /// the index (which that counting pass builds anyway) and sorting each bucket's few
    /// points, instead of a comparison sort of the whole ring.
    pub fn build(backends: &[Backend]) -> HashRing {
        let wanted = |b: &Backend| POINTS_PER_WEIGHT * u64::from(b.weight.max(1));
        let total: u64 = backends.iter().map(wanted).sum();
        let mut shift = 0;
        while total >> shift > MAX_POINTS {
            shift += 1;
        }
        let vnodes = |b: &Backend| (wanted(b) >> shift).max(1);
        let len: u64 = backends.iter().map(vnodes).sum();
        // 2 to 8 points per bucket (a cache line or two of the ring), so the bucket
        // table is a quarter of the ring's length and mostly stays in cache.
        let bucket_bits = (len.max(1).ilog2().saturating_sub(2)).min(MAX_BUCKET_BITS);
        let mut unsorted = Vec::with_capacity(len as usize);
        let mut label = String::new();
        for (index, backend) in backends.iter().enumerate() {
            let index = u32::try_from(index).expect("pool holds fewer than 2^32 backends");
            label.clear();
            write!(label, "{}#", backend.addr).expect("writing to a String");
            let prefix = super::fnv_extend(super::FNV_OFFSET, label.as_bytes());
            let mut digits = [0u8; 20];
            for vnode in 0..vnodes(backend) {
                let label_end = super::fnv_extend(prefix, decimal(vnode, &mut digits));
                unsorted.push((super::key_hash_finish(label_end), index));
            }
        }
        // Counting sort into buckets up to 4× finer than the index's (about one point
        // each, so sorting within them is next to free): `fine[b]` becomes the first
        // position of fine bucket b, and every 2^d-th of those is an index bucket.
        let sort_bits = len.max(1).ilog2().min(bucket_bits + 2);
        let d = sort_bits - bucket_bits;
        let mut fine = vec![0u32; (1 << sort_bits) + 1];
        for &(point, _) in &unsorted {
            fine[bucket_of(point, sort_bits) as usize + 1] += 1;
        }
        for b in 1..fine.len() {
            fine[b] += fine[b - 1];
        }
        let mut next = fine.clone();
        let mut ring = vec![(0u64, 0u32); unsorted.len()];
        for entry in unsorted {
            let slot = &mut next[bucket_of(entry.0, sort_bits) as usize];
            ring[*slot as usize] = entry;
            *slot += 1;
        }
        // 64-bit collisions are astronomically rare, but break them by address anyway
        // so not even those depend on slice order.
        for b in fine.windows(2) {
            ring[b[0] as usize..b[1] as usize].sort_unstable_by(|a, b| {
                let addr = |i: u32| backends[i as usize].addr;
                a.0.cmp(&b.0).then_with(|| addr(a.1).cmp(&addr(b.1)))
            });
        }
        let buckets = (0..=1usize << bucket_bits).map(|b| fine[b << d]).collect();
        HashRing {
            ring: ring.into_boxed_slice(),
            buckets,
            bucket_bits,
            members: backends.iter().map(|b| (b.addr, b.weight)).collect(),
        }
    }

    /// Whether this ring is the one [`build`](Self::build) would make for
    /// `backends` (the same addresses and weights in the same order).
    pub fn built_for(&self, backends: &[Backend]) -> bool {
        self.members.len() == backends.len()
            && self
                .members
                .iter()
                .zip(backends)
                .all(|(&(addr, weight), b)| addr == b.addr && weight == b.weight)
    }

    /// Position of the first point ≥ `point` (`len` when there is none).
    #[inline]
    fn first_at_or_after(&self, point: u64) -> usize {
        let b = bucket_of(point, self.bucket_bits) as usize;
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        // Points before `lo` are in earlier buckets (smaller); from `hi` on, in later
        // ones (larger): the answer is in lo..=hi.
        lo + self.ring[lo..hi].partition_point(|&(p, _)| p < point)
    }

    /// The first usable backend clockwise of `key` (of a random point without one).
    pub fn pick(
        &self,
        backends: &[Backend],
        key: Option<u64>,
        usable: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let len = self.ring.len();
        if len == 0 || backends.is_empty() {
            return None;
        }
        debug_assert_eq!(
            self.members.len(),
            backends.len(),
            "pick with the slice given to build"
        );
        let point = key.unwrap_or_else(|| fastrand::u64(..));
        // First point ≥ key; past the last point the ring wraps to the first.
        let mut at = self.first_at_or_after(point);
        for step in 0..len {
            if at == len {
                at = 0;
            }
            let i = self.ring[at].1 as usize;
            at += 1;
            if usable(i) {
                return Some(i);
            }
            if step + 1 == backends.len() && super::none_usable(backends.len(), &usable) {
                return None;
            }
        }
        None
    }
}

/// `n` in decimal ASCII, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The bucket of `point`: its top `bits` bits (0 when `bits` is 0).
#[inline]
fn bucket_of(point: u64, bits: u32) -> u64 {
    point.checked_shr(64 - bits).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::{key_hash, test_backends};
    use super::*;
    use std::net::SocketAddr;

    const KEYS: u64 = 10_000;

    fn key(k: u64) -> u64 {
        key_hash(format!("session-{k}").as_bytes())
    }

    /// The address each key maps to, so rings over different slices compare.
    fn owners(backends: &[Backend], usable: impl Fn(usize) -> bool) -> Vec<SocketAddr> {
        let ring = HashRing::build(backends);
        (0..KEYS)
            .map(|k| backends[ring.pick(backends, Some(key(k)), &usable).unwrap()].addr)
            .collect()
    }

    #[test]
    fn hash_moves_only_removed_keys() {
        let all = test_backends(&[1; 10]);
        let removed = all[4].addr;
        let rest: Vec<Backend> = all.iter().filter(|b| b.addr != removed).cloned().collect();
        let before = owners(&all, |_| true);
        let after = owners(&rest, |_| true);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if *b == removed {
                moved += 1;
                assert_ne!(*a, removed);
            } else {
                assert_eq!(b, a, "a key not on the removed backend moved");
            }
        }
        // One backend of ten owns about a tenth of the keys (100 points: σ ≈ 10 % of that).
        let share = moved as f64 / KEYS as f64;
        assert!((0.05..=0.15).contains(&share), "moved share {share}");
    }

    #[test]
    fn hash_rebuild_in_any_order_maps_keys_identically() {
        let backends = test_backends(&[1, 2, 1, 3, 1, 1]);
        let mut shuffled = backends.clone();
        shuffled.reverse();
        shuffled.swap(0, 3);
        assert_eq!(owners(&backends, |_| true), owners(&shuffled, |_| true));
    }

    #[test]
    fn hash_unusable_backend_moves_only_its_keys() {
        let backends = test_backends(&[1; 10]);
        let down = backends[7].addr;
        let before = owners(&backends, |_| true);
        let during = owners(&backends, |i| i != 7);
        for (b, d) in before.iter().zip(&during) {
            assert_ne!(*d, down);
            if *b != down {
                assert_eq!(b, d);
            }
        }
        // Same places as if it had been removed from the config.
        let rest: Vec<Backend> = backends
            .iter()
            .filter(|b| b.addr != down)
            .cloned()
            .collect();
        assert_eq!(during, owners(&rest, |_| true));
    }

    #[test]
    fn hash_shares_follow_weights() {
        // Weights 1 : 3 → key shares 25 % / 75 % (±5 points).
        let backends = test_backends(&[1, 3]);
        let light = owners(&backends, |_| true)
            .iter()
            .filter(|a| **a == backends[0].addr)
            .count();
        let share = light as f64 / KEYS as f64;
        assert!((0.20..=0.30).contains(&share), "light share {share}");
    }

    #[test]
    fn hash_without_key_spreads_over_usable() {
        // No key: a random point, so shares follow ring shares: 25 % ± ~2.5 per backend,
        // plus whatever arcs of the unusable one fall to each. Stated band: 20..45 %,
        // and never the unusable backend.
        fastrand::seed(10);
        let backends = test_backends(&[1; 4]);
        let ring = HashRing::build(&backends);
        let mut counts = [0usize; 4];
        for _ in 0..KEYS {
            counts[ring.pick(&backends, None, |i| i != 1).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        for c in [counts[0], counts[2], counts[3]] {
            assert!((2_000..=4_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn hash_ring_is_capped() {
        let backends = test_backends(&[1_000_000, 999_999, 1]);
        let ring = HashRing::build(&backends);
        assert!(
            ring.ring.len() as u64 <= MAX_POINTS + 3,
            "{}",
            ring.ring.len()
        );
        assert!(ring.ring.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(
            ring.ring.iter().any(|&(_, i)| i == 2),
            "light backend kept a point"
        );
    }

    #[test]
    fn hash_ring_points_are_pinned() {
        // Points are key_hash("<addr>#<vnode>") whatever the build does to get there:
        // changing them re-maps every key in every deployment.
        let backends = test_backends(&[1]);
        let ring = HashRing::build(&backends);
        let mut want: Vec<u64> = (0..POINTS_PER_WEIGHT)
            .map(|v| key_hash(format!("{}#{v}", backends[0].addr).as_bytes()))
            .collect();
        want.sort_unstable();
        let got: Vec<u64> = ring.ring.iter().map(|&(p, _)| p).collect();
        assert_eq!(got, want);
        assert_eq!(decimal(0, &mut [0; 20]), b"0");
        assert_eq!(decimal(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }

    #[test]
    fn hash_bucket_index_agrees_with_binary_search() {
        // Keys at, just around and between ring points, and the extremes: the bucket
        // lookup must land where a plain search of the whole ring does.
        fastrand::seed(17);
        for weights in [&[1][..], &[1, 2], &[3; 37], &[1_000_000, 999_999, 1]] {
            let backends = test_backends(weights);
            let ring = HashRing::build(&backends);
            let near = ring
                .ring
                .iter()
                .flat_map(|&(p, _)| [p.wrapping_sub(1), p, p.wrapping_add(1)]);
            let random = (0..10_000).map(|_| fastrand::u64(..));
            for key in near.chain(random).chain([0, u64::MAX]) {
                let want = ring.ring.partition_point(|&(p, _)| p < key);
                assert_eq!(ring.first_at_or_after(key), want, "key {key:#x}");
            }
        }
    }

    #[test]
    fn hash_none_when_nothing_usable() {
        let backends = test_backends(&[1, 1]);
        let ring = HashRing::build(&backends);
        assert_eq!(ring.pick(&backends, Some(key(1)), |_| false), None);
        assert_eq!(HashRing::build(&[]).pick(&[], Some(key(1)), |_| true), None);
    }
}
