//! A pool's retry budget: a sliding window of one-second buckets counting the
//! pool's requests and retries, so retries stay under a share of the traffic
//! (Envoy's retry budgets, Finagle's `RetryBudget`).
//!
//! A bucket is tagged with the second it counts; the first request of a new
//! second takes the bucket over (compare-and-swap of the tag) and zeroes it.
//! Counts that land in a bucket while it is taken over may be lost or land in the
//! new second: the budget is approximate by a request or two at each second's
//! edge, never by more, and costs a few relaxed atomics per request.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::control_plane::config::spec::RetryBudgetSpec;

const BUCKETS: usize = RetryBudgetSpec::WINDOW_SECS as usize;

#[derive(Debug, Default)]
struct Bucket {
    /// The second (since the window's origin) counted here, plus one (0: never used).
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// The counts behind one pool's retry budget.
#[derive(Debug)]
pub struct RetryWindow {
    origin: Instant,
    buckets: [Bucket; BUCKETS],
}

impl Default for RetryWindow {
    fn default() -> Self {
        RetryWindow::new(Instant::now())
    }
}

impl RetryWindow {
    /// A window whose seconds count from `origin`.
    pub fn new(origin: Instant) -> Self {
        RetryWindow {
            origin,
            buckets: Default::default(),
        }
    }

    fn second(&self, now: Instant) -> u64 {
        // Tagged from 1, so a fresh bucket (tag 0) is never current.
        now.saturating_duration_since(self.origin).as_secs() + 1
    }

    /// The bucket of `second`, taken over (and zeroed) if it counted an older one.
    fn current(&self, second: u64) -> &Bucket {
        let bucket = &self.buckets[(second % BUCKETS as u64) as usize];
        let tag = bucket.second.load(Ordering::Acquire);
        if tag != second
            && bucket
                .second
                .compare_exchange(tag, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.retries.store(0, Ordering::Relaxed);
        }
        bucket
    }

    /// Counts a request the pool received (its first attempt).
    #[inline]
    pub fn request(&self, now: Instant) {
        let second = self.second(now);
        self.current(second)
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `budget` allows one more retry now; counts it if so.
    pub fn try_retry(&self, budget: &RetryBudgetSpec, now: Instant) -> bool {
        let second = self.second(now);
        let bucket = self.current(second);
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in &self.buckets {
            let tag = b.second.load(Ordering::Acquire);
            // Only the seconds of the window: (now - WINDOW, now].
            if tag != 0 && tag <= second && second - tag < BUCKETS as u64 {
                requests = requests.saturating_add(b.requests.load(Ordering::Relaxed));
                retries = retries.saturating_add(b.retries.load(Ordering::Relaxed));
            }
        }
        let share = requests.saturating_mul(u64::from(budget.percent)) / 100;
        let floor = u64::from(budget.min_per_second).saturating_mul(BUCKETS as u64);
        if retries >= share.saturating_add(floor) {
            return false;
        }
        bucket.retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn budget(percent: u8, min_per_second: u32) -> RetryBudgetSpec {
        RetryBudgetSpec {
            percent,
            min_per_second,
        }
    }

    #[test]
    fn retries_stay_under_the_share_plus_the_floor() {
        let t0 = Instant::now();
        let w = RetryWindow::new(t0);
        let b = budget(20, 1);
        for _ in 0..1000 {
            w.request(t0);
        }
        let allowed = (0..1000).filter(|_| w.try_retry(&b, t0)).count();
        // 20 % of 1000, plus 1 a second over the 10 s window.
        assert_eq!(allowed, 200 + 10);
    }

    #[test]
    fn zero_percent_and_no_floor_allows_nothing() {
        let t0 = Instant::now();
        let w = RetryWindow::new(t0);
        for _ in 0..100 {
            w.request(t0);
        }
        assert!(!w.try_retry(&budget(0, 0), t0));
    }

    #[test]
    fn the_window_slides_old_seconds_out() {
        let t0 = Instant::now();
        let w = RetryWindow::new(t0);
        let b = budget(10, 0);
        for _ in 0..100 {
            w.request(t0);
        }
        let first = (0..100).filter(|_| w.try_retry(&b, t0)).count();
        assert_eq!(first, 10);
        // Nine seconds on, the first second still counts: no new budget.
        let t9 = t0 + Duration::from_secs(9);
        assert!(!w.try_retry(&b, t9));
        // Ten seconds on, it has left the window: no requests, no retries.
        let t10 = t0 + Duration::from_secs(10);
        assert!(!w.try_retry(&b, t10));
        for _ in 0..50 {
            w.request(t10);
        }
        let later = (0..100).filter(|_| w.try_retry(&b, t10)).count();
        assert_eq!(later, 5);
    }
}
