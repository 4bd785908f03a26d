//! One client connection: the hyper builder with the listener's limits, the idle
//! watchdog, and the graceful close on shutdown.
//!
//! hyper bounds the request head (HTTP/1 read buffer and field count, HTTP/2 header
//! list size), the HTTP/1 head timeout and the HTTP/2 stream and reset counts. Its
//! head timer only starts once the protocol is known, so a client that connects
//! and sends nothing (or two bytes) was held forever: [`serve`] drops a connection
//! whose first request has not begun within `header_read_timeout` (found by the
//! property run over raw heads). What hyper also lacks is closing a connection that
//! sits idle (an HTTP/2 client holding a
//! connection with no stream open, or an HTTP/1.1 keep-alive connection between
//! requests when `idle_timeout` is shorter than `header_read_timeout`). [`Activity`]
//! counts the requests in flight on a connection, responses included until their
//! body ends, and [`serve`] closes the connection gracefully once it has had none
//! for `idle_timeout`. An upgraded connection (WebSocket) leaves hyper and this
//! watchdog at the `101`; the tunnel owns it from there.
//!
//! hyper's `max_pending_accept_reset_streams` only counts HTTP/2 streams reset
//! before the server accepted them, and hyper accepts eagerly, so a rapid-reset
//! flood (CVE-2023-44487: open a stream, cancel it, repeat) mostly slips past it,
//! each stream costing a task and the start of an upstream request. [`Activity`]
//! also counts requests the client cancelled before their response head; more than
//! `http2_max_client_resets` within [`RESET_WINDOW`] drops the connection.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Limits;
use crate::data_plane::log_limit::{self, Allowed, LogLimit};

