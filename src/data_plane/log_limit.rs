//! Rate limits for log lines a client can trigger at will.
//!
//! A per-connection warning (a dropped rapid-reset connection, a failed accept)
//! is as frequent as the client that provokes it: a reconnecting attacker would
//! otherwise fill the log. Each such call site owns a `static` [`LogLimit`] that
//! lets a few lines through per one-second window and counts the rest; the next
//! line let through carries that count as `suppressed = K`. Atomics only, so a
//! check costs no lock and no allocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use tokio::time::Instant;

/// Lines each call site may log per second by default.
pub const PER_SECOND: u64 = 5;

/// "No window yet": the first check always opens one.
const NO_WINDOW: u64 = u64::MAX;

/// A per-call-site budget of log lines per one-second window.
#[derive(Debug)]
pub struct LogLimit {
    per_second: u64,
    /// The current window, in whole seconds since the process's clock origin.
    window: AtomicU64,
    /// Checks in the current window (a u64 cannot wrap at any real line rate).
    passed: AtomicU64,
    /// Lines refused since the last one let through.
    suppressed: AtomicU64,
}

/// A line may be logged; `suppressed` is how many were dropped since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// `None` when nothing was dropped, so the field is left out of the line.
    pub suppressed: Option<u64>,
}

impl LogLimit {
    /// A limit of `per_second` lines per second (usable in a `static`).
    pub const fn new(per_second: u64) -> Self {
        LogLimit {
            per_second,
            window: AtomicU64::new(NO_WINDOW),
            passed: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now (by tokio's clock, so paused time applies).
    pub fn check(&self) -> Option<Allowed> {
        self.check_at(seconds_since_origin(Instant::now()))
    }

    /// [`check`](Self::check) at `now`, whole seconds on any clock that only grows.
    pub fn check_at(&self, now: u64) -> Option<Allowed> {
        let window = self.window.load(Ordering::Relaxed);
        if window != now
            && self
                .window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // A racing check may count into the old window's total first: at worst
            // one line too many or too few in a second, never unbounded.
            self.passed.store(0, Ordering::Relaxed);
        }
        let n = self.passed.fetch_add(1, Ordering::Relaxed);
        if n < self.per_second {
            let dropped = self.suppressed.swap(0, Ordering::Relaxed);
            Some(Allowed {
                suppressed: (dropped > 0).then_some(dropped),
            })
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Whole seconds from the first call in this process to `now`.
fn seconds_since_origin(now: Instant) -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(|| now);
    now.saturating_duration_since(origin).as_secs()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn lets_n_lines_per_window_through_and_counts_the_rest() {
        let limit = LogLimit::new(3);
        let passed: Vec<_> = (0..10).map(|_| limit.check_at(7)).collect();
        assert_eq!(passed.iter().filter(|a| a.is_some()).count(), 3);
        assert!(passed[..3]
            .iter()
            .all(|a| *a == Some(Allowed { suppressed: None })));
        // The next window's first line reports the seven dropped ones, once.
        assert_eq!(
            limit.check_at(8),
            Some(Allowed {
                suppressed: Some(7)
            })
        );
        assert_eq!(limit.check_at(8), Some(Allowed { suppressed: None }));
        assert_eq!(limit.check_at(8), Some(Allowed { suppressed: None }));
        assert_eq!(limit.check_at(8), None);
        assert_eq!(
            limit.check_at(20),
            Some(Allowed {
                suppressed: Some(1)
            })
        );
    }

    #[test]
    fn zero_lets_nothing_through() {
        let limit = LogLimit::new(0);
        assert!((0..5).all(|s| limit.check_at(s).is_none()));
    }

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time() {
        static LIMIT: LogLimit = LogLimit::new(PER_SECOND);
        // Align to a window boundary of the process-wide origin.
        let _ = seconds_since_origin(Instant::now());
        let allowed = (0..100).filter(|_| LIMIT.check().is_some()).count();
        assert!(allowed as u64 <= PER_SECOND, "{allowed}");
        tokio::time::advance(Duration::from_millis(1_100)).await;
        let next = LIMIT.check().expect("a new second");
        assert!(next.suppressed.is_some_and(|k| k >= 95), "{next:?}");
    }
}
