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
//! misses; with the bucket index it is about two
//! (the bucket's bounds, then its points, each stored beside its owner). The pick
//! reads those points from a copy of the ring a quarter of its size (16 more bits
//! of each point beside a 16-bit owner): at 1000 backends, 800 KB that stay in this
//! host's L2 instead of 3.2 MB that do not (benches/JOURNAL.md, seventh pass).
//!
//! Pick cost: O(1) expected lookup (bucket, then a search of its few points) plus a
//! short clockwise walk past unusable points; O(ring) worst case while some backend
//! is usable, O(n) when none is (one check after `n` misses). Without a key, a
//! random point is used: a random usable backend, weighted by ring share.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::data_plane::backend::Backend;

/// Virtual nodes per unit of weight: ±10 % key share per backend at weight 1.
const POINTS_PER_WEIGHT: u64 = 100;
/// Rough upper bound on ring points (16 bytes each and 4 in the pick's copy, so
/// ~4 MiB).
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
    /// The ring again, a quarter of its size, for the pick to read instead: per
    /// position, the 16 bits of the point after its bucket's (high half) and the
    /// backend index (low half). Empty when an index does not fit 16 bits.
    fast: Box<[u32]>,
    /// Every backend's point count is `100 × weight` shifted right by this (the cap).
    shift: u32,
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
        let shift = shift_for(backends);
        let vnodes = |b: &Backend| vnodes(b.weight, shift);
        let len: u64 = backends.iter().map(vnodes).sum();
        let bucket_bits = bucket_bits_for(len);
        let mut unsorted = Vec::with_capacity(len as usize);
        let mut label = String::new();
        for (index, backend) in backends.iter().enumerate() {
            push_points(backend, index, vnodes(backend), &mut label, &mut unsorted);
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
            ring[b[0] as usize..b[1] as usize].sort_unstable_by(|a, b| ring_order(backends, a, b));
        }
        let buckets = (0..=1usize << bucket_bits).map(|b| fine[b << d]).collect();
        HashRing {
            fast: fast_entries(&ring, bucket_bits, backends.len()),
            ring: ring.into_boxed_slice(),
            buckets,
            bucket_bits,
            shift,
            members: members(backends),
        }
    }

    /// The ring [`build`](Self::build) makes for `backends`, made from `previous`
    /// (the same pool's ring before a change) by keeping the points of every
    /// backend whose address and weight are unchanged and placing only the others'.
    ///
    /// A reload that changes a few backends of a large pool then costs a merge of
    /// the kept points with the few new ones instead of hashing and sorting them
    /// all. Falls back to `build` when the point scale changed (every backend's
    /// count moved), when addresses repeat (their points tie, and only `build`'s
    /// order decides them), or when most points are new anyway.
    pub fn build_from(previous: &HashRing, backends: &[Backend]) -> HashRing {
        let shift = shift_for(backends);
        if shift != previous.shift || has_repeated_addr(backends) {
            return HashRing::build(backends);
        }
        let mut old_at: HashMap<SocketAddr, usize> = HashMap::with_capacity(previous.members.len());
        for (i, &(addr, _)) in previous.members.iter().enumerate() {
            if old_at.insert(addr, i).is_some() {
                return HashRing::build(backends);
            }
        }
        // The new index of each previous member whose points carry over.
        let mut carried: Vec<Option<u32>> = vec![None; previous.members.len()];
        let mut placed = Vec::new();
        let mut label = String::new();
        for (index, b) in backends.iter().enumerate() {
            match old_at.get(&b.addr) {
                Some(&old) if previous.members[old].1 == b.weight => {
                    carried[old] = Some(to_u32(index));
                }
                _ => push_points(b, index, vnodes(b.weight, shift), &mut label, &mut placed),
            }
        }
        let len: u64 = backends.iter().map(|b| vnodes(b.weight, shift)).sum();
        if placed.len() as u64 * 2 > len {
            return HashRing::build(backends);
        }
        placed.sort_unstable_by(|a, b| ring_order(backends, a, b));
        // Merge the kept points (already in ring order, re-indexed) with the new
        // ones, building the bucket index on the way.
        let bucket_bits = bucket_bits_for(len);
        let mut ring = Vec::with_capacity(len as usize);
        let mut buckets = Vec::with_capacity((1 << bucket_bits) + 1);
        let mut emit = |entry: (u64, u32), ring: &mut Vec<(u64, u32)>| {
            let b = bucket_of(entry.0, bucket_bits) as usize;
            while buckets.len() <= b {
                buckets.push(to_u32(ring.len()));
            }
            ring.push(entry);
        };
        let mut placed = placed.into_iter().peekable();
        for &(point, old) in previous.ring.iter() {
            let Some(new) = carried[old as usize] else {
                continue;
            };
            let kept = (point, new);
            // The new points are few: most kept points compare with one of them by
            // point alone (addresses break exact ties only).
            while let Some(&next) = placed.peek() {
                if next.0 > point || (next.0 == point && ring_order(backends, &kept, &next).is_le())
                {
                    break;
                }
                emit(next, &mut ring);
                placed.next();
            }
            emit(kept, &mut ring);
        }
        for next in placed {
            emit(next, &mut ring);
        }
        debug_assert_eq!(ring.len() as u64, len);
        buckets.resize((1 << bucket_bits) + 1, to_u32(ring.len()));
        HashRing {
            fast: fast_entries(&ring, bucket_bits, backends.len()),
            ring: ring.into_boxed_slice(),
            buckets: buckets.into_boxed_slice(),
            bucket_bits,
            shift,
            members: members(backends),
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
        if self.fast.is_empty() {
            return lo + self.ring[lo..hi].partition_point(|&(p, _)| p < point);
        }
        // The bucket's points share their top bits with `point`: the next 16 decide,
        // unless they are equal too (one pick in ~10 000 at most), when only the
        // whole points can.
        let next = next_bits(point, self.bucket_bits);
        let at = lo + self.fast[lo..hi].partition_point(|&e| e >> 16 < next);
        if at < hi && self.fast[at] >> 16 == next {
            return at + self.ring[at..hi].partition_point(|&(p, _)| p < point);
        }
        at
    }

    /// The index of the backend owning ring position `at`.
    #[inline]
    fn owner(&self, at: usize) -> usize {
        match self.fast.get(at) {
            Some(&e) => (e & 0xffff) as usize,
            None => self.ring[at].1 as usize,
        }
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
            let i = self.owner(at);
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

/// How far every backend's point count is shifted right to keep the ring near
/// [`MAX_POINTS`].
fn shift_for(backends: &[Backend]) -> u32 {
    let total: u64 = backends
        .iter()
        .map(|b| POINTS_PER_WEIGHT * u64::from(b.weight.max(1)))
        .sum();
    let mut shift = 0;
    while total >> shift > MAX_POINTS {
        shift += 1;
    }
    shift
}

/// Points a backend of `weight` owns at `shift`.
fn vnodes(weight: u32, shift: u32) -> u64 {
    ((POINTS_PER_WEIGHT * u64::from(weight.max(1))) >> shift).max(1)
}

/// Bits of the bucket index for a ring of `len` points: 2 to 8 points per bucket
/// (a cache line or two of the ring), so the table is a quarter of the ring's
/// length and mostly stays in cache.
fn bucket_bits_for(len: u64) -> u32 {
    (len.max(1).ilog2().saturating_sub(2)).min(MAX_BUCKET_BITS)
}

/// Appends the `count` points of `backend` (at `index` in its slice): the hashes of
/// `"<addr>#<i>"`. The `"<addr>#"` prefix is hashed once (FNV-1a is a running
/// state), each point then costs its digits.
fn push_points(
    backend: &Backend,
    index: usize,
    count: u64,
    label: &mut String,
    out: &mut Vec<(u64, u32)>,
) {
    let index = to_u32(index);
    label.clear();
    write!(label, "{}#", backend.addr).expect("writing to a String");
    let prefix = super::fnv_extend(super::FNV_OFFSET, label.as_bytes());
    let mut digits = [0u8; 20];
    for vnode in 0..count {
        let label_end = super::fnv_extend(prefix, decimal(vnode, &mut digits));
        out.push((super::key_hash_finish(label_end), index));
    }
}

fn to_u32(index: usize) -> u32 {
    u32::try_from(index).expect("pool holds fewer than 2^32 backends")
}

/// Ring order: by point, then by the owner's address.
fn ring_order(backends: &[Backend], a: &(u64, u32), b: &(u64, u32)) -> std::cmp::Ordering {
    let addr = |i: u32| backends[i as usize].addr;
    a.0.cmp(&b.0).then_with(|| addr(a.1).cmp(&addr(b.1)))
}

fn members(backends: &[Backend]) -> Box<[(SocketAddr, u32)]> {
    backends.iter().map(|b| (b.addr, b.weight)).collect()
}

fn has_repeated_addr(backends: &[Backend]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(backends.len());
    backends.iter().any(|b| !seen.insert(b.addr))
}

/// [`HashRing::fast`] for `ring` with its index's `bucket_bits`, for a slice of
/// `backends` backends: empty when an index does not fit 16 bits.
fn fast_entries(ring: &[(u64, u32)], bucket_bits: u32, backends: usize) -> Box<[u32]> {
    if backends > 1 << 16 {
        return Box::new([]);
    }
    ring.iter()
        .map(|&(point, owner)| next_bits(point, bucket_bits) << 16 | owner)
        .collect()
}

/// The 16 bits of `point` after its top `bucket_bits` (at most 16).
#[inline]
fn next_bits(point: u64, bucket_bits: u32) -> u32 {
    ((point << bucket_bits) >> 48) as u32
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
            // Without the compact copy (a pool of over 2^16 backends has none), the
            // lookup searches the whole points.
            let mut wide = HashRing::build(&backends);
            wide.fast = Box::new([]);
            for key in near.chain(random).chain([0, u64::MAX]) {
                let want = ring.ring.partition_point(|&(p, _)| p < key);
                assert_eq!(ring.first_at_or_after(key), want, "key {key:#x}");
                assert_eq!(wide.first_at_or_after(key), want, "key {key:#x}, wide");
                if want < ring.ring.len() {
                    assert_eq!(ring.owner(want), ring.ring[want].1 as usize);
                    assert_eq!(wide.owner(want), ring.ring[want].1 as usize);
                }
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

    /// The ring, index and scale `build_from` made, against `build`'s for the same slice.
    fn assert_same_ring(from: &HashRing, built: &HashRing) {
        assert_eq!(from.shift, built.shift);
        assert_eq!(from.bucket_bits, built.bucket_bits);
        assert_eq!(from.members, built.members);
        assert!(from.ring == built.ring, "rings differ");
        assert_eq!(from.buckets, built.buckets);
        assert_eq!(from.fast, built.fast);
    }

    #[test]
    fn a_ring_made_from_the_last_one_is_the_ring_build_makes() {
        let base = test_backends(&[1, 2, 3, 1, 2, 1, 1, 3, 2, 1]);
        let previous = HashRing::build(&base);
        let mut changes: Vec<(&str, Vec<Backend>)> = Vec::new();
        let mut weight = base.clone();
        weight[3].weight = 2;
        changes.push(("one weight", weight));
        changes.push(("one removed", [&base[..4], &base[5..]].concat()));
        let mut added = base.clone();
        added.extend(test_backends(&[1; 12]).into_iter().skip(10));
        changes.push(("two added", added));
        let mut reordered = base.clone();
        reordered.reverse();
        reordered[0].weight = 3;
        changes.push(("reordered, one weight", reordered));
        let mut most = base.clone();
        for b in &mut most[..8] {
            b.weight += 1;
        }
        changes.push(("most changed (built afresh)", most));
        // Past MAX_POINTS every count is shifted: the scale changed.
        let mut heavy = base.clone();
        heavy[0].weight = 5_000;
        changes.push(("scale changed", heavy));
        let mut repeated = base.clone();
        repeated[1].addr = repeated[0].addr;
        changes.push(("an address twice", repeated));
        changes.push(("none left", Vec::new()));
        for (what, backends) in &changes {
            let from = HashRing::build_from(&previous, backends);
            let built = HashRing::build(backends);
            assert_eq!(from.ring.len(), built.ring.len(), "{what}");
            assert_same_ring(&from, &built);
        }
        // And from a ring that had a shift, back to one that has none.
        let heavy = HashRing::build(&changes[5].1);
        assert_same_ring(&HashRing::build_from(&heavy, &base), &previous);
    }

    #[test]
    fn a_ring_made_from_the_last_one_keeps_the_points_of_unchanged_backends() {
        // 1000 backends: the merge path is taken (a few points are new), and keys
        // not on the changed backend keep their owner.
        let base = test_backends(&[1; 1000]);
        let previous = HashRing::build(&base);
        let mut changed = base.clone();
        changed[500].weight = 2;
        let from = HashRing::build_from(&previous, &changed);
        assert_same_ring(&from, &HashRing::build(&changed));
        let moved = (0..KEYS)
            .filter(|&k| {
                let before = previous.pick(&base, Some(key(k)), |_| true);
                let after = from.pick(&changed, Some(key(k)), |_| true);
                before != after
            })
            .count();
        // Only keys that now land on backend 500's new points move (~0.1 % each).
        assert!(moved < KEYS as usize / 100, "{moved} keys moved");
    }
}
