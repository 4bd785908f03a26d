//! Backend health: active probes, passive outlier ejection, slow start, hold.
//!
//! What a pick reads is per-backend atomics ([`BackendHealth`], inside
//! `BackendState`), folded into the one eligibility rule
//! `BackendState::is_eligible` (healthy && !ejected && not withheld: draining or
//! Docker-unhealthy). Nothing here rebuilds snapshots: a probe or an ejection
//! flips an atomic and the next pick sees it.
//!
//! - `probe`: one task per backend of a pool with `[pools.health]`, sending
//!   `GET path` every `interval` and counting `rise` / `fall`;
//! - `grpc`: the probe of a pool with `grpc = true`, a
//!   `grpc.health.v1.Health/Check` call on the pool's HTTP/2 connections;
//! - `supervisor`: owns those tasks and reconciles them with each new snapshot;
//! - `outlier`: passive ejection from the outcomes the proxy reports;
//! - `hold`: requests waiting for a backend instead of a 503;
//! - `state`: the atomics and their read accessors (for the admin view and
//!   metrics).
//!
//! Per pool, a [`PoolHealth`] survives snapshots like backend state does: it wakes
//! held requests, serialises ejection decisions (so `max_ejected_percent` holds) and
//! publishes every transition as a [`HealthEvent`] on a broadcast channel the
//! controller hands out ([`HealthSupervisor::subscribe`]).
//!
//! Choosing among eligible backends (and applying the ramp) is `balance`'s job;
//! panic routing is in `snapshot::Pool::pick`.

pub(crate) mod grpc;
pub(crate) mod hold;
pub(crate) mod outlier;
pub(crate) mod probe;
pub(crate) mod state;
pub(crate) mod supervisor;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;

use crate::control_plane::config::spec::PoolName;
use crate::data_plane::pool_stats::PoolStats;
use crate::metrics::{names, Registrar};

pub use hold::HoldError;
pub use outlier::Outcome;
pub use state::{BackendHealth, HealthStatus, ProbeOutcome, ProbeResult, FULL_RAMP, RAMP_START};
pub use supervisor::HealthSupervisor;

/// Capacity of the health event channel; a receiver lagging further loses the oldest.
pub const EVENT_CAPACITY: usize = 1024;

/// One change of a backend's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    /// Pool of the backend.
    pub pool: PoolName,
    /// The backend's address.
    pub addr: SocketAddr,
    /// What happened to it.
    pub change: HealthChange,
}

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthChange {
    /// The active probe moved the backend between statuses.
    Status {
        /// Status before the probe.
        from: HealthStatus,
        /// Status after it.
        to: HealthStatus,
    },
    /// Real traffic ejected the backend until `until`; `level` is how many ejections
    /// in a row this is (1 = the first, lasting `base_ejection`).
    Ejected {
        /// When the ejection ends (probation starts).
        until: Instant,
        /// Ejections in a row, this one included.
        level: u32,
    },
    /// A request on probation succeeded: the ejection history is cleared.
    Restored,
}

/// Health runtime shared by every snapshot's version of one pool.
#[derive(Debug)]
pub struct PoolHealth {
    name: PoolName,
    /// Requests currently held (see [`hold`]).
    held: AtomicUsize,
    /// Wakes held requests when a backend may have become usable.
    wake: Notify,
    /// Taken while an ejection is decided, so two never both fit under the cap.
    ejecting: AtomicBool,
    events: broadcast::Sender<HealthEvent>,
    /// The pool's live traffic (the rollout gate reads it).
    traffic: PoolStats,
    /// Where `backend_ejections_total` is counted: the gateway's own recorder.
    metrics: Registrar,
    /// Requests and retries of the last seconds, for the pool's `retry_budget`.
    retry_window: crate::data_plane::limits::budget::RetryWindow,
    /// The count behind the pool's `concurrency` (no limit while it has none).
    in_flight: Arc<crate::data_plane::limits::concurrency::InFlight>,
    /// Requests waiting for a connection under the pool's `circuit_breaker`.
    pending: AtomicUsize,
}

impl PoolHealth {
    /// The runtime of pool `name`, publishing on `events`.
    pub fn new(name: PoolName, events: broadcast::Sender<HealthEvent>) -> Self {
        PoolHealth {
            name,
            held: AtomicUsize::new(0),
            wake: Notify::new(),
            ejecting: AtomicBool::new(false),
            events,
            traffic: PoolStats::new(),
            metrics: Registrar::off(),
            retry_window: crate::data_plane::limits::budget::RetryWindow::default(),
            in_flight: Arc::default(),
            pending: AtomicUsize::new(0),
        }
    }

    /// This runtime, counting ejections into `metrics` (the gateway's recorder).
    pub fn counting_into(mut self, metrics: Registrar) -> Self {
        self.metrics = metrics;
        self
    }

