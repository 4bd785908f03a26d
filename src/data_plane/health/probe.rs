//! Active probes: one task per backend sending `GET path` every `interval`.
//!
//! [`run`] is the task body: it waits a first delay ([`FirstProbe`]: random for the
//! backends present at start-up, so 100 backends are not probed in the same
//! millisecond, and keep that spread since every later probe is one `interval` after
//! the previous tick; next to none for a backend that appears later, which gets no
//! traffic before its first pass), probes, and feeds the outcome to
//! [`record`], the rise/fall state machine. [`http_probe`] is the real probe: a fresh
//! HTTP/1.1 connection per probe (it also proves the backend still accepts new
//! connections), inside TLS for a pool with `tls = { … }` (the same client settings
//! as its traffic: a backend whose certificate fails verification fails its probe),
//! `Connection: close`, only the status is looked at. An `h2c`/`h2` pool is
//! probed in HTTP/2 instead, by [`http2_probe`]: `GET path` as one stream on the
//! pool's own connections (so an HTTP/1.1-only backend configured as HTTP/2
//! fails its probe, [`ProbeOutcome::NotH2`], as its traffic does). A pool with
//! `grpc = true` is probed by `grpc::check`: a `grpc.health.v1.Health/Check`
//! call on the pool's own HTTP/2 connections.
//!
//! The state machine, per backend:
//! - a pass (status within `expect_status`; for a gRPC check, SERVING):
//!   `unknown` turns healthy at once,
//!   `unhealthy` after `rise` passes in a row;
//! - a failure (other status, connect error, timeout) counts unless the backend is
//!   younger than `start_period` and never passed (Docker's semantics); `fall` counted
//!   failures in a row turn it unhealthy;
//! - while a backend is `unknown` (it never passed, so it has no traffic), a failed
//!   probe is tried again every 250 ms until its next regular probe; only a pass of
//!   those is recorded, so `fall` still counts one failure per interval (Docker's
//!   `start_interval`): a container discovered a moment before its process listens
//!   gets traffic a moment after, not an interval after.
//!
//! Starting, stopping and counting the tasks is the supervisor's job.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Uri, Version};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::state::{BackendHealth, HealthStatus, ProbeOutcome};
use super::{HealthChange, PoolHealth};
use crate::control_plane::config::spec::ProbeSpec;
use crate::data_plane::backend::BackendState;
use crate::data_plane::tls::upstream::UpstreamTls;

/// The first probe of a backend is delayed by a random share of this (or of the
/// interval, if shorter).
const MAX_FIRST_DELAY: Duration = Duration::from_secs(1);

/// How soon a failed probe of a backend that never passed is tried again (while
/// that comes before its next regular probe).
const STARTING_RETRY: Duration = Duration::from_millis(250);

/// How far apart, on average, the first probes of backends that appear together
/// after start-up are spread.
const NEWCOMER_SPACING: Duration = Duration::from_millis(1);

/// When a probe task's first probe comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FirstProbe {
    /// The backends present at start-up, or a probe restarted with new settings (its
    /// backend keeps its status): a random share of `min(interval, 1 s)`, so that
    /// many backends are not probed in the same millisecond.
    Spread,
    /// A backend that appeared after start-up (discovered, registered, added by a
    /// reload), one of `batch` that appeared together: it gets no traffic before its
    /// first pass, so it is probed at once; a batch is spread over about a
    /// millisecond per backend (never longer than [`Spread`](Self::Spread)).
    Newcomer {
        /// How many backends appeared in the same snapshot.
        batch: usize,
    },
}

impl FirstProbe {
    /// The random delay before the first probe.
    pub(crate) fn delay(self, interval: Duration) -> Duration {
        let span = interval.min(MAX_FIRST_DELAY);
        let span = match self {
            FirstProbe::Spread => span,
            FirstProbe::Newcomer { batch } => {
                let batch = u32::try_from(batch).unwrap_or(u32::MAX).max(1);
                span.min(NEWCOMER_SPACING.saturating_mul(batch))
            }
        };
        random_below(span)
    }
}

/// What [`record`] made of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// Whether the probe passed (`expect_status`).
    pub passed: bool,
    /// `Some((from, to))` when the status changed.
    pub change: Option<(HealthStatus, HealthStatus)>,
}

/// Whether `outcome` is a pass (a status within `expect_status`; for a gRPC
/// check, SERVING).
fn passes(spec: &ProbeSpec, outcome: ProbeOutcome) -> bool {
    match (outcome, &spec.grpc) {
        (ProbeOutcome::Status(code), None) => spec.expect_status.contains(code),
        (ProbeOutcome::GrpcServing(status), Some(_)) => status == ProbeOutcome::SERVING,
        _ => false,
    }
}

