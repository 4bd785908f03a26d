//! The body of a request on its way to a backend: the client's, streamed, capped
//! at the route's `max_request_body` and bounded by its `timeouts.client_body`,
//! or none; and how far its upload has gone ([`Progress`]), so the
//! response-header timer starts only once it is whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Errors a streamed body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
pub(crate) enum ClientBodyError {
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
    pub(crate) fn fault(&self) -> ClientFault {
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
pub(crate) struct BodyTooLarge {
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
pub(crate) fn client_fault(err: &(dyn std::error::Error + 'static)) -> Option<ClientFault> {
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
pub(crate) fn body_too_large(err: &(dyn std::error::Error + 'static)) -> Option<u64> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(too_large) = e.downcast_ref::<BodyTooLarge>() {
            return Some(too_large.limit);
        }
        cur = e.source();
    }
    None
}
