//! Live traffic counters of one pool (or one backend): attempts, errors and a
//! latency histogram.
//!
//! A [`PoolStats`] lives in the pool's `PoolHealth`, and one in each
//! `BackendState`, so like backend state they survive snapshot swaps. The request path records each attempt with a few
//! relaxed atomic adds (no lock, no allocation): one for the attempt, one for an
//! error, one for the latency bucket. Readers (the rollout gate) take a [`Sample`]
//! at the start and the end of a window and look at the difference ([`Window`]),
//! so the figures are those *of the window only*, never cumulative.
//!
//! What counts: every attempt on a backend of the pool. An *error* is a 5xx answer
//! or a gateway error (connect failure, timeout, broken response) on an attempt,
//! a gRPC call whose `grpc-status` is a failure (in the head, or in the trailers
//! after its messages: added when they pass), and a request the pool could not
//! serve at all (no usable backend). A pooled
//! connection the backend had closed (`NotSent`) says nothing about the backend
//! and is not counted. Latency is the time to the response head.
//!
//! Latency buckets are logarithmic: values (in microseconds) below 8 have their own
//! bucket, above that each power of two is split into 8 equal parts, so a quantile
//! is estimated to within 12.5 % (rounded up: the bucket's upper bound). Values
//! beyond ~19 hours share the last bucket.
//!
//! This module knows nothing about rollouts or Prometheus; both can read it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;

/// Sub-buckets per power of two.
const SUB: usize = 8;
/// log2(SUB).
const SUB_BITS: u32 = 3;
/// Powers of two covered above the linear range (2^3 µs … 2^36 µs).
const OCTAVES: usize = 33;
/// Number of latency buckets.
pub(crate) const BUCKETS: usize = SUB + OCTAVES * SUB;

/// Counters of one pool's traffic, updated by the request path.
#[derive(Debug)]
pub struct PoolStats {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for PoolStats {
    fn default() -> Self {
        PoolStats {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl PoolStats {
    /// Zeroed counters.
    pub fn new() -> Self {
        PoolStats::default()
    }

    /// An attempt got a response head with `status` after `latency`.
    #[inline]
    pub fn record_response(&self, status: StatusCode, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt (or a request the pool could not serve) failed without a response.
    #[inline]
    pub fn record_error(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt already counted by [`record_response`](Self::record_response)
    /// failed after its head: a gRPC call whose `grpc-status` in the trailers
    /// is a failure, or whose body broke. Only the error is added.
    #[inline]
    pub fn record_late_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now (each read on its own; concurrent updates may land between
    /// reads, which shifts one attempt between two windows at most).
    pub fn sample(&self) -> Sample {
        Sample {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency: self
                .latency
                .iter()
                .enumerate()
                .filter_map(|(i, b)| {
                    let n = b.load(Ordering::Relaxed);
                    (n > 0).then_some((i as u16, n))
                })
                .collect(),
        }
    }
}

/// The counters of a pool at one moment.
///
/// Serialized for the replicas' counters endpoint (`GET /api/v1/cluster/counters`):
/// `latency` as `[bucket, count]` pairs; a bucket past the histogram is ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    requests: u64,
    errors: u64,
    /// (bucket, count) of the non-empty buckets, by bucket: samples are kept
    /// (per backend, by the stats window) and most buckets are empty.
    latency: Box<[(u16, u64)]>,
}

impl Sample {
    /// What happened between `earlier` and this sample.
    pub fn since(&self, earlier: &Sample) -> Window {
        let mut latency = vec![0u64; BUCKETS];
        for &(i, n) in self.latency.iter() {
            if let Some(slot) = latency.get_mut(usize::from(i)) {
                *slot = n;
            }
        }
        for &(i, n) in earlier.latency.iter() {
            if let Some(slot) = latency.get_mut(usize::from(i)) {
                *slot = slot.saturating_sub(n);
            }
        }
        Window {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: latency.into(),
        }
    }

    /// Requests counted since the pool's stats were created.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Errors counted since the pool's stats were created.
    pub fn errors(&self) -> u64 {
        self.errors
    }
}

/// A pool's traffic during one window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Attempts (and unserved requests).
    pub requests: u64,
    /// 5xx answers and gateway errors among them.
    pub errors: u64,
    latency: Box<[u64]>,
}

impl Window {
    /// Adds `other`'s figures to these (several pools as one).
    pub fn absorb(&mut self, other: &Window) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.latency.len() < other.latency.len() {
            let mut grown = vec![0; other.latency.len()];
            grown[..self.latency.len()].copy_from_slice(&self.latency);
            self.latency = grown.into();
        }
        for (mine, theirs) in self.latency.iter_mut().zip(other.latency.iter()) {
            *mine += theirs;
        }
    }

    /// `errors / requests`; 0 without requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The estimated 99th percentile latency; `None` without responses.
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }

    /// The estimated `q` quantile (0 < q ≤ 1) of response latency, rounded up to the
    /// upper bound of its bucket; `None` without responses.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(upper_bound(i)));
            }
        }
        Some(Duration::from_micros(upper_bound(BUCKETS - 1)))
    }
}

