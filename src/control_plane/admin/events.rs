//! `GET /api/v1/events`: the event stream (see [`crate::control_plane::events`]) as
//! Server-Sent Events.
//!
//! Each event is `id: <seq>`, `event: <type>` and `data: <JSON>`. A client that
//! reconnects with `Last-Event-ID` gets the kept events after it first (the last
//! [`HISTORY`](crate::control_plane::events::HISTORY)); one that resumes from before them gets a
//! `gap` event (read the state again). A client that falls
//! [`BUFFER`](crate::control_plane::events::BUFFER) events behind gets a final `dropped` event
//! and the stream ends. A comment line every [`KEEPALIVE`] keeps idle proxies
//! from closing the stream; the stream ends when the admin listener shuts down.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use super::api::error_response;
use super::AdminState;
use crate::control_plane::events::{self, Next, Subscription};

/// Longest quiet time on an open stream before a comment line is sent.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(15);

/// The handler.
pub(super) async fn events(State(state): State<AdminState>, req: Request) -> Response {
    let after = match req.headers().get("last-event-id") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "Last-Event-ID must be the number of an event (its `id:`)",
                    "last-event-id",
                )
            }
        },
    };
    let subscription = state.control.events().subscribe(after);
    let stream = Stream {
        subscription,
        closing: state.closing.clone(),
        first: true,
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), s))
    });
    let mut resp = Body::from_stream(body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Asks buffering proxies (nginx) to pass each event on at once.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// One client's stream state.
struct Stream {
    subscription: Subscription,
    closing: CancellationToken,
    first: bool,
}

impl Stream {
    /// The next piece of the body; `None` ends it.
    async fn next_chunk(&mut self) -> Option<String> {
        if self.first {
            // Sent at once so the client knows the stream is open; `retry` is how
            // long an `EventSource` waits before reconnecting.
            self.first = false;
            return Some(": sluicegate events\nretry: 1000\n\n".to_owned());
        }
        let next = tokio::select! {
            biased;
            () = self.closing.cancelled() => return None,
            next = self.subscription.next() => next?,
            () = tokio::time::sleep(KEEPALIVE) => return Some(": keepalive\n\n".to_owned()),
        };
        Some(match next {
            Next::Event(event) => events::sse_message(&event),
            Next::Gap(missed) => events::sse_gap(missed),
            Next::Dropped(missed) => {
                tracing::info!(
                    missed,
                    "event stream subscriber fell behind: sent `dropped` and closed"
                );
                events::sse_dropped(missed)
            }
        })
    }
}
