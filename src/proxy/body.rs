//! Body types that stream through the gateway without buffering.
//!
//! [`RequestBody`] is what is sent upstream: the client's body as it arrives (cut
//! with [`BodyTooLarge`] at the route's `max_request_body`), or nothing (a retry of
//! a bodiless request). [`ResponseBody`] is what the client
//! receives: the backend's body frame by frame, or a short body of the gateway's own.
//!
//! The upstream variant owns the request's [`InflightGuard`], so a backend counts as
//! loaded until its body ends (SSE streams included), and returns the keep-alive
//! connection to its pool only after a clean end of stream. With the access log on it
//! also carries the request's pending line, counts the bytes sent, and writes the
//! line when the body ends (or is dropped: the client went away).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::access_log::PendingLine;
use crate::backend::InflightGuard;
use crate::http1::client::{H1Body, RawFields};
use crate::upstream::Sender;

/// Errors a streamed body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body sent to a backend.
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, streamed as it arrives.
    Client(ClientBody),
    /// No body (used to replay a bodiless request on retry).
    Empty,
}

/// A client's request body on its way upstream: ended with [`BodyTooLarge`] once
/// more than the route's `max_request_body` arrives, with
/// [`ClientBodyError::TimedOut`] when the client sends nothing for the route's
/// `timeouts.client_body` while the gateway waits for it, and with the other
/// [`ClientBodyError`]s when its framing breaks or the client goes away. Its
/// [`Progress`] tells the attempt when the whole body has been taken.
#[derive(Debug)]
pub struct ClientBody {
    body: Incoming,
    /// `(limit, remaining)` under a `max_request_body`.
    cap: Option<(u64, u64)>,
    idle: Duration,
    // Made the first time the client keeps the gateway waiting.
    timer: Option<Pin<Box<Sleep>>>,
    progress: Arc<Progress>,
}

impl RequestBody {
    /// The client's body (`None`: it has none), capped at `limit` bytes when there
    /// is a limit, ended when the client sends nothing for `idle`; with the
    /// [`Progress`] of its upload when there is a body.
    pub fn client(
        body: Option<Incoming>,
        limit: Option<u64>,
        idle: Duration,
    ) -> (Self, Option<Arc<Progress>>) {
        let Some(body) = body else {
            return (RequestBody::Empty, None);
        };
        let progress = Arc::new(Progress::default());
        if body.is_end_stream() {
            progress.finish();
        }
        let body = ClientBody {
            body,
            cap: limit.map(|limit| (limit, limit)),
            idle,
            timer: None,
            progress: Arc::clone(&progress),
        };
        (RequestBody::Client(body), Some(progress))
    }
}

/// How far a client's body has gone upstream, shared between the body (which the
/// upstream connection polls) and the attempt (which times the backend).
#[derive(Debug, Default)]
pub struct Progress {
    /// Frames taken so far.
    frames: AtomicU64,
    /// The body's last poll found the client had nothing yet.
    waiting_on_client: AtomicBool,
    done: AtomicBool,
    ended: Notify,
}

impl Progress {
    /// The body ended (wholly sent, or failed): the response-header timer may start.
    fn finish(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.ended.notify_one();
        }
    }

    /// Waits until the whole body has been taken upstream. False when the upstream
    /// connection took nothing for `stall` while the gateway was not waiting on the
    /// client (a backend that does not read its request: its fault, like a late
    /// answer). A client that is slow is the client body timeout's to end.
    pub async fn sent(&self, stall: Duration) -> bool {
        loop {
            let frames = self.frames.load(Ordering::Acquire);
            if self.done.load(Ordering::Acquire) {
                return true;
            }
            if tokio::time::timeout(stall, self.ended.notified())
                .await
                .is_ok()
            {
                return true;
            }
            let moved = self.frames.load(Ordering::Acquire) != frames;
            if !moved && !self.waiting_on_client.load(Ordering::Acquire) {
                return false;
            }
        }
    }
}

/// Why a client's request body could not be passed on: the client's doing, never
/// the backend's.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// The body's framing is broken (a bad chunk size or terminator, …).
    #[error("the request body is malformed: {0}")]
    Malformed(#[source] hyper::Error),
    /// The client closed or reset before the body was whole.
    #[error("the client went away before its request body was whole: {0}")]
    Aborted(#[source] hyper::Error),
    /// The client sent nothing for the route's `timeouts.client_body`.
    #[error("the client sent no request body bytes for {0:?} (client_body timeout)")]
    TimedOut(Duration),
}

/// How a client broke its own request body (the kinds of [`ClientBodyError`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFault {
    /// Broken framing: 400.
    Malformed,
    /// Gone before the body was whole: 499.
    Aborted,
    /// Silent for `timeouts.client_body`: 408.
    TimedOut,
}

