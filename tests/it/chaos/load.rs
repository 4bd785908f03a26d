//! The chaos run's load: GET, POST, SSE and WebSocket clients looping through the
//! gateway until cancelled, each counting what it sent and why anything failed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Longest any one request or stream may take before it counts as hung.
const HUNG: Duration = Duration::from_secs(15);
/// Most requests one worker sends, whatever the run's length.
const MAX_PER_WORKER: u64 = 1_000_000;

/// What one worker did.
#[derive(Debug, Default)]
pub struct Stats {
    pub sent: u64,
    pub ok: u64,
    /// Failure cause → count.
    pub failed: BTreeMap<String, u64>,
    /// Latency of each successful request, microseconds.
    pub latencies_us: Vec<u32>,
    /// The first few failures with the time they happened.
    pub first_failures: Vec<(Instant, String)>,
}

impl Stats {
    fn fail(&mut self, cause: impl Into<String>) {
        let cause = cause.into();
        if self.first_failures.len() < 10 {
            self.first_failures.push((Instant::now(), cause.clone()));
        }
        *self.failed.entry(cause).or_default() += 1;
    }

    pub fn merge(&mut self, other: Stats) {
        self.sent += other.sent;
        self.ok += other.ok;
        for (k, v) in other.failed {
            *self.failed.entry(k).or_default() += v;
        }
        self.latencies_us.extend(other.latencies_us);
        self.first_failures.extend(other.first_failures);
    }
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// One request on a keep-alive connection: `Ok(latency)` or the failure cause.
async fn exchange(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> Result<Duration, String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(connect(addr).await.ok_or("connect to gateway")?);
    }
    let sender = conn.as_mut().ok_or("no connection")?;
    let started = Instant::now();
    let result = tokio::time::timeout(HUNG, async {
        sender.ready().await.map_err(|e| format!("client: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("client: {e}"))?;
        let status = resp.status();
        let cause = resp
            .headers()
            .get("sluicegate-error")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = resp.into_body().collect().await;
        body.map_err(|_| format!("{status} body cut"))?;
        if status == 200 {
            Ok(started.elapsed())
        } else {
            Err(format!("{} {cause}", status.as_u16()))
        }
    })
    .await;
    match result {
        Ok(Ok(latency)) => Ok(latency),
        Ok(Err(cause)) => {
            *conn = None;
            Err(cause)
        }
        Err(_) => {
            *conn = None;
            Err("hung".into())
        }
    }
}

/// GETs (`post = false`) or 1 KiB POSTs in a loop on one keep-alive connection.
pub async fn requests(addr: SocketAddr, post: bool, stop: CancellationToken) -> Stats {
    let mut stats = Stats::default();
    let mut conn = None;
    let payload = Bytes::from(vec![b'x'; 1024]);
    while !stop.is_cancelled() && stats.sent < MAX_PER_WORKER {
        let req = if post {
            Request::post("/submit").body(Full::new(payload.clone()))
        } else {
            Request::get(format!("/item?n={}", stats.sent)).body(Full::new(Bytes::new()))
        };
        let mut req = req.expect("request");
        req.headers_mut()
            .insert("host", http::HeaderValue::from_static("chaos.local"));
        stats.sent += 1;
        match exchange(&mut conn, addr, req).await {
            Ok(latency) => {
                stats.ok += 1;
                stats
                    .latencies_us
                    .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
            }
            Err(cause) => stats.fail(cause),
        }
    }
    stats
}

/// Server-sent event streams of 20 events, 50 ms apart.
pub async fn sse(addr: SocketAddr, stop: CancellationToken) -> Stats {
    let mut stats = Stats::default();
    let mut conn = None;
    while !stop.is_cancelled() && stats.sent < MAX_PER_WORKER {
        let req = Request::get("/sse?events=20&interval_ms=50")
            .header("host", "chaos.local")
            .body(Full::new(Bytes::new()))
            .expect("request");
        stats.sent += 1;
        match exchange(&mut conn, addr, req).await {
            Ok(latency) => {
                stats.ok += 1;
                stats
                    .latencies_us
                    .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
            }
            Err(cause) => stats.fail(format!("sse {cause}")),
        }
    }
    stats
}

/// WebSocket sessions of 20 echoed messages.
pub async fn websocket(addr: SocketAddr, stop: CancellationToken) -> Stats {
    let mut stats = Stats::default();
    while !stop.is_cancelled() && stats.sent < MAX_PER_WORKER {
        stats.sent += 1;
        let started = Instant::now();
        match tokio::time::timeout(HUNG, ws_session(addr)).await {
            Ok(Ok(())) => {
                stats.ok += 1;
                stats
                    .latencies_us
                    .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            Ok(Err(cause)) => stats.fail(format!("ws {cause}")),
            Err(_) => stats.fail("ws hung"),
        }
    }
    stats
}

async fn ws_session(addr: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut ws, _) = tokio_tungstenite::client_async("ws://chaos.local/ws", stream)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    for i in 0..20 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        match ws.next().await {
            Some(Ok(Message::Text(echo))) if echo.as_str() == text => {}
            Some(Ok(other)) => return Err(format!("unexpected frame {other:?}")),
            Some(Err(e)) => return Err(format!("cut: {e}")),
            None => return Err("cut: closed".into()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// The admin API's `/api/v1/state`, parsed; `None` on any failure.
pub async fn state(admin: SocketAddr) -> Option<serde_json::Value> {
    let mut sender = connect(admin).await?;
    let req = Request::get("/api/v1/state")
        .header("host", admin.to_string())
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = tokio::time::timeout(HUNG, sender.send_request(req))
        .await
        .ok()?
        .ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// Whether every backend in `state` is healthy and not ejected.
pub fn all_healthy(state: &serde_json::Value) -> bool {
    let pools = state["pools"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    !pools.is_empty()
        && pools.iter().all(|p| {
            p["backends"].as_array().is_some_and(|bs| {
                bs.iter()
                    .all(|b| b["healthy"] == true && b["ejected"] == false)
            })
        })
}

/// One `GET path` on a new connection; the status, or `None` on any failure.
pub async fn raw_get(addr: SocketAddr, path: &str) -> Option<u16> {
    admin_call(addr, http::Method::GET, path, "").await
}

/// One admin call with a JSON body; the status, or `None` on any failure.
pub async fn admin_call(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: &str,
) -> Option<u16> {
    let mut conn = Some(connect(addr).await?);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .ok()?;
    match exchange(&mut conn, addr, req).await {
        Ok(_) => Some(200),
        Err(cause) => cause.split(' ').next().and_then(|s| s.parse().ok()),
    }
}
