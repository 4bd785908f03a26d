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
//! | `bytes` | response body bytes sent |
//! | `retries` | extra attempts on other backends |
//! | `error` | the `sluicegate-error` cause of a gateway answer, else "" |
//! | `complete` | false when the body ended early (backend broke, idle timeout, client left) |
//!
//! The binary ([`layer`]) formats these events as JSON (or `text`) on stdout through
//! `tracing-appender`'s non-blocking writer: the request path formats the line and
//! hands it to a bounded queue; a writer thread does the I/O. When the queue is full
//! the line is dropped and counted (`sluicegate_access_log_dropped_total`), so a slow
//! stdout never slows traffic. All other logs stay on stderr.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::time::Instant;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::Layer;

use crate::config::spec::LogFormat;

/// The `tracing` target of access-log events.
pub const TARGET: &str = "sluicegate::access";

/// Lines the writer queue holds before new ones are dropped.
pub const QUEUE_LINES: usize = 128_000;

/// One request's line, filled as the request goes.
#[derive(Debug)]
pub struct AccessRecord {
    pub started: Instant,
    pub client: SocketAddr,
    pub method: Method,
    pub host: String,
    pub path: String,
    pub request_id: String,
    pub status: StatusCode,
    pub route: String,
    pub pool: String,
    pub backend: Option<SocketAddr>,
    pub upstream: Option<Duration>,
    pub bytes: u64,
    pub retries: u32,
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
            retries: 0,
            error: "",
        }
    }

    /// Writes the line (`complete`: the whole body was sent).
    pub fn emit(&self, complete: bool) {
        let total_ms = millis(self.started.elapsed());
        let backend = self.backend.map(|b| b.to_string()).unwrap_or_default();
        macro_rules! line {
            ($($upstream:tt)*) => {
                tracing::info!(
                    target: TARGET,
                    request_id = %self.request_id,
                    client = %self.client,
                    method = %self.method,
                    host = %self.host,
                    path = %self.path,
                    status = self.status.as_u16(),
                    route = %self.route,
                    pool = %self.pool,
                    backend = %backend,
                    $($upstream)*
                    total_ms,
                    bytes = self.bytes,
                    retries = self.retries,
                    error = self.error,
                    complete,
                )
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

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Lines dropped so far because the writer lagged; `None` when no writer was set up.
pub fn dropped_lines() -> Option<u64> {
    DROPPED.get().map(|c| c.dropped_lines() as u64)
}

/// A `tracing` layer that writes access-log events (and only those) to stdout in
/// `format`, without blocking the caller. Keep the guard alive until exit: dropping
/// it flushes the queue.
pub fn layer<S>(format: LogFormat) -> (Box<dyn Layer<S> + Send + Sync>, WorkerGuard)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("sluicegate-access-log")
        .finish(std::io::stdout());
    // The first setup wins; a process sets up one access log.
    let _first = DROPPED.set(writer.error_counter());
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
    (layer, guard)
}
