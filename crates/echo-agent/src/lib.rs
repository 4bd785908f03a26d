//! Echo agent: the reference upstream behind sluicegate's integration tests and
//! its test images (`scripts/build-images.sh`, `examples/compose/`). A test
//! fixture, kept out of the product: `sluicegate demo` runs its own small agent.
//!
//! This crate owns a small HTTP/1.1 + h2c server that reflects requests back
//! as JSON, plus the knobs the gateway's tests need to imitate a real replica:
//! health flips, forced failures, slow answers, server-sent events, WebSocket
//! echo and an abrupt "the replica died" shutdown. It knows nothing about the
//! gateway itself.
//!
//! Routes (every response carries `x-agent` and `x-agent-version`):
//!
//! | route                                  | behaviour                                        |
//! |----------------------------------------|--------------------------------------------------|
//! | `GET /health`                          | 200 `ok`, or 503 `unhealthy`                     |
//! | `POST /control/health?ok=true\|false`  | same as [`EchoHandle::set_healthy`]              |
//! | `POST /control/fail[?status=N]`        | same as [`EchoHandle::set_failing`]              |
//! | `POST /control/fail?status=N&ratio=R`  | same as [`EchoHandle::set_failing_ratio`]        |
//! | `/mcp`                                 | echo; without `mcp-session-id`, mints one and    |
//! |                                        | answers it in that header (like MCP's initialize)|
//! | `/slow?ms=N`                           | sleeps N ms (default 1000, cap 600000), echoes   |
//! | `/status/{code}`                       | answers `code` (200-999) with the code as body   |
//! | `/sse?events=N&interval_ms=M`          | `text/event-stream`, one event per body frame    |
//! | `GET /ws` (upgrade)                    | WebSocket echo of text and binary messages       |
//! | anything else                          | 200 JSON description of the request              |
//!
//! While failing, every route except `/health` and `/control/*` answers the
//! forced status instead — or, with a ratio, that share of them, spread evenly
//! (exactly ⌊n × ratio⌋ of the first n).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderName, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub mod ws;

const DEFAULT_SLOW_MS: u64 = 1_000;
const MAX_SLOW_MS: u64 = 600_000;
const DEFAULT_SSE_EVENTS: u64 = 5;
const MAX_SSE_EVENTS: u64 = 10_000;
const DEFAULT_SSE_INTERVAL_MS: u64 = 100;
const MAX_SSE_INTERVAL_MS: u64 = 60_000;
/// Pause after a failed `accept` (usually fd exhaustion) so we don't spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// `Shared::failing` value meaning "not failing"; outside the u16 range so
/// every `set_failing(Some(code))` is representable.
const NOT_FAILING: u32 = u32::MAX;
/// `Shared::fail_ppm` meaning every request fails.
const ALWAYS: u64 = 1_000_000;

/// Response body type for every route: buffered or streamed (SSE).
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Identity an agent reports in its `x-agent*` headers and JSON bodies.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Replica name, e.g. `api-1`; tests use it to see which upstream answered.
    pub name: String,
    /// Deployment version, e.g. `v1`; tests use it to check traffic splits.
    pub version: String,
}

/// State shared by the handle, the accept loop and every connection.
struct Shared {
    name: String,
    version: String,
    agent_header: HeaderValue,
    version_header: HeaderValue,
    healthy: AtomicBool,
    failing: AtomicU32,
    /// Milliseconds every request (but `/health` and `/control/*`) waits first.
    delay_ms: AtomicU64,
    /// Share of requests that fail while failing, in parts per million.
    fail_ppm: AtomicU64,
    /// Requests seen while failing with a ratio (spreads the failures evenly).
    fail_seq: AtomicU64,
    /// Sessions minted by `/mcp`.
    sessions: AtomicU64,
    requests: AtomicU64,
    cancel: CancellationToken,
    /// Number of live tasks (accept loop, connections, h2 streams, WebSocket
    /// sessions); `stopped()` waits for zero.
    live: watch::Sender<usize>,
}

