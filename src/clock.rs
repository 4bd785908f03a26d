//! Time arithmetic that cannot panic.
//!
//! Durations from input are bounded at validation (`config::spec::MAX_DURATION`),
//! so these never saturate in practice; they exist so that a bound missed
//! somewhere ends in a timer that never fires instead of a panicked task.

use std::time::Duration;

use tokio::time::Instant;

/// About thirty years: "never" for a timer, and still far from `Instant`'s end.
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `at + by`, or as far in the future as an `Instant` goes when that overflows.
pub fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .or_else(|| at.checked_add(FAR))
        .unwrap_or(at)
}

/// `d × n`, or `Duration::MAX` when that overflows.
pub fn times(d: Duration, n: u32) -> Duration {
    d.checked_mul(n).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_sums_and_products_saturate() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(365 * 24 * 3600));
        assert_eq!(times(Duration::MAX, 3), Duration::MAX);
        assert_eq!(times(Duration::from_secs(2), 3), Duration::from_secs(6));
    }
}
