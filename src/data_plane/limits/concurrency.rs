//! A concurrency limit (`concurrency = { max_in_flight, queue, queue_timeout }`
//! of a route or a pool): requests at once, each counted from its admission
//! until its response body or tunnel ends (the [`Permit`] rides with the
//! backend's in-flight guard), with an optional bounded wait for a place.
//!
//! Admission is one compare-and-swap on a counter: no lock. Only a request that
//! finds the limit reached, with a queue configured, registers on a `Notify`
//! (tokio's short internal lock, the same rare path as a pool's `hold`); a
//! released place wakes one waiter only when someone waits. The queue is not
//! strictly first come first served: a request arriving as a place frees may
//! take it before a waiter does; a waiter that loses simply waits on, bounded by
//! its `queue_timeout`.
//!
//! The settings live in atomics so that a reload changing them keeps the count
//! of the requests already admitted (a fresh counter would let a whole second
//! limit's worth in beside them).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::control_plane::config::spec::ConcurrencySpec;

/// Why a request was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// At the limit, and no queue is configured.
    #[error("max_in_flight requests are in flight")]
    Full,
    /// At the limit, and the queue is full.
    #[error("max_in_flight requests are in flight and the queue is full")]
    QueueFull,
    /// Waited its `queue_timeout` without a place freeing.
    #[error("waited queue_timeout for a place under max_in_flight")]
    QueueTimeout,
}

impl Refused {
    /// The `sluicegate-error` token.
    pub fn cause(self) -> &'static str {
        match self {
            Refused::Full => "in_flight_limit",
            Refused::QueueFull => "in_flight_queue_full",
            Refused::QueueTimeout => "in_flight_queue_timeout",
        }
    }
}

/// The count and settings of one limit; kept across snapshots (a route's by
/// name, a pool's in its health runtime).
#[derive(Debug)]
pub struct InFlight {
    /// `max_in_flight`; 0: no limit (a pool without `concurrency`).
    limit: AtomicU32,
    queue: AtomicU32,
    queue_timeout_ns: AtomicU64,
    /// Requests admitted and not yet ended.
    now: AtomicUsize,
    /// Requests in this limit's own queue (bounded by `queue`).
    queued: AtomicUsize,
    /// Requests waiting for a place, whichever queue bounds them (what a
    /// release looks at to wake one).
    waiting: AtomicUsize,
    /// Wakes one waiter when a place frees (used only while someone waits).
    freed: Notify,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            limit: AtomicU32::new(0),
            queue: AtomicU32::new(0),
            queue_timeout_ns: AtomicU64::new(0),
            now: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }
}

/// A place under a limit, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    of: Arc<InFlight>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        // SeqCst with the waiter's `waiting` increment and admission attempt:
        // either this sees the waiter and wakes it, or the waiter sees the place.
        self.of.now.fetch_sub(1, Ordering::SeqCst);
        if self.of.waiting.load(Ordering::SeqCst) > 0 {
            self.of.freed.notify_one();
        }
    }
}

/// The places a request holds: its route's and its pool's, and a connection
/// under its backend's circuit breaker (any may be absent).
#[derive(Debug, Default)]
pub struct Permits {
    /// Under the route's `concurrency`.
    pub route: Option<Permit>,
    /// Under the pool's `concurrency`.
    pub pool: Option<Permit>,
    /// Under the pool's `circuit_breaker.max_connections` for this backend.
    pub connection: Option<Permit>,
}

impl InFlight {
    /// A limit with `spec`'s settings.
    pub fn new(spec: &ConcurrencySpec) -> Self {
        let limit = InFlight::default();
        limit.configure(Some(spec));
        limit
    }

    /// Applies new settings (a reload); `None` lifts the limit. Requests already
    /// admitted keep counting.
    pub fn configure(&self, spec: Option<&ConcurrencySpec>) {
        let (limit, queue, timeout) = spec.map_or((0, 0, Duration::ZERO), |s| {
            (s.max_in_flight, s.queue, s.queue_timeout)
        });
        self.limit.store(limit, Ordering::Relaxed);
        self.queue.store(queue, Ordering::Relaxed);
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        self.queue_timeout_ns.store(ns, Ordering::Relaxed);
        // A raised limit lets waiters in now rather than at the next release.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }

    /// Requests admitted and not yet ended.
    pub fn in_flight(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }

    /// Requests waiting for a place.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The limit in force (0: none).
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// A place if one is free now.
    #[inline]
    pub fn try_admit(self: &Arc<Self>) -> Option<Permit> {
        let limit = self.limit.load(Ordering::Relaxed) as usize;
        let mut now = self.now.load(Ordering::SeqCst);
        loop {
            if limit != 0 && now >= limit {
                return None;
            }
            match self
                .now
                .compare_exchange_weak(now, now + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    return Some(Permit {
                        of: Arc::clone(self),
                    })
                }
                Err(seen) => now = seen,
            }
        }
    }

