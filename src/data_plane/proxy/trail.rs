//! What one request leaves behind: its metrics and, when on, its access-log line.
//!
//! [`Proxy::handle`](super::Proxy::handle) starts a [`Trail`] when the request
//! arrives; `forward` notes the route, the pool and each attempt as they happen; and
//! [`Trail::finish`] records the outcome once, whatever way the request ended. The
//! metric handles come from the snapshot the request loaded (resolved at build time),
//! so the common path is atomic adds: one request counter, one histogram sample, and
//! retries when there were some. The access-log record exists only with
//! `[log] access` on; it rides in the response body and is written when the body ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use metrics::SharedString;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::body::ResponseBody;
use super::error::CLIENT_CLOSED;
use crate::control_plane::config::spec::AccessLog;
use crate::data_plane::access_log::{AccessRecord, PendingLine};
use crate::data_plane::backend::Backend;
use crate::data_plane::snapshot::{Route, Snapshot};
use crate::metrics::{ClassCounters, PairMetrics, Registrar};

/// The accounting of one request in flight.
pub(super) struct Trail<'s> {
    started: Instant,
    /// When the last attempt's answer arrived: the end of a request answered by a
    /// backend (no second clock reading for it).
    answered: Option<Instant>,
    /// Route × pool as far as known (starts as "no route").
    pair: &'s PairMetrics,
    /// Counters of the backend tried last (the one that answered, or failed last).
    backend: Option<Arc<ClassCounters>>,
    attempts: u32,
    log: Option<Box<AccessRecord>>,
    /// Set when the answer opened a tunnel: the line goes there, to be written
    /// with the tunnel's bytes when it closes.
    tunnel: Option<oneshot::Sender<Box<AccessRecord>>>,
    /// Set by [`finish`](Self::finish); a trail dropped without it belongs to a
    /// request whose handler was cancelled: the client went away before its answer.
    finished: bool,
    /// A gRPC call (`grpc_requests_total` counts it too).
    grpc: bool,
}

impl<'s> Trail<'s> {
    /// A request that just arrived.
    pub(super) fn start<B>(snapshot: &'s Snapshot, req: &Request<B>, client: SocketAddr) -> Self {
        let log = (snapshot.spec().log.access != AccessLog::Off).then(|| {
            Box::new(AccessRecord::new(
                client,
                req.method().clone(),
                super::request_host(req).map_or("", |(host, _)| host),
                req.uri().path(),
            ))
        });
        Trail {
            started: Instant::now(),
            answered: None,
            pair: snapshot.unrouted(),
            backend: None,
            attempts: 0,
            log,
            tunnel: None,
            finished: false,
            grpc: false,
        }
    }

    /// The request is a gRPC call.
    pub(super) fn grpc(&mut self) {
        self.grpc = true;
    }

    /// A gRPC call's answer head: counts its code when the head tells it (see
    /// `grpc::head_code_index`); else the body's `grpc::Watch` will.
    pub(super) fn grpc_head(&self, resp: &Response<ResponseBody>) {
        if let Some(index) = super::grpc::head_code_index(resp.status(), resp.headers()) {
            self.count_grpc(index);
        }
    }

    /// Counts a gRPC call's code (index of `GRPC_CODES`) under the backend tried
    /// last, or `backend=""`.
    pub(super) fn count_grpc(&self, index: usize) {
        self.pair.record_grpc(self.backend.as_deref(), index);
    }

    /// The counters of the backend tried last (a gRPC call's `Watch` counts its
    /// code there when the trailers come).
    pub(super) fn counters(&self) -> Option<Arc<ClassCounters>> {
        self.backend.clone()
    }

    /// A route matched.
    pub(super) fn route(&mut self, route: &'s Route) {
        self.pair = route.metrics.no_pool();
    }

    /// The route's split chose entry `index` (`None`: not found, counted as no pool).
    pub(super) fn pool(&mut self, route: &'s Route, index: Option<usize>) {
        if let Some(index) = index {
            self.pair = route.metrics.pair(index);
        }
    }

