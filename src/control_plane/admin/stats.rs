//! `GET /api/v1/stats`: per pool and per backend, in-flight requests now and the
//! request rate, error rate and p99 latency over the last few seconds, from the
//! gateway's own traffic counters (`crate::data_plane::pool_stats`, one set per pool and one
//! per backend); and the event stream's open subscriptions.
//!
//! Rates need two samples. The answer keeps a few samples of every counter set,
//! taken when it is asked (at most one per [`STEP`], the first when the admin
//! listener starts), and measures from the oldest one that is at most [`WINDOW`]
//! old (or the newest kept one when all are older); `window_s` says over how
//! long. Nothing samples while nobody asks. An answer younger than [`REUSE`] is
//! served again as it is, so many open dashboards cost one sample, not one each.
//!
//! What counts as a request, an error and latency is `pool_stats`'s: attempts on
//! the backend; 5xx answers and failed attempts; time to the response head.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::api::error_response;
use super::AdminState;
use crate::control_plane::controller::SharedSnapshot;
use crate::data_plane::pool_stats::{Sample, Window};
use crate::data_plane::snapshot::Snapshot;

/// Rates are measured over at most about this long.
pub(super) const WINDOW: Duration = Duration::from_secs(10);
/// Samples are kept at most this often.
pub(super) const STEP: Duration = Duration::from_secs(2);
/// An answer this young is served again.
pub(super) const REUSE: Duration = Duration::from_millis(500);

/// The answer.
#[derive(Debug, Serialize)]
pub(super) struct Stats {
    /// Seconds the rates are measured over; `null` when there was no earlier
    /// sample to measure from.
    pub window_s: Option<f64>,
    /// Event stream subscriptions open now.
    pub event_subscribers: usize,
    /// Pools in the order of the running config.
    pub pools: Vec<PoolStatsView>,
}

/// One pool's figures: the pool's own counters (which also count requests the
/// pool could not serve at all) and its backends'.
#[derive(Debug, Serialize)]
pub(super) struct PoolStatsView {
    pub pool: String,
    #[serde(flatten)]
    pub figures: Figures,
    pub backends: Vec<BackendStatsView>,
}

/// One backend's figures.
#[derive(Debug, Serialize)]
pub(super) struct BackendStatsView {
    pub addr: SocketAddr,
    /// Requests using the backend now.
    pub inflight: u32,
    #[serde(flatten)]
    pub figures: Figures,
}

/// Traffic figures of one counter set.
#[derive(Debug, Default, Serialize)]
pub(super) struct Figures {
    /// Requests (attempts) since the counters were created.
    pub requests: u64,
    /// Errors since the counters were created.
    pub errors: u64,
    /// Requests per second over the window.
    pub rps: Option<f64>,
    /// Errors / requests over the window (`null` without requests in it).
    pub error_rate: Option<f64>,
    /// p99 latency over the window, in milliseconds (`null` without responses).
    pub p99_ms: Option<f64>,
}

/// Every counter set at one moment.
#[derive(Debug)]
struct Kept {
    at: Instant,
    pools: HashMap<String, Sample>,
    backends: HashMap<(String, SocketAddr), Sample>,
}

impl Kept {
    fn of(snapshot: &Snapshot, at: Instant) -> Kept {
        let mut pools = HashMap::new();
        let mut backends = HashMap::new();
        for pool in snapshot.pools() {
            pools.insert(pool.name.to_string(), pool.health().traffic().sample());
            for b in pool.backends() {
                backends.insert((pool.name.to_string(), b.addr), b.state.traffic().sample());
            }
        }
        Kept {
            at,
            pools,
            backends,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first.
    kept: std::collections::VecDeque<Kept>,
    last_answer: Option<(Instant, Bytes)>,
}

/// The samples and the last answer; shared by every admin connection.
#[derive(Clone, Debug)]
pub(super) struct StatsWindow {
    snapshot: SharedSnapshot,
    inner: Arc<Mutex<Inner>>,
}

impl StatsWindow {
    /// Keeps the first sample now.
    pub(super) fn start(snapshot: SharedSnapshot) -> StatsWindow {
        let first = Kept::of(&snapshot.load(), Instant::now());
        let inner = Inner {
            kept: [first].into(),
            last_answer: None,
        };
        StatsWindow {
            snapshot,
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// The figures now, as JSON.
    fn answer(&self, subscribers: usize) -> Result<Bytes, serde_json::Error> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, body)) = &inner.last_answer {
            if now.saturating_duration_since(*at) < REUSE {
                return Ok(body.clone());
            }
        }
        let snapshot = self.snapshot.load();
        let current = Kept::of(&snapshot, now);
        // Old samples go once a younger one can stand in for them.
        while inner.kept.len() > 1
            && inner.kept.front().is_some_and(|k| now - k.at > WINDOW)
            && inner
                .kept
                .get(1)
                .is_some_and(|k| now - k.at >= Duration::from_secs(1))
        {
            inner.kept.pop_front();
        }
        let stats = match inner.kept.front() {
            Some(base) if now - base.at > Duration::from_millis(50) => {
                figures_of(&snapshot, &current, Some(base), subscribers)
            }
            _ => figures_of(&snapshot, &current, None, subscribers),
        };
        if inner.kept.back().is_none_or(|k| now - k.at >= STEP) {
            inner.kept.push_back(current);
        }
        let body = Bytes::from(serde_json::to_vec(&stats)?);
        inner.last_answer = Some((now, body.clone()));
        Ok(body)
    }
}

fn figures_of(
    snapshot: &Snapshot,
    now: &Kept,
    base: Option<&Kept>,
    event_subscribers: usize,
) -> Stats {
    let window = base.map(|b| now.at - b.at);
    let figures = |current: Option<&Sample>, earlier: Option<&Sample>| {
        let Some(current) = current else {
            return Figures::default();
        };
        let mut f = Figures {
            requests: current.requests(),
            errors: current.errors(),
            ..Figures::default()
        };
        if let Some(window) = window {
            // A counter set younger than the base sample counts from zero.
            let w: Window = current.since(earlier.unwrap_or(&Sample::default()));
            f.rps = Some(w.requests as f64 / window.as_secs_f64());
            f.error_rate = (w.requests > 0).then(|| w.error_rate());
            f.p99_ms = w.p99().map(|d| d.as_secs_f64() * 1000.0);
        }
        f
    };
    let pools = snapshot
        .pools()
        .iter()
        .map(|pool| {
            let name = pool.name.to_string();
            let backends = pool
                .backends()
                .map(|b| {
                    let key = (name.clone(), b.addr);
                    BackendStatsView {
                        addr: b.addr,
                        inflight: b.state.inflight(),
                        figures: figures(
                            now.backends.get(&key),
                            base.and_then(|k| k.backends.get(&key)),
                        ),
                    }
                })
                .collect();
            PoolStatsView {
                figures: figures(now.pools.get(&name), base.and_then(|k| k.pools.get(&name))),
                pool: name,
                backends,
            }
        })
        .collect();
    Stats {
        window_s: window.map(|w| w.as_secs_f64()),
        event_subscribers,
        pools,
    }
}

/// The handler.
pub(super) async fn stats(State(state): State<AdminState>) -> Response {
    let subscribers = state.control.events().subscribers();
    let window = state.stats.clone();
    // Off the workers, like the state: one sample reads every backend's counters.
    match crate::control_plane::off_worker::run("stats answer", move || window.answer(subscribers))
        .await
    {
        Some(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Some(Err(err)) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot write the stats as JSON: {err}"),
            "",
        ),
        None => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is shutting down",
            "",
        ),
    }
}
