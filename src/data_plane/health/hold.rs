//! Hold: a request that finds no usable backend waits for one instead of a 503.
//!
//! With `hold = { timeout, max_queued }` on a pool, [`wait`] parks the request on
//! the pool's `Notify` (woken in arrival order) until a backend may have become usable:
//! a passing probe, a new snapshot, or the end of a running ejection (the waiter sleeps
//! until the earliest one, so expiry needs no timer task). It then looks again in the
//! *latest* snapshot's version of the pool, so a backend added by a reload (a
//! blue-green swap of a single replica) is found too. At most `max_queued` requests
//! wait per pool; one more is refused at once, and a request that waited `timeout`
//! in total gives up. Both end as 503 `no_healthy_backend`.
//!
//! A backend the request already tried counts again after a wake-up: it has passed a
//! probe (or been re-added, or finished an ejection) since, so it is worth another
//! attempt. The route's retry budget still bounds the attempts.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use super::PoolHealth;
use crate::control_plane::config::spec::HoldSpec;
use crate::control_plane::controller::SharedSnapshot;
use crate::data_plane::snapshot::{Pool, Tried};

/// Why a held request gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    /// `max_queued` requests were already waiting.
    #[error("{0} requests are already waiting for a backend of this pool")]
    QueueFull(usize),
    #[error("no backend became usable within the hold timeout")]
    /// The request waited `timeout` in total.
    TimedOut,
    /// A reload removed the pool.
    #[error("the pool was removed while the request waited")]
    PoolGone,
}

/// A request's place in a pool's hold queue, left on drop.
#[derive(Debug)]
pub struct HoldSlot<'a>(&'a PoolHealth);

impl PoolHealth {
    /// Joins the hold queue unless `max` requests already wait.
    pub fn enter_hold(&self, max: usize) -> Result<HoldSlot<'_>, HoldError> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| HoldSlot(self))
            .map_err(|_| HoldError::QueueFull(max))
    }
}

impl Drop for HoldSlot<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits until the latest version of `pool` has a backend to pick for a request that
/// already `tried` some, or `deadline`; returns that version of the pool.
pub(crate) async fn wait(
    snapshot: &SharedSnapshot,
    pool: &Arc<Pool>,
    spec: &HoldSpec,
    deadline: Instant,
    tried: &mut Tried,
) -> Result<Arc<Pool>, HoldError> {
    let shared = Arc::clone(pool.health());
    let _slot = shared.enter_hold(spec.max_queued)?;
    let mut woken = false;
    loop {
        // Registered before looking, so a wake-up between the look and the wait is
        // not lost.
        let notified = shared.wake.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();

        let current = snapshot
            .load()
            .pool(pool.name.as_str())
            .cloned()
            .ok_or(HoldError::PoolGone)?;
        if woken {
            tried.clear();
        }
        if current.pick(None, tried).is_some() {
            return Ok(current);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(HoldError::TimedOut);
        }
        let wake_at = current
            .next_ejection_end()
            .filter(|&t| t > now)
            .map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(wake_at) => {}
        }
        woken = true;
    }
}