    /// A place now, or after a wait in the queue (when configured and not full).
    pub async fn admit(self: &Arc<Self>) -> Result<Permit, Refused> {
        let queue = self.queue.load(Ordering::Relaxed) as usize;
        let timeout = Duration::from_nanos(self.queue_timeout_ns.load(Ordering::Relaxed));
        self.admit_queued(&self.queued, queue, timeout).await
    }

    /// A place now, or after a wait of at most `timeout` while fewer than
    /// `max_queued` wait in `queue` (a queue shared by several limits: a pool's
    /// pending requests over its backends' connection limits).
    pub async fn admit_queued(
        self: &Arc<Self>,
        queue: &AtomicUsize,
        max_queued: usize,
        timeout: Duration,
    ) -> Result<Permit, Refused> {
        if let Some(permit) = self.try_admit() {
            return Ok(permit);
        }
        if max_queued == 0 {
            return Err(Refused::Full);
        }
        if queue.fetch_add(1, Ordering::SeqCst) >= max_queued {
            queue.fetch_sub(1, Ordering::SeqCst);
            return Err(Refused::QueueFull);
        }
        let _leave_queue = Leave(queue);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&self.waiting);
        let deadline = crate::clock::later(Instant::now(), timeout);
        loop {
            let notified = self.freed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            // Registered before looking: a place freed from here on wakes us.
            if let Some(permit) = self.try_admit() {
                return Ok(permit);
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => return Err(Refused::QueueTimeout),
            }
        }
    }
}

/// Leaves the queue when the wait ends, however it ends.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_in_flight: u32, queue: u32, ms: u64) -> ConcurrencySpec {
        ConcurrencySpec {
            max_in_flight,
            queue,
            queue_timeout: Duration::from_millis(ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn admits_up_to_the_limit_then_refuses_without_a_queue() {
        let limit = Arc::new(InFlight::new(&spec(3, 0, 1000)));
        let held: Vec<Permit> = (0..3).map(|_| limit.try_admit().expect("place")).collect();
        assert_eq!(limit.in_flight(), 3);
        assert_eq!(limit.admit().await.expect_err("full"), Refused::Full);
        drop(held);
        assert_eq!(limit.in_flight(), 0);
        assert!(limit.admit().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_gets_the_place_freed_and_the_queue_is_bounded() {
        let limit = Arc::new(InFlight::new(&spec(1, 1, 1000)));
        let first = limit.try_admit().expect("place");
        let waiter = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move { limit.admit().await.map(|_| ()) }
        });
        while limit.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        // The queue holds one: the next is refused at once.
        assert_eq!(
            limit.admit().await.expect_err("queue full"),
            Refused::QueueFull
        );
        drop(first);
        assert_eq!(waiter.await.expect("join"), Ok(()));
        assert_eq!(limit.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_gives_up_at_its_timeout() {
        let limit = Arc::new(InFlight::new(&spec(1, 4, 250)));
        let _held = limit.try_admit().expect("place");
        let started = Instant::now();
        assert_eq!(
            limit.admit().await.expect_err("timeout"),
            Refused::QueueTimeout
        );
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        assert_eq!(limit.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_the_count_and_a_raised_limit_wakes_waiters() {
        let limit = Arc::new(InFlight::new(&spec(1, 4, 10_000)));
        let _held = limit.try_admit().expect("place");
        let waiter = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move { limit.admit().await.map(|_| ()) }
        });
        while limit.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        limit.configure(Some(&spec(2, 4, 10_000)));
        assert_eq!(waiter.await.expect("join"), Ok(()));
        assert_eq!(
            limit.in_flight(),
            1,
            "the waiter's permit ended with its task"
        );
        // No limit: anything goes, and the count still runs.
        limit.configure(None);
        let many: Vec<Permit> = (0..10).map(|_| limit.try_admit().expect("place")).collect();
        assert_eq!(limit.in_flight(), 11);
        drop(many);
    }
}