impl Shared {
    fn new(config: EchoConfig) -> Self {
        // Names come from operators, not requests; a bad one only degrades the header.
        let header = |s: &str| {
            HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        };
        Self {
            agent_header: header(&config.name),
            version_header: header(&config.version),
            name: config.name,
            version: config.version,
            healthy: AtomicBool::new(true),
            failing: AtomicU32::new(NOT_FAILING),
            delay_ms: AtomicU64::new(0),
            fail_ppm: AtomicU64::new(ALWAYS),
            fail_seq: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            live: watch::channel(0).0,
        }
    }

    /// Spawns `fut` so that shutdown drops it and `stopped()` waits for it.
    /// The task is counted before it is spawned, so the live count can never
    /// dip to zero while work is still being handed over.
    fn spawn_tracked<F>(self: &Arc<Self>, fut: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.live.send_modify(|n| *n += 1);
        let guard = LiveGuard(Arc::clone(self));
        tokio::spawn(async move {
            let shared = &guard.0;
            tokio::select! {
                biased;
                () = shared.cancel.cancelled() => {}
                _ = fut => {}
            }
            // `fut` (and any socket it owns) is dropped before `guard`.
        });
    }

    /// The status this request must fail with, if it must.
    fn failing_status(&self) -> Option<StatusCode> {
        let code = self.failing.load(Ordering::Relaxed);
        if code == NOT_FAILING {
            return None;
        }
        let ppm = self.fail_ppm.load(Ordering::Relaxed);
        if ppm < ALWAYS {
            // The n-th request fails when ⌊n × ratio⌋ steps up.
            let n = self.fail_seq.fetch_add(1, Ordering::Relaxed) + 1;
            if n * ppm / ALWAYS == (n - 1) * ppm / ALWAYS {
                return None;
            }
        }
        Some(
            u16::try_from(code)
                .ok()
                .and_then(final_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )
    }

    fn set_failing(&self, status: Option<u16>, ppm: u64) {
        let code = status.map_or(NOT_FAILING, u32::from);
        self.fail_ppm.store(ppm.min(ALWAYS), Ordering::Relaxed);
        self.fail_seq.store(0, Ordering::Relaxed);
        self.failing.store(code, Ordering::Relaxed);
    }
}

/// Decrements the live-task count when a tracked task ends, however it ends.
struct LiveGuard(Arc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.send_modify(|n| *n -= 1);
    }
}

/// Executor for hyper's HTTP/2 stream tasks; tracking them means shutdown also
/// aborts in-flight h2 requests instead of leaving them to finish detached.
#[derive(Clone)]
struct TrackedExecutor(Arc<Shared>);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn_tracked(fut);
    }
}

/// Control handle for a running agent. Cheap to clone; dropping handles does
/// not stop the agent — call [`EchoHandle::shutdown`].
#[derive(Clone)]
pub struct EchoHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl fmt::Debug for EchoHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoHandle")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EchoHandle {
    /// Address the agent is listening on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The agent's configured name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Makes `GET /health` answer 200 (`true`) or 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::Relaxed);
    }

    /// `Some(code)`: every request other than `/health` and `/control/*`
    /// answers `code` (codes outside 200-999 become 500). `None`: stop failing.
    pub fn set_failing(&self, status: Option<u16>) {
        self.shared.set_failing(status, ALWAYS);
    }

    /// Like [`set_failing`](Self::set_failing), for a share `ratio` (0..=1) of the
    /// requests only, spread evenly: of the first n, exactly ⌊n × ratio⌋ fail.
    pub fn set_failing_ratio(&self, status: u16, ratio: f64) {
        let ppm = (ratio.clamp(0.0, 1.0) * ALWAYS as f64).round() as u64;
        self.shared.set_failing(Some(status), ppm);
    }

    /// Makes every request except `/health` and `/control/*` wait `delay` before
    /// it is handled (a slow replica); `Duration::ZERO` turns it off.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared
            .delay_ms
            .store(ms.min(MAX_SLOW_MS), Ordering::Relaxed);
    }

    /// Requests received on all paths except `/health` and `/control/*`.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes the port and drops every open connection
    /// without a goodbye, like a crashed replica. Idempotent; returns at once.
    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
    }

    /// Resolves once the accept loop and all connection tasks have ended.
    pub async fn stopped(&self) {
        let mut live = self.shared.live.subscribe();
        // Cannot fail: `self` keeps the sender alive.
        let _ = live.wait_for(|n| *n == 0).await;
    }
}

