//! The names, help texts, buckets and label values of every series sluicegate exports.
//!
//! One place, so the dashboard, the alert rules and the code agree. Label values are
//! bounded by construction: route and pool names come from the config, backend
//! addresses from the config or discovery, `code_class` is one of five strings
//! ([`CODE_CLASSES`]), `reason`/`result`/`action` are fixed tokens. Nothing from a
//! request (path, Host, headers) ever becomes a label.

use http::StatusCode;

/// `requests_total{route,pool,backend,code_class}`: requests answered.
pub(crate) const REQUESTS: &str = "sluicegate_requests_total";
/// `request_duration_seconds{route,pool}`: arrival to response head.
pub(crate) const REQUEST_DURATION: &str = "sluicegate_request_duration_seconds";
/// `upstream_connect_errors_total{pool,backend}`.
pub(crate) const CONNECT_ERRORS: &str = "sluicegate_upstream_connect_errors_total";
/// `retries_total{route,pool}`.
pub(crate) const RETRIES: &str = "sluicegate_retries_total";
/// `backend_ejections_total{pool,backend,reason}`.
pub(crate) const EJECTIONS: &str = "sluicegate_backend_ejections_total";
/// `backend_healthy{pool,backend}` (0/1).
pub(crate) const BACKEND_HEALTHY: &str = "sluicegate_backend_healthy";
/// `backend_inflight{pool,backend}`.
pub(crate) const BACKEND_INFLIGHT: &str = "sluicegate_backend_inflight";
/// `pool_split_weight{route,pool}`.
pub(crate) const SPLIT_WEIGHT: &str = "sluicegate_pool_split_weight";
/// `config_reloads_total{result}`.
pub(crate) const CONFIG_RELOADS: &str = "sluicegate_config_reloads_total";
/// `docker_events_total{action}` (incremented by Docker discovery).
pub(crate) const DOCKER_EVENTS: &str = "sluicegate_docker_events_total";
/// `active_connections`: client connections open now.
pub(crate) const ACTIVE_CONNECTIONS: &str = "sluicegate_active_connections";
/// `build_info{version}`: always 1.
pub(crate) const BUILD_INFO: &str = "sluicegate_build_info";
/// `access_log_dropped_total`: access-log lines dropped because the writer lagged.
pub(crate) const ACCESS_LOG_DROPPED: &str = "sluicegate_access_log_dropped_total";
/// `limited_total{route,kind}`: requests (or retries) a limit refused; `kind` is
/// one of `data_plane::limits::Kind::as_str`.
pub(crate) const LIMITED: &str = "sluicegate_limited_total";
/// `rollout_step{route}`: the rollout target's percentage of the route.
pub(crate) const ROLLOUT_STEP: &str = "sluicegate_rollout_step";
/// `rollout_state{route,state}`: 1 for the latest rollout's phase, 0 for the others.
pub(crate) const ROLLOUT_STATE: &str = "sluicegate_rollout_state";
/// `task_exits_total{task}`: background tasks that ended while the gateway ran
/// (`crate::tasks::name`).
pub(crate) const TASK_EXITS: &str = "sluicegate_task_exits_total";
/// `rollouts_total{result}`: rollouts ended, by final phase.
pub(crate) const ROLLOUTS: &str = "sluicegate_rollouts_total";
/// `tunnel_bytes_total{route,pool,direction}`: bytes through closed upgrade tunnels.
pub(crate) const TUNNEL_BYTES: &str = "sluicegate_tunnel_bytes_total";
/// `grpc_requests_total{route,pool,backend,grpc_code}`: gRPC calls ended, by the
/// `grpc-status` their client got.
pub(crate) const GRPC_REQUESTS: &str = "sluicegate_grpc_requests_total";
/// `direction` of [`TUNNEL_BYTES`]: client to backend.
pub(crate) const DIRECTION_UP: &str = "up";
/// `direction` of [`TUNNEL_BYTES`]: backend to client.
pub(crate) const DIRECTION_DOWN: &str = "down";

/// `mirror_requests_total{pool,outcome}`: mirrored copies, by what became of them.
pub(crate) const MIRROR_REQUESTS: &str = "sluicegate_mirror_requests_total";
/// `mirror_inflight`: mirrored copies in flight, gateway-wide.
pub(crate) const MIRROR_INFLIGHT: &str = "sluicegate_mirror_inflight";
/// `mirror_request_duration_seconds{pool}`: a copy's send to its answer's head.
pub(crate) const MIRROR_DURATION: &str = "sluicegate_mirror_request_duration_seconds";

/// The values of `mirror_requests_total`'s `outcome` label: the mirror answered
/// (its status class), or why it did not (`error`: connect or transport failure;
/// `timeout`: the mirror's timeout ran out first; `no_backend`: the mirror pool
/// had no eligible backend), or why no copy went (`dropped`: the gateway-wide cap
/// of copies in flight was reached; `too_large`: the body passed `max_body`, and
/// a copy already streaming was cut; `lagged`: the mirror took the body slower
/// than the primary, and the copy was cut; `abandoned`: the client's body failed
/// or the primary stopped reading it).
pub(crate) const MIRROR_OUTCOMES: [&str; 12] = [
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "error",
    "timeout",
    "no_backend",
    "dropped",
    "too_large",
    "lagged",
    "abandoned",
];