/// The connection builder every client connection of a listener is served with.
pub(super) fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let client = &limits.client;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // A head that does not fit the read buffer is answered 431.
        .max_buf_size(client.max_header_bytes)
        .max_headers(client.max_headers)
        // Responses are mostly small: one buffer and one write beats queueing
        // buffers for a vectored write (fewer instructions per request: see
        // benches/JOURNAL.md, fifth pass; a large body is copied once more, into
        // hyper's buffer).
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(client.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(client.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(client.http2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(client.http2_max_local_error_reset_streams)
        // Dead peers (no PING answer) are closed too, not only idle ones.
        .keep_alive_interval(client.idle_timeout)
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// The window over which client-cancelled requests are counted.
pub(super) const RESET_WINDOW: Duration = Duration::from_secs(10);

/// Requests in flight on one connection and when it last had one.
#[derive(Debug)]
pub(super) struct Activity {
    origin: Instant,
    inflight: AtomicUsize,
    /// Milliseconds after `origin` of the last request start or end.
    last_ms: AtomicU64,
    /// Requests cancelled by the client before their response head, in the window
    /// that started at `window_ms`.
    cancels: AtomicU32,
    window_ms: AtomicU64,
    max_cancels: u32,
    /// Cancelled when the client cancelled too many requests: drop the connection.
    abusive: CancellationToken,
    /// Whether any request has started on this connection.
    begun: AtomicBool,
}

impl Activity {
    pub(super) fn new(max_cancels: u32) -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            inflight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            cancels: AtomicU32::new(0),
            window_ms: AtomicU64::new(0),
            max_cancels,
            abusive: CancellationToken::new(),
            begun: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Counts a request until the returned guard (moved into its response body) drops.
    ///
    /// Only the end of a request marks the time: while one is in flight the
    /// connection is busy whatever `last_ms` says.
    pub(super) fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.begun.store(true, Ordering::Release);
        ActiveGuard {
            activity: Arc::clone(self),
            answered: false,
        }
    }

    /// A request was dropped before its response head: the client cancelled it.
    fn cancelled(&self) {
        let now = self.now_ms();
        let start = self.window_ms.load(Ordering::Relaxed);
        let window = u64::try_from(RESET_WINDOW.as_millis()).unwrap_or(u64::MAX);
        let count = if now.saturating_sub(start) > window {
            // A new window; two racing resets may both restart it (harmless).
            self.window_ms.store(now, Ordering::Relaxed);
            self.cancels.store(1, Ordering::Relaxed);
            1
        } else {
            self.cancels
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1)
        };
        if count > self.max_cancels && !self.abusive.is_cancelled() {
            // Once per connection, and a reconnecting attacker makes many.
            static RAPID_RESET: LogLimit = LogLimit::new(log_limit::PER_SECOND);
            if let Some(Allowed { suppressed }) = RAPID_RESET.check() {
                tracing::info!(
                    cancelled = count,
                    suppressed,
                    "client cancelled too many requests (rapid reset?): closing its connection"
                );
            }
            self.abusive.cancel();
        }
    }

    /// Resolves once no request has been in flight for `timeout`.
    pub(super) async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if self.inflight.load(Ordering::Acquire) == 0 && Instant::now() >= deadline {
                return;
            }
            // Busy: look again a full period later (one timer per connection and period).
            let next = if Instant::now() >= deadline {
                Instant::now() + timeout
            } else {
                deadline
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

/// One request in flight; dropping it marks the connection active just now, and
/// counts a cancellation when it drops before the response head was produced.
#[derive(Debug)]
pub(super) struct ActiveGuard {
    activity: Arc<Activity>,
    answered: bool,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.inflight.fetch_sub(1, Ordering::AcqRel);
        if !self.answered {
            self.activity.cancelled();
        }
    }
}

pin_project! {
    /// A response body that keeps its connection counted as busy until it ends.
    pub(super) struct Tracked<B> {
        #[pin]
        inner: B,
        guard: Option<ActiveGuard>,
    }
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, mut guard: ActiveGuard) -> Self {
        guard.answered = true;
        Tracked {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a connection was asked to close before the client closed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Close {
    /// The listener is draining.
    Shutdown,
    /// No request for `idle_timeout`.
    Idle,
    /// Too many requests cancelled by the client: dropped without a goodbye.
    Abusive,
    /// No request began within the head timeout (hyper's HTTP/1 head timer only
    /// starts once the protocol is known, i.e. after the first bytes arrived).
    NoRequest,
}

/// How long a connection may go without sending its first request, and without
/// any request in flight.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub(super) first_request: Duration,
    pub(super) idle: Duration,
}

/// Drives `conn` to its end, asking it to close gracefully on `shutdown` or when
/// `activity` has been idle for `idle_timeout`; a connection that sends no request
/// within the head timeout, or cancels too many, is dropped.
///
/// The timers and tokens that decide this are watched by a task of their own
/// ([`watch`]), which sends its verdict over a channel. Polling them here instead
/// would poll them on every wake-up of the connection, i.e. several times per
/// request, and a cancellation token takes a mutex each time it is polled.
pub(super) async fn serve<C, F, E>(
    conn: C,
    graceful: F,
    activity: &Arc<Activity>,
    timeouts: Timeouts,
    shutdown: &CancellationToken,
) -> (Result<(), E>, Option<Close>)
where
    C: std::future::Future<Output = Result<(), E>>,
    F: Fn(Pin<&mut C>),
{
    tokio::pin!(conn);
    let (verdicts, mut verdict) = tokio::sync::mpsc::unbounded_channel();
    // Ends by itself once `verdict` is dropped (this function returned).
    tokio::spawn(watch(
        Arc::clone(activity),
        timeouts,
        shutdown.clone(),
        verdicts,
    ));
    let mut closing = None;
    loop {
        tokio::select! {
            biased;
            ended = conn.as_mut() => return (ended, closing),
            Some(close) = verdict.recv() => match close {
                Close::Shutdown | Close::Idle => {
                    if closing.is_none() {
                        graceful(conn.as_mut());
                        closing = Some(close);
                    }
                }
                Close::Abusive | Close::NoRequest => return (Ok(()), Some(close)),
            },
        }
    }
}

/// Watches one connection's deadlines and tokens and sends what should happen to it:
/// [`Close::Shutdown`] or [`Close::Idle`] (at most one of them), then possibly
/// [`Close::Abusive`]; or [`Close::NoRequest`]. Returns when the connection is gone.
async fn watch(
    activity: Arc<Activity>,
    timeouts: Timeouts,
    shutdown: CancellationToken,
    verdicts: tokio::sync::mpsc::UnboundedSender<Close>,
) {
    let first_deadline = Instant::now() + timeouts.first_request;
    let mut closing = false;
    loop {
        let waiting_for_first = !activity.begun.load(Ordering::Acquire);
        let close = tokio::select! {
            () = verdicts.closed() => return,
            () = tokio::time::sleep_until(first_deadline), if waiting_for_first => {
                if activity.begun.load(Ordering::Acquire) {
                    continue;
                }
                Close::NoRequest
            }
            () = shutdown.cancelled(), if !closing => Close::Shutdown,
            () = activity.idle_for(timeouts.idle), if !closing => Close::Idle,
            () = activity.abusive.cancelled() => Close::Abusive,
        };
        if verdicts.send(close).is_err() {
            return;
        }
        match close {
            Close::Shutdown | Close::Idle => closing = true,
            Close::Abusive | Close::NoRequest => return,
        }
    }
}