/// Starts serving on `listener` in a spawned tokio task; returns at once.
///
/// # Panics
/// Outside a tokio runtime, or if `listener` has no local address (a bound
/// listener always has one).
pub fn spawn(listener: TcpListener, config: EchoConfig) -> EchoHandle {
    let addr = listener
        .local_addr()
        .expect("a bound TcpListener has a local address");
    let shared = Arc::new(Shared::new(config));
    shared.spawn_tracked(accept_loop(listener, Arc::clone(&shared)));
    EchoHandle { addr, shared }
}

/// Binds `127.0.0.1:0` and spawns an agent (convenience for tests and demo).
pub async fn spawn_local(name: &str, version: &str) -> std::io::Result<EchoHandle> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let config = EchoConfig {
        name: name.to_owned(),
        version: version.to_owned(),
    };
    Ok(spawn(listener, config))
}

/// Runs until shutdown drops it; the listener (and so the port) goes with it.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                shared.spawn_tracked(serve_connection(stream, peer, Arc::clone(&shared)));
            }
            Err(err) => {
                tracing::warn!(agent = %shared.name, "accept failed: {err}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // Tests time first-byte latency; Nagle would add up to 40 ms per write.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "set_nodelay failed: {err}");
    }
    let builder = auto::Builder::new(TrackedExecutor(Arc::clone(&shared)));
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(err) = conn.await {
        tracing::debug!(%peer, "connection ended: {err}");
    }
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let mut res = route(shared, req).await;
    let headers = res.headers_mut();
    headers.insert("x-agent", shared.agent_header.clone());
    headers.insert("x-agent-version", shared.version_header.clone());
    res
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/health" {
        return if shared.healthy.load(Ordering::Relaxed) {
            text(StatusCode::OK, "ok")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
        };
    }
    if path == "/control" || path.starts_with("/control/") {
        return control(shared, &req, &path);
    }
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let delay = shared.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(status) = shared.failing_status() {
        // Drain the body so an HTTP/1.1 keep-alive connection stays reusable.
        let _ = body_len(req.into_body()).await;
        return text(status, status.as_str().to_owned());
    }
    let query = req.uri().query();
    match path.as_str() {
        "/slow" => match param(query, "ms", DEFAULT_SLOW_MS) {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms.min(MAX_SLOW_MS))).await;
                echo(shared, req).await
            }
            Err(msg) => text(StatusCode::BAD_REQUEST, msg),
        },
        "/sse" => sse(shared, query),
        "/mcp" => mcp(shared, req).await,
        "/ws" => websocket(shared, req),
        _ => match path.strip_prefix("/status/") {
            Some(raw) => match raw.parse().ok().and_then(final_status) {
                // These statuses must not carry a body; hyper would drop it anyway.
                Some(s @ (StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)) => text(s, ""),
                Some(status) => text(status, status.as_str().to_owned()),
                None => text(
                    StatusCode::BAD_REQUEST,
                    format!("invalid status code {raw:?}"),
                ),
            },
            None => echo(shared, req).await,
        },
    }
}