/// The values of `rollout_state`'s `state` label (`rollout_record::Phase::as_str`).
pub(crate) const ROLLOUT_STATES: [&str; 5] =
    ["running", "paused", "succeeded", "rolled_back", "aborted"];

/// Label names.
pub(crate) mod label {
    /// Route name from the config ("" when no route matched).
    pub(crate) const ROUTE: &str = "route";
    /// Pool name from the config ("" when no pool was chosen).
    pub(crate) const POOL: &str = "pool";
    /// Backend `ip:port` ("" when the gateway answered without trying one).
    pub(crate) const BACKEND: &str = "backend";
    /// `1xx` … `5xx`.
    pub(crate) const CODE_CLASS: &str = "code_class";
    /// Why a backend left rotation: [`super::REASON_OUTLIER`] or [`super::REASON_PROBE`].
    pub(crate) const REASON: &str = "reason";
    /// `ok` or `error`.
    pub(crate) const RESULT: &str = "result";
    /// A Docker event action (`start`, `die`, …).
    pub(crate) const ACTION: &str = "action";
    /// The crate version.
    pub(crate) const VERSION: &str = "version";
    /// A rollout phase.
    pub(crate) const STATE: &str = "state";
    /// `up` (client to backend) or `down`.
    pub(crate) const DIRECTION: &str = "direction";
    /// What a limit refused (`data_plane::limits::Kind::as_str`).
    pub(crate) const KIND: &str = "kind";
    /// A gRPC status code: one of [`super::GRPC_CODES`].
    pub(crate) const GRPC_CODE: &str = "grpc_code";
    /// What became of a mirrored copy ([`super::MIRROR_OUTCOMES`]).
    pub(crate) const OUTCOME: &str = "outcome";
}

/// Ejection reason: passive outlier detection on real traffic.
pub(crate) const REASON_OUTLIER: &str = "outlier";
/// Ejection reason: the active probe turned a healthy backend unhealthy.
pub(crate) const REASON_PROBE: &str = "probe";
/// Reload result: applied.
pub(crate) const RESULT_OK: &str = "ok";
/// Reload result: the file was invalid (or unreadable); nothing changed.
pub(crate) const RESULT_ERROR: &str = "error";

/// Histogram buckets of `request_duration_seconds`: 1 ms … 60 s. Agent traffic
/// spans cached answers (ms) to long model calls (tens of seconds).
pub(crate) const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// The values of `code_class`, indexed by [`class_index`].
pub(crate) const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The values of `grpc_code`: the 17 canonical gRPC codes by number, and
/// `other` (a code outside them, or a call that ended without a `grpc-status`).
/// Indexed by `proxy::grpc::code_index`.
pub(crate) const GRPC_CODES: [&str; 18] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "other",
];

/// Index into [`CODE_CLASSES`]. Codes of 600 and above (which `http` accepts but no
/// RFC defines) count as `5xx`: a backend sending one is misbehaving.
#[inline]
pub(crate) fn class_index(status: StatusCode) -> usize {
    (usize::from(status.as_u16() / 100)).clamp(1, 5) - 1
}

/// The `code_class` label value of `status` (the exporter indexes [`CODE_CLASSES`]
/// directly; this is for tests).
#[cfg(test)]
pub(crate) fn code_class(status: StatusCode) -> &'static str {
    CODE_CLASSES[class_index(status)]
}

