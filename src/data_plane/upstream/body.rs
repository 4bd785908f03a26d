//! The body of a request on its way to a backend: the client's, streamed, capped
//! at the route's `max_request_body` and bounded by its `timeouts.client_body`,
//! or none; and how far its upload has gone ([`Progress`]), so the
//! response-header timer starts only once it is whole.
//!
//! A mirrored request's body is *teed*: each frame the primary takes is also
//! offered ([`Tee`]) to a bounded channel its copy reads ([`MirrorBody`]); the
//! frames are shared (`Bytes`), never copied. The tee never waits: when the
//! channel is full (the mirror is slower than the primary) or the bytes pass the
//! mirror's `max_body`, it lets go, and the copy's body ends with an error, so
//! the mirror backend sees an aborted request rather than a short one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::{mpsc, Notify};
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
    /// A mirrored request's copy of the client's body (see [`Tee`]).
    Mirror(MirrorBody),
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
    /// The copy of a mirrored request, fed as frames go to the primary.
    tee: Option<Tee>,
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
            tee: None,
        };
        (RequestBody::Client(body), Some(progress))
    }

    /// Feeds `tee` with the frames of the client's body as they go upstream (a
    /// body that is not the client's has nothing to tee: `tee` is dropped, and
    /// its copy ends as cut).
    pub(crate) fn tee(&mut self, tee: Tee) {
        if let RequestBody::Client(body) = self {
            body.tee = Some(tee);
        }
    }
}

/// Frames a mirror's body channel holds at most: the copy's share of memory is
/// these (shared with the primary's frames) and nothing more.
pub(crate) const TEE_FRAMES: usize = 8;

/// Why a mirror's copy of a body was let go (0: it was not), and the signal
/// that it was: a copy whose connection is stuck (a mirror that stopped reading)
/// would never poll its body again to learn it.
#[derive(Debug, Default)]
pub(crate) struct Cut {
    reason: AtomicU8,
    signal: Notify,
}

/// [`Cut`]'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CutReason {
    /// More than the mirror's `max_body` arrived.
    TooLarge,
    /// The copy's channel was full: the mirror is slower than the primary.
    Lagged,
    /// The client's body failed, or the primary stopped reading it.
    Abandoned,
}

impl Cut {
    fn set(&self, reason: CutReason) {
        let code = match reason {
            CutReason::TooLarge => 1,
            CutReason::Lagged => 2,
            CutReason::Abandoned => 3,
        };
        // The first reason stays.
        let first = self
            .reason
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            // A permit if the copy does not wait yet.
            self.signal.notify_one();
        }
    }

    /// Returns once the copy was let go.
    pub(crate) async fn cut(&self) {
        self.signal.notified().await;
    }

    /// Why the copy was cut, if it was.
    pub(crate) fn reason(&self) -> Option<CutReason> {
        match self.reason.load(Ordering::Acquire) {
            1 => Some(CutReason::TooLarge),
            2 => Some(CutReason::Lagged),
            3 => Some(CutReason::Abandoned),
            _ => None,
        }
    }
}

/// What goes through a tee's channel.
#[derive(Debug)]
enum Teed {
    Frame(Frame<Bytes>),
    /// The body ended cleanly: without it, a closed channel is a cut copy.
    End,
}

/// The primary's side of a mirrored body: offers each frame, never waits.
#[derive(Debug)]
pub(crate) struct Tee {
    tx: mpsc::Sender<Teed>,
    /// Bytes the copy may still take.
    left: u64,
    cut: Arc<Cut>,
    ended: bool,
}

impl Tee {
    /// A tee for a body of at most `max_body` bytes, and the copy it feeds.
    pub(crate) fn new(max_body: u64) -> (Tee, MirrorBody) {
        let (tx, rx) = mpsc::channel(TEE_FRAMES);
        let cut = Arc::new(Cut::default());
        let tee = Tee {
            tx,
            left: max_body,
            cut: Arc::clone(&cut),
            ended: false,
        };
        (tee, MirrorBody { rx, cut })
    }

    /// Offers a frame; false when the copy was let go (the caller drops the tee).
    fn offer(&mut self, frame: &Frame<Bytes>) -> bool {
        if let Some(data) = frame.data_ref() {
            match self.left.checked_sub(data.len() as u64) {
                Some(left) => self.left = left,
                None => {
                    self.cut.set(CutReason::TooLarge);
                    return false;
                }
            }
        }
        let copy = match frame.data_ref() {
            Some(data) => Frame::data(data.clone()),
            None => match frame.trailers_ref() {
                Some(trailers) => Frame::trailers(trailers.clone()),
                None => return true,
            },
        };
        self.send(Teed::Frame(copy))
    }