/// Out-of-process equivalent of the handle's setters (for Docker images).
fn control(shared: &Shared, req: &Request<Incoming>, path: &str) -> Response<Body> {
    if req.method() != Method::POST {
        let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return res;
    }
    let query = req.uri().query();
    match path {
        "/control/health" => {
            let healthy = match query_param(query, "ok") {
                Some("true") => true,
                Some("false") => false,
                _ => return text(StatusCode::BAD_REQUEST, "expected ?ok=true|false"),
            };
            shared.healthy.store(healthy, Ordering::Relaxed);
            json_response(&json!({ "healthy": healthy }))
        }
        "/control/fail" => {
            let status = match query_param(query, "status") {
                None => None,
                Some(raw) => match raw.parse().ok().and_then(final_status) {
                    Some(status) => Some(status.as_u16()),
                    None => return text(StatusCode::BAD_REQUEST, "status must be 200-999"),
                },
            };
            let ratio = match query_param(query, "ratio").map(str::parse::<f64>) {
                None => 1.0,
                Some(Ok(r)) if (0.0..=1.0).contains(&r) => r,
                Some(_) => return text(StatusCode::BAD_REQUEST, "ratio must be 0..=1"),
            };
            let ppm = (ratio * ALWAYS as f64).round() as u64;
            shared.set_failing(status, ppm);
            json_response(&json!({ "failing": status, "ratio": ratio }))
        }
        _ => text(StatusCode::NOT_FOUND, "unknown control endpoint"),
    }
}

/// Name of the session header `/mcp` mints.
const SESSION_HEADER: &str = "mcp-session-id";

/// `/mcp`: the echo, and a new session id (`{agent}-{n}`) in `mcp-session-id`
/// when the request named none, like an MCP server's `initialize`.
async fn mcp(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let minted = (!req.headers().contains_key(SESSION_HEADER)).then(|| {
        let n = shared.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{n}", shared.name)
    });
    let mut res = echo(shared, req).await;
    if let Some(id) = minted.and_then(|id| HeaderValue::from_str(&id).ok()) {
        res.headers_mut()
            .insert(HeaderName::from_static(SESSION_HEADER), id);
    }
    res
}

/// Default route: describes the request exactly as it arrived.
async fn echo(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body_bytes = match body_len(body).await {
        Ok(n) => n,
        Err(err) => return text(StatusCode::BAD_REQUEST, format!("reading body: {err}")),
    };
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .keys()
        .map(|name| {
            (
                name.as_str().to_owned(),
                joined_header(&parts.headers, name),
            )
        })
        .collect();
    json_response(&json!({
        "agent": shared.name,
        "version": shared.version,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
        "http": format!("{:?}", parts.version),
    }))
}

fn joined_header(headers: &http::HeaderMap, name: &HeaderName) -> Value {
    let values: Vec<_> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .collect();
    Value::String(values.join(", "))
}

/// Counts body bytes without buffering them, so large uploads cost no memory.
async fn body_len(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            len += data.len() as u64;
        }
    }
    Ok(len)
}

/// Server-sent events, one body frame per event, so tests can check that the
/// gateway streams instead of buffering.
fn sse(shared: &Shared, query: Option<&str>) -> Response<Body> {
    let parsed = param(query, "events", DEFAULT_SSE_EVENTS)
        .and_then(|e| Ok((e, param(query, "interval_ms", DEFAULT_SSE_INTERVAL_MS)?)));
    let (events, interval_ms) = match parsed {
        Ok(p) => p,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let events = events.min(MAX_SSE_EVENTS);
    let interval = Duration::from_millis(interval_ms.min(MAX_SSE_INTERVAL_MS));
    let agent: Arc<str> = Arc::from(shared.name.as_str());
    let stream = futures_util::stream::unfold(0u64, move |seq| {
        let agent = Arc::clone(&agent);
        async move {
            if seq >= events {
                return None;
            }
            // Pause *between* events: the first one goes out with the head.
            if seq > 0 {
                tokio::time::sleep(interval).await;
            }
            let event = format!("data: {}\n\n", json!({ "agent": &*agent, "seq": seq }));
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(event))),
                seq + 1,
            ))
        }
    });
    let mut res = Response::new(StreamBody::new(stream).boxed_unsync());
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// Accepts an HTTP/1.1 WebSocket upgrade and echoes messages on a tracked task.
fn websocket(shared: &Arc<Shared>, mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = websocket_key(&req) else {
        return text(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade");
    };
    let Ok(accept) = HeaderValue::from_str(&ws::accept_key(key.as_bytes())) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "bad accept key");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    shared.spawn_tracked(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => return tracing::debug!("websocket upgrade failed: {err}"),
        };
        // The session answers pings and the close handshake itself.
        if let Err(err) = ws::echo(TokioIo::new(upgraded)).await {
            tracing::debug!("websocket session ended: {err}");
        }
    });
    let mut res = Response::new(empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    res
}

