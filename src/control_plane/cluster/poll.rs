//! The poller: reads the store every `[cluster].poll_interval` and hands the
//! controller task what it found on a `watch` (the latest read wins; a task busy
//! with a write never queues stale reads). Only a new version, or a change in
//! whether the store answers, wakes the task; the time of the last read is
//! updated without waking it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{ClusterStore, StoreError, Stored};

/// One read of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Observation {
    /// When the read finished.
    pub(crate) at: SystemTime,
    pub(crate) result: Result<Stored, StoreError>,
}

/// A watch that the poller fills; `None` until the first read.
pub(crate) fn channel() -> (
    watch::Sender<Option<Observation>>,
    watch::Receiver<Option<Observation>>,
) {
    watch::channel(None)
}

/// Reads `store` every `interval` until `shutdown`.
pub(crate) async fn run(
    store: Arc<dyn ClusterStore>,
    interval: Duration,
    tx: watch::Sender<Option<Observation>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            r = store.read() => r,
        };
        let seen = Observation {
            at: SystemTime::now(),
            result,
        };
        tx.send_if_modified(|last| {
            let news = last.as_ref().is_none_or(|l| l.result != seen.result);
            *last = Some(seen);
            news
        });
    }
}
