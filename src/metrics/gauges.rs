//! Gauges sampled from the current snapshot at scrape time.
//!
//! Every gauge sluicegate exports is *derived* state (a backend's health and load,
//! a route's split weight, the open connection count), so it is not kept up to date
//! on the request path: `GET /metrics` calls [`sample`] just before rendering, and
//! the values are exactly those of the snapshot being served.
//!
//! Removed backends (and pools, routes) must not leave gauges behind. The exporter
//! is built with an idle timeout for gauges only ([`GAUGE_IDLE`]): a gauge nobody
//! set for that long is deleted at the next render. Since every scrape sets the
//! gauges of everything the snapshot holds, what disappeared from the snapshot
//! disappears from the output at the first scrape more than [`GAUGE_IDLE`] after the
//! previous one. No gauge handle is ever cached (a cached handle of a deleted gauge
//! would update nothing): [`sample`] looks each one up, once per scrape.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::names::{self, label};
use super::{Recording, Registrar};
use crate::data_plane::snapshot::Snapshot;

/// A gauge not set for this long is deleted at the next render. Longer than the gap
/// between a scrape's sampling and its render, and than the gap between two
/// concurrent scrapes (each sets its gauges before rendering).
pub(crate) const GAUGE_IDLE: Duration = Duration::from_secs(2);

/// Counts one open client connection of a gateway until dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Option<Arc<Recording>>);

impl Registrar {
    /// Counts a client connection as open on this gateway until the guard is
    /// dropped (once per connection: an `Arc` clone and an atomic add).
    pub fn connection_opened(&self) -> ConnectionGuard {
        let recording = self.get_arc();
        if let Some(r) = &recording {
            r.open_connections.fetch_add(1, Ordering::Relaxed);
        }
        ConnectionGuard(recording)
    }

    /// Client connections open now on this gateway (0 with metrics off).
    pub fn open_connections(&self) -> i64 {
        self.get()
            .map_or(0, |r| r.open_connections.load(Ordering::Relaxed))
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(r) = &self.0 {
            r.open_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Sets every gauge from `snapshot` and from the gateway's own `recording` (its
/// connection count and rollouts). Call with the gateway's recorder as the local one.
pub(super) fn sample(snapshot: &Snapshot, recording: &Recording) {
    metrics::gauge!(names::BUILD_INFO, label::VERSION => env!("CARGO_PKG_VERSION")).set(1.0);
    let open = recording.open_connections.load(Ordering::Relaxed);
    metrics::gauge!(names::ACTIVE_CONNECTIONS).set(open as f64);
    metrics::gauge!(names::MIRROR_INFLIGHT).set(snapshot.mirror_inflight() as f64);
    for pool in snapshot.pools() {
        let pool_name = pool.name.as_str().to_owned();
        for backend in pool.backends() {
            let labels = [
                (label::POOL, pool_name.clone()),
                (label::BACKEND, backend.addr.to_string()),
            ];
            let state = &backend.state;
            let healthy = state.is_healthy() && !state.is_ejected();
            metrics::gauge!(names::BACKEND_HEALTHY, &labels).set(f64::from(u8::from(healthy)));
            metrics::gauge!(names::BACKEND_INFLIGHT, &labels).set(f64::from(state.inflight()));
        }
    }
    for route in snapshot.routes() {
        for entry in route.split.entries() {
            let labels = [
                (label::ROUTE, route.name.as_str().to_owned()),
                (label::POOL, entry.pool.name.as_str().to_owned()),
            ];
            metrics::gauge!(names::SPLIT_WEIGHT, &labels).set(f64::from(entry.weight));
        }
        // Counters kept as atomics beside the route (so `ctl status` reads them
        // too), written here as they stand; a kind never refused is not listed.
        for kind in crate::data_plane::limits::Kind::ALL {
            let n = route.refusals.get(kind);
            if n > 0 {
                let labels = [
                    (label::ROUTE, route.name.as_str().to_owned()),
                    (label::KIND, kind.as_str().to_owned()),
                ];
                metrics::counter!(names::LIMITED, &labels).absolute(n);
            }
        }
    }
    super::rollouts::sample(snapshot, &recording.rollouts);
}
