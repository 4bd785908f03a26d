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
//! line when the body ends (or is dropped: the client went away). A gRPC call
//! whose status comes after its messages carries its judge (`grpc::Watch`),
//! which reads the trailers as they pass; other bodies carry `None`.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::grpc::Watch;
use crate::data_plane::access_log::PendingLine;
use crate::data_plane::backend::InflightGuard;
use crate::data_plane::http1::client::{H1Body, RawFields};
use crate::data_plane::upstream::h2::H2Body;
use crate::data_plane::upstream::Sender;

pub(crate) use crate::data_plane::upstream::body::{
    body_too_large, client_fault, BoxError, ClientFault, Progress, RequestBody,
};

/// The backend stopped sending body frames for longer than the route's idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent nothing for {0:?} (idle timeout)")]
pub(crate) struct IdleTimeout(pub Duration);

/// The backend was removed and its `stream_close_delay` ran out.
#[derive(Debug, thiserror::Error)]
#[error("the backend was removed (stream_close_delay ran out)")]
pub(crate) struct BackendRemoved;

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
    /// A stream on a multiplexed HTTP/2 connection (its task ends when the
    /// backend is removed, failing the stream).
    H2 { body: H2Body },
}

impl Source {
    fn is_end_stream(&self) -> bool {
        match self {
            Source::Hyper { body, .. } => body.is_end_stream(),
            Source::H1 { body, .. } => body.is_done(),
            Source::H2 { body } => body.is_end_stream(),
        }
    }

    /// Drops the connection: it is not clean to use again.
    fn discard(&mut self) {
        match self {
            Source::Hyper { conn, .. } => drop(conn.take()),
            Source::H1 { body, .. } => body.discard(),
            Source::H2 { body } => body.discard(),
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
        // A gRPC call whose status comes in the trailers: judged as they pass.
        grpc: Option<Box<Watch>>,
        // A gRPC call's body: a failure after the head ends it with a gRPC
        // status in trailers (the client cannot read a reset as one).
        grpc_end: GrpcEnd,
    }
}

/// How a gRPC call's response body ends when the backend breaks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GrpcEnd {
    /// Not a gRPC call: the error goes to the client's connection as it is.
    NotGrpc,
    /// A gRPC call still streaming.
    Streaming,
    /// The gateway ended it with its own status trailers: nothing follows.
    Ended,
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

    /// A body read off an HTTP/2 stream.
    pub(crate) fn h2(body: H2Body, guard: InflightGuard, idle_timeout: Duration) -> Self {
        Self::from_source(Source::H2 { body }, guard, idle_timeout)
    }

    fn from_source(inner: Source, guard: InflightGuard, idle_timeout: Duration) -> Self {
        let mut body = UpstreamBody {
            inner,
            guard: Some(guard),
            idle_timeout,
            idle: None,
            log: PendingLine::default(),
            grpc: None,
            grpc_end: GrpcEnd::NotGrpc,
        };
        if body.inner.is_end_stream() {
            release(&mut body.guard, &mut body.inner);
        }
        body
    }

    /// Judges the gRPC call this body answers by the trailers that end it
    /// (see `grpc::Watch`); a body already over had none.
    pub(crate) fn watch_grpc(&mut self, mut watch: Box<Watch>) {
        if self.inner.is_end_stream() {
            watch.ended();
        } else {
            self.grpc = Some(watch);
        }
    }

    /// This body answers a gRPC call: if the backend breaks it after the head,
    /// the client gets `grpc-status` 14 in trailers naming the cause, instead
    /// of a reset stream.
    pub(crate) fn end_grpc_with_status(&mut self) {
        self.grpc_end = GrpcEnd::Streaming;
    }

    /// The connection is not pooled again after this body (its framing was suspect).
    pub fn not_reusable(&mut self) {
        self.inner.discard();
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
            // The stream's slot frees with it.
            Source::H2 { body } => body.discard(),
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
        Source::H2 { body } => Pin::new(body).poll_frame(cx).map_err(Into::into),
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
        if *this.grpc_end == GrpcEnd::Ended {
            return Poll::Ready(None);
        }
        match poll_source(this.inner, this.guard, cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.log.add_bytes(data.len());
                } else if let (Some(watch), Some(trailers)) =
                    (this.grpc.as_mut(), frame.trailers_ref())
                {
                    watch.trailers(trailers);
                }
                if this.inner.is_end_stream() {
                    release(this.guard, this.inner);
                    this.log.finish(true);
                    if let Some(watch) = this.grpc.as_mut() {
                        watch.ended();
                    }
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
                if let Some(watch) = this.grpc.as_mut() {
                    watch.broken(*this.grpc_end == GrpcEnd::Streaming);
                }
                this.log.finish(false);
                Poll::Ready(Some(broken_end(this.grpc_end, err)))
            }
            Poll::Ready(None) => {
                release(this.guard, this.inner);
                this.log.finish(true);
                if let Some(watch) = this.grpc.as_mut() {
                    watch.ended();
                }
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
                if let Some(watch) = this.grpc.as_mut() {
                    watch.broken(*this.grpc_end == GrpcEnd::Streaming);
                }
                this.log.finish(false);
                let err = IdleTimeout(*this.idle_timeout).into();
                Poll::Ready(Some(broken_end(this.grpc_end, err)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.grpc_end == GrpcEnd::Ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Hyper { body, .. } => body.size_hint(),
            Source::H2 { body } => body.size_hint(),
            Source::H1 { body, .. } => match body.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

/// What a broken body gives the client: the error (its stream is reset), or
/// for a gRPC call still streaming, the gateway's status trailers.
fn broken_end(grpc: &mut GrpcEnd, err: BoxError) -> Result<Frame<Bytes>, BoxError> {
    if *grpc != GrpcEnd::Streaming {
        return Err(err);
    }
    *grpc = GrpcEnd::Ended;
    Ok(Frame::trailers(super::grpc::cut_short_trailers(&*err)))
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

impl crate::data_plane::http1::server::AnswerBody for ResponseBody {
    fn take_raw_fields(&mut self) -> Option<RawFields> {
        ResponseBody::take_raw_fields(self)
    }
}
