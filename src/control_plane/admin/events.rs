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
//!
//! A client that stopped reading altogether never gets that final event: once
//! its socket and hyper's write buffer are full, hyper stops asking the stream
//! for more, so the stream never sees that it fell behind. A watchdog per stream
//! (a task that sleeps until the hub's sequence number moves) compares the hub
//! with what the stream handed out; [`GRACE`] after a stream fell more than
//! `BUFFER` events behind, its connection is closed (a client that still reads
//! has had its `dropped` event by then). Either way the subscriber's hold on the
//! hub ends, and nothing the gateway does waits for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::api::error_response;
use super::serve::CloseConnection;
use super::AdminState;
use crate::control_plane::events::{self, Next, Subscription, BUFFER};

/// Longest quiet time on an open stream before a comment line is sent.
pub(super) const KEEPALIVE: Duration = Duration::from_secs(15);
/// Time a stream that fell too far behind has to end with its `dropped` event
/// before its connection is closed.
pub(super) const GRACE: Duration = Duration::from_secs(1);

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
    let hub = state.control.events();
    let subscription = hub.subscribe(after);
    let handed_out = Arc::new(AtomicU64::new(subscription.start()));
    let ended = CancellationToken::new();
    if let Some(close) = req.extensions().get::<CloseConnection>() {
        tokio::spawn(watchdog(
            hub.watch_seq(),
            Arc::clone(&handed_out),
            ended.clone(),
            close.0.clone(),
        ));
    }
    let stream = Stream {
        subscription,
        closing: state.closing.clone(),
        first: true,
        handed_out,
        _ended: ended.drop_guard(),
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

/// Closes the connection (`close`) of a stream [`GRACE`] after it fell more than
/// [`BUFFER`] events behind the hub; returns early when the stream ends (`ended`)
/// before falling behind.
async fn watchdog(
    mut seq: watch::Receiver<u64>,
    handed_out: Arc<AtomicU64>,
    ended: CancellationToken,
    close: CancellationToken,
) {
    loop {
        tokio::select! {
            () = ended.cancelled() => return,
            changed = seq.changed() => if changed.is_err() { return },
        }
        let last = *seq.borrow_and_update();
        let behind = last.saturating_sub(handed_out.load(Ordering::Relaxed));
        if behind > BUFFER as u64 {
            // A client that still reads gets its `dropped` event meanwhile; one stuck
            // on a full socket never would, and hyper may hold the final event
            // unsent: the connection goes either way.
            tokio::time::sleep(GRACE).await;
            tracing::info!(
                behind,
                "event stream subscriber stopped reading: closed its connection"
            );
            close.cancel();
            return;
        }
    }
}

/// One client's stream state.
struct Stream {
    subscription: Subscription,
    closing: CancellationToken,
    first: bool,
    /// The last sequence number handed to hyper (or where the subscription began).
    handed_out: Arc<AtomicU64>,
    /// Tells the watchdog the stream is gone.
    _ended: DropGuard,
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
            Next::Event(event) => {
                self.handed_out.fetch_max(event.seq, Ordering::Relaxed);
                events::sse_message(&event)
            }
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