/// The `Sec-WebSocket-Key` of a valid RFC 6455 upgrade request, if it is one.
fn websocket_key<B>(req: &Request<B>) -> Option<&HeaderValue> {
    let headers = req.headers();
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let is_upgrade = req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && has_token(UPGRADE, "websocket")
        && has_token(CONNECTION, "upgrade")
        && headers
            .get(SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    is_upgrade.then(|| headers.get(SEC_WEBSOCKET_KEY)).flatten()
}

/// A status usable as a final response. 1xx is excluded because hyper refuses
/// to send informational statuses as final responses (it rewrites them to 500).
fn final_status(code: u16) -> Option<StatusCode> {
    (200..=999)
        .contains(&code)
        .then(|| StatusCode::from_u16(code).ok())
        .flatten()
}

/// First value of `key` in a raw query string (no percent-decoding: every
/// parameter this agent reads is a number or a bare word).
fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

/// Numeric query parameter with a default; the error is a client-facing message.
fn param(query: Option<&str>, key: &str, default: u64) -> Result<u64, String> {
    match query_param(query, key) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .map_err(|_| format!("{key} must be a non-negative integer, got {raw:?}")),
    }
}

fn empty() -> Body {
    Empty::new().boxed_unsync()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()).boxed_unsync());
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