/// The bucket of a latency.
#[inline]
fn bucket_of(latency: Duration) -> usize {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if us < SUB as u64 {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros(); // ≥ SUB_BITS
    let sub = ((us >> (octave - SUB_BITS)) as usize) & (SUB - 1);
    let index = SUB + (octave - SUB_BITS) as usize * SUB + sub;
    index.min(BUCKETS - 1)
}

/// The exclusive upper bound, in microseconds, of bucket `i`.
fn upper_bound(i: usize) -> u64 {
    if i < SUB {
        return i as u64 + 1;
    }
    let octave = ((i - SUB) / SUB) as u32 + SUB_BITS;
    let sub = ((i - SUB) % SUB) as u64;
    (SUB as u64 + sub + 1) << (octave - SUB_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_value_falls_below_its_buckets_upper_bound_within_an_eighth() {
        for us in (0..5_000u64).chain((1..40).map(|k| (1u64 << k) + 3)) {
            let i = bucket_of(Duration::from_micros(us));
            let upper = upper_bound(i);
            if i == BUCKETS - 1 {
                continue; // the overflow bucket
            }
            assert!(us < upper, "{us} µs in bucket {i} (< {upper})");
            if us >= 8 {
                assert!(
                    (upper - us) as f64 <= us as f64 / 8.0 + 1.0,
                    "{us} µs → {upper}"
                );
            }
            if i > 0 {
                assert!(us >= upper_bound(i - 1), "{us} below bucket {i}");
            }
        }
        assert_eq!(bucket_of(Duration::from_secs(1_000_000)), BUCKETS - 1);
    }

    #[test]
    fn windows_see_only_what_happened_in_them() {
        let stats = PoolStats::new();
        for _ in 0..50 {
            stats.record_response(StatusCode::OK, ms(900));
        }
        let start = stats.sample();
        for i in 0..100 {
            let status = if i < 3 {
                StatusCode::BAD_GATEWAY
            } else {
                StatusCode::OK
            };
            stats.record_response(status, ms(if i < 98 { 10 } else { 200 }));
        }
        stats.record_error();
        stats.record_response(StatusCode::NOT_FOUND, ms(10));
        let w = stats.sample().since(&start);
        assert_eq!((w.requests, w.errors), (102, 4));
        assert!((w.error_rate() - 4.0 / 102.0).abs() < 1e-9);
        let p99 = w.p99().expect("responses");
        // 101 responses: the 100th by rank is one of the two 200 ms ones.
        assert!(p99 >= ms(200) && p99 <= ms(225), "{p99:?}");
        let p50 = w.quantile(0.5).expect("responses");
        assert!(p50 >= ms(10) && p50 <= ms(12), "{p50:?}");
    }

    #[test]
    fn an_empty_window_has_no_latency_and_no_error_rate() {
        let stats = PoolStats::new();
        stats.record_error();
        let a = stats.sample();
        let w = stats.sample().since(&a);
        assert_eq!((w.requests, w.error_rate(), w.p99()), (0, 0.0, None));
        let mut w = a.since(&Sample::default());
        assert_eq!((w.requests, w.errors, w.p99()), (1, 1, None));
        stats.record_response(StatusCode::OK, ms(3));
        w.absorb(&stats.sample().since(&a));
        assert_eq!(
            (w.requests, w.errors, w.p99()),
            (2, 1, Some(Duration::from_micros(3072)))
        );
    }
}
