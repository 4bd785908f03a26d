//! The demo's agents: a small in-process HTTP/1.1 upstream that names itself.
//!
//! Just what the demo's printed commands use: every response carries `x-agent` and
//! `x-agent-version`; `GET /health` answers `ok`; `/sse?events=N&interval_ms=M`
//! streams server-sent events, one per body frame; anything else answers a JSON
//! description of the request (`agent`, `version`, `method`, `path`, `query`,
//! `headers`, `body_bytes`, `http`). The test fleet's agent, with failure knobs and
//! WebSockets, is the separate `sluicegate-echo-agent` package.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Events an `/sse` request gets without `events=`, and the most it can ask for.
const SSE_EVENTS: (u64, u64) = (5, 10_000);
/// Pause between events without `interval_ms=`, and the longest it can ask for.
const SSE_INTERVAL_MS: (u64, u64) = (100, 60_000);
/// Pause after a failed `accept` (usually fd exhaustion) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One running demo agent; [`Agent::shutdown`] stops it.
#[derive(Debug)]
pub(super) struct Agent {
    name: String,
    addr: SocketAddr,
    stop: CancellationToken,
}

/// Identity shared by an agent's connections.
struct Identity {
    name: String,
    version: String,
    name_header: HeaderValue,
    version_header: HeaderValue,
}

impl Agent {
    /// Binds `127.0.0.1:0` and serves as `name` (`version`) on a spawned task.
    pub(super) async fn spawn(name: &str, version: &str) -> std::io::Result<Agent> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let header = |s: &str| {
            HeaderValue::from_str(s)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        };
        let identity = Arc::new(Identity {
            name: name.to_owned(),
            version: version.to_owned(),
            name_header: header(name)?,
            version_header: header(version)?,
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, identity, stop.clone()));
        Ok(Agent {
            name: name.to_owned(),
            addr,
            stop,
        })
    }

    /// The agent's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Where it listens.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and drops open connections. Returns at once.
    pub(super) fn shutdown(&self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, identity: Arc<Identity>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(agent = %identity.name, "accept failed: {err}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let identity = Arc::clone(&identity);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let identity = Arc::clone(&identity);
                async move { Ok::<_, Infallible>(handle(&identity, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

async fn handle(identity: &Identity, req: Request<Incoming>) -> Response<Body> {
    let mut res = match req.uri().path() {
        "/health" => text(StatusCode::OK, "ok"),
        "/sse" => sse(&identity.name, req.uri().query()),
        _ => echo(identity, req).await,
    };
    let headers = res.headers_mut();
    headers.insert("x-agent", identity.name_header.clone());
    headers.insert("x-agent-version", identity.version_header.clone());
    res
}

/// Describes the request as it arrived (the body is counted, not kept).
async fn echo(identity: &Identity, req: Request<Incoming>) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes = body_bytes.saturating_add(data.len() as u64);
                }
            }
            Err(err) => return text(StatusCode::BAD_REQUEST, format!("reading body: {err}")),
        }
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .keys()
        .map(|name| {
            let values: Vec<_> = parts
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect();
            (name.as_str().to_owned(), values.join(", ").into())
        })
        .collect();
    let body = json!({
        "agent": identity.name,
        "version": identity.version,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
        "http": format!("{:?}", parts.version),
    });
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// `events` server-sent events `interval_ms` apart, the first with the head.
fn sse(agent: &str, query: Option<&str>) -> Response<Body> {
    let (events, interval_ms) = match (
        param(query, "events", SSE_EVENTS),
        param(query, "interval_ms", SSE_INTERVAL_MS),
    ) {
        (Ok(events), Ok(interval_ms)) => (events, interval_ms),
        (Err(msg), _) | (_, Err(msg)) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let interval = Duration::from_millis(interval_ms);
    let agent: Arc<str> = Arc::from(agent);
    let stream = futures_util::stream::unfold(0u64, move |seq| {
        let agent = Arc::clone(&agent);
        async move {
            if seq >= events {
                return None;
            }
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

/// Numeric query parameter `key`, `(default, max)`; the error is the client's message.
fn param(query: Option<&str>, key: &str, (default, max): (u64, u64)) -> Result<u64, String> {
    let raw = query.and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    });
    match raw {
        None => Ok(default),
        Some(raw) => raw
            .parse::<u64>()
            .map(|n| n.min(max))
            .map_err(|_| format!("{key} must be a non-negative integer, got {raw:?}")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, uri: &str) -> (StatusCode, http::HeaderMap, Bytes) {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::get(uri)
            .header("host", "demo.test")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let res = sender.send_request(req).await.expect("response");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, body)
    }

    #[tokio::test]
    async fn names_itself_echoes_and_streams() {
        let agent = Agent::spawn("blue-1", "v1").await.expect("spawn");
        let within = |f| tokio::time::timeout(Duration::from_secs(5), f);

        let (status, headers, body) = within(get(agent.addr(), "/hello?x=1"))
            .await
            .expect("in time");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-agent"], "blue-1");
        assert_eq!(headers["x-agent-version"], "v1");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            (v["agent"].as_str(), v["path"].as_str()),
            (Some("blue-1"), Some("/hello"))
        );
        assert_eq!(v["query"], "x=1");
        assert_eq!(v["headers"]["host"], "demo.test");

        let (status, _, body) = within(get(agent.addr(), "/sse?events=3&interval_ms=1"))
            .await
            .expect("in time");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(String::from_utf8_lossy(&body).matches("data: ").count(), 3);

        let (status, _, _) = within(get(agent.addr(), "/sse?events=x"))
            .await
            .expect("in time");
        assert_eq!(status, StatusCode::BAD_REQUEST);

        agent.shutdown();
    }
}