/// Applies one probe outcome to `health` (the rise/fall state machine).
pub(crate) fn record(health: &BackendHealth, spec: &ProbeSpec, outcome: ProbeOutcome) -> Recorded {
    use std::sync::atomic::Ordering::Relaxed;

    let passed = passes(spec, outcome);
    health.store_last_probe(outcome, passed);
    let status = health.status();
    let mut change = None;
    if passed {
        health.passed_once.store(true, Relaxed);
        health.probe_failures.store(0, Relaxed);
        let passes = health.probe_passes.load(Relaxed).saturating_add(1);
        health.probe_passes.store(passes, Relaxed);
        let turn = match status {
            HealthStatus::Healthy => false,
            HealthStatus::Unknown => true,
            HealthStatus::Unhealthy => passes >= spec.rise,
        };
        if turn {
            health.set_status(HealthStatus::Healthy);
            change = Some((status, HealthStatus::Healthy));
        }
    } else {
        let booting =
            !health.passed_once.load(Relaxed) && health.born().elapsed() < spec.start_period;
        if !booting {
            health.probe_passes.store(0, Relaxed);
            let failures = health.probe_failures.load(Relaxed).saturating_add(1);
            health.probe_failures.store(failures, Relaxed);
            if status != HealthStatus::Unhealthy && failures >= spec.fall {
                health.set_status(HealthStatus::Unhealthy);
                change = Some((status, HealthStatus::Unhealthy));
            }
        }
    }
    Recorded { passed, change }
}

/// One backend to probe.
#[derive(Clone, Debug)]
pub(crate) struct ProbeTarget {
    /// The pool's runtime (events, held requests).
    pub pool: Arc<PoolHealth>,
    /// The backend's state the results go to.
    pub state: Arc<BackendState>,
    /// Settings of the probe.
    pub spec: Arc<ProbeSpec>,
}

/// The probe loop of one backend until `cancel`; `probe` performs one probe (the
/// timeout is applied here), the first one after `first`'s delay. Transitions are
/// published on the pool's event channel, and every pass wakes the pool's held
/// requests.
pub(crate) async fn run<P, F>(
    target: ProbeTarget,
    first: FirstProbe,
    cancel: CancellationToken,
    mut probe: P,
) where
    P: FnMut() -> F,
    F: Future<Output = ProbeOutcome>,
{
    let spec = &target.spec;
    let addr = target.state.addr();
    let first = first.delay(spec.interval);
    let mut ticks =
        tokio::time::interval_at(crate::clock::later(Instant::now(), first), spec.interval);
    // A slow probe (up to `timeout` < `interval`) must not cause a burst after it.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let ticked = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            at = ticks.tick() => at,
        };
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            outcome = tokio::time::timeout(spec.timeout, probe()) => {
                outcome.unwrap_or(ProbeOutcome::TimedOut)
            }
        };
        let mut recorded = record(target.state.health(), spec, outcome);
        let mut outcome = outcome;
        if !recorded.passed && target.state.health().status() == HealthStatus::Unknown {
            // Never passed, so no traffic yet (typically a container whose
            // process has not bound its port when it was discovered): tried again
            // every `STARTING_RETRY` until the next tick, as Docker's
            // `start_interval` does. Only a pass is recorded: the failures `fall`
            // counts stay one per interval.
            let next_tick = crate::clock::later(ticked, spec.interval);
            let retried = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                passed = retry_until_pass(spec, next_tick, &mut probe) => passed,
            };
            if let Some(pass) = retried {
                outcome = pass;
                recorded = record(target.state.health(), spec, pass);
            }
        }
        if let Some((from, to)) = recorded.change {
            tracing::info!(
                pool = %target.pool.name(),
                backend = %addr,
                ?outcome,
                "health: {} -> {}",
                from.as_str(),
                to.as_str()
            );
            target.pool.publish(addr, HealthChange::Status { from, to });
        }
        if recorded.passed {
            target.pool.wake_held();
        }
    }
}

/// Probes every [`STARTING_RETRY`] while a retry still ends before `next_tick`;
/// the first passing outcome, or `None` (failures are not kept).
async fn retry_until_pass<P, F>(
    spec: &ProbeSpec,
    next_tick: Instant,
    probe: &mut P,
) -> Option<ProbeOutcome>
where
    P: FnMut() -> F,
    F: Future<Output = ProbeOutcome>,
{
    loop {
        let at = crate::clock::later(Instant::now(), STARTING_RETRY);
        if crate::clock::later(at, spec.timeout) >= next_tick {
            return None;
        }
        tokio::time::sleep_until(at).await;
        let outcome = tokio::time::timeout(spec.timeout, probe())
            .await
            .unwrap_or(ProbeOutcome::TimedOut);
        if passes(spec, outcome) {
            return Some(outcome);
        }
    }
}

