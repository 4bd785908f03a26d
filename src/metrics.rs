//! Prometheus metrics: each gateway's own recorder and exporter, the handles
//! requests use, and the gauges sampled at scrape time.
//!
//! sluicegate records metrics when the admin listener is configured (it is where
//! `GET /metrics` is served; with no reader, nothing is recorded and every handle is
//! a no-op). The recorder is `metrics-exporter-prometheus` built without its HTTP
//! listener and never installed as the process's global recorder: each gateway
//! builds its own ([`Exporter::build`]) and hands its [`Registrar`] to whatever
//! records, so gateways sharing a process (the integration tests) share no series,
//! no connection count and no rollout figures. Handles are registered with the
//! recorder directly; the rare events (reloads, ejections, task exits, Docker
//! events) and the scrape-time gauges go through `metrics::with_local_recorder`.
//!
//! Where each series comes from:
//! - request counters, the duration histogram, retries and connect errors: the
//!   proxy, through `handles` resolved when the snapshot is built (a request only
//!   does atomic adds, no label allocation);
//! - `backend_ejections_total`: the pool's health event funnel (`PoolHealth::publish`);
//! - `config_reloads_total`: the controller task; `docker_events_total`: discovery;
//! - rollout series: the rollout driver's hook (`rollouts`);
//! - gauges: `gauges::sample` from the current snapshot at each scrape.
//!
//! `request_duration_seconds` measures from the moment the proxy starts handling a
//! request until its response head is ready for the client connection: routing,
//! hold waits, every attempt and retry, and the backend's time to first byte. The
//! streaming of the body afterwards is not included (an SSE stream may last hours);
//! the access log's `total_ms` covers it.
//!
//! The exporter needs upkeep (draining histogram samples into buckets);
//! [`Exporter::run_upkeep`] is the gateway's owned background task for it.

pub(crate) mod gauges;
pub(crate) mod handles;
pub(crate) mod names;
pub(crate) mod rollouts;

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use metrics_util::MetricKindMask;
use tokio_util::sync::CancellationToken;

pub use gauges::ConnectionGuard;
pub use handles::{BackendMetrics, ClassCounters, MirrorMetrics, PairMetrics, Registrar};
use names::Kind;

use crate::data_plane::snapshot::Snapshot;

/// How often the upkeep task drains histogram samples.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why metrics could not be set up.
#[derive(Clone, Debug, thiserror::Error)]
pub enum MetricsError {
    /// The exporter rejected its configuration (a bug: the buckets are constants).
    #[error("cannot build the Prometheus exporter: {0}")]
    Build(String),
}

/// What one gateway records into: its recorder, its open connection count and the
/// latest figures of its rollouts.
#[derive(Debug)]
pub(crate) struct Recording {
    pub(crate) recorder: PrometheusRecorder,
    /// Client connections open now on this gateway's traffic listeners.
    pub(crate) open_connections: AtomicI64,
    pub(crate) rollouts: rollouts::Latest,
}

/// One gateway's Prometheus exporter: renders what its `GET /metrics` serves.
#[derive(Clone, Debug)]
pub struct Exporter {
    recording: Arc<Recording>,
    handle: PrometheusHandle,
}

/// Help text for every series (the exporter prints it with the series).
fn describe() {
    for &(name, kind, help) in names::HELP {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
}

impl Exporter {
    /// Builds a gateway's own recorder (not installed globally) and describes
    /// every series in it.
    pub fn build() -> Result<Exporter, MetricsError> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(names::REQUEST_DURATION.to_owned()),
                names::DURATION_BUCKETS,
            )
            .map_err(|e| MetricsError::Build(e.to_string()))?
            .set_buckets_for_metric(
                Matcher::Full(names::MIRROR_DURATION.to_owned()),
                names::DURATION_BUCKETS,
            )
            .map_err(|e| MetricsError::Build(e.to_string()))?
            .idle_timeout(MetricKindMask::GAUGE, Some(gauges::GAUGE_IDLE))
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe);
        let recording = Arc::new(Recording {
            recorder,
            open_connections: AtomicI64::new(0),
            rollouts: rollouts::Latest::default(),
        });
        Ok(Exporter { recording, handle })
    }

    /// Where this gateway's handles and events are recorded.
    pub fn registrar(&self) -> Registrar {
        Registrar::recording(Arc::clone(&self.recording))
    }

    /// Samples the gauges from `snapshot`, then renders the Prometheus text format.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let recording = &*self.recording;
        metrics::with_local_recorder(&recording.recorder, || {
            gauges::sample(snapshot, recording);
            if let Some(dropped) = crate::data_plane::access_log::dropped_lines() {
                metrics::counter!(names::ACCESS_LOG_DROPPED).absolute(dropped);
            }
        });
        self.handle.render()
    }

    /// Drains histogram samples every [`UPKEEP_INTERVAL`] until `shutdown`.
    pub async fn run_upkeep(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => self.handle.run_upkeep(),
            }
        }
    }
}

impl Registrar {
    /// Counts a backend leaving rotation for `reason` (`names::REASON_OUTLIER` or
    /// `names::REASON_PROBE`). A rare event: the labels are built here.
    pub fn count_ejection(&self, pool: &str, backend: std::net::SocketAddr, reason: &'static str) {
        self.with(|| {
            metrics::counter!(
                names::EJECTIONS,
                names::label::POOL => pool.to_owned(),
                names::label::BACKEND => backend.to_string(),
                names::label::REASON => reason,
            )
            .increment(1);
        });
    }

    /// Counts a config file reload: applied (`ok = true`) or rejected.
    pub fn count_reload(&self, ok: bool) {
        let result = if ok {
            names::RESULT_OK
        } else {
            names::RESULT_ERROR
        };
        self.with(|| {
            metrics::counter!(names::CONFIG_RELOADS, names::label::RESULT => result).increment(1);
        });
    }

    /// Counts a background task that ended while the gateway ran (task names are a
    /// fixed set, `crate::tasks::name`).
    pub fn count_task_exit(&self, task: &'static str) {
        self.with(|| metrics::counter!(names::TASK_EXITS, "task" => task).increment(1));
    }

    /// Counts a Docker event by its action (for discovery; actions are Docker's
    /// fixed vocabulary, so the label stays bounded).
    pub fn count_docker_event(&self, action: &str) {
        self.with(|| {
            metrics::counter!(names::DOCKER_EVENTS, names::label::ACTION => action.to_owned())
                .increment(1);
        });
    }
}
