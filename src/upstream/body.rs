//! The body of a request on its way to a backend: the client's, streamed and
//! capped at the route's `max_request_body`, or none.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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
    /// The client's body (`None`: it has none), capped at `limit` bytes when there
    /// is a limit.
    pub fn client(body: Option<Incoming>, limit: Option<u64>) -> Self {
        match (body, limit) {
            (None, _) => RequestBody::Empty,
            (Some(body), None) => RequestBody::Client(body),
            (Some(body), Some(limit)) => RequestBody::Capped {
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