fn json_response(value: &Value) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use http::HeaderMap;
    use hyper::client::conn::{http1, http2};
    use hyper_util::rt::TokioExecutor;
    use std::time::Instant;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;
    use tokio_tungstenite::tungstenite::Message;

    /// Upper bound for every wait in these tests.
    const WAIT: Duration = Duration::from_secs(5);

    async fn within<F: Future>(what: &str, fut: F) -> F::Output {
        timeout(WAIT, fut)
            .await
            .unwrap_or_else(|_| panic!("timed out: {what}"))
    }

    async fn agent() -> EchoHandle {
        within("spawn", spawn_local("echo-1", "v1"))
            .await
            .expect("bind 127.0.0.1:0")
    }

    type Sender = http1::SendRequest<Full<Bytes>>;

    /// Opens an HTTP/1.1 keep-alive connection; the handle ends when it closes.
    async fn connect(addr: SocketAddr) -> (Sender, JoinHandle<hyper::Result<()>>) {
        let stream = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        let (sender, conn) = within("handshake", http1::handshake(TokioIo::new(stream)))
            .await
            .expect("handshake");
        (sender, tokio::spawn(conn))
    }

    fn request(method: Method, uri: &str, body: &'static str) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "echo.test")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("valid request")
    }

    async fn send_on(
        sender: &mut Sender,
        req: Request<Full<Bytes>>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let res = within("response", sender.send_request(req))
            .await
            .expect("response");
        let (parts, body) = res.into_parts();
        let body = within("body", body.collect()).await.expect("body");
        (parts.status, parts.headers, body.to_bytes())
    }

    async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
        let (mut sender, _conn) = connect(addr).await;
        send_on(&mut sender, req).await
    }

    async fn get(addr: SocketAddr, uri: &str) -> (StatusCode, Bytes) {
        let (status, _, body) = send(addr, request(Method::GET, uri, "")).await;
        (status, body)
    }

    fn json_body(body: &[u8]) -> Value {
        serde_json::from_slice(body).expect("JSON body")
    }

    #[tokio::test]
    async fn default_route_echoes_method_path_headers_and_body() {
        let agent = agent().await;
        let mut req = request(Method::POST, "/some/path?a=1", "hello");
        let headers = req.headers_mut();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let (status, headers, body) = send(agent.addr(), req).await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-agent"], "echo-1");
        assert_eq!(headers["x-agent-version"], "v1");
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        let v = json_body(&body);
        assert_eq!(v["agent"], "echo-1");
        assert_eq!(v["version"], "v1");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/some/path");
        assert_eq!(v["query"], "a=1");
        assert_eq!(v["headers"]["x-forwarded-for"], "10.0.0.1");
        assert_eq!(v["headers"]["x-multi"], "a, b");
        assert_eq!(v["headers"]["host"], "echo.test");
        assert_eq!(v["body_bytes"], 5);
        assert_eq!(v["http"], "HTTP/1.1");

        let (_, body) = get(agent.addr(), "/").await;
        assert_eq!(json_body(&body)["query"], Value::Null);
        assert_eq!(agent.requests(), 2);
    }

    #[tokio::test]
    async fn health_follows_set_healthy_and_is_not_counted() {
        let agent = agent().await;
        assert_eq!(
            get(agent.addr(), "/health").await,
            (StatusCode::OK, "ok".into())
        );
        agent.set_healthy(false);
        let unhealthy = (StatusCode::SERVICE_UNAVAILABLE, Bytes::from("unhealthy"));
        assert_eq!(get(agent.addr(), "/health").await, unhealthy);
        agent.set_healthy(true);
        assert_eq!(get(agent.addr(), "/health").await.0, StatusCode::OK);
        assert_eq!(agent.requests(), 0);
    }

    #[tokio::test]
    async fn status_route_answers_requested_code() {
        let agent = agent().await;
        assert_eq!(
            get(agent.addr(), "/status/418").await,
            (StatusCode::IM_A_TEAPOT, "418".into())
        );
        assert_eq!(
            get(agent.addr(), "/status/204").await.0,
            StatusCode::NO_CONTENT
        );
        for bad in ["/status/42", "/status/1000", "/status/abc", "/status/101"] {
            assert_eq!(
                get(agent.addr(), bad).await.0,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn set_failing_overrides_all_but_health_and_control() {
        let agent = agent().await;
        agent.set_failing(Some(500));
        assert_eq!(
            get(agent.addr(), "/anything").await,
            (StatusCode::INTERNAL_SERVER_ERROR, "500".into())
        );
        // A failing POST still drains its body, so keep-alive survives.
        let (mut sender, _conn) = connect(agent.addr()).await;
        let (status, ..) = send_on(&mut sender, request(Method::POST, "/x", "payload")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let (status, ..) = send_on(&mut sender, request(Method::GET, "/health", "")).await;
        assert_eq!(status, StatusCode::OK);

        agent.set_failing(None);
        assert_eq!(get(agent.addr(), "/anything").await.0, StatusCode::OK);
        assert_eq!(agent.requests(), 3);
    }

    #[tokio::test]
    async fn a_failing_ratio_fails_exactly_that_share_spread_evenly() {
        let agent = agent().await;
        agent.set_failing_ratio(503, 0.05);
        let (mut sender, _conn) = connect(agent.addr()).await;
        let mut failed = Vec::new();
        for i in 1..=100 {
            let (status, ..) = send_on(&mut sender, request(Method::GET, "/x", "")).await;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                failed.push(i);
            }
        }
        assert_eq!(failed, [20, 40, 60, 80, 100]);
        let (status, _, body) = send(
            agent.addr(),
            request(Method::POST, "/control/fail?status=500&ratio=0.5", ""),
        )
        .await;
        assert_eq!(
            (status, json_body(&body)["ratio"].clone()),
            (StatusCode::OK, json!(0.5))
        );
        let (a, b) = (
            get(agent.addr(), "/x").await.0,
            get(agent.addr(), "/x").await.0,
        );
        assert_eq!((a, b), (StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR));
        let (status, ..) = send(
            agent.addr(),
            request(Method::POST, "/control/fail?status=500&ratio=2", ""),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn mcp_mints_a_session_only_for_requests_without_one() {
        let agent = agent().await;
        let (_, headers, _) = send(agent.addr(), request(Method::POST, "/mcp", "{}")).await;
        let id = headers[SESSION_HEADER].to_str().unwrap().to_owned();
        assert_eq!(id, format!("{}-1", agent.name()));
        let mut again = request(Method::POST, "/mcp", "{}");
        again
            .headers_mut()
            .insert(SESSION_HEADER, HeaderValue::from_str(&id).unwrap());
        let (status, headers, body) = send(agent.addr(), again).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!headers.contains_key(SESSION_HEADER));
        assert_eq!(json_body(&body)["headers"][SESSION_HEADER], json!(id));
    }

    #[tokio::test]
    async fn control_endpoints_steer_the_agent_over_http() {
        let agent = agent().await;
        let addr = agent.addr();
        let post = |uri| send(addr, request(Method::POST, uri, ""));

        assert_eq!(post("/control/health?ok=false").await.0, StatusCode::OK);
        assert_eq!(
            get(addr, "/health").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(post("/control/health?ok=true").await.0, StatusCode::OK);
        assert_eq!(get(addr, "/health").await.0, StatusCode::OK);
        assert_eq!(post("/control/health").await.0, StatusCode::BAD_REQUEST);

        let (status, _, body) = post("/control/fail?status=502").await;
        assert_eq!(
            (status, json_body(&body)["failing"].clone()),
            (StatusCode::OK, json!(502))
        );
        assert_eq!(get(addr, "/x").await.0, StatusCode::BAD_GATEWAY);
        assert_eq!(post("/control/fail").await.0, StatusCode::OK);
        assert_eq!(get(addr, "/x").await.0, StatusCode::OK);

        assert_eq!(
            post("/control/fail?status=abc").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(post("/control/nope").await.0, StatusCode::NOT_FOUND);
        let (status, headers, _) = send(addr, request(Method::GET, "/control/fail", "")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[ALLOW], "POST");
        assert_eq!(agent.requests(), 2);
    }

    #[tokio::test]
    async fn slow_waits_then_echoes() {
        let agent = agent().await;
        let started = Instant::now();
        let (status, body) = get(agent.addr(), "/slow?ms=200").await;
        assert_eq!(status, StatusCode::OK);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(json_body(&body)["path"], "/slow");
        assert_eq!(
            get(agent.addr(), "/slow?ms=soon").await.0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn sse_sends_each_event_as_it_is_produced() {
        let agent = agent().await;
        let (mut sender, _conn) = connect(agent.addr()).await;
        let req = request(Method::GET, "/sse?events=3&interval_ms=300", "");
        let res = within("sse head", sender.send_request(req))
            .await
            .expect("head");
        let head_at = Instant::now();
        assert_eq!(res.headers()[CONTENT_TYPE], "text/event-stream");
        assert_eq!(res.headers()[CACHE_CONTROL], "no-cache");

        let mut body = res.into_body();
        let mut arrivals = Vec::new();
        while let Some(frame) = within("sse frame", body.frame()).await {
            let Ok(data) = frame.expect("frame").into_data() else {
                continue;
            };
            arrivals.push((head_at.elapsed(), data));
        }
        assert_eq!(arrivals.len(), 3, "one frame per event");
        assert!(
            arrivals[0].0 < Duration::from_millis(200),
            "first event late: {arrivals:?}"
        );
        assert!(
            arrivals[2].0 >= Duration::from_millis(500),
            "events not paced: {arrivals:?}"
        );
        for (seq, (_, data)) in arrivals.iter().enumerate() {
            let line = std::str::from_utf8(data).expect("utf-8");
            let payload = line
                .strip_prefix("data: ")
                .and_then(|l| l.strip_suffix("\n\n"))
                .expect("SSE framing");
            assert_eq!(
                json_body(payload.as_bytes()),
                json!({"agent": "echo-1", "seq": seq})
            );
        }
    }

    #[tokio::test]
    async fn websocket_echoes_text_and_binary_and_closes() {
        let agent = agent().await;
        let stream = within("connect", TcpStream::connect(agent.addr()))
            .await
            .expect("connect");
        let url = format!("ws://{}/ws", agent.addr());
        let (mut ws, res) = within("ws handshake", tokio_tungstenite::client_async(url, stream))
            .await
            .expect("ws handshake");
        assert_eq!(res.headers()["x-agent"], "echo-1");

        for msg in [
            Message::Text("hello".into()),
            Message::Binary(vec![0, 1, 2, 255]),
        ] {
            within("ws send", ws.send(msg.clone())).await.expect("send");
            let echoed = within("ws echo", ws.next())
                .await
                .expect("open")
                .expect("ok");
            assert_eq!(echoed, msg);
        }
        within("ws close", ws.close(None)).await.expect("close");
        while let Some(msg) = within("ws drain", ws.next()).await {
            assert!(matches!(msg, Ok(Message::Close(_))), "unexpected {msg:?}");
        }

        assert_eq!(get(agent.addr(), "/ws").await.0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn serves_http2_prior_knowledge() {
        let agent = agent().await;
        let stream = within("connect", TcpStream::connect(agent.addr()))
            .await
            .expect("connect");
        let (mut sender, conn) = within(
            "h2 handshake",
            http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let uri = format!("http://{}/h2", agent.addr());
        let req = Request::get(uri)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let res = within("h2 response", sender.send_request(req))
            .await
            .expect("response");
        assert_eq!(res.headers()["x-agent"], "echo-1");
        let body = within("h2 body", res.into_body().collect())
            .await
            .expect("body");
        let v = json_body(&body.to_bytes());
        assert_eq!(
            (v["http"].clone(), v["path"].clone()),
            (json!("HTTP/2.0"), json!("/h2"))
        );
    }

    #[tokio::test]
    async fn shutdown_drops_connections_and_closes_port() {
        let agent = agent().await;
        let (mut idle, idle_conn) = connect(agent.addr()).await;
        assert_eq!(
            send_on(&mut idle, request(Method::GET, "/", "")).await.0,
            StatusCode::OK
        );
        let (mut busy, _busy_conn) = connect(agent.addr()).await;
        let in_flight = tokio::spawn(busy.send_request(request(Method::GET, "/slow?ms=60000", "")));
        // Only shut down once the slow request is being served.
        within("slow request arrives", async {
            while agent.requests() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;

        let stream = within("connect", TcpStream::connect(agent.addr()))
            .await
            .expect("connect");
        let url = format!("ws://{}/ws", agent.addr());
        let (mut ws, _) = within("ws handshake", tokio_tungstenite::client_async(url, stream))
            .await
            .expect("ws handshake");

        agent.shutdown();
        agent.shutdown();
        within("stopped", agent.stopped()).await;
        within("stopped again", agent.stopped()).await;

        let in_flight = within("in-flight request", in_flight).await.expect("join");
        assert!(
            in_flight.is_err(),
            "in-flight request should fail: {in_flight:?}"
        );
        within("idle connection closed", idle_conn)
            .await
            .expect("join")
            .ok();
        let ws_after = within("websocket dropped", ws.next()).await;
        assert!(
            !matches!(ws_after, Some(Ok(_))),
            "websocket still open: {ws_after:?}"
        );
        assert!(idle
            .send_request(request(Method::GET, "/", ""))
            .await
            .is_err());
        let reconnect = within("reconnect", TcpStream::connect(agent.addr())).await;
        assert!(reconnect.is_err(), "port should be closed");
    }
}