/// Help text of every series, in the order they are described.
pub(crate) const HELP: &[(&str, Kind, &str)] = &[
    (REQUESTS, Kind::Counter, "Requests answered, by route, pool, the backend that answered (or was tried last; \"\" when none was) and status class. Gateway answers count too: no_route has route=\"\" and pool=\"\"."),
    (REQUEST_DURATION, Kind::Histogram, "Time from request arrival to the response head being handed to the client connection (retries and hold waits included, body streaming excluded), per route and pool."),
    (CONNECT_ERRORS, Kind::Counter, "Failed attempts to connect to a backend (refused, unreachable, connect timeout)."),
    (RETRIES, Kind::Counter, "Extra attempts on another backend after a failed one, per route and pool."),
    (EJECTIONS, Kind::Counter, "Backends taken out of rotation by health: reason=outlier (passive, real traffic) or reason=probe (active probe turned healthy to unhealthy)."),
    (BACKEND_HEALTHY, Kind::Gauge, "1 when the backend passes its health checks and is not ejected (draining does not count), else 0. Sampled at scrape; removed backends disappear."),
    (BACKEND_INFLIGHT, Kind::Gauge, "Requests, streams and tunnels using the backend now. Sampled at scrape."),
    (SPLIT_WEIGHT, Kind::Gauge, "The route's current split weight for the pool (file, admin override or rollout). Sampled at scrape."),
    (CONFIG_RELOADS, Kind::Counter, "Config file reloads: result=ok (applied) or result=error (invalid file, nothing changed)."),
    (DOCKER_EVENTS, Kind::Counter, "Docker events received by discovery, by action."),
    (ACTIVE_CONNECTIONS, Kind::Gauge, "Client connections open on the traffic listeners."),
    (BUILD_INFO, Kind::Gauge, "Always 1; the version label says which build runs."),
    (TUNNEL_BYTES, Kind::Counter, "Bytes carried by upgrade tunnels (WebSocket), counted when each tunnel closes; direction up is client to backend."),
    (ACCESS_LOG_DROPPED, Kind::Counter, "Access-log lines dropped because the log writer could not keep up (the request path never waits for it)."),
    (LIMITED, Kind::Counter, "Requests a route's limits refused, by kind: rate (429 rate_limited), retry_budget (a retry the pool's budget did not allow; not made), in_flight (503, the route's concurrency limit), pool_in_flight (503, the pool's concurrency limit), max_connections and max_pending (503, the pool's circuit breaker). Sampled at scrape from the route's counts."),
    (ROLLOUT_STEP, Kind::Gauge, "Percentage of the route's traffic on the target pool of its latest rollout (0 after a rollback)."),
    (ROLLOUT_STATE, Kind::Gauge, "1 for the phase of the route's latest rollout (running, paused, succeeded, rolled_back, aborted), 0 for the others."),
    (ROLLOUTS, Kind::Counter, "Rollouts ended, by result: succeeded, rolled_back (gate or health) or aborted (operator)."),
    (GRPC_REQUESTS, Kind::Counter, "gRPC calls ended, by route, pool, backend (as requests_total) and grpc_code: the grpc-status the client got (0-16; other: outside them, or the call ended without one). Counted when the status is known: the response head (trailers-only answers, the gateway's own errors, a non-gRPC HTTP error mapped as gRPC clients map it) or the trailers after the messages; a call the client cancelled mid-stream counts as 1."),
    (MIRROR_REQUESTS, Kind::Counter, "Copies of requests sent to a route's mirror pool (shadow traffic), by outcome: the mirror's status class (1xx..5xx), error, timeout or no_backend; or why no copy (or only part of one) went: dropped (the cap of copies in flight), too_large (the body passed the mirror's max_body), lagged (the mirror was slower than the primary), abandoned (the client's body failed). The primary's answer is never affected."),
    (MIRROR_DURATION, Kind::Histogram, "Time from a mirrored copy's start to its answer's head, per mirror pool (answered copies only; the copy's timeout bounds it)."),
    (MIRROR_INFLIGHT, Kind::Gauge, "Mirrored copies in flight now, gateway-wide (at most 256; beyond, copies are dropped). Sampled at scrape."),
    (TASK_EXITS, Kind::Counter, "Background tasks (controller, rollout_manager, discovery, probes, admin, reload, metrics_upkeep) that ended while the gateway ran; /readyz answers 503 naming them."),
];

/// The kind of a series (for describing it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_classes_cover_every_status_http_accepts() {
        let class = |n: u16| code_class(StatusCode::from_u16(n).expect("valid"));
        assert_eq!(class(100), "1xx");
        assert_eq!(class(101), "1xx");
        assert_eq!(class(200), "2xx");
        assert_eq!(class(299), "2xx");
        assert_eq!(class(308), "3xx");
        assert_eq!(class(404), "4xx");
        assert_eq!(class(499), "4xx");
        assert_eq!(class(500), "5xx");
        assert_eq!(class(503), "5xx");
        assert_eq!(class(599), "5xx");
        assert_eq!(class(600), "5xx");
        assert_eq!(class(999), "5xx");
    }

    #[test]
    fn every_series_is_described_once_with_the_prefix() {
        for (i, (name, _, help)) in HELP.iter().enumerate() {
            assert!(name.starts_with("sluicegate_"), "{name}");
            assert!(!help.is_empty());
            assert!(HELP[..i].iter().all(|(n, _, _)| n != name), "{name} twice");
        }
        assert_eq!(HELP.len(), 23);
    }

    #[test]
    fn rollout_states_are_the_phase_names() {
        use crate::control_plane::rollout_record::Phase;
        for phase in [
            Phase::Running,
            Phase::Paused,
            Phase::Succeeded,
            Phase::RolledBack,
            Phase::Aborted,
        ] {
            assert!(ROLLOUT_STATES.contains(&phase.as_str()), "{phase:?}");
        }
    }

    #[test]
    fn buckets_rise_from_one_millisecond_to_a_minute() {
        assert_eq!(DURATION_BUCKETS.first(), Some(&0.001));
        assert_eq!(DURATION_BUCKETS.last(), Some(&60.0));
        assert!(DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }
}