impl ClientBodyError {
    /// Its kind.
    pub fn fault(&self) -> ClientFault {
        match self {
            ClientBodyError::Malformed(_) => ClientFault::Malformed,
            ClientBodyError::Aborted(_) => ClientFault::Aborted,
            ClientBodyError::TimedOut(_) => ClientFault::TimedOut,
        }
    }

    /// Sorts an error of the client's body stream: bad framing reads as invalid
    /// data or input; anything else (EOF before the end, a reset, an h2 stream
    /// cancelled) is the client going away.
    fn of(err: hyper::Error) -> Self {
        let mut malformed = err.is_parse();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                malformed |= matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                );
            }
            cur = e.source();
        }
        if malformed {
            ClientBodyError::Malformed(err)
        } else {
            ClientBodyError::Aborted(err)
        }
    }
}

/// A streamed request body went past the route's `max_request_body`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Client(body) => body.poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(client) => {
                let end = client.body.is_end_stream();
                if end {
                    // hyper stops polling a body that says it has ended.
                    client.progress.finish();
                }
                end
            }
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(client) => client.body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

impl ClientBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let progress = &*self.progress;
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => {
                progress.waiting_on_client.store(true, Ordering::Release);
                let idle = self.idle;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    progress.finish();
                    return Poll::Ready(Some(Err(ClientBodyError::TimedOut(idle).into())));
                }
                return Poll::Pending;
            }
            Poll::Ready(frame) => frame,
        };
        progress.waiting_on_client.store(false, Ordering::Release);
        progress.frames.fetch_add(1, Ordering::AcqRel);
        if let Some(timer) = &mut self.timer {
            timer.as_mut().reset(Instant::now() + self.idle);
        }
        match frame {
            None => {
                progress.finish();
                Poll::Ready(None)
            }
            Some(Err(err)) => {
                progress.finish();
                Poll::Ready(Some(Err(ClientBodyError::of(err).into())))
            }
            Some(Ok(frame)) => {
                if let (Some((limit, remaining)), Some(data)) = (&mut self.cap, frame.data_ref()) {
                    match remaining.checked_sub(data.len() as u64) {
                        Some(left) => *remaining = left,
                        None => {
                            progress.finish();
                            let limit = *limit;
                            return Poll::Ready(Some(Err(BodyTooLarge { limit }.into())));
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}

/// Whether a failed upstream exchange was cut by the client's body; how if so.
pub fn client_fault(err: &(dyn std::error::Error + 'static)) -> Option<ClientFault> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<ClientBodyError>() {
            return Some(found.fault());
        }
        cur = e.source();
    }
    None
}

/// Whether a failed upstream exchange was cut by [`BodyTooLarge`]; the limit if so.
pub fn body_too_large(err: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(too_large) = e.downcast_ref::<BodyTooLarge>() {
            return Some(too_large.limit);
        }
        cur = e.source();
    }
    None
}

/// The backend stopped sending body frames for longer than the route's idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent nothing for {0:?} (idle timeout)")]
pub struct IdleTimeout(pub Duration);

/// The backend was removed and its `stream_close_delay` ran out.
#[derive(Debug, thiserror::Error)]
#[error("the backend was removed (stream_close_delay ran out)")]
pub struct BackendRemoved;

/// Where a backend's body arrives from.
enum Source {
    /// hyper's client connection; the connection is pooled again at a clean end.
    Hyper {
        body: Incoming,
        conn: Option<Sender>,
    },
    /// A connection the gateway drives itself (`http1::client`), which has no task
    /// to end when the backend is removed: a body that waits also waits on that.
    H1 {
        body: H1Body,
        removed: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    },
}

impl Source {
    fn is_end_stream(&self) -> bool {
        match self {
            Source::Hyper { body, .. } => body.is_end_stream(),
            Source::H1 { body, .. } => body.is_done(),
        }
    }

    /// Drops the connection: it is not clean to use again.
    fn discard(&mut self) {
        match self {
            Source::Hyper { conn, .. } => drop(conn.take()),
            Source::H1 { body, .. } => body.discard(),
        }
    }
}

pin_project! {
    /// A backend's response body on its way to the client.
    pub struct UpstreamBody {
        inner: Source,
        // Held until the body ends or is dropped.
        guard: Option<InflightGuard>,
        idle_timeout: Duration,
        // Made the first time the backend keeps the body waiting: most bodies arrive
        // whole, and a timer for each would be made and dropped unused.
        idle: Option<Pin<Box<Sleep>>>,
        // The access-log line, when the log is on.
        log: PendingLine,
    }
}

impl UpstreamBody {
    /// Wraps a backend body; a body that is already complete releases at once.
    pub fn new(
        inner: Incoming,
        guard: InflightGuard,
        conn: Sender,
        idle_timeout: Duration,
    ) -> Self {
        let source = Source::Hyper {
            body: inner,
            conn: Some(conn),
        };
        Self::from_source(source, guard, idle_timeout)
    }

    /// A body read off a gateway-driven connection (`http1::client`).
    pub fn h1(body: H1Body, guard: InflightGuard, idle_timeout: Duration) -> Self {
        let source = Source::H1 {
            body,
            removed: None,
        };
        Self::from_source(source, guard, idle_timeout)
    }

    fn from_source(inner: Source, guard: InflightGuard, idle_timeout: Duration) -> Self {
        let mut body = UpstreamBody {
            inner,
            guard: Some(guard),
            idle_timeout,
            idle: None,
            log: PendingLine::default(),
        };
        if body.inner.is_end_stream() {
            release(&mut body.guard, &mut body.inner);
        }
        body
    }

    /// Carries the request's access-log line until the body ends.
    pub fn attach_log(&mut self, mut line: PendingLine) {
        if self.inner.is_end_stream() {
            line.finish(true);
        } else {
            self.log = line;
        }
    }
}

/// Ends the request's accounting and returns its connection to the pool.
fn release(guard: &mut Option<InflightGuard>, source: &mut Source) {
    if let Some(guard) = guard.take() {
        let pool = guard.backend().conns();
        match source {
            Source::Hyper { conn, .. } => {
                if let Some(conn) = conn.take() {
                    pool.checkin(conn);
                }
            }
            Source::H1 { body, .. } => {
                if let Some(conn) = body.take_reusable() {
                    pool.checkin_h1(conn);
                }
            }
        }
    }
}

/// The next frame of `source`; for a gateway-driven connection, an error once the
/// backend is removed while the body waits.
fn poll_source(
    source: &mut Source,
    guard: &Option<InflightGuard>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match source {
        Source::Hyper { body, .. } => Pin::new(body).poll_frame(cx).map_err(Into::into),
        Source::H1 { body, removed } => {
            let polled = body.poll_frame(cx).map_err(Into::into);
            if polled.is_pending() {
                if let Some(guard) = guard {
                    let removed = removed.get_or_insert_with(|| {
                        Box::pin(guard.backend().closed().clone().cancelled_owned())
                    });
                    if removed.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Err(BackendRemoved.into())));
                    }
                }
            }
            polled
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match poll_source(this.inner, this.guard, cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.log.add_bytes(data.len());
                }
                if this.inner.is_end_stream() {
                    release(this.guard, this.inner);
                    this.log.finish(true);
                } else if let Some(idle) = this.idle {
                    idle.as_mut().reset(Instant::now() + *this.idle_timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                // A broken body means a broken connection: never pool it.
                this.inner.discard();
                if let Some(guard) = this.guard.take() {
                    guard.backend().count_broken_stream();
                    tracing::debug!(backend = %guard.backend().addr(), %err, "response body cut short");
                }
                this.log.finish(false);
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                release(this.guard, this.inner);
                this.log.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timeout = *this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(idle.as_mut().poll(cx));
                this.inner.discard();
                if let Some(guard) = this.guard.take() {
                    guard.backend().count_broken_stream();
                }
                this.log.finish(false);
                Poll::Ready(Some(Err(IdleTimeout(*this.idle_timeout).into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Hyper { body, .. } => body.size_hint(),
            Source::H1 { body, .. } => match body.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

pin_project! {
    /// The body the client receives.
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        /// Streamed from a backend; `fields` are its head's fields when they came
        /// raw (the fast path, `http1::client`), else they are in the response's map.
        Upstream { #[pin] body: UpstreamBody, fields: Option<RawFields> },
        /// The gateway's own (error pages, 101 responses): sent in one frame.
        Full { data: Option<Bytes> },
    }
}

impl ResponseBody {
    /// A body of the gateway's own.
    pub fn full(data: Bytes) -> Self {
        ResponseBody::Full { data: Some(data) }
    }

    /// An empty body.
    pub fn empty() -> Self {
        ResponseBody::Full { data: None }
    }

    /// A backend's body, with its head's raw fields when it has them.
    pub fn upstream(body: UpstreamBody, fields: Option<RawFields>) -> Self {
        ResponseBody::Upstream { body, fields }
    }

    /// The backend's raw head fields, if they are not in the response's map yet
    /// (taken: whoever writes the head writes them).
    pub fn take_raw_fields(&mut self) -> Option<RawFields> {
        match self {
            ResponseBody::Upstream { fields, .. } => fields.take(),
            ResponseBody::Full { .. } => None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ResponseBodyProj::Upstream { body, .. } => body.poll_frame(cx),
            ResponseBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
            ResponseBody::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body, .. } => body.size_hint(),
            ResponseBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
