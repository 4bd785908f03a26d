//! Shadow traffic: a copy of a sampled share of a route's requests goes to the
//! route's mirror pool, fire and forget.
//!
//! The request path decides in `Mirror::start` (a few atomics; nothing at all
//! on a route without a mirror): whether this request is one of the sampled,
//! whether its declared body fits the mirror's `max_body`, and whether one of the
//! gateway-wide [`MAX_INFLIGHT`] slots is free. Then it copies the head, spawns
//! the copy's task and goes on with the primary, which never waits for the copy.
//! A body is teed frame by frame as it goes to the primary
//! (`upstream::body::Tee`): never buffered, never waited on;
//! the copy is cut when it passes `max_body` or falls behind.
//!
//! The copy's task picks a backend of the mirror pool (the pool's balancer and
//! health, without retries or hold), sends on the backend's pooled connections,
//! reads and discards the answer, all within the mirror's `timeout`, and counts
//! what became of it (`sluicegate_mirror_requests_total{pool,outcome}`, the
//! duration histogram). Its outcomes are its own: they feed neither passive
//! ejection nor the pool's traffic counters that rollout gates read; only the
//! backend's in-flight count sees the copy while it runs.
//!
//! What a copy can cost the primary is bounded: one slot of [`MAX_INFLIGHT`], the
//! copied head, and at most `TEE_FRAMES` (8) frames (shared with the primary's, not
//! copied) in its channel; a mirror that is missing, down, slow or hanging holds
//! its slot until its `timeout`, and beyond the cap new copies are dropped and
//! counted.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::control_plane::config::spec::MirrorSpec;
use crate::data_plane::snapshot::{Pool, Tried};
use crate::data_plane::upstream::body::{Cut, CutReason, RequestBody, Tee};
use crate::data_plane::upstream::h2 as up_h2;
use crate::metrics::{MirrorMetrics, Registrar};

/// Copies in flight at once, gateway-wide; one more is dropped (and counted).
pub const MAX_INFLIGHT: usize = 256;

/// The field that marks a copy, so a mirror backend (and its logs) can tell it
/// from real traffic.
pub const MARK: HeaderName = HeaderName::from_static("x-sluicegate-mirror");

/// Appended to the copy's host name (before any port), as Envoy does, so a copy
/// cannot be mistaken for the real request by host-based routing or logs.
pub const HOST_SUFFIX: &str = "-shadow";

/// The gateway-wide count of copies in flight (kept across snapshots).
#[derive(Debug, Default)]
pub struct Slots {
    inflight: AtomicUsize,
}

impl Slots {
    /// Copies in flight now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    fn take(self: &Arc<Self>) -> Option<Slot> {
        let before = self.inflight.fetch_add(1, Ordering::AcqRel);
        if before >= MAX_INFLIGHT {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(Arc::clone(self)))
    }
}