/// The longest a backend's first probe can take to finish from when its task
/// started: the random first delay, then the probe's timeout.
pub(crate) fn first_result_within(spec: &ProbeSpec) -> Duration {
    spec.interval.min(MAX_FIRST_DELAY) + spec.timeout
}

/// A uniformly random delay below `span` (zero for a zero span).
fn random_below(span: Duration) -> Duration {
    let nanos = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(..nanos.max(1)))
}

/// The `Host` header probes of `addr` send: the configured one, else `ip:port`.
pub(crate) fn host_header(spec: &ProbeSpec, addr: SocketAddr) -> Option<HeaderValue> {
    spec.host
        .clone()
        .or_else(|| HeaderValue::try_from(addr.to_string()).ok())
}

/// One HTTP probe of `addr` on a fresh connection, over TLS when `tls` is given
/// (the caller bounds its time). A failed TLS handshake is a connect failure.
pub(crate) async fn http_probe(
    addr: SocketAddr,
    path: Uri,
    host: Option<HeaderValue>,
    tls: Option<Arc<UpstreamTls>>,
) -> ProbeOutcome {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return ProbeOutcome::ConnectFailed;
    };
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(backend = %addr, %err, "probe: set_nodelay failed");
    }
    match tls {
        None => probe_on(stream, path, host).await,
        Some(tls) => match tls.connect(addr, stream).await {
            Ok(stream) => probe_on(stream, path, host).await,
            Err(err) => {
                tracing::debug!(backend = %addr, %err, "probe: TLS handshake failed");
                ProbeOutcome::ConnectFailed
            }
        },
    }
}

/// One HTTP probe of `state`'s backend in HTTP/2: `GET path` naming
/// `authority`, one stream on its `h2c`/`h2` pool's connections (a connection
/// is opened within `timeout` when none is open). Only the status is looked at;
/// the answer's body is not read (dropping it resets the stream).
pub(crate) async fn http2_probe(
    state: Arc<BackendState>,
    path: PathAndQuery,
    authority: Authority,
    timeout: Duration,
) -> ProbeOutcome {
    let Some(pool) = state.conns().h2() else {
        // The supervisor picks this probe for HTTP/2 pools only.
        return ProbeOutcome::ConnectFailed;
    };
    let head = || {
        let uri = Uri::builder()
            .scheme(pool.scheme())
            .authority(authority.clone())
            .path_and_query(path.clone())
            .build()
            .unwrap_or_else(|_| Uri::from(path.clone()));
        let mut head = Request::new(());
        *head.uri_mut() = uri;
        *head.version_mut() = Version::HTTP_2;
        head.headers_mut()
            .insert(USER_AGENT, HeaderValue::from_static("sluicegate-health"));
        head
    };
    let (_lease, answer, _stream) = match super::grpc::open(pool, head, true, timeout).await {
        Ok(opened) => opened,
        Err(outcome) => return outcome,
    };
    match answer.await {
        Ok(resp) => ProbeOutcome::Status(resp.status().as_u16()),
        Err(_) => ProbeOutcome::Broken,
    }
}

/// `GET path` with `Connection: close` on an established connection.
async fn probe_on<I>(io: I, path: Uri, host: Option<HeaderValue>) -> ProbeOutcome
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(io)).await;
    let Ok((mut sender, conn)) = handshake else {
        return ProbeOutcome::ConnectFailed;
    };
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.uri_mut() = path;
    let headers = req.headers_mut();
    if let Some(host) = host {
        headers.insert(HOST, host);
    }
    headers.insert(USER_AGENT, HeaderValue::from_static("sluicegate-health"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    let mut conn = std::pin::pin!(conn);
    let mut sent = std::pin::pin!(sender.send_request(req));
    // The connection future must be polled for the request to make progress. With
    // `Connection: close` it may finish in the same poll that delivers the response,
    // so when it ends first the response future is still asked (it then resolves at
    // once, with the response or an error). Only the status is looked at; both are
    // dropped afterwards, closing the connection.
    let resp = tokio::select! {
        biased;
        resp = &mut sent => resp,
        _ = &mut conn => sent.await,
    };
    match resp {
        Ok(resp) => ProbeOutcome::Status(resp.status().as_u16()),
        Err(_) => ProbeOutcome::Broken,
    }
}

#[cfg(test)]
mod tests;