    fn send(&mut self, item: Teed) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.cut.set(CutReason::Lagged);
                false
            }
            // The copy is over already (timed out, or answered early).
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// The body ended cleanly.
    fn end(mut self) {
        self.ended = self.send(Teed::End);
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if !self.ended {
            // Cut for a reason already set, or because the primary's body failed
            // or was dropped before its end.
            self.cut.set(CutReason::Abandoned);
        }
    }
}

/// A mirrored request's body: the frames its [`Tee`] passed on; an error when
/// the tee let go before the end.
#[derive(Debug)]
pub struct MirrorBody {
    rx: mpsc::Receiver<Teed>,
    cut: Arc<Cut>,
}

impl MirrorBody {
    /// Why the copy was cut, if it was (read once the copy's exchange is over).
    pub(crate) fn cut(&self) -> Arc<Cut> {
        Arc::clone(&self.cut)
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Teed::Frame(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Teed::End)) => {
                self.rx.close();
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(MirrorCut.into()))),
        }
    }
}

/// A mirror's copy of a body was let go before its end.
#[derive(Debug, thiserror::Error)]
#[error("the mirror's copy of the request body was cut")]
pub(crate) struct MirrorCut;

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
            RequestBody::Mirror(body) => body.poll_frame(cx),
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
            RequestBody::Mirror(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(client) => client.body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Mirror(_) => SizeHint::default(),
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
                if let Some(tee) = self.tee.take() {
                    tee.end();
                }
                Poll::Ready(None)
            }
            Some(Err(err)) => {
                progress.finish();
                self.tee = None;
                Poll::Ready(Some(Err(ClientBodyError::of(err).into())))
            }
            Some(Ok(frame)) => {
                if let (Some((limit, remaining)), Some(data)) = (&mut self.cap, frame.data_ref()) {
                    match remaining.checked_sub(data.len() as u64) {
                        Some(left) => *remaining = left,
                        None => {
                            progress.finish();
                            self.tee = None;
                            let limit = *limit;
                            return Poll::Ready(Some(Err(BodyTooLarge { limit }.into())));
                        }
                    }
                }
                if let Some(tee) = &mut self.tee {
                    if !tee.offer(&frame) {
                        self.tee = None;
                    }
                }
                // A body whose last frame says so is never polled for its end.
                if self.tee.is_some() && self.body.is_end_stream() {
                    if let Some(tee) = self.tee.take() {
                        tee.end();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Frame<Bytes> {
        Frame::data(Bytes::from(vec![b'x'; n]))
    }

    async fn next(body: &mut MirrorBody) -> Option<Result<Frame<Bytes>, BoxError>> {
        std::future::poll_fn(|cx| body.poll_frame(cx)).await
    }

    #[tokio::test]
    async fn a_tee_passes_frames_and_the_end_of_a_body_within_the_bound() {
        let (mut tee, mut body) = Tee::new(10);
        assert!(tee.offer(&data(4)));
        assert!(tee.offer(&data(6)));
        tee.end();
        for len in [4, 6] {
            let frame = next(&mut body).await.expect("frame").expect("data");
            assert_eq!(frame.data_ref().map(Bytes::len), Some(len));
        }
        assert!(next(&mut body).await.is_none(), "a clean end");
        assert_eq!(body.cut().reason(), None);
    }

    #[tokio::test]
    async fn a_tee_lets_go_past_the_bound_and_the_copy_ends_in_an_error() {
        let (mut tee, mut body) = Tee::new(10);
        assert!(tee.offer(&data(10)));
        assert!(!tee.offer(&data(1)));
        drop(tee);
        assert!(next(&mut body).await.expect("frame").is_ok());
        assert!(next(&mut body).await.expect("an error").is_err());
        assert_eq!(body.cut().reason(), Some(CutReason::TooLarge));
    }

    #[tokio::test]
    async fn a_tee_never_waits_for_a_copy_that_does_not_read() {
        let (mut tee, body) = Tee::new(u64::MAX);
        for _ in 0..TEE_FRAMES {
            assert!(tee.offer(&data(1)));
        }
        // The channel is full: the next frame lets the copy go at once.
        assert!(!tee.offer(&data(1)));
        drop(tee);
        assert_eq!(body.cut().reason(), Some(CutReason::Lagged));
    }

    #[tokio::test]
    async fn a_tee_dropped_before_the_end_cuts_the_copy() {
        let (mut tee, mut body) = Tee::new(100);
        assert!(tee.offer(&data(1)));
        drop(tee);
        assert!(next(&mut body).await.expect("frame").is_ok());
        assert!(next(&mut body).await.expect("an error").is_err());
        assert_eq!(body.cut().reason(), Some(CutReason::Abandoned));
    }
}
