//! The access log: one structured line per request, through `tracing`.
//!
//! With `[log] access = "stdout"` the proxy fills an [`AccessRecord`] per request and
//! emits it as a `tracing` event on the target [`TARGET`] when the response ends:
//! after the last body byte (so `bytes` and `total_ms` cover a whole SSE stream), when
//! the client goes away, or at once for the gateway's own answers. Fields:
//!
//! | field | meaning |
//! | --- | --- |
//! | `timestamp` | when the line was written (the end of the response), RFC 3339 UTC |
//! | `request_id` | `X-Request-Id` as sent upstream (kept or generated); "" if never forwarded |
//! | `client` | peer `ip:port` |
//! | `method`, `host`, `path` | from the request; the path without its query (queries carry tokens) |
//! | `status` | status sent to the client |
//! | `route`, `pool`, `backend` | what served it; "" where none was chosen |
//! | `upstream_ms` | last attempt: request sent → response head (absent if no backend answered) |
//! | `total_ms` | arrival → end of the response body |
//! | `bytes` | response body bytes sent (a tunnel: bytes backend → client) |
//! | `bytes_up` | only for an upgrade tunnel (status 101): bytes client → backend, written when it closes |
//! | `retries` | extra attempts on other backends |
//! | `error` | the `sluicegate-error` cause of a gateway answer, else "" |
//! | `complete` | false when the body ended early (backend broke, idle timeout, client left) |
//!
//! The binary ([`layer`]) formats these events as JSON (or `text`) on stdout through
//! [`writer`]: the request path formats the line and pushes it into a bounded
//! lock-free queue; a writer thread does the I/O in batches. When the queue is full
//! the line is dropped and counted (`sluicegate_access_log_dropped_total`), so a slow
//! stdout never slows traffic. All other logs stay on stderr.

pub mod writer;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::time::Instant;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::Layer;

use crate::control_plane::config::spec::LogFormat;
use writer::{QueueWriter, WriterGuard};

/// The `tracing` target of access-log events.
pub const TARGET: &str = "sluicegate::access";

/// Lines the writer queue holds before new ones are dropped (about a second of a
/// busy gateway; the writer drains it every [`writer::FLUSH_INTERVAL`]).
pub const QUEUE_LINES: usize = 65_536;

/// One request's line, filled as the request goes.
#[derive(Debug)]
pub struct AccessRecord {
    /// When the request arrived (`total_ms` counts from here).
    pub started: Instant,
    /// The client's address.
    pub client: SocketAddr,
    /// Request method.
    pub method: Method,
    /// Host as sent (authority or `Host`), "" if none.
    pub host: String,
    /// Request path without the query.
    pub path: String,
    /// `X-Request-Id` sent upstream; "" when the request was never forwarded.
    pub request_id: String,
    /// Status sent to the client.
    pub status: StatusCode,
    /// Route name, "" when none matched.
    pub route: String,
    /// Pool name, "" when none was chosen.
    pub pool: String,
    /// The backend that answered (or was tried last).
    pub backend: Option<SocketAddr>,
    /// Request sent → response head, of the attempt that answered.
    pub upstream: Option<Duration>,
    /// Response body bytes sent so far (for a tunnel: backend to client).
    pub bytes: u64,
    /// For a tunnel (a `101`), the bytes sent from client to backend.
    pub bytes_up: Option<u64>,
    /// Extra attempts on other backends.
    pub retries: u32,
    /// `sluicegate-error` cause of a gateway answer, "" otherwise.
    pub error: &'static str,
}

impl AccessRecord {
    /// A record for a request that just arrived.
    pub fn new(client: SocketAddr, method: Method, host: &str, path: &str) -> Self {
        AccessRecord {
            started: Instant::now(),
            client,
            method,
            host: host.to_owned(),
            path: path.to_owned(),
            request_id: String::new(),
            status: StatusCode::OK,
            route: String::new(),
            pool: String::new(),
            backend: None,
            upstream: None,
            bytes: 0,
            bytes_up: None,
            retries: 0,
            error: "",
        }
    }

    /// Writes the line (`complete`: the whole body was sent).
    pub fn emit(&self, complete: bool) {
        let total_ms = millis(self.started.elapsed());
        let backend = self.backend.map(|b| b.to_string()).unwrap_or_default();
        macro_rules! line {
            (@ $($upstream:tt)*) => {
                tracing::info!(
                    target: TARGET,
                    request_id = self.request_id.as_str(),
                    client = %self.client,
                    method = self.method.as_str(),
                    host = self.host.as_str(),
                    path = self.path.as_str(),
                    status = self.status.as_u16(),
                    route = self.route.as_str(),
                    pool = self.pool.as_str(),
                    backend = backend.as_str(),
                    $($upstream)*
                    total_ms,
                    bytes = self.bytes,
                    retries = self.retries,
                    error = self.error,
                    complete,
                )
            };
            ($($upstream:tt)*) => {
                match self.bytes_up {
                    Some(bytes_up) => line!(@ $($upstream)* bytes_up,),
                    None => line!(@ $($upstream)*),
                }
            };
        }
        match self.upstream {
            Some(upstream) => line!(upstream_ms = millis(upstream),),
            None => line!(),
        }
    }
}

/// An [`AccessRecord`] waiting for its response body to end; written when dropped
/// if [`finish`](Self::finish) was not called (the client went away mid-body).
#[derive(Debug, Default)]
pub struct PendingLine(Option<Box<AccessRecord>>);

impl PendingLine {
    /// Holds `record` until the body ends.
    pub fn new(record: Box<AccessRecord>) -> Self {
        PendingLine(Some(record))
    }

    /// Whether a line is waiting.
    pub fn is_pending(&self) -> bool {
        self.0.is_some()
    }

    /// Counts body bytes sent.
    #[inline]
    pub fn add_bytes(&mut self, n: usize) {
        if let Some(record) = &mut self.0 {
            record.bytes += n as u64;
        }
    }

    /// Writes the line now (once).
    pub fn finish(&mut self, complete: bool) {
        if let Some(record) = self.0.take() {
            record.emit(complete);
        }
    }
}

impl Drop for PendingLine {
    fn drop(&mut self) {
        self.finish(false);
    }
}

/// Milliseconds with microsecond precision.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

static WRITER: OnceLock<QueueWriter> = OnceLock::new();

/// Lines dropped so far because the writer lagged; `None` when no writer was set up.
pub fn dropped_lines() -> Option<u64> {
    WRITER.get().map(QueueWriter::dropped)
}

/// A `tracing` layer that writes access-log events (and only those) to stdout in
/// `format`, without blocking the caller. Keep the guard alive until exit: dropping
/// it writes what is still queued.
pub fn layer<S>(
    format: LogFormat,
) -> std::io::Result<(Box<dyn Layer<S> + Send + Sync>, WriterGuard)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let (writer, guard) = writer::start(std::io::stdout(), QUEUE_LINES)?;
    // The first setup wins; a process sets up one access log.
    let _first = WRITER.set(writer.clone());
    let only_access = filter_fn(|meta| meta.target() == TARGET);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .with_level(false);
    let layer = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(only_access)
            .boxed(),
        LogFormat::Text => fmt.with_filter(only_access).boxed(),
    };
    Ok((layer, guard))
}