/// One copy's place among [`MAX_INFLIGHT`]; freed when the copy's task ends.
struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What became of a copy: an index into `metrics::names::MIRROR_OUTCOMES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Answered(StatusCode),
    Error,
    Timeout,
    NoBackend,
    Dropped,
    TooLarge,
    Lagged,
    Abandoned,
}

impl Outcome {
    fn index(self) -> usize {
        match self {
            Outcome::Answered(status) => crate::metrics::names::class_index(status),
            Outcome::Error => 5,
            Outcome::Timeout => 6,
            Outcome::NoBackend => 7,
            Outcome::Dropped => 8,
            Outcome::TooLarge => 9,
            Outcome::Lagged => 10,
            Outcome::Abandoned => 11,
        }
    }
}

/// A route's mirror as the request path sees it.
#[derive(Debug)]
pub struct Mirror {
    /// The mirror pool (of the same snapshot).
    pub pool: Arc<Pool>,
    percent: u64,
    max_body: u64,
    timeout: Duration,
    /// Requests of the route seen, for sampling.
    seen: AtomicU64,
    slots: Arc<Slots>,
    metrics: Arc<MirrorMetrics>,
}

impl Mirror {
    /// The request path's mirror for `spec`, sending to `pool`.
    pub fn new(spec: &MirrorSpec, pool: Arc<Pool>, slots: Arc<Slots>, reg: &Registrar) -> Self {
        Mirror {
            metrics: Arc::new(MirrorMetrics::new(reg.clone(), &pool.name.0)),
            pool,
            percent: u64::from(spec.percent.min(100)),
            max_body: spec.max_body,
            timeout: spec.timeout,
            seen: AtomicU64::new(0),
            slots,
        }
    }

    /// Whether this request is one of the copied: exactly `percent` of every
    /// hundred requests, spread evenly over them (no randomness to be unlucky).
    #[inline]
    pub fn sample(&self) -> bool {
        sampled(&self.seen, self.percent)
    }

    /// Starts the copy of a sampled request whose head, as it goes to the
    /// primary (origin-form target, hop-by-hop fields removed, Host set), is
    /// `parts`; `body`: it has a body to tee. `add_fields` adds to the copy's
    /// fields what the primary's map does not hold yet (the forwarding fields a
    /// gateway-driven connection writes itself). Returns the tee the body must go
    /// through, when it has a body and a copy goes.
    #[cold]
    #[inline(never)]
    pub(crate) fn start(
        &self,
        parts: &http::request::Parts,
        body: bool,
        client_ip: std::net::IpAddr,
        add_fields: impl FnOnce(&mut http::HeaderMap),
    ) -> Option<Tee> {
        if body && declared_length(&parts.headers).is_some_and(|n| n > self.max_body) {
            self.metrics.record(Outcome::TooLarge.index(), None);
            return None;
        }
        let Some(slot) = self.slots.take() else {
            self.metrics.record(Outcome::Dropped.index(), None);
            return None;
        };
        let mut head = Request::new(RequestBody::Empty);
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = parts.uri.clone();
        *head.version_mut() = parts.version;
        let headers = head.headers_mut();
        headers.clone_from(&parts.headers);
        add_fields(headers);
        mark(headers);
        let (tee, cut) = if body {
            let (tee, body) = Tee::new(self.max_body);
            let cut = body.cut();
            *head.body_mut() = RequestBody::Mirror(body);
            (Some(tee), Some(cut))
        } else {
            (None, None)
        };
        let key = self.pool.request_key(&parts.headers, client_ip);
        let job = Job {
            pool: Arc::clone(&self.pool),
            key,
            head,
            timeout: self.timeout,
            metrics: Arc::clone(&self.metrics),
            cut,
            slot,
        };
        tokio::spawn(job.run());
        tee
    }
}

/// Whether the `seen`-th request (counted here) is one of `percent` in each 100.
#[inline]
fn sampled(seen: &AtomicU64, percent: u64) -> bool {
    if percent == 0 {
        return false;
    }
    let k = seen.fetch_add(1, Ordering::Relaxed) % 100;
    (k + 1) * percent / 100 != k * percent / 100
}

/// `Content-Length`, when the request declares one that parses.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Marks a copy: [`MARK`], and [`HOST_SUFFIX`] on its host name.
fn mark(headers: &mut http::HeaderMap) {
    headers.insert(MARK, HeaderValue::from_static("1"));
    let shadow = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|host| HeaderValue::from_str(&shadow_host(host)).ok());
    if let Some(shadow) = shadow {
        headers.insert(header::HOST, shadow);
    }
}

/// `agents.local:8080` → `agents.local-shadow:8080`; an IPv6 literal keeps its
/// brackets (`[::1]-shadow:8080` would not parse: the suffix goes after the port).
fn shadow_host(host: &str) -> String {
    if host.starts_with('[') {
        return format!("{host}{HOST_SUFFIX}");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{name}{HOST_SUFFIX}:{port}")
        }
        _ => format!("{host}{HOST_SUFFIX}"),
    }
}

/// One copy, on its own task.
struct Job {
    pool: Arc<Pool>,
    key: Option<u64>,
    head: Request<RequestBody>,
    timeout: Duration,
    metrics: Arc<MirrorMetrics>,
    /// Why the body's tee let go, when there is a body.
    cut: Option<Arc<Cut>>,
    slot: Slot,
}

/// Why a copy got no answer.
enum Failed {
    NoBackend,
    /// No connection (refused, timed out): nothing of the copy was sent.
    Connect,
    /// The exchange failed once sending began (the body's cut included).
    Wire,
}

impl Job {
    async fn run(self) {
        let Job {
            pool,
            key,
            head,
            timeout,
            metrics,
            cut,
            slot,
        } = self;
        let started = Instant::now();
        let mut answered = None;
        let ended = {
            let sent =
                tokio::time::timeout(timeout, exchange(&pool, key, head, timeout, &mut answered));
            // A cut copy ends at once: its connection may be stuck on a mirror
            // that stopped reading, and would not poll the body to learn it.
            let cut_now = async {
                match &cut {
                    Some(cut) => cut.cut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ended = sent => Some(ended),
                () = cut_now => None,
            }
        };
        let cut_reason = cut.as_ref().and_then(|c| c.reason());
        let outcome = match (answered, ended) {
            // An answer counts even when discarding its body ran out of time.
            (Some((status, _)), _) => Outcome::Answered(status),
            (None, Some(Err(_))) => Outcome::Timeout,
            (None, Some(Ok(Err(Failed::NoBackend)))) => Outcome::NoBackend,
            (None, Some(Ok(Err(Failed::Connect)))) => Outcome::Error,
            (None, None | Some(Ok(Err(Failed::Wire) | Ok(())))) => match cut_reason {
                Some(CutReason::TooLarge) => Outcome::TooLarge,
                Some(CutReason::Lagged) => Outcome::Lagged,
                Some(CutReason::Abandoned) => Outcome::Abandoned,
                None => Outcome::Error,
            },
        };
        let took =
            answered.map(|(_, at): (StatusCode, Instant)| at.saturating_duration_since(started));
        metrics.record(outcome.index(), took);
        drop(slot);
    }
}

/// Sends `head` to a backend of `pool` and discards the answer; `answered` is
/// set when the answer's head arrives. The caller's timeout bounds it all.
async fn exchange(
    pool: &Pool,
    key: Option<u64>,
    head: Request<RequestBody>,
    connect: Duration,
    answered: &mut Option<(StatusCode, Instant)>,
) -> Result<(), Failed> {
    let backend = pool.pick(key, &Tried::default()).ok_or(Failed::NoBackend)?;
    let _inflight = backend.state.start_request();
    let conns = backend.state.conns();
    if let Some(h2) = conns.h2() {
        let lease = h2.lease(connect).await.map_err(|_| Failed::Connect)?;
        let (parts, body) = head.into_parts();
        let h2_head = up_h2::head(&parts, h2.scheme(), backend.addr);
        let end = matches!(body, RequestBody::Empty);
        let (answer, stream) = up_h2::open(&lease, h2_head, end)
            .await
            .map_err(|_| Failed::Wire)?;
        let mut pump = (!end).then(|| up_h2::Pump::new(body, stream));
        let sending = async {
            if let Some(pump) = pump.as_mut() {
                // A copy whose body fails is reset; its answer then fails too.
                let _ = std::future::poll_fn(|cx| pump.poll_send(cx)).await;
            }
        };
        let (resp, ()) = tokio::join!(answer, sending);
        let resp = resp.map_err(|_| Failed::Wire)?;
        *answered = Some((resp.status(), Instant::now()));
        let mut body = resp.into_body();
        while let Some(data) = body.data().await {
            let data = data.map_err(|_| Failed::Wire)?;
            let _ = body.flow_control().release_capacity(data.len());
        }
        drop(lease);
        return Ok(());
    }
    let mut conn = conns.checkout(connect).await.map_err(|_| Failed::Connect)?;
    conn.sender.ready().await.map_err(|_| Failed::Connect)?;
    let (mut parts, body) = head.into_parts();
    parts.version = http::Version::HTTP_11;
    let resp = conn
        .sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|_| Failed::Wire)?;
    *answered = Some((resp.status(), Instant::now()));
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|_| Failed::Wire)?;
    }
    conns.checkin(conn.sender);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_takes_exactly_percent_of_each_hundred() {
        for percent in [0u64, 1, 10, 33, 50, 99, 100] {
            let seen = AtomicU64::new(0);
            let taken = (0..1000).filter(|_| sampled(&seen, percent)).count();
            assert_eq!(taken as u64, percent * 10, "{percent}");
        }
    }

    #[test]
    fn shadow_host_goes_before_the_port() {
        assert_eq!(shadow_host("agents.local"), "agents.local-shadow");
        assert_eq!(shadow_host("agents.local:8080"), "agents.local-shadow:8080");
        assert_eq!(shadow_host("[::1]:8080"), "[::1]:8080-shadow");
    }

    #[test]
    fn slots_stop_at_the_cap_and_free_on_drop() {
        let slots = Arc::new(Slots::default());
        let held: Vec<Slot> = (0..MAX_INFLIGHT).filter_map(|_| slots.take()).collect();
        assert_eq!(held.len(), MAX_INFLIGHT);
        assert!(slots.take().is_none());
        assert_eq!(slots.inflight(), MAX_INFLIGHT);
        drop(held);
        assert_eq!(slots.inflight(), 0);
        assert!(slots.take().is_some());
    }

    #[test]
    fn outcomes_index_their_label_values() {
        use crate::metrics::names::MIRROR_OUTCOMES;
        let name = |o: Outcome| MIRROR_OUTCOMES[o.index()];
        assert_eq!(name(Outcome::Answered(StatusCode::OK)), "2xx");
        assert_eq!(name(Outcome::Answered(StatusCode::BAD_GATEWAY)), "5xx");
        assert_eq!(name(Outcome::Error), "error");
        assert_eq!(name(Outcome::Timeout), "timeout");
        assert_eq!(name(Outcome::NoBackend), "no_backend");
        assert_eq!(name(Outcome::Dropped), "dropped");
        assert_eq!(name(Outcome::TooLarge), "too_large");
        assert_eq!(name(Outcome::Lagged), "lagged");
        assert_eq!(name(Outcome::Abandoned), "abandoned");
    }
}