    /// A runtime whose events nobody receives (snapshots built without a controller).
    pub fn detached(name: PoolName) -> Self {
        PoolHealth::new(name, broadcast::channel(1).0)
    }

    /// The pool's name.
    pub fn name(&self) -> &PoolName {
        &self.name
    }

    /// Counters of the pool's traffic (attempts, errors, latency), kept across
    /// snapshots like the rest of this runtime.
    pub fn traffic(&self) -> &PoolStats {
        &self.traffic
    }

    /// Requests in flight under the pool's `concurrency` (kept across snapshots;
    /// each snapshot build applies the pool's settings).
    pub fn in_flight(&self) -> &Arc<crate::data_plane::limits::concurrency::InFlight> {
        &self.in_flight
    }

    /// Requests waiting for a connection under the pool's `circuit_breaker`.
    pub fn pending(&self) -> &AtomicUsize {
        &self.pending
    }

    /// The counts behind the pool's `retry_budget` (kept across snapshots).
    pub fn retry_window(&self) -> &crate::data_plane::limits::budget::RetryWindow {
        &self.retry_window
    }

    /// Requests waiting for a backend of this pool right now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Makes held requests look for a backend again. Call after anything that may
    /// have made a backend eligible (a passing probe, a new snapshot, an undrain).
    pub fn wake_held(&self) {
        self.wake.notify_waiters();
    }

    /// Publishes a change of backend `addr` (dropped when nobody listens), and counts
    /// the ones that take a backend out of rotation (`backend_ejections_total`).
    pub(crate) fn publish(&self, addr: SocketAddr, change: HealthChange) {
        match change {
            HealthChange::Ejected { .. } => {
                self.metrics
                    .count_ejection(self.name.as_str(), addr, names::REASON_OUTLIER);
            }
            HealthChange::Status {
                from: HealthStatus::Healthy,
                to: HealthStatus::Unhealthy,
            } => self
                .metrics
                .count_ejection(self.name.as_str(), addr, names::REASON_PROBE),
            HealthChange::Status { .. } | HealthChange::Restored => {}
        }
        let event = HealthEvent {
            pool: self.name.clone(),
            addr,
            change,
        };
        // An error only means there is no receiver right now.
        let _no_receiver = self.events.send(event);
    }

    /// The ejection lock, if free. Contention means another backend's ejection is
    /// being decided at this instant; the caller skips and decides on its next failure.
    pub(crate) fn try_lock_ejection(&self) -> Option<EjectionLock<'_>> {
        self.ejecting
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| EjectionLock(self))
    }
}

/// Held while one ejection is decided; released on drop.
pub(crate) struct EjectionLock<'a>(&'a PoolHealth);

impl Drop for EjectionLock<'_> {
    fn drop(&mut self) {
        self.0.ejecting.store(false, Ordering::Release);
    }
}

/// Builders for the component tests of this module's parts.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use tokio::sync::broadcast;

    use super::{HealthEvent, PoolHealth};
    use crate::data_plane::backend::BackendState;
    use crate::data_plane::snapshot::{Pool, Snapshot};

    /// Pool `p` with `n` round-robin backends `127.0.0.1:20000+i` (the last
    /// `backups` of them backups) and `extra` TOML in its `[[pools]]` table, and a
    /// receiver of its health events. Backend states are created now (so under a
    /// paused clock, `born` is the paused now).
    pub(crate) fn pool_with_backups(
        n: usize,
        backups: usize,
        extra: &str,
    ) -> (Arc<Pool>, broadcast::Receiver<HealthEvent>) {
        let list: Vec<String> = (0..n)
            .map(|i| {
                let backup = i >= n - backups;
                format!(
                    "{{ addr = \"127.0.0.1:{}\", backup = {backup} }}",
                    20000 + i
                )
            })
            .collect();
        let text = format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\n[[pools]]\nname = \"p\"\nbackends = [{}]\n{extra}\n[[routes]]\nname = \"r\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\n",
            list.join(", ")
        );
        let spec =
            crate::control_plane::config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let (tx, rx) = broadcast::channel(64);
        let snapshot = Snapshot::build_with(
            Arc::new(spec),
            |_, b| Arc::new(BackendState::new(b.addr)),
            |p| Arc::new(PoolHealth::new(p.name.clone(), tx.clone())),
        );
        (Arc::clone(&snapshot.pools()[0]), rx)
    }

    /// [`pool_with_backups`] without backups.
    pub(crate) fn pool_with(
        n: usize,
        extra: &str,
    ) -> (Arc<Pool>, broadcast::Receiver<HealthEvent>) {
        pool_with_backups(n, 0, extra)
    }
}

#[cfg(test)]
mod tests;
