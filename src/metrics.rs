//! Prometheus metrics: the process-wide exporter, the handles requests use, and the
//! gauges sampled at scrape time.
//!
//! sluicegate records metrics when the admin listener is configured (it is where
//! `GET /metrics` is served; with no reader, nothing is recorded and every handle is
//! a no-op). The recorder is `metrics-exporter-prometheus` built without its HTTP
//! listener, installed once per process ([`install`]); gateways in one process (the
//! integration tests) share it, so their series differ by label.
//!
//! Where each series comes from:
//! - request counters, the duration histogram, retries and connect errors: the
//!   proxy, through [`handles`] resolved when the snapshot is built (a request only
//!   does atomic adds, no label allocation);
//! - `backend_ejections_total`: the pool's health event funnel (`PoolHealth::publish`);
//! - `config_reloads_total`: the controller task; `docker_events_total`: discovery;
//! - rollout series: the rollout driver's hook ([`rollouts`]);
//! - gauges: [`gauges::sample`] from the current snapshot at each scrape.
//!
//! `request_duration_seconds` measures from the moment the proxy starts handling a
//! request until its response head is ready for the client connection: routing,
//! hold waits, every attempt and retry, and the backend's time to first byte. The
//! streaming of the body afterwards is not included (an SSE stream may last hours);
//! the access log's `total_ms` covers it.
//!
//! The exporter needs upkeep (draining histogram samples into buckets);
//! [`Exporter::run_upkeep`] is the gateway's owned background task for it.

pub mod gauges;
pub mod handles;
pub mod names;
pub mod rollouts;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio_util::sync::CancellationToken;

pub use gauges::{connection_opened, ConnectionGuard};
pub use handles::{BackendMetrics, ClassCounters, PairMetrics, Registrar};
use names::Kind;

use crate::snapshot::Snapshot;

/// How often the upkeep task drains histogram samples.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why metrics could not be set up.
#[derive(Clone, Debug, thiserror::Error)]
pub enum MetricsError {
    /// Something else in this process installed a global `metrics` recorder first.
    #[error("another metrics recorder is already installed in this process; sluicegate's Prometheus exporter must be the global recorder")]
    RecorderTaken,
    /// The exporter rejected its configuration (a bug: the buckets are constants).
    #[error("cannot build the Prometheus exporter: {0}")]
    Build(String),
}

/// The process's Prometheus exporter: renders what `GET /metrics` serves.
#[derive(Clone, Debug)]
pub struct Exporter {
    handle: PrometheusHandle,
}

/// Installs the global recorder (once per process) and describes every series.
/// Later calls return the same exporter.
pub fn install() -> Result<Exporter, MetricsError> {
    static EXPORTER: OnceLock<Result<Exporter, MetricsError>> = OnceLock::new();
    EXPORTER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(names::REQUEST_DURATION.to_owned()),
                    names::DURATION_BUCKETS,
                )
                .map_err(|e| MetricsError::Build(e.to_string()))?
                .idle_timeout(MetricKindMask::GAUGE, Some(gauges::GAUGE_IDLE))
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|_| MetricsError::RecorderTaken)?;
            describe();
            Ok(Exporter { handle })
        })
        .clone()
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
    /// Samples the gauges from `snapshot`, then renders the Prometheus text format.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        gauges::sample(snapshot);
        if let Some(dropped) = crate::access_log::dropped_lines() {
            metrics::counter!(names::ACCESS_LOG_DROPPED).absolute(dropped);
        }
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

/// Counts a backend leaving rotation for `reason` ([`names::REASON_OUTLIER`] or
/// [`names::REASON_PROBE`]). A rare event: the labels are built here.
pub fn count_ejection(pool: &str, backend: std::net::SocketAddr, reason: &'static str) {
    metrics::counter!(
        names::EJECTIONS,
        names::label::POOL => pool.to_owned(),
        names::label::BACKEND => backend.to_string(),
        names::label::REASON => reason,
    )
    .increment(1);
}

/// Counts a config file reload: applied (`ok = true`) or rejected.
pub fn count_reload(ok: bool) {
    let result = if ok {
        names::RESULT_OK
    } else {
        names::RESULT_ERROR
    };
    metrics::counter!(names::CONFIG_RELOADS, names::label::RESULT => result).increment(1);
}

/// Counts a background task that ended while the gateway ran (task names are a
/// fixed set, `crate::tasks::name`).
pub fn count_task_exit(task: &'static str) {
    metrics::counter!(names::TASK_EXITS, "task" => task).increment(1);
}

/// Counts a Docker event by its action (for discovery; actions are Docker's fixed
/// vocabulary, so the label stays bounded).
pub fn count_docker_event(action: &str) {
    metrics::counter!(names::DOCKER_EVENTS, names::label::ACTION => action.to_owned()).increment(1);
}