    /// The answer opened a tunnel: its labels, and where the access-log line
    /// (when on) will wait for the tunnel to close.
    pub(super) fn tunnel(&mut self) -> TunnelTally {
        let log = self.log.is_some().then(|| {
            let (tx, rx) = oneshot::channel();
            self.tunnel = Some(tx);
            rx
        });
        TunnelTally {
            route: self.pair.route().clone(),
            pool: self.pair.pool().clone(),
            metrics: self.pair.registrar().clone(),
            log,
        }
    }

    /// The request id sent upstream (only kept for the access log).
    pub(super) fn request_id(&mut self, id: &[u8]) {
        if let Some(log) = &mut self.log {
            log.request_id = String::from_utf8_lossy(id).into_owned();
        }
    }

    /// An attempt on `backend` starts (for `route`).
    pub(super) fn attempt(&mut self, backend: &Backend, route: &Arc<str>) {
        self.attempts += 1;
        self.backend = Some(backend.metrics.responses(route));
        if let Some(log) = &mut self.log {
            log.backend = Some(backend.addr);
        }
    }

    /// The backend's response head arrived, at `at`, `upstream` after the request
    /// was sent.
    pub(super) fn answered(&mut self, upstream: Duration, at: Instant) {
        self.answered = Some(at);
        if let Some(log) = &mut self.log {
            log.upstream = Some(upstream);
        }
    }

    /// Records the outcome; `cause` is the `sluicegate-error` of a gateway answer.
    /// A backend's answer ended the request when its head arrived; the gateway's
    /// own ends it now.
    // By reference: a response is a few hundred bytes, and each move copies them.
    pub(super) fn finish(mut self, resp: &mut Response<ResponseBody>, cause: Option<&'static str>) {
        self.finished = true;
        let status = resp.status();
        let retries = self.attempts.saturating_sub(1);
        let ended = match (cause, self.answered) {
            (None, Some(at)) => at,
            _ => Instant::now(),
        };
        self.pair.record(
            status,
            self.backend.as_deref(),
            ended.saturating_duration_since(self.started),
            retries,
        );
        if let Some(mut log) = self.log.take() {
            log.status = status;
            log.route = self.pair.route().to_string();
            log.pool = self.pair.pool().to_string();
            log.retries = retries;
            log.error = cause.unwrap_or("");
            if let Some(tunnel) = self.tunnel.take() {
                // The tunnel writes it when it closes (or drops it unwritten if
                // the upgrade never completes, after logging that).
                if let Err(log) = tunnel.send(log) {
                    log.emit(false);
                }
                return;
            }
            match resp.body_mut() {
                ResponseBody::Upstream { body, .. } => body.attach_log(PendingLine::new(log)),
                ResponseBody::Full { data } => {
                    log.bytes = data.as_ref().map_or(0, |d| d.len() as u64);
                    log.emit(true);
                }
            }
        }
    }
}

impl Drop for Trail<'_> {
    /// A request whose handler was dropped before it had an answer: the client
    /// closed the connection (or reset the stream) while it waited. Recorded as
    /// nginx does, status 499 in the metrics and the access log, with the backend it
    /// was waiting for; 4xx, so never a backend failure.
    #[cold]
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let status = StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST);
        let retries = self.attempts.saturating_sub(1);
        self.pair.record(
            status,
            self.backend.as_deref(),
            self.started.elapsed(),
            retries,
        );
        if self.grpc {
            self.count_grpc(super::grpc::Code::Cancelled.index());
        }
        if let Some(mut log) = self.log.take() {
            log.status = status;
            log.route = self.pair.route().to_string();
            log.pool = self.pair.pool().to_string();
            log.retries = retries;
            log.error = CLIENT_GONE;
            log.emit(false);
        }
    }
}

/// The `error` of the access-log line of a request whose client went away before
/// its answer (the same token as a client gone during its upload).
const CLIENT_GONE: &str = "client_aborted";

/// What a tunnel needs to account for itself when it closes.
pub(super) struct TunnelTally {
    /// The metric labels of its request.
    pub(super) route: SharedString,
    pub(super) pool: SharedString,
    /// The gateway's metrics, where the tunnel's bytes are counted.
    pub(super) metrics: Registrar,
    /// The request's access-log line, when the log is on.
    pub(super) log: Option<oneshot::Receiver<Box<AccessRecord>>>,
}
