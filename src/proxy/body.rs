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
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::access_log::PendingLine;
use crate::backend::InflightGuard;
use crate::upstream::Sender;

/// Errors a streamed body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body sent to a backend.
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, streamed as it arrives.
    Client(Incoming),
    /// The client's body, ended with [`BodyTooLarge`] once more than `remaining`
    /// bytes arrive (the route's `max_request_body`).
    Capped {
        body: Incoming,
        limit: u64,
        remaining: u64,
    },
    /// No body (used to replay a bodiless request on retry).
    Empty,
}

impl RequestBody {
    /// The client's body, capped at `limit` bytes when there is a limit.
    pub fn client(body: Incoming, limit: Option<u64>) -> Self {
        match limit {
            None => RequestBody::Client(body),
            Some(limit) => RequestBody::Capped {
                body,
                limit,
                remaining: limit,
            },
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
            RequestBody::Client(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            RequestBody::Capped {
                body,
                limit,
                remaining,
            } => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    let len = data.map_or(0, |d| d.len() as u64);
                    match remaining.checked_sub(len) {
                        Some(left) => *remaining = left,
                        None => {
                            let limit = *limit;
                            return Poll::Ready(Some(Err(BodyTooLarge { limit }.into())));
                        }
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body) | RequestBody::Capped { body, .. } => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(body) | RequestBody::Capped { body, .. } => body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
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

pin_project! {
    /// A backend's response body on its way to the client.
    pub struct UpstreamBody {
        inner: Incoming,
        // Held until the body ends or is dropped.
        guard: Option<InflightGuard>,
        // The connection the body arrives on; back to the pool at clean end of stream.
        conn: Option<Sender>,
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
        let mut body = UpstreamBody {
            inner,
            guard: Some(guard),
            conn: Some(conn),
            idle_timeout,
            idle: None,
            log: PendingLine::default(),
        };
        if body.inner.is_end_stream() {
            release(&mut body.guard, &mut body.conn);
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
fn release(guard: &mut Option<InflightGuard>, conn: &mut Option<Sender>) {
    if let Some(guard) = guard.take() {
        if let Some(conn) = conn.take() {
            guard.backend().conns().checkin(conn);
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
        match Pin::new(&mut *this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.log.add_bytes(data.len());
                }
                if this.inner.is_end_stream() {
                    release(this.guard, this.conn);
                    this.log.finish(true);
                } else if let Some(idle) = this.idle {
                    idle.as_mut().reset(Instant::now() + *this.idle_timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                // A broken body means a broken connection: never pool it.
                this.conn.take();
                if let Some(guard) = this.guard.take() {
                    guard.backend().count_broken_stream();
                    tracing::debug!(backend = %guard.backend().addr(), %err, "response body cut short");
                }
                this.log.finish(false);
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Ready(None) => {
                release(this.guard, this.conn);
                this.log.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timeout = *this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(idle.as_mut().poll(cx));
                this.conn.take();
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
        self.inner.size_hint()
    }
}

pin_project! {
    /// The body the client receives.
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        /// Streamed from a backend.
        Upstream { #[pin] body: UpstreamBody },
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

    /// A backend's body.
    pub fn upstream(body: UpstreamBody) -> Self {
        ResponseBody::Upstream { body }
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
            ResponseBodyProj::Upstream { body } => body.poll_frame(cx),
            ResponseBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body } => body.is_end_stream(),
            ResponseBody::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body } => body.size_hint(),
            ResponseBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
